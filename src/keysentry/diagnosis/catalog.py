"""The catalogue of findings: for every cause, its stable code, contract status, severity, message and fix.

One place knows what each finding code means and how to fix it on each exchange; the engine,
the CLI, the API and docs/statuses.md all take their words from here. `finding()` builds a
`Finding` from a code, the exchange and structured details; `STATUS_TEXTS` explains each
headline status; `render_markdown()` writes docs/statuses.md:

    python -m keysentry.diagnosis.catalog --markdown > docs/statuses.md

Texts are templates (see `remedies.py` for how alternatives work). Details are checked
against the fields each code accepts, so a misspelt detail fails in tests instead of quietly
giving a vaguer text, and nothing that looks like a credential can be put into a finding.
"""

from __future__ import annotations

import argparse
import string
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Any

from keysentry.diagnosis.remedies import (
    AMBIGUOUS_REFUSAL,
    CLOCK_RULES,
    DISPLAY_NAMES,
    ENTRIES,
    EXCHANGE_TEXTS,
    KEY_FORMATS,
    KEY_ROTATION_DAYS,
    KNOWN_EXCHANGES,
    NO_IP_EXPIRY_DAYS,
    NO_IP_RULES,
    PERMISSION_SETTINGS,
    PERMISSION_WORDS,
    Alt,
    Entry,
    Texts,
)
from keysentry.domain import EXIT_CODES, PRECEDENCE, Finding, Permission, Severity, Status, severity_of
from keysentry.domain.secrets import ApiCredentials, Secret

# Details any code accepts: facts of the exchange's raw answer, and the profile that was applied.
COMMON_FIELDS = frozenset(
    {"exchange_code", "http_status", "egress_ip", "retry_after_s", "evidence", "profile"}
)


@dataclass(frozen=True, slots=True)
class StatusText:
    """How a headline status is shown to people: the API and the web page read this."""

    status: Status
    title: str
    meaning: str
    action: str
    severity: Severity
    colour: str


COLOURS: Mapping[Severity, str] = {
    Severity.ERROR: "red",
    Severity.WARNING: "orange",
    Severity.OK: "green",
    Severity.UNKNOWN: "grey",
}

CATALOG: Mapping[str, Entry] = {e.code: e for e in ENTRIES}

_NO_FINDING = {
    Status.CONNECTED: ("Connected", "The key works and has what the profile needs.", "Nothing."),
    Status.UNCHECKED: ("Not checked yet", "The key has not been checked yet.", "Run a check."),
}


def _status_text(status: Status) -> StatusText:
    if status in _NO_FINDING:
        title, meaning, action = _NO_FINDING[status]
    else:
        entry = CATALOG[status.value]
        title, meaning, action = entry.title, entry.meaning, entry.action
    severity = severity_of(status)
    return StatusText(status, title, meaning, action, severity, COLOURS[severity])


STATUS_TEXTS: Mapping[Status, StatusText] = {s: _status_text(s) for s in PRECEDENCE}


def all_codes() -> tuple[str, ...]:
    """Every finding code, headline causes first in contract order, then the notices."""
    return tuple(CATALOG)


def display_name(exchange: str) -> str:
    return DISPLAY_NAMES.get(exchange, exchange.capitalize())


def no_ip_expiry_days(exchange: str) -> int | None:
    """Days after which the exchange stops a key without an IP restriction, when it documents a rule."""
    return NO_IP_EXPIRY_DAYS.get(exchange)


# ---------------------------------------------------------------------------------------------------
# Building findings


_CACHE: dict[Any, Finding] = {}
_CACHE_SIZE = 4096
_PLAIN = frozenset({str, int, bool, type(None)})  # equal values of one of these kinds read alike


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a detail, equal only for details that render alike.

    The type stays in it, since 1, 1.0 and True are equal but read differently. Mappings and
    sequences keep their order (a finding keeps the order it was given); sets do not have one.
    """
    kind = type(value)
    if kind is float:
        return kind, value.hex()  # -0.0 == 0.0, yet they read apart
    if kind in _PLAIN or isinstance(value, Enum):
        return kind, value
    if isinstance(value, set | frozenset):
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and ((one := kinds.pop()) in _PLAIN or issubclass(one, Enum)):
            # Members of one such kind are equal only when they read alike, and a set keeps their
            # hashes: none is hashed again (an Enum member's hash is Python code).
            return one, frozenset(value)
        return frozenset, frozenset(map(_frozen, value))
    if isinstance(value, list | tuple):
        return tuple, tuple(map(_frozen, value))
    if isinstance(value, dict):
        return dict, tuple((k, _frozen(v)) for k, v in value.items())
    hash(value)  # raises for anything else unhashable: then the finding is simply not cached
    return kind, value


def finding(
    code: str,
    *,
    exchange: str,
    reason: str | None = None,
    egress_ips: Sequence[str] = (),
    **details: Any,
) -> Finding:
    """The Finding for these inputs, rendered once and then reused (a monitor sweep asks for the
    same few findings millions of times; rendering costs tens of µs). See `build_finding`."""
    try:
        key = (code, exchange, reason, tuple(egress_ips), *((k, _frozen(v)) for k, v in details.items()))
    except TypeError:
        return build_finding(code, exchange=exchange, reason=reason, egress_ips=egress_ips, **details)
    cached = _CACHE.get(key)
    if cached is None:
        cached = build_finding(code, exchange=exchange, reason=reason, egress_ips=egress_ips, **details)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = cached
    return cached


def build_finding(
    code: str,
    *,
    exchange: str,
    reason: str | None = None,
    egress_ips: Sequence[str] = (),
    **details: Any,
) -> Finding:
    """A Finding for `code` on `exchange`, with its message and numbered-ready remedy steps.

    `details` must be among the fields the code accepts (`CATALOG[code].fields`, plus
    error_code, http_status and profile); they are kept, JSON-ready, in `Finding.details`.
    Conventions: `offset_ms` is the exchange's clock minus keysentry's, as adapters measure it
    (positive: keysentry's clock is behind);
    permission lists take `Permission` values; times take aware datetimes.
    `egress_ips` are the addresses keysentry sends from: listed wherever whitelisting is the fix.

    For `ambiguous_refusal`, pass `candidates`: the possible statuses, most likely first (repeats
    are dropped). The finding's status is the first; `details.candidates` holds the rest;
    `reason` applies to the first.
    """
    entry = CATALOG.get(code)
    if entry is None:
        raise ValueError(f"unknown finding code {code!r}; known codes: {', '.join(all_codes())}")
    if not exchange or not exchange.isidentifier() or exchange != exchange.lower():
        raise ValueError(f"exchange must be a lowercase name such as 'binance', not {exchange!r}")
    if code == AMBIGUOUS_REFUSAL:
        return _ambiguous(exchange, reason, tuple(egress_ips), details)
    _check_reason(entry, reason)
    _check_details(entry, details, entry.fields)
    ctx = _context(exchange, details, tuple(egress_ips))
    return Finding(
        code=code,
        severity=_severity(entry, details),
        message=_with_error_code(_message(entry, exchange, reason, ctx), ctx),
        remedy=_remedy(entry, exchange, reason, ctx),
        status=entry.status,
        details=_details(reason, details, egress_ips),
    )


def _ambiguous(
    exchange: str, reason: str | None, egress_ips: tuple[str, ...], details: dict[str, Any]
) -> Finding:
    raw = details.pop("candidates", None)
    if isinstance(raw, str | Status) or not isinstance(raw, Iterable):
        raise ValueError("ambiguous_refusal needs candidates=[most likely status, next, ...]")
    # Several adapter causes may map to one status: keep each status once, where it first appears.
    candidates = list(dict.fromkeys(_candidate(c) for c in raw))
    if not candidates:
        raise ValueError("ambiguous_refusal needs candidates=[most likely status, next, ...]")
    likely, *rest = (CATALOG[c.value] for c in candidates)
    _check_reason(likely, reason)
    accepted = frozenset().union(*(CATALOG[c.value].fields for c in candidates))
    _check_details(CATALOG[AMBIGUOUS_REFUSAL], details, accepted)
    ctx = _context(exchange, details, egress_ips)
    ctx["likely"] = f"“{likely.title}”"
    if rest:
        ctx["candidates"] = ", ".join(f"“{e.title}”" for e in rest)
    own = _remedy(likely, exchange, reason, ctx)
    checks = tuple(
        f"If that does not help, check that {_pick(e.check, ctx, sentence=False) or e.title.lower()}."
        for e in rest
    )
    assert likely.status is not None
    return Finding(
        code=AMBIGUOUS_REFUSAL,
        severity=severity_of(likely.status),
        message=_with_error_code(_message(CATALOG[AMBIGUOUS_REFUSAL], exchange, None, ctx), ctx),
        remedy=own + checks,
        status=likely.status,
        details={
            **_details(reason, details, egress_ips),
            "likely": likely.code,
            "candidates": [e.code for e in rest],
        },
    )


def _candidate(value: object) -> Status:
    try:
        status: Status | None = Status(str(value))
    except ValueError:
        status = None
    if status is None or status.value not in CATALOG or severity_of(status) is not Severity.ERROR:
        usable = [s.value for s in PRECEDENCE if s.value in CATALOG and severity_of(s) is Severity.ERROR]
        raise ValueError(f"candidate {value!r} is not an error status; use one of: {', '.join(usable)}")
    return status


def _check_reason(entry: Entry, reason: str | None) -> None:
    if reason is not None and reason not in entry.reasons:
        valid = ", ".join(entry.reasons) or "none (this code takes no reason)"
        raise ValueError(f"{entry.code}: unknown reason {reason!r}; valid reasons: {valid}")


def _check_details(entry: Entry, details: Mapping[str, Any], accepted: frozenset[str]) -> None:
    for name, value in details.items():
        if isinstance(value, Secret | ApiCredentials):
            raise TypeError(f"{entry.code}: detail {name!r} holds a credential; findings never carry secrets")
        if name not in accepted | COMMON_FIELDS:
            valid = ", ".join(sorted(accepted | COMMON_FIELDS))
            raise ValueError(f"{entry.code}: unknown detail {name!r}; accepted details: {valid}")


def _severity(entry: Entry, details: Mapping[str, Any]) -> Severity:
    if entry.code == "server_time_offset" and _near_limit(details):
        return Severity.WARNING
    return entry.severity


def _near_limit(details: Mapping[str, Any]) -> bool:
    offset, window = details.get("offset_ms"), details.get("window_ms")
    if offset is None or not window:
        return False
    return abs(float(offset)) > float(window) / 2


def _chain(entry: Entry, exchange: str | None, reason: str | None) -> list[Texts]:
    """Texts from most to least specific: exchange and reason, reason, exchange, general."""
    own = EXCHANGE_TEXTS.get(entry.code, {}).get(exchange or "", {})
    keys = [(own, reason), (entry.texts, reason), (own, None), (entry.texts, None)]
    if reason is None:
        keys = keys[2:]
    return [texts for table, key in keys if (texts := table.get(key)) is not None]


def _message(entry: Entry, exchange: str | None, reason: str | None, ctx: Mapping[str, str]) -> str:
    for texts in _chain(entry, exchange, reason):
        if texts.message is not None and (text := _pick(texts.message, ctx)):
            return text
    raise AssertionError(f"{entry.code}: no message fits {sorted(ctx)}")  # the catalogue tests rule this out


def _remedy(
    entry: Entry, exchange: str | None, reason: str | None, ctx: Mapping[str, str]
) -> tuple[str, ...]:
    for texts in _chain(entry, exchange, reason):
        if texts.remedy is not None:
            steps = tuple(s for step in texts.remedy if (s := _pick(step, ctx)))
            if steps:
                return steps
    return ()


def _with_error_code(message: str, ctx: Mapping[str, str]) -> str:
    code = ctx.get("exchange_code")
    if code is None or code in message:
        return message
    return f"{message.removesuffix('.')} ({ctx['exchange_name']} error {code})."


@cache
def _fields(template: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _pick(alt: Alt, ctx: Mapping[str, str], *, sentence: bool = True) -> str | None:
    """The first alternative whose fields are all known, filled in; None when none fits."""
    for option in (alt,) if isinstance(alt, str) else alt:
        if _fields(option) <= ctx.keys():
            text = option.format_map(ctx)
            # keysentry is spelt in lowercase even at the start of a sentence.
            if sentence and not text.startswith("keysentry"):
                text = text[:1].upper() + text[1:]
            return text
    return None


# ---------------------------------------------------------------------------------------------------
# Details: what templates see (human words) and what the finding keeps (JSON-ready values)


def _context(exchange: str | None, details: Mapping[str, Any], egress_ips: tuple[str, ...]) -> dict[str, str]:
    ctx: dict[str, str] = {"exchange_name": display_name(exchange) if exchange else "the exchange"}
    ex = exchange or ""
    if ex in KEY_FORMATS:
        ctx["key_format"], ctx["secret_format"] = KEY_FORMATS[ex]
    if ex in CLOCK_RULES:
        ctx["window_rule"] = CLOCK_RULES[ex]
    ctx["futures_setting"] = settings_phrase(ex, [Permission.FUTURES_TRADE])
    rule_days = details.get("rule_days", NO_IP_EXPIRY_DAYS.get(ex))
    if ex in NO_IP_RULES and rule_days is not None:
        ctx["no_ip_rule"] = NO_IP_RULES[ex].format(rule_days=int(rule_days))
    if egress_ips:
        ctx["ips"] = _join(egress_ips)
    elif details.get("egress_ip"):
        ctx["ips"] = str(details["egress_ip"])
    profile = details.get("profile")
    ctx["profile_phrase"] = f"the “{profile}” profile" if profile else "this connection"
    ctx["max_age_days"] = str(int(details.get("max_age_days") or KEY_ROTATION_DAYS))
    for name, value in details.items():
        if value is None:
            continue
        derive = _DERIVED.get(name)
        if derive is not None:
            ctx.update(derive(ex, value))
        else:
            ctx[name] = _join(value) if isinstance(value, list | tuple | set | frozenset) else str(value)
    if _near_limit(details):
        ctx["near_limit"] = ", close to the limit"
    elif details.get("offset_ms") is not None and details.get("window_ms"):
        ctx["near_limit"] = ""
    return ctx


def _permissions(value: Any) -> list[Permission]:
    items = [value] if isinstance(value, str) else list(value)
    try:
        return sorted({Permission(p) for p in items})
    except ValueError:
        valid = ", ".join(p.value for p in Permission)
        raise ValueError(f"unknown permission in {items!r}; valid permissions: {valid}") from None


def settings_phrase(exchange: str, permissions: Iterable[Permission]) -> str:
    """The exchange's own setting names for these permissions, quoted, in order, without repeats."""
    table = PERMISSION_SETTINGS.get(exchange, {})
    names: list[str] = []
    for p in permissions:
        for name in table.get(p, (f"the permission for {PERMISSION_WORDS[p]}",)):
            label = name if name.startswith("the ") else f"“{name}”"
            if label not in names:
                names.append(label)
    return _join(names)


def _perm_fields(prefix: str) -> Callable[[str, Any], dict[str, str]]:
    def derive(exchange: str, value: Any) -> dict[str, str]:
        perms = _permissions(value)
        if not perms:
            return {}
        words = _join([PERMISSION_WORDS[p] for p in perms])
        return {prefix: words, f"{prefix}_settings": settings_phrase(exchange, perms)}

    return derive


def _offset(_: str, value: Any) -> dict[str, str]:
    ms = float(value)
    # The adapters measure the exchange's clock minus ours: positive means ours is behind.
    return {"offset": _seconds(abs(ms)), "direction": "behind" if ms > 0 else "ahead of"}


def _seconds(ms: float) -> str:
    s = ms / 1000
    if s >= 10 or s == int(s):
        return f"{s:.0f} s"
    return f"{s:.1f} s"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def _days(n: int) -> str:
    return "less than a day" if n < 1 else ("1 day" if n == 1 else f"{n} days")


def _day(value: Any) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else str(value)[:10]


def _moment(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else str(value)


_DERIVED: Mapping[str, Callable[[str, Any], dict[str, str]]] = {
    "missing_permissions": _perm_fields("missing"),
    "forbidden_permissions": _perm_fields("forbidden"),
    "excess_permissions": _perm_fields("excess"),
    "offset_ms": _offset,
    "window_ms": lambda _, v: {"window_rule": f"a difference of at most {_seconds(float(v))}"},
    "expires_at": lambda _, v: {"expires_on": _day(v)},
    "expired_at": lambda _, v: {"expired_on": _day(v)},
    "days": lambda _, v: {"days": _days(int(v))},
    "age_days": lambda _, v: {"age": _days(int(v))},
    "retry_after_s": lambda _, v: {"retry_after": _duration(float(v))},
    "until": lambda _, v: {"until": _moment(v)},
    "rule_days": lambda _, v: {},
    "max_age_days": lambda _, v: {},
}


def _join(items: Iterable[Any]) -> str:
    words = [str(i) for i in items]
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def _details(reason: str | None, details: Mapping[str, Any], egress_ips: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if reason is not None:
        out["reason"] = reason
    for name, value in details.items():
        out[name] = _jsonable(name, value)
    if egress_ips:
        out["egress_ips"] = list(egress_ips)
    return out


def _jsonable(name: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(_jsonable(name, v) for v in value)
    if isinstance(value, list | tuple):
        return [_jsonable(name, v) for v in value]
    raise TypeError(f"detail {name!r} has a {type(value).__name__}, which a finding cannot carry")


# ---------------------------------------------------------------------------------------------------
# docs/statuses.md


def render_markdown() -> str:
    """docs/statuses.md, from the catalogue and the built-in profiles (deterministic)."""
    # Imported here: profiles builds its findings through this module.
    from keysentry.diagnosis.profiles import BUILTIN_PROFILES, DEFAULT_PROFILE

    out: list[str] = [
        "# Connection statuses, findings and how to fix them",
        "",
        "<!-- Generated from src/keysentry/diagnosis/catalog.py and remedies.py; do not edit by hand.",
        "     Regenerate: python -m keysentry.diagnosis.catalog --markdown > docs/statuses.md -->",
        "",
        "Every check of a key yields one headline status plus all its findings. The headline is the most",
        "severe status among the findings, in the order of the table below; a check with no such finding",
        "is `connected`. Each finding has a stable `code`, a `severity`, a plain-words `message` and",
        "numbered `remedy` steps written for the exchange at hand. Notices (at the end) are always reported",
        "but never become the headline.",
        "",
        "Besides the details listed per finding, any finding may carry `reason`, `profile`, `exchange_code`,",
        "`http_status`, `egress_ip`, `egress_ips`, `retry_after_s` and `evidence`. Findings never carry secrets.",
        "",
        "| status | severity | exit code | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for status in PRECEDENCE:
        st = STATUS_TEXTS[status]
        out.append(f"| `{status.value}` | {st.severity.value} | {EXIT_CODES[st.severity]} | {st.meaning} |")
    out += ["", "## Statuses", ""]
    for status in PRECEDENCE:
        if status.value in CATALOG:
            out += _entry_markdown(CATALOG[status.value])
        else:
            st = STATUS_TEXTS[status]
            out += [f"### `{status.value}`: {st.title}", "", f"Severity: {st.severity.value}.", "",
                    f"{st.meaning} What to do: {st.action}", ""]  # fmt: skip
    out += ["## When the cause is not certain", ""]
    out += _entry_markdown(CATALOG[AMBIGUOUS_REFUSAL])
    out += ["## Notices", "", "These findings are always reported and never become the headline.", ""]
    for entry in ENTRIES:
        if entry.status is None and entry.code != AMBIGUOUS_REFUSAL:
            out += _entry_markdown(entry)
    out += [
        "## Requirement profiles",
        "",
        f"A profile says what a key must allow and must not allow. The default is `{DEFAULT_PROFILE}`.",
        "Operators can define their own (see `keysentry.diagnosis.profiles.load_profiles`).",
        "",
        "| profile | required | forbidden | flagged as broader than needed | also needs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in BUILTIN_PROFILES.values():
        needs = ["a futures account"] if p.needs_futures else []
        if p.deposit_currency:
            needs.append(f"a {p.deposit_currency} deposit address")
        if p.pairs:
            needs.append(f"tradable pairs {', '.join(p.pairs)}")
        out.append(
            f"| `{p.name}` | {_codes(p.required)} | {_codes(p.forbidden)} | {_codes(p.excess_flagged)} "
            f"| {', '.join(needs) or '-'} |"
        )
    out.append("")
    for p in BUILTIN_PROFILES.values():
        out += [f"- `{p.name}`: {p.description}"]
    out += ["", *_PROFILE_RULES]
    return "\n".join(out)


_PROFILE_RULES = (
    "How a profile judges a key:",
    "",
    "- a required permission missing: `incorrect_permissions`, listing them in `missing_permissions`;",
    "- futures under a profile that needs them: `inactive_futures`, with reason `account_not_opened` when the",
    "  account has no futures account, else `permission_missing` (different fixes, so never",
    "  `incorrect_permissions`);",
    "- a forbidden permission granted (withdrawals, transfers): `withdrawal_enabled`;",
    "- a flagged permission granted: `permissions_broader_than_needed`, a warning that never becomes the",
    "  headline;",
    "- a named pair the key may not trade: `pair_not_tradable`; no deposit address in the profile's currency:",
    "  `missing_deposit_address`. Both are warnings that never become the headline: the key itself is fine.",
    "",
    "An operator-defined profile, in configuration (lists add to the base's; a permission the profile",
    "lists itself overrides where the base put it):",
    "",
    "```yaml",
    "profiles:",
    "  grid-bot:",
    "    extends: trading",
    "    description: Grid bots on BTC and ETH",
    "    pairs: [BTC/USDT, ETH/USDT]",
    "  treasury-sweeper:",
    "    extends: read-only",
    "    required: [transfer]        # lifts the inherited ban on transfers",
    "    deposit_currency: USDC",
    "```",
    "",
    "Settings: `extends`, `description`, `required`, `forbidden`, `excess`, `pairs`, `deposit_currency`,",
    "`futures` (true adds `futures_trade` to the requirements; a `deposit_currency` adds",
    "`deposit_address_read`). Permissions: " + ", ".join(f"`{p.value}`" for p in Permission) + ".",
    "",
)


def _codes(perms: Iterable[Permission]) -> str:
    return ", ".join(f"`{p.value}`" for p in sorted(perms)) or "-"


def _entry_markdown(entry: Entry) -> list[str]:
    status = f"status `{entry.status.value}`" if entry.status else "never the headline"
    if entry.code == AMBIGUOUS_REFUSAL:
        status = "status: the most likely cause"
    out = [f"### `{entry.code}`: {entry.title}", "", f"Severity: {entry.severity.value}; {status}.", "",
           entry.meaning, ""]  # fmt: skip
    if entry.reasons:
        out += ["| reason | meaning |", "| --- | --- |"]
        out += [f"| `{r}` | {m} |" for r, m in entry.reasons.items()]
        out.append("")
    fields = sorted(entry.fields)
    if fields:
        out += [f"Details: {', '.join(f'`{f}`' for f in fields)}.", ""]
    if entry.signals:
        out += ["What the exchange answers:", ""]
        out += [f"- {display_name(ex)}: {text}" for ex, text in entry.signals.items()]
        out.append("")
    out += ["How to fix it, on any exchange:", ""]
    out += _steps(entry, None, None)
    for reason in entry.reasons:
        if reason in entry.texts:
            out += [f"When the reason is `{reason}`:", "", *_steps(entry, None, reason)]
    for exchange in KNOWN_EXCHANGES:
        own = EXCHANGE_TEXTS.get(entry.code, {}).get(exchange, {})
        for own_reason in own:
            label = f", when the reason is `{own_reason}`" if own_reason else ""
            out += [f"On {display_name(exchange)}{label}:", "", *_steps(entry, exchange, own_reason)]
    return out


def _steps(entry: Entry, exchange: str | None, reason: str | None) -> list[str]:
    ctx = _context(exchange, {}, ())
    lines = [f"{i}. {step}" for i, step in enumerate(_remedy(entry, exchange, reason, ctx), 1)]
    message = _message(entry, exchange, reason, ctx)
    return [f"> {message}", "", *lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keysentry.diagnosis.catalog", description="Print the catalogue of findings."
    )
    parser.add_argument("--markdown", action="store_true", help="print docs/statuses.md")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.print_usage(sys.stderr)
        return 3
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
