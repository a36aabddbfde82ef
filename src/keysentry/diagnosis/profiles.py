"""Requirement profiles: what a key must allow, must not allow, and what else the connection needs.

A profile judges the unified permissions an adapter read from the exchange. Four are built in
(DESIGN.md); operators define more in configuration with `load_profiles`.

How the built-ins read DESIGN.md ("reads" is taken as what each use really calls):

- `trading` (the default): a spot bot reads balances (to size orders) and trade history (to
  reconcile fills) and places spot orders. It never needs a deposit address, so
  `deposit_address_read` is not required. Withdrawals and transfers are forbidden; margin,
  futures and options trading are flagged as broader than needed.
- `futures-trading`: `trading` plus futures trading and an opened futures account. Margin and
  options are flagged. Operators whose bots trade futures only define a profile without spot.
- `read-only`: portfolio trackers: balances and trade history. Every trading permission is
  flagged as broader than needed; withdrawals and transfers are forbidden.
- `market-making`: the three reads, spot trading, and an existing deposit address (USDT by
  default) to receive funds. A missing address is a warning finding, never the headline: the
  key itself is fine and the status contract lists it among the non-headline findings.

A flagged (excess) permission yields `permissions_broader_than_needed`: a warning with no
status, so it can never become the headline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keysentry.diagnosis.catalog import finding
from keysentry.domain import Finding, Permission
from keysentry.domain.permissions import FUNDS_OUT_PERMISSIONS, READ_PERMISSIONS

P = Permission
_LEVERAGED = frozenset({P.MARGIN_TRADE, P.FUTURES_TRADE, P.OPTIONS_TRADE})
_TRADING = frozenset({P.SPOT_TRADE}) | _LEVERAGED
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PAIR = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
_CURRENCY = re.compile(r"^[A-Z0-9]{1,20}$")
FIELDS = ("description", "extends", "required", "forbidden", "excess", "pairs", "deposit_currency", "futures")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the profile and field and how to fix it."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    required: frozenset[Permission]
    forbidden: frozenset[Permission] = frozenset()
    excess_flagged: frozenset[Permission] = frozenset()  # granted but unneeded: worth a notice
    pairs: tuple[str, ...] = ()  # "BASE/QUOTE" pairs that must be tradable
    deposit_currency: str | None = None  # a deposit address in it must exist
    needs_futures: bool = False

    def __post_init__(self) -> None:
        for a, b in (("required", "forbidden"), ("required", "excess"), ("forbidden", "excess")):
            both = _sets(self)[a] & _sets(self)[b]
            if both:
                raise ProfileError(f"profile {self.name!r}: {_values(both)} cannot be both {a} and {b}")
        if self.deposit_currency and P.DEPOSIT_ADDRESS_READ not in self.required:
            raise ProfileError(
                f"profile {self.name!r}: a profile that needs a deposit address must require deposit_address_read"
            )
        if self.needs_futures and P.FUTURES_TRADE not in self.required:
            raise ProfileError(
                f"profile {self.name!r}: a profile that needs futures must require futures_trade"
            )


def _sets(p: Profile) -> dict[str, frozenset[Permission]]:
    return {"required": p.required, "forbidden": p.forbidden, "excess": p.excess_flagged}


def _values(perms: Iterable[Permission]) -> str:
    return ", ".join(sorted(p.value for p in perms))


_BASIC_READS = frozenset({P.BALANCE_READ, P.TRADE_HISTORY_READ})

BUILTIN_PROFILES: Mapping[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="trading",
            description="Spot trading bots: read balances and trade history, place spot orders; "
            "no withdrawals or transfers.",
            required=_BASIC_READS | {P.SPOT_TRADE},
            forbidden=FUNDS_OUT_PERMISSIONS,
            excess_flagged=_LEVERAGED,
        ),
        Profile(
            name="futures-trading",
            description="Like trading, plus futures trading on an opened futures account.",
            required=_BASIC_READS | {P.SPOT_TRADE, P.FUTURES_TRADE},
            forbidden=FUNDS_OUT_PERMISSIONS,
            excess_flagged=frozenset({P.MARGIN_TRADE, P.OPTIONS_TRADE}),
            needs_futures=True,
        ),
        Profile(
            name="read-only",
            description="Portfolio tracking: read balances and trade history; any trading permission is "
            "flagged, withdrawals and transfers are forbidden.",
            required=_BASIC_READS,
            forbidden=FUNDS_OUT_PERMISSIONS,
            excess_flagged=_TRADING,
        ),
        Profile(
            name="market-making",
            description="Market making: the three reads, spot trading and an existing USDT deposit "
            "address (a missing address is a warning, not the headline).",
            required=READ_PERMISSIONS | {P.SPOT_TRADE},
            forbidden=FUNDS_OUT_PERMISSIONS,
            excess_flagged=_LEVERAGED,
            deposit_currency="USDT",
        ),
    )
}
DEFAULT_PROFILE = "trading"


def get_profile(name: str, custom: Mapping[str, Profile] | None = None) -> Profile:
    """The built-in or operator-defined profile called `name`."""
    profiles = {**BUILTIN_PROFILES, **(custom or {})}
    if name not in profiles:
        raise ProfileError(f"unknown profile {name!r}; available profiles: {', '.join(sorted(profiles))}")
    return profiles[name]


def load_profiles(data: Mapping[str, Any]) -> dict[str, Profile]:
    """Operator-defined profiles from configuration: name -> settings.

    Settings: `extends` (a built-in or another profile here), `required`, `forbidden`, `excess`
    (lists of permission names), `pairs` ("BASE/QUOTE"), `deposit_currency`, `futures` (bool),
    `description`. With `extends`, lists add to the base's, and a permission the profile lists
    itself overrides where the base put it (so `required: [transfer]` lifts an inherited ban);
    `deposit_currency` and `futures` replace the base's when given (`deposit_currency: null`
    drops it). `futures` defaults to whether futures_trade is required; `futures: true` adds
    futures_trade to the requirements, and a deposit currency adds deposit_address_read.
    """
    if not isinstance(data, Mapping):
        raise ProfileError(
            f"profiles must be a mapping of profile name to settings, not {type(data).__name__}"
        )
    specs: dict[str, Mapping[str, Any]] = {}
    for name, spec in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ProfileError(
                f"profile name {name!r} is not valid: use lowercase letters, digits, '-' and '_' (e.g. my-bot)"
            )
        if name in BUILTIN_PROFILES:
            raise ProfileError(
                f"profile {name!r} is built in and cannot be redefined; choose another name "
                f"and use 'extends: {name}' to build on it"
            )
        spec = {} if spec is None else spec
        if not isinstance(spec, Mapping):
            raise ProfileError(f"profile {name!r}: settings must be a mapping, not {type(spec).__name__}")
        unknown = sorted(str(k) for k in spec if k not in FIELDS)
        if unknown:
            raise ProfileError(
                f"profile {name!r}: unknown setting {', '.join(map(repr, unknown))}; "
                f"valid settings: {', '.join(FIELDS)}"
            )
        specs[name] = spec
    resolved: dict[str, Profile] = {}
    for name in specs:
        _resolve(name, specs, resolved, ())
    return resolved


def _resolve(
    name: str, specs: Mapping[str, Mapping[str, Any]], resolved: dict[str, Profile], chain: tuple[str, ...]
) -> Profile:
    if name in resolved:
        return resolved[name]
    if name in chain:
        raise ProfileError(
            f"profile {name!r}: 'extends' goes round in a circle: {' -> '.join((*chain, name))}"
        )
    spec = specs[name]
    base: Profile | None = None
    base_name = spec.get("extends")
    if base_name is not None:
        if base_name in BUILTIN_PROFILES:
            base = BUILTIN_PROFILES[base_name]
        elif isinstance(base_name, str) and base_name in specs:
            base = _resolve(base_name, specs, resolved, (*chain, name))
        else:
            available = ", ".join(sorted({*BUILTIN_PROFILES, *specs} - {name}))
            raise ProfileError(
                f"profile {name!r}: field 'extends': unknown profile {base_name!r}; available: {available}"
            )
    resolved[name] = _build(name, spec, base)
    return resolved[name]


def _build(name: str, spec: Mapping[str, Any], base: Profile | None) -> Profile:
    own = {f: _permissions(name, f, spec.get(f)) for f in ("required", "forbidden", "excess")}
    futures = spec.get("futures")
    if futures is not None and not isinstance(futures, bool):
        raise ProfileError(f"profile {name!r}: field 'futures' must be true or false, not {futures!r}")
    for a, b in (("required", "forbidden"), ("required", "excess"), ("forbidden", "excess")):
        both = own[a] & own[b]
        if both:
            raise ProfileError(f"profile {name!r}: {_values(both)} cannot be in both '{a}' and '{b}'")
    inherited = (
        _sets(base) if base else {"required": frozenset(), "forbidden": frozenset(), "excess": frozenset()}
    )
    # A permission the profile lists itself wins over where the base put it.
    mine = own["required"] | own["forbidden"] | own["excess"]
    sets = {f: (inherited[f] - mine) | own[f] for f in own}
    pairs = tuple(dict.fromkeys((*(base.pairs if base else ()), *_pairs(name, spec.get("pairs")))))
    deposit = base.deposit_currency if base and "deposit_currency" not in spec else None
    if spec.get("deposit_currency") is not None:
        deposit = _currency(name, spec["deposit_currency"])
    if futures is None:
        futures = (base.needs_futures if base else False) or P.FUTURES_TRADE in sets["required"]
    # Needing futures or a deposit address implies the permission that lets them be checked.
    implied = ({P.FUTURES_TRADE} if futures else set()) | ({P.DEPOSIT_ADDRESS_READ} if deposit else set())
    banned = implied & (own["forbidden"] | own["excess"])
    if banned:
        raise ProfileError(
            f"profile {name!r}: needing futures or a deposit address requires {_values(banned)}, which the "
            "profile bans; set 'futures: false' or 'deposit_currency: null' to ban it"
        )
    for f in ("forbidden", "excess"):
        sets[f] -= implied
    sets["required"] |= implied
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise ProfileError(f"profile {name!r}: field 'description' must be text")
    return Profile(
        name=name,
        description=description or (f"Based on {base.name}." if base else "Operator-defined profile."),
        required=sets["required"],
        forbidden=sets["forbidden"],
        excess_flagged=sets["excess"],
        pairs=pairs,
        deposit_currency=deposit,
        needs_futures=bool(futures),
    )


def _list(name: str, field: str, value: Any, example: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence | frozenset | set):
        raise ProfileError(f"profile {name!r}: field '{field}' must be a list, e.g. [{example}]")
    return list(value)


def _permissions(name: str, field: str, value: Any) -> frozenset[Permission]:
    out: set[Permission] = set()
    for item in _list(name, field, value, "balance_read, spot_trade"):
        try:
            out.add(Permission(item))
        except ValueError:
            valid = ", ".join(p.value for p in Permission)
            raise ProfileError(
                f"profile {name!r}: field '{field}': unknown permission {item!r}; valid permissions: {valid}"
            ) from None
    return frozenset(out)


def _pairs(name: str, value: Any) -> list[str]:
    out = []
    for item in _list(name, "pairs", value, "BTC/USDT, ETH/USDT"):
        pair = item.strip().upper() if isinstance(item, str) else ""
        if not _PAIR.match(pair):
            raise ProfileError(f"profile {name!r}: field 'pairs': {item!r} is not a pair such as BTC/USDT")
        out.append(pair)
    return out


def _currency(name: str, value: Any) -> str:
    code = value.strip().upper() if isinstance(value, str) else ""
    if not _CURRENCY.match(code):
        raise ProfileError(
            f"profile {name!r}: field 'deposit_currency': {value!r} is not a currency such as USDT"
        )
    return code


def evaluate_permissions(
    profile: Profile,
    granted: frozenset[Permission],
    *,
    exchange: str,
    futures_active: bool | None = None,
    tradable_pairs: frozenset[str] | None = None,
    deposit_addresses: Mapping[str, bool] | None = None,
    egress_ips: Sequence[str] = (),
) -> list[Finding]:
    """The findings `profile` yields for a key granting `granted`, most severe first.

    `futures_active`, `tradable_pairs` and `deposit_addresses` are None when the adapter could
    not tell; nothing is then concluded about them. Futures under a futures profile are judged
    apart from the other permissions: an account without futures (`futures_active` False) and a
    key without the futures permission are different fixes, so they give `inactive_futures`
    with reason account_not_opened or permission_missing, never `incorrect_permissions`.
    """
    found: list[Finding] = []
    common: dict[str, Any] = {"exchange": exchange, "profile": profile.name}
    forbidden = granted & profile.forbidden
    if forbidden:
        found.append(finding("withdrawal_enabled", forbidden_permissions=forbidden, **common))
    futures_checked = profile.needs_futures
    missing = profile.required - granted - ({P.FUTURES_TRADE} if futures_checked else set())
    if missing:
        found.append(
            finding("incorrect_permissions", missing_permissions=missing, egress_ips=egress_ips, **common)
        )
    if futures_checked and futures_active is False:
        found.append(finding("inactive_futures", reason="account_not_opened", **common))
    elif futures_checked and P.FUTURES_TRADE not in granted:
        found.append(finding("inactive_futures", reason="permission_missing", **common))
    excess = granted & profile.excess_flagged
    if excess:
        found.append(finding("permissions_broader_than_needed", excess_permissions=excess, **common))
    if tradable_pairs is not None and profile.pairs:
        tradable = {p.strip().upper() for p in tradable_pairs}
        blocked = [p for p in profile.pairs if p not in tradable]
        if blocked:
            found.append(finding("pair_not_tradable", pairs=blocked, **common))
    currency = profile.deposit_currency
    # Without the read permission the addresses could not be read: incorrect_permissions says so.
    if currency and deposit_addresses is not None and P.DEPOSIT_ADDRESS_READ in granted:
        present = {c.strip().upper() for c, exists in deposit_addresses.items() if exists}
        if currency not in present:
            found.append(finding("missing_deposit_address", currency=currency, **common))
    return found
