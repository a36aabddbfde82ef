"""What each exchange calls things and the fix steps that differ per exchange.

Pure data, read by `catalog.py`. Texts are templates: `{name}` is filled from the finding's
details (see `catalog.finding`). A text given as a tuple lists alternatives, most specific
first; the first one whose fields are all known is used, and a remedy step none of whose
alternatives can be filled is left out. So every tuple ends with a variant that needs only
the fields always known (`exchange_name` and the exchange-derived ones).

Menu and setting names are only quoted where the exchange's documentation or API shows them
(the API's own field names, `shared/reference/exchange-api.md`); elsewhere the text stays
generic rather than guess a label the user will not find.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keysentry.domain import Permission, Severity, Status, severity_of

Alt = str | tuple[str, ...]

KEY_ROTATION_DAYS = 90
AMBIGUOUS_REFUSAL = "ambiguous_refusal"

KNOWN_EXCHANGES: tuple[str, ...] = ("binance", "okx", "bybit", "kucoin")

DISPLAY_NAMES: Mapping[str, str] = {
    "binance": "Binance",
    "okx": "OKX",
    "bybit": "Bybit",
    "kucoin": "KuCoin",
    "coinbase": "Coinbase",
    "kraken": "Kraken",
    "gate": "Gate",
    "bitget": "Bitget",
    "mexc": "MEXC",
}


@dataclass(frozen=True, slots=True)
class Texts:
    """A message and remedy steps; None means "use the less specific text"."""

    message: Alt | None = None
    remedy: tuple[Alt, ...] | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """Everything the catalogue knows about one finding code."""

    code: str
    status: Status | None  # None: a notice that never becomes the headline
    severity: Severity
    title: str
    meaning: str  # one plain sentence, no placeholders (docs, STATUS_TEXTS)
    action: str  # what to do, in general, in one sentence
    texts: Mapping[str | None, Texts]  # general texts by reason (None: default)
    reasons: Mapping[str, str] = field(default_factory=dict)  # reason -> what it means
    fields: frozenset[str] = frozenset()  # accepted details besides COMMON_FIELDS
    check: Alt = ""  # how to rule this cause out when it is one candidate of several
    signals: Mapping[str, str] = field(default_factory=dict)  # exchange -> what it answers


# The shared key formats the simulators enforce and the credential checks rely on: (api key, secret).
KEY_FORMATS: Mapping[str, tuple[str, str]] = {
    "binance": ("64 letters and digits", "64 letters and digits"),
    "okx": (
        "36 characters of lowercase hex digits and dashes (8-4-4-4-12)",
        "32 uppercase hex digits",
    ),
    "bybit": ("18 letters and digits", "36 letters and digits"),
    "kucoin": (
        "24 lowercase hex digits",
        "36 characters of lowercase hex digits and dashes (8-4-4-4-12)",
    ),
}

# How far a request's timestamp may be from the exchange's clock (reference, "Timestamp unit / window").
CLOCK_RULES: Mapping[str, str] = {
    "binance": "requests at most 1 s ahead of its clock and at most the receive window (5 s by default) behind",
    "okx": "a difference of at most 30 s either way",
    "bybit": "requests at most 1 s ahead of its clock and at most the receive window (5 s by default) behind",
    "kucoin": "a difference of at most 5 s either way",
}

# Days after which a key without an IP restriction stops working. Binance's 30 days is its 2021
# announcement (a 90-day figure circulates but no source shows it): callers may pass rule_days.
NO_IP_EXPIRY_DAYS: Mapping[str, int] = {"binance": 30, "okx": 14, "bybit": 90}

NO_IP_RULES: Mapping[str, str] = {
    "binance": "Binance turns off spot and margin trading on such keys {rule_days} days after it was enabled.",
    "okx": "OKX deletes such keys after {rule_days} days without use when they can trade or withdraw.",
    "bybit": "Bybit invalidates such keys {rule_days} days after creation, and 7 days after a password change.",
}

_READS = (Permission.BALANCE_READ, Permission.TRADE_HISTORY_READ, Permission.DEPOSIT_ADDRESS_READ)
_TRADES = (Permission.SPOT_TRADE, Permission.MARGIN_TRADE, Permission.FUTURES_TRADE, Permission.OPTIONS_TRADE)

# The exchange's own name for the setting that grants a unified permission. A permission missing
# here is named generically ("the permission for options trading").
PERMISSION_SETTINGS: Mapping[str, Mapping[Permission, tuple[str, ...]]] = {
    "binance": {
        **{p: ("Enable Reading",) for p in _READS},
        Permission.SPOT_TRADE: ("Enable Spot & Margin Trading",),
        Permission.MARGIN_TRADE: ("Enable Margin Loan, Repay & Transfer",),
        Permission.FUTURES_TRADE: ("Enable Futures",),
        Permission.WITHDRAW: ("Enable Withdrawals",),
        Permission.TRANSFER: ("Permits Universal Transfer", "Enable Internal Transfer"),
    },
    "okx": {
        **{p: ("Read",) for p in _READS},
        **{p: ("Trade",) for p in _TRADES},
        Permission.WITHDRAW: ("Withdraw",),
    },
    "bybit": {
        Permission.SPOT_TRADE: ("SPOT: Trade",),
        Permission.FUTURES_TRADE: ("Contracts: Orders and Positions", "Unified Trading: Trade"),
        Permission.OPTIONS_TRADE: ("Options: Trade",),
        Permission.WITHDRAW: ("Wallet: Withdrawal",),
        Permission.TRANSFER: ("Wallet: Account Transfer", "Wallet: Subaccount Transfer"),
    },
    "kucoin": {
        **{p: ("General",) for p in _READS},
        Permission.SPOT_TRADE: ("Spot Trading",),
        Permission.MARGIN_TRADE: ("Margin Trading",),
        Permission.FUTURES_TRADE: ("Futures Trading",),
        Permission.WITHDRAW: ("Withdrawal",),
        Permission.TRANSFER: ("Transfer",),
    },
}

PERMISSION_WORDS: Mapping[Permission, str] = {
    Permission.BALANCE_READ: "reading balances",
    Permission.TRADE_HISTORY_READ: "reading trade history",
    Permission.DEPOSIT_ADDRESS_READ: "reading deposit addresses",
    Permission.SPOT_TRADE: "spot trading",
    Permission.MARGIN_TRADE: "margin trading",
    Permission.FUTURES_TRADE: "futures trading",
    Permission.OPTIONS_TRADE: "options trading",
    Permission.WITHDRAW: "withdrawals",
    Permission.TRANSFER: "transfers out of the account",
}

# Where whitelisting is the fix: the exact page per exchange, with the addresses to add.
_NO_IPS = "the IP addresses keysentry sends from"
WHITELIST_STEP: Mapping[str | None, Alt] = {
    "binance": tuple(
        "On Binance, open API Management, choose Edit restrictions on this key, select "
        f"“Restrict access to trusted IPs only” and add {ips}."
        for ips in ("{ips}", _NO_IPS)
    ),
    "okx": tuple(
        f"On OKX, open API, edit this key and add {ips} to its IP addresses (up to 20 per key)."
        for ips in ("{ips}", _NO_IPS)
    ),
    "bybit": tuple(
        f"On Bybit, open API Management, choose Edit on this key and add {ips} under IP restriction."
        for ips in ("{ips}", _NO_IPS)
    ),
    "kucoin": tuple(
        f"On KuCoin, open API Management, edit this key and add {ips} to its IP restriction."
        for ips in ("{ips}", _NO_IPS)
    ),
    None: tuple(
        f"On {{exchange_name}}'s API management page, edit this key and add {ips} to its IP whitelist."
        for ips in ("{ips}", _NO_IPS)
    ),
}

UPDATE_STEP = (
    "Update this connection with the new key rather than adding a new connection: "
    "its history and running bots are kept."
)

_ENVIRONMENT_STEP: Alt = (
    "Create the key on the site and environment this connection uses ({checked_in}), "
    "or connect this key to {found_in} if your operator serves it.",
    "Create the key on the site and environment this connection uses ({checked_in}).",
    "Create the key on the site and environment this connection uses.",
)

ENVIRONMENT_REMEDIES: Mapping[str | None, tuple[Alt, ...]] = {
    "binance": (
        "Keys from the Binance Spot Testnet work only on the testnet, and Binance.US keys only on "
        "Binance.US: neither works on binance.com, nor the other way round.",
        _ENVIRONMENT_STEP,
    ),
    "okx": (
        "OKX demo-trading keys work only in demo trading, and live keys only live (OKX error 50101).",
        "Accounts registered on my.okx.com (EEA) or app.okx.com (US) are checked against that site: "
        "their keys are unknown on www.okx.com (OKX error 50119).",
        _ENVIRONMENT_STEP,
    ),
    "bybit": (
        "Bybit has four separate environments (mainnet, testnet, mainnet demo, testnet demo) and "
        "regional sites (such as bybit.eu, bybit.nl, bybit.tr, bybit.kz): a key works only where it was made.",
        _ENVIRONMENT_STEP,
    ),
    None: (_ENVIRONMENT_STEP,),
}

_NEW_KEY_IF_LOCKED = (
    "If {exchange_name} does not let you change the permissions of an existing key, create a new key "
    "with the right ones and update this connection with it."
)
_TRUSTED_IPS_FIRST: Alt = tuple(
    "If Binance asks for trusted IPs before it allows a trading permission, select "
    f"“Restrict access to trusted IPs only” and add {ips}."
    for ips in ("{ips}", _NO_IPS)
)


# General texts, by code, in contract order; notices after the headline causes.

_KEPT = "the last known state is kept and the key is not marked invalid."


def _E(
    code: str, *, title: str, meaning: str, action: str, texts: Mapping[str | None, Texts], **kw: Any
) -> Entry:
    status = Status(code) if code in {s.value for s in Status} else None
    severity = kw.pop("severity", None) or (severity_of(status) if status else Severity.WARNING)
    return Entry(code, status, severity, title, meaning, action, texts, **kw)


ENTRIES: tuple[Entry, ...] = (
    _E(
        "invalid_key",
        title="Invalid key",
        meaning="The exchange does not accept the API key itself: it does not exist, was deleted, is "
        "malformed, is not activated, or belongs to another site or environment.",
        action="Check the key on the exchange's API page, copy it again, or create a new key.",
        reasons={
            "unknown": "the exchange does not know the key (the default)",
            "deleted": "the key was deleted, by hand or by the exchange after a period without use",
            "malformed": "the pasted text is not shaped like a key of this exchange",
            "not_activated": "the key exists but was never activated",
            "wrong_environment": "the key belongs to another environment (testnet, demo) or regional site",
        },
        fields=frozenset({"found_in", "checked_in"}),
        check="the key is still listed on {exchange_name}'s API page and was copied whole",
        signals={
            "binance": "-2014 “API-key format invalid.”; -2015 (also given for IP and permission refusals)",
            "okx": "50111 “Invalid OK-ACCESS-KEY”; 50119 (unknown on this site); 50101 (other environment)",
            "bybit": "10003 “API key is invalid.”",
            "kucoin": "400003 “KC-API-KEY not exists”",
        },
        texts={
            None: Texts(
                message="{exchange_name} does not know this API key: it may have been mistyped, deleted, or "
                "made on another site or environment of {exchange_name}.",
                remedy=(
                    "Open {exchange_name}'s API management page and check that the key is still listed and "
                    "active.",
                    "Copy the key again with the page's copy button and paste it without spaces; turn off "
                    "page translation.",
                    (
                        "Make sure the key was made on the site and environment this "
                        "connection uses ({checked_in}).",
                        "Make sure the key was made on the site and environment this connection uses.",
                    ),
                    "If the key is no longer listed, create a new one and update this connection with it.",
                ),
            ),
            "deleted": Texts(
                message="This API key no longer exists on {exchange_name}: it was deleted, by hand or by "
                "{exchange_name} after a period without use.",
                remedy=(
                    (
                        "Create a new key on {exchange_name} with the permissions this connection needs, "
                        "restricted to {ips} so it does not lapse.",
                        "Create a new key on {exchange_name} with the permissions this connection needs, "
                        f"restricted to {_NO_IPS} so it does not lapse.",
                    ),
                    UPDATE_STEP,
                ),
            ),
            "malformed": Texts(
                message=(
                    "This is not a {exchange_name} API key: a {exchange_name} API key is {key_format}.",
                    "The pasted text is not shaped like an API key of {exchange_name}.",
                ),
                remedy=(
                    "Copy the API key again with the copy button on {exchange_name}'s API page and paste it "
                    "into the key field, not the secret field.",
                    "Turn off page translation and remove spaces and line breaks: one changed character "
                    "makes a key unusable.",
                ),
            ),
            "not_activated": Texts(
                message="This API key exists on {exchange_name} but has not been activated.",
                remedy=(
                    "Finish creating the key on {exchange_name}: confirm the e-mail or security check it "
                    "asked for.",
                    "Check again once {exchange_name} shows the key as active.",
                ),
            ),
            "wrong_environment": Texts(
                message=(
                    "This key was made for {exchange_name} {found_in}, but this connection uses {checked_in}.",
                    "This key belongs to another environment or site of {exchange_name} than the one this "
                    "connection uses ({checked_in}).",
                    "This key belongs to another environment or site of {exchange_name} than the one this "
                    "connection uses.",
                ),
                remedy=ENVIRONMENT_REMEDIES[None],
            ),
        },
    ),
    _E(
        "secret_mismatch",
        title="Secret does not match",
        meaning="The API key exists, but the secret given with it does not belong to it: a typo, a "
        "truncated copy, or the secret of another key.",
        action="Paste the secret of this very key again, or create a new key.",
        check="the secret belongs to this very key",
        signals={
            "binance": "-1022 “Signature for this request is not valid.”",
            "okx": "50113 “Invalid signature.”",
            "bybit": "10004 “error sign!”",
            "kucoin": "400005 “Signature error”",
        },
        texts={
            None: Texts(
                message="{exchange_name} knows this API key, but the secret given with it does not match.",
                remedy=(
                    "Copy the secret again from where you saved it when the key was created, whole and "
                    "without spaces (turn off page translation).",
                    (
                        "A {exchange_name} secret is {secret_format}; make sure the API key was not pasted "
                        "into the secret field, and that both come from the same key.",
                        "Make sure the API key was not pasted into the secret field, and that key and secret "
                        "come from the same key.",
                    ),
                    "Most exchanges show the secret only once: if you no longer have it, create a new key "
                    "and update this connection with it.",
                ),
            )
        },
    ),
    _E(
        "passphrase_invalid",
        title="Wrong passphrase",
        meaning="The key and secret are right but the API passphrase is not. It is the passphrase typed "
        "when the key was created (OKX, KuCoin), not the account password.",
        action="Enter the passphrase set when the key was created, or create a new key.",
        fields=frozenset({"key_version"}),
        check="the passphrase is the one set for this key",
        signals={
            "okx": "50105 “Request header OK-ACCESS-PASSPHRASE incorrect.”",
            "kucoin": "400004 “KC-API-PASSPHRASE error”",
        },
        texts={
            None: Texts(
                message="{exchange_name} rejected the API passphrase given with this key.",
                remedy=(
                    "Enter the passphrase you chose when you created this API key; it is not your login "
                    "password.",
                    "Passphrases are case-sensitive: check the keyboard layout and that no space was added.",
                    "A lost passphrase cannot be shown again: create a new key and update this connection "
                    "with it.",
                ),
            )
        },
    ),
    _E(
        "clock_skew",
        title="Clock out of sync",
        meaning="The clock where keysentry runs and the exchange's clock differ by more than the exchange "
        "accepts, so it rejects every signed request. Nothing is known to be wrong with the key.",
        action="Synchronise the clock of the machine that runs keysentry (NTP).",
        fields=frozenset({"offset_ms", "window_ms"}),
        check="the clock where keysentry runs is synchronised",
        signals={
            "binance": "-1021 “Timestamp for this request is outside of the recvWindow.”",
            "okx": "50102 “Timestamp request expired.”",
            "bybit": "10002 “invalid request, please check your server timestamp or recv_window param”",
            "kucoin": "400002 “KC-API-TIMESTAMP Invalid”",
        },
        texts={
            None: Texts(
                message=(
                    "The clock of the machine running keysentry is {offset} {direction} {exchange_name}'s; "
                    "{exchange_name} accepts {window_rule}.",
                    "The clock of the machine running keysentry is {offset} {direction} {exchange_name}'s, "
                    "more than {exchange_name} accepts.",
                    "{exchange_name} rejected the request time: the clock of the machine running keysentry "
                    "is out of step with it ({exchange_name} accepts {window_rule}).",
                    "{exchange_name} rejected the request time: the clock of the machine running keysentry "
                    "is out of step with it.",
                ),
                remedy=(
                    "This is fixed where keysentry runs, not on {exchange_name}: turn on time "
                    "synchronisation (NTP), for example with `timedatectl set-ntp true` or chrony.",
                    "In a container or virtual machine, synchronise the host's clock.",
                    "Check again: the key itself could not be tested while the clocks disagree.",
                ),
            )
        },
    ),
    _E(
        "ip_not_allowed",
        title="IP not allowed",
        meaning="The key is bound to a list of IP addresses (a whitelist) and the address keysentry sends "
        "from is not on it.",
        action="Add keysentry's egress IP addresses to the key's IP whitelist.",
        fields=frozenset({"egress_ip", "whitelist"}),
        check=(
            "the key's IP whitelist includes {ips}",
            "the key's IP whitelist includes the addresses keysentry sends from",
        ),
        signals={
            "binance": "-2015 on a key restricted to trusted IPs (ipRestrict true)",
            "okx": "50110 “Your IP … is not included in your API key's IP whitelist.”",
            "bybit": "10010 “Unmatched IP, please check your API key's bound IP addresses.”",
            "kucoin": "400006 “The IP address is not in the API whitelist”",
        },
        texts={
            None: Texts(
                message=(
                    "This key accepts requests only from its whitelisted addresses ({whitelist}); keysentry "
                    "sent from {egress_ip}, which is not among them.",
                    "This key accepts requests only from its whitelisted addresses, and keysentry's address "
                    "{egress_ip} is not among them.",
                    "This key accepts requests only from its whitelisted IP addresses, and keysentry's "
                    "address is not among them.",
                ),
                remedy=(WHITELIST_STEP[None], "Keep the addresses your bots send from on it too."),
            )
        },
    ),
    _E(
        "expired",
        title="Expired",
        meaning="The key, or its permission to trade, has expired.",
        action="Create a new key (restricted to keysentry's IPs so it does not expire) and update the "
        "connection.",
        reasons={
            "key": "the key itself expired (the default)",
            "trading_authority": "Binance: the key's spot and margin trading permission lapsed because the "
            "key has no trusted IPs",
        },
        fields=frozenset({"expired_at"}),
        check="the key and its trading permission have not expired",
        signals={
            "binance": "tradingAuthorityExpirationTime in the past; then -2015 on trading",
            "okx": "the key is deleted: 50111 or 50119",
            "bybit": "33004 “Your api key has expired”; expiredAt in the past",
        },
        texts={
            None: Texts(
                message=("This API key expired on {expired_on}.", "This API key has expired."),
                remedy=(
                    (
                        "Create a new key on {exchange_name} with the permissions this connection needs, "
                        "restricted to {ips} where {exchange_name} allows it.",
                        "Create a new key on {exchange_name} with the permissions this connection needs, "
                        f"restricted to {_NO_IPS} where {{exchange_name}} allows it.",
                    ),
                    UPDATE_STEP,
                    "Delete the expired key on {exchange_name}.",
                ),
            ),
            "trading_authority": Texts(
                message=(
                    "The key's permission to trade expired on {expired_on}.",
                    "The key's permission to trade has expired.",
                ),
                remedy=(WHITELIST_STEP[None], "Then turn the trading permission on again for this key."),
            ),
        },
    ),
    _E(
        "account_restricted",
        title="Account restricted",
        meaning="The exchange restricts the account itself, so no key of it can work; `reason` says why.",
        action="Resolve the restriction with the exchange (verification, agreement, or its support).",
        reasons={
            "frozen": "the exchange froze the account or its trading",
            "banned": "the exchange banned the account",
            "api_disabled": "API access is disabled for the account",
            "kyc_required": "identity verification (KYC) must be completed or renewed",
            "region_restricted": "the exchange does not serve the account's region, or the region "
            "keysentry connects from",
            "agreement_pending": "an API or product agreement waits to be accepted",
        },
        fields=frozenset({"egress_ip"}),
        check="the account has no freeze, pending verification or agreement waiting on {exchange_name}",
        signals={
            "binance": "-2010 (may not place orders), -2017 (API keys locked), HTTP 451 (restricted "
            "location), -13007 (agreement not signed)",
            "okx": "50100 (API frozen), 50007/50012/50027/50029 (account), 50060 (KYC), 50051/50121 (region)",
            "bybit": "10008/10027 (banned), 10009 (region), 10024 (compliance)",
            "kucoin": "411100 (frozen), 400303 (KYC), 400500 (region), 400700 (risk control)",
        },
        texts={
            None: Texts(
                message="{exchange_name} restricts this account, so no API key of it can work for now.",
                remedy=(
                    "Log in to {exchange_name} and read the notices and e-mails about your account.",
                    "Do what they ask, or contact the support of {exchange_name}: no change to the key can lift an "
                    "account restriction.",
                ),
            ),
            "frozen": Texts(
                message="{exchange_name} has frozen this account or its trading.",
                remedy=(
                    "Log in to {exchange_name} and read the notices and e-mails about your account.",
                    "Contact the support of {exchange_name} to lift the freeze: no change to the key can fix it.",
                ),
            ),
            "banned": Texts(
                message="{exchange_name} has banned this account.",
                remedy=(
                    "Log in to {exchange_name} and read the notices and e-mails about your account.",
                    "Only the support of {exchange_name} can review a ban; a new key of the same account will not "
                    "work.",
                ),
            ),
            "api_disabled": Texts(
                message="{exchange_name} has disabled API access for this account.",
                remedy=(
                    "Contact the support of {exchange_name} and ask them to enable API access again.",
                    "A new key of the same account will not work until they do.",
                ),
            ),
            "kyc_required": Texts(
                message="{exchange_name} asks you to complete or renew identity verification (KYC) before "
                "this account can use the API.",
                remedy=(
                    "Log in to {exchange_name}, open identity verification and complete what it asks for; "
                    "an expired ID document counts too.",
                    "Check again once {exchange_name} confirms the verification.",
                ),
            ),
            "region_restricted": Texts(
                message=(
                    "{exchange_name} does not serve the region of this account or of keysentry's address "
                    "{egress_ip}.",
                    "{exchange_name} does not serve the region of this account or of the address keysentry "
                    "connects from.",
                ),
                remedy=(
                    "If {exchange_name} refuses every request, even public ones, the block is about where "
                    "keysentry runs: the operator must send from an address in a served region.",
                    "If it is about your account's country, {exchange_name}'s terms say which regions are "
                    "served; no change to the key can fix it.",
                ),
            ),
            "agreement_pending": Texts(
                message="{exchange_name} is waiting for you to accept an agreement before this key can be "
                "used.",
                remedy=(
                    "Log in to {exchange_name} and accept the agreement or terms it shows, on the API "
                    "management page or the product's page.",
                    "Check again afterwards.",
                ),
            ),
        },
    ),
    _E(
        "already_connected",
        title="Already connected",
        meaning="This exchange account is already connected; the same account can be connected only once.",
        action="Update the existing connection instead of adding a new one.",
        fields=frozenset({"connection_id", "label", "account_id"}),
        check="this account is not connected already",
        texts={
            None: Texts(
                message=(
                    "This account on {exchange_name} is already connected as “{label}” ({connection_id}).",
                    "This account on {exchange_name} is already connected as “{label}”.",
                    "This account on {exchange_name} is already connected ({connection_id}).",
                    "This account on {exchange_name} is already connected.",
                ),
                remedy=(
                    (
                        "To use this key for that account, update the connection “{label}” with it instead "
                        "of adding a new one: its history and running bots are kept.",
                        "To use this key for that account, update the existing connection with it instead "
                        "of adding a new one: its history and running bots are kept.",
                    ),
                    "If you meant another account or a sub-account, create the key while logged in to that "
                    "account.",
                ),
            )
        },
    ),
    _E(
        "withdrawal_enabled",
        title="Withdrawal enabled",
        meaning="The key can withdraw or transfer funds out of the account, which the profile forbids: "
        "whoever obtains the key could take the funds.",
        action="Turn off withdrawal and transfer permissions on the key.",
        fields=frozenset({"forbidden_permissions"}),
        check="the key cannot withdraw or transfer funds",
        signals={
            "binance": "apiRestrictions: enableWithdrawals, enableInternalTransfer or permitsUniversalTransfer",
            "okx": "account/config perm contains withdraw",
            "bybit": "query-api permissions.Wallet lists withdrawal or transfers",
            "kucoin": "api-key permission lists Transfer or InnerTransfer",
        },
        texts={
            None: Texts(
                message=(
                    "This key allows {forbidden}, which {profile_phrase} forbids: anyone who obtained the "
                    "key could move your funds out.",
                    "This key can withdraw or transfer funds, which {profile_phrase} forbids: anyone who "
                    "obtained the key could move your funds out.",
                ),
                remedy=(
                    (
                        "On {exchange_name}'s API management page, edit this key and turn off "
                        "{forbidden_settings}.",
                        "On {exchange_name}'s API management page, edit this key and turn off withdrawals "
                        "and transfers.",
                    ),
                    _NEW_KEY_IF_LOCKED,
                ),
            )
        },
    ),
    _E(
        "incorrect_permissions",
        title="Incorrect permissions",
        meaning="A permission the profile needs is missing; `missing_permissions` lists them.",
        action="Turn on the missing permissions on the key.",
        fields=frozenset({"missing_permissions"}),
        check="the key has every permission this connection needs",
        signals={
            "binance": "apiRestrictions: enableSpotAndMarginTrading false; -2015 on a test order",
            "okx": "account/config perm lacks trade; 50120 or 50030",
            "bybit": "query-api readOnly 1 or a permission group empty; 10005",
            "kucoin": "api-key permission lacks Spot; 400007",
        },
        texts={
            None: Texts(
                message=(
                    "This key lacks permissions {profile_phrase} needs: {missing}.",
                    "This key lacks permissions {profile_phrase} needs.",
                ),
                remedy=(
                    (
                        "On {exchange_name}'s API management page, edit this key and turn on "
                        "{missing_settings}.",
                        "On {exchange_name}'s API management page, edit this key and turn on the missing "
                        "permissions.",
                    ),
                    _NEW_KEY_IF_LOCKED,
                ),
            )
        },
    ),
    _E(
        "inactive_futures",
        title="Inactive futures",
        meaning="The profile needs futures trading, but the account has no futures account opened or the "
        "key has no futures permission; `reason` says which.",
        action="Open the futures account and allow futures on the key.",
        reasons={
            "account_not_opened": "the account has no futures account opened yet",
            "permission_missing": "the key lacks the futures permission",
        },
        check="futures are opened on the account and allowed on the key",
        signals={
            "binance": "apiRestrictions: enableFutures false; account info isFutureEnabled false",
            "okx": "account/config acctLv 1 (spot mode); 51010 on futures orders",
            "bybit": "query-api: no contract or unified trading permission",
            "kucoin": "api-key permission lacks Futures",
        },
        texts={
            None: Texts(
                message="Futures trading is not available to this key, and {profile_phrase} needs it.",
                remedy=(
                    "Open the futures account on {exchange_name} if you have not yet.",
                    "Turn on {futures_setting} for this key.",
                    _NEW_KEY_IF_LOCKED,
                ),
            ),
            "account_not_opened": Texts(
                message="This account has no futures account opened on {exchange_name} yet, so no key of it "
                "can trade futures.",
                remedy=(
                    "Open a futures account on {exchange_name} (it may ask for a short quiz or an "
                    "agreement).",
                    "Then turn on {futures_setting} for this key; if the key does not offer it, create a new "
                    "key and update this connection with it.",
                ),
            ),
            "permission_missing": Texts(
                message="This key is not allowed to trade futures, and {profile_phrase} needs it.",
                remedy=(
                    "On {exchange_name}'s API management page, edit this key and turn on {futures_setting}.",
                    _NEW_KEY_IF_LOCKED,
                ),
            ),
        },
    ),
    _E(
        "temporary_issue",
        title="Temporary issue",
        meaning="The exchange could not answer (maintenance, rate limit, server error, timeout, network). "
        "The last known state is kept, nothing is marked invalid, and keysentry retries on its own.",
        action="Nothing: keysentry retries; look at the exchange's status page if it lasts.",
        reasons={
            "maintenance": "the exchange is under maintenance",
            "rate_limited": "the exchange asked keysentry to slow down",
            "ip_banned": "the exchange banned keysentry's address for a while for sending too much",
            "server_error": "the exchange answered with a server error",
            "timeout": "the exchange did not answer in time",
            "network": "keysentry could not reach the exchange",
            "unexpected": "the exchange gave an answer keysentry does not know",
        },
        fields=frozenset({"retry_after_s", "until"}),
        check="{exchange_name} is not under maintenance",
        signals={
            "binance": "HTTP 429 -1003, HTTP 418 (ban), 5xx, -1001/-1007/-1008, system status 1",
            "okx": "HTTP 429 50011/50013, 503 50001, 50026",
            "bybit": "10006, HTTP 403 “access too frequent”, 10016/10000",
            "kucoin": "HTTP 429 429000, 503, 500000",
        },
        texts={
            None: Texts(
                message=f"{{exchange_name}} could not answer just now; {_KEPT}",
                remedy=(
                    (
                        "Nothing to change on the key: keysentry checks again in about {retry_after}.",
                        "Nothing to change on the key: keysentry checks again on its own.",
                    ),
                    "If it lasts more than an hour, look at {exchange_name}'s status page or announcements.",
                ),
            ),
            "maintenance": Texts(
                message=(
                    f"{{exchange_name}} is under maintenance until {{until}}; {_KEPT}",
                    f"{{exchange_name}} is under maintenance; {_KEPT}",
                ),
                remedy=(
                    (
                        "Nothing to change on the key: keysentry checks again in about {retry_after}.",
                        "Nothing to change on the key: keysentry checks again on its own.",
                    ),
                    "{exchange_name}'s status page or announcements say when the maintenance ends.",
                ),
            ),
            "rate_limited": Texts(
                message=f"{{exchange_name}} asked keysentry to slow down (rate limit); {_KEPT}",
                remedy=(
                    (
                        "Nothing to change on the key: keysentry checks again in about {retry_after}.",
                        "Nothing to change on the key: keysentry checks again on its own.",
                    ),
                    "If it keeps happening, the operator should lower the check rate for {exchange_name}.",
                ),
            ),
            "ip_banned": Texts(
                message=(
                    f"{{exchange_name}} has banned keysentry's address until {{until}} for sending too many "
                    f"requests; {_KEPT}",
                    "{exchange_name} has banned keysentry's address for a while for sending too many "
                    f"requests; {_KEPT}",
                ),
                remedy=(
                    "Nothing to change on the key: keysentry waits out the ban and checks again.",
                    "The operator should lower the check rate: repeated bans last longer.",
                ),
            ),
            "server_error": Texts(message=f"{{exchange_name}} answered with a server error; {_KEPT}"),
            "timeout": Texts(message=f"{{exchange_name}} did not answer in time; {_KEPT}"),
            "unexpected": Texts(
                message=f"{{exchange_name}} gave an answer keysentry does not know; {_KEPT}",
                remedy=(
                    "Nothing to change on the key for now: keysentry checks again on its own.",
                    "If it persists, report it to the keysentry maintainers with the exchange's error code "
                    "shown here.",
                ),
            ),
            "network": Texts(
                message=f"keysentry could not reach {{exchange_name}}; {_KEPT}",
                remedy=(
                    "Nothing to change on the key: keysentry checks again on its own.",
                    "If it persists, check the network between keysentry and {exchange_name} (DNS, "
                    "firewall, proxy).",
                ),
            ),
        },
    ),
    _E(
        "expires_soon",
        title="Expires soon",
        meaning="The key works but will stop working soon; `expires_in_days` (and the detail `days`) says when.",
        action="Restrict the key to keysentry's IPs, or replace it before it expires.",
        reasons={
            "key": "the key itself expires (the default)",
            "trading_authority": "Binance: the key's spot and margin trading permission lapses because the "
            "key has no trusted IPs",
        },
        fields=frozenset({"days", "expires_at"}),
        signals={
            "binance": "apiRestrictions: tradingAuthorityExpirationTime ahead",
            "okx": "no field: 14 days without use, counted by keysentry",
            "bybit": "query-api: expiredAt, deadlineDay",
        },
        texts={
            None: Texts(
                message=(
                    "This key works, but it expires in {days} ({expires_on}).",
                    "This key works, but it expires in {days}.",
                    "This key works, but it expires on {expires_on}.",
                    "This key works, but it expires soon.",
                ),
                remedy=(
                    "Before then, create a new key on {exchange_name} with the same permissions and update "
                    "this connection with it.",
                    (
                        "If the expiry comes from a missing IP restriction, restrict the key to {ips}: on most "
                        "exchanges such keys do not expire.",
                        f"If the expiry comes from a missing IP restriction, restrict the key to {_NO_IPS}: "
                        "on most exchanges such keys do not expire.",
                    ),
                ),
            ),
        },
    ),
    _E(
        AMBIGUOUS_REFUSAL,
        title="Ambiguous refusal",
        meaning="The exchange refused the key with an error that does not say why (Binance gives -2015 "
        "alike for an unknown key, a refused IP and a missing permission). The status is then the most "
        "likely cause, and `candidates` lists the others, most likely first.",
        action="Follow the steps for the most likely cause, then rule out the others in order.",
        severity=Severity.ERROR,
        signals={"binance": "-2015 “Invalid API-key, IP, or permissions for action.”"},
        texts={
            None: Texts(
                message=(
                    "{exchange_name} refused the key with an error that does not say why, so the cause is "
                    "not certain. Most likely: {likely}. Otherwise, in order: {candidates}.",
                    "{exchange_name} refused the key with an error that does not say why, so the cause is "
                    "not certain. Most likely: {likely}.",
                    "{exchange_name} refused the key with an error that does not say why, so the cause is "
                    "not certain.",
                ),
                remedy=(
                    "Follow the steps for the most likely cause first.",
                    "If that does not help, rule out the other causes in the order given.",
                ),
            )
        },
    ),
    # Notices: always reported, never the headline.
    _E(
        "no_ip_restriction",
        title="No IP restriction",
        meaning="The key is not restricted to IP addresses: some exchanges expire such keys, and a leaked "
        "one works from anywhere.",
        action="Restrict the key to keysentry's egress IP addresses.",
        fields=frozenset({"expires_at", "rule_days"}),
        texts={
            None: Texts(
                message=(
                    "This key has no IP restriction, so anyone who obtains it can use it from anywhere. "
                    "{no_ip_rule} Under that rule it stops working on {expires_on}.",
                    "This key has no IP restriction, so anyone who obtains it can use it from anywhere. "
                    "{no_ip_rule}",
                    "This key has no IP restriction, so anyone who obtains it can use it from anywhere; it "
                    "stops working on {expires_on}.",
                    "This key has no IP restriction, so anyone who obtains it can use it from anywhere.",
                ),
                remedy=(WHITELIST_STEP[None], "Keep the addresses your bots send from on it too."),
            )
        },
    ),
    _E(
        "permissions_broader_than_needed",
        title="Permissions broader than needed",
        meaning="The key has permissions the profile does not need; they do not stop it working, but a "
        "leaked key could use them.",
        action="Turn off what the connection does not need.",
        fields=frozenset({"excess_permissions"}),
        texts={
            None: Texts(
                message=(
                    "This key has permissions {profile_phrase} does not need: {excess}. They do not stop it "
                    "working, but a leaked key could use them.",
                    "This key has permissions {profile_phrase} does not need. They do not stop it working, "
                    "but a leaked key could use them.",
                ),
                remedy=(
                    (
                        "On {exchange_name}'s API management page, edit this key and turn off "
                        "{excess_settings}.",
                        "On {exchange_name}'s API management page, edit this key and turn off what this "
                        "connection does not need.",
                    ),
                ),
            )
        },
    ),
    _E(
        "key_rotation_age",
        title="Key due for rotation",
        meaning=f"The key is older than the rotation age ({KEY_ROTATION_DAYS} days unless configured).",
        action="Replace the key with a new one and delete the old one.",
        fields=frozenset({"age_days", "max_age_days"}),
        texts={
            None: Texts(
                message=(
                    "This key is {age} old, past the {max_age_days}-day rotation age.",
                    "This key is older than the {max_age_days}-day rotation age.",
                ),
                remedy=(
                    (
                        "Create a new key on {exchange_name} with the same permissions, restricted to {ips}.",
                        "Create a new key on {exchange_name} with the same permissions and IP restriction.",
                    ),
                    UPDATE_STEP,
                    "Then delete the old key on {exchange_name}.",
                ),
            )
        },
    ),
    _E(
        "missing_deposit_address",
        title="Missing deposit address",
        meaning="The profile needs a deposit address in a currency and the account has none yet. Reported "
        "as a warning, never as the headline: the key itself is fine.",
        action="Create the deposit address on the exchange.",
        fields=frozenset({"currency"}),
        texts={
            None: Texts(
                message=(
                    "This account has no {currency} deposit address on {exchange_name} yet, and "
                    "{profile_phrase} needs one.",
                    "This account has no deposit address on {exchange_name} in the currency {profile_phrase} needs.",
                ),
                remedy=(
                    (
                        "On {exchange_name}, open the deposit page for {currency}, pick the network you use "
                        "and create the address.",
                        "On {exchange_name}, open the deposit page of the currency, pick the network you use "
                        "and create the address.",
                    ),
                    "Check again afterwards: the key itself needs no change.",
                ),
            )
        },
    ),
    _E(
        "pair_not_tradable",
        title="Pair not tradable",
        meaning="The key may not trade some pairs the profile names: delisted, closed to API trading, "
        "restricted in the account's region, or outside the key's symbol whitelist.",
        action="Check the exchange's announcements and the key's symbol whitelist, or choose other pairs.",
        fields=frozenset({"pairs"}),
        texts={
            None: Texts(
                message=(
                    "This key cannot trade {pairs} on {exchange_name}: the pair may be delisted, closed to "
                    "API trading, restricted in your region, or left out of the key's symbol whitelist.",
                    "This key cannot trade some pairs {profile_phrase} needs on {exchange_name}: they may be "
                    "delisted, closed to API trading, restricted in your region, or left out of the key's "
                    "symbol whitelist.",
                ),
                remedy=(
                    "Look for {exchange_name}'s announcements about the pair: delistings and API trading "
                    "restrictions are announced there.",
                    (
                        "If the key has a symbol whitelist, add {pairs} to it.",
                        "If the key has a symbol whitelist, add the pairs to it.",
                    ),
                    "If the pair is restricted in your region, no change to the key can fix it; choose "
                    "other pairs.",
                ),
            )
        },
    ),
    _E(
        "wrong_environment",
        title="Key of another environment",
        meaning="The key belongs to another environment or site of the exchange (testnet, demo trading, "
        "binance.us, an OKX or Bybit regional site) than the one checked.",
        action="Use a key of the environment the connection checks, or connect the key to its own.",
        fields=frozenset({"found_in", "checked_in"}),
        texts={
            None: Texts(
                message=(
                    "This key was made for {exchange_name} {found_in}, but this connection uses {checked_in}.",
                    "This key was made for {exchange_name} {found_in}.",
                    "This key belongs to another environment or site of {exchange_name}.",
                ),
                remedy=ENVIRONMENT_REMEDIES[None],
            )
        },
    ),
    _E(
        "server_time_offset",
        title="Clock offset",
        meaning="The measured difference between keysentry's clock and the exchange's, reported even "
        "within the accepted window; a warning once it passes half the window.",
        action="Keep time synchronisation on where keysentry runs.",
        severity=Severity.OK,
        fields=frozenset({"offset_ms", "window_ms"}),
        texts={
            None: Texts(
                message=(
                    "The clock of the machine running keysentry is {offset} {direction} {exchange_name}'s"
                    "{near_limit}; {exchange_name} accepts {window_rule}.",
                    "The clock of the machine running keysentry is {offset} {direction} {exchange_name}'s; "
                    "{exchange_name} accepts {window_rule}.",
                    "The clock of the machine running keysentry is {offset} {direction} {exchange_name}'s.",
                    "keysentry measured the difference between its clock and {exchange_name}'s.",
                ),
                remedy=(
                    "No action needed now; keep time synchronisation (NTP) on where keysentry runs so the "
                    "difference stays small.",
                ),
            )
        },
    ),
)


# code -> exchange -> reason (None: any reason without its own text) -> texts.
EXCHANGE_TEXTS: Mapping[str, Mapping[str, Mapping[str | None, Texts]]] = {
    "invalid_key": {
        "binance": {"wrong_environment": Texts(remedy=ENVIRONMENT_REMEDIES["binance"])},
        "okx": {
            "wrong_environment": Texts(remedy=ENVIRONMENT_REMEDIES["okx"]),
            "deleted": Texts(
                message="This API key no longer exists on OKX. OKX deletes keys that can trade or withdraw "
                "and have no IP address bound after 14 days without use.",
            ),
        },
        "bybit": {"wrong_environment": Texts(remedy=ENVIRONMENT_REMEDIES["bybit"])},
    },
    "secret_mismatch": {
        "binance": {
            None: Texts(
                remedy=(
                    "Copy the secret again from where you saved it, whole and without spaces "
                    "(turn off page translation).",
                    "A Binance secret is {secret_format}; make sure the API key was not pasted into the "
                    "secret field, and that both come from the same key.",
                    "Binance shows the secret only once, when the key is created: if you no longer have it, "
                    "delete the key, create a new one and update this connection with it.",
                )
            )
        },
    },
    "passphrase_invalid": {
        "okx": {
            None: Texts(
                remedy=(
                    "Enter the passphrase you typed when you created this API key on OKX; it is not your "
                    "login or fund password.",
                    "Passphrases are case-sensitive: check the keyboard layout and that no space was added.",
                    "OKX keeps only a hash of the passphrase and cannot show it: if it is lost, create a new "
                    "key and update this connection with it.",
                )
            )
        },
        "kucoin": {
            None: Texts(
                remedy=(
                    "Enter the API passphrase you set when you created this key on KuCoin; it is not your "
                    "login or trading password.",
                    "Passphrases are case-sensitive: check the keyboard layout and that no space was added.",
                    (
                        "If you are sure of the passphrase, check the key's API version: this connection "
                        "uses version {key_version}; keys created years ago are version 1.",
                        "If you are sure of the passphrase, check the key's API version: keys created years "
                        "ago are version 1, newer ones 2 or 3.",
                    ),
                    "A lost passphrase cannot be recovered: create a new key and update this connection.",
                )
            )
        },
    },
    "ip_not_allowed": {
        ex: {None: Texts(remedy=(WHITELIST_STEP[ex], "Keep the addresses your bots send from on it too."))}
        for ex in KNOWN_EXCHANGES
    },
    "expired": {
        "binance": {
            "trading_authority": Texts(
                message=(
                    "Binance turned off “Enable Spot & Margin Trading” on this key on {expired_on}: a key "
                    "without trusted IPs keeps that permission only for a limited time.",
                    "Binance turned off “Enable Spot & Margin Trading” on this key: a key without trusted "
                    "IPs keeps that permission only for a limited time.",
                ),
                remedy=(
                    WHITELIST_STEP["binance"],
                    "Tick “Enable Spot & Margin Trading” again and save: with trusted IPs it no longer "
                    "expires.",
                ),
            )
        },
        "okx": {
            None: Texts(
                message="This key has expired: OKX deletes keys that can trade or withdraw and have no IP "
                "address bound after 14 days without use.",
                remedy=(
                    (
                        "On OKX, open API and create a new key with the permissions this connection needs, "
                        "adding {ips} to its IP addresses so it does not expire.",
                        "On OKX, open API and create a new key with the permissions this connection needs, "
                        f"adding {_NO_IPS} to its IP addresses so it does not expire.",
                    ),
                    UPDATE_STEP,
                ),
            )
        },
        "bybit": {
            None: Texts(
                message=(
                    "This Bybit key expired on {expired_on}: Bybit invalidates keys with no IP bound after "
                    "90 days, and 7 days after an account password change.",
                    "This Bybit key has expired: Bybit invalidates keys with no IP bound after 90 days, "
                    "and 7 days after an account password change.",
                ),
                remedy=(
                    (
                        "On Bybit, open API Management and create a new key with the permissions this "
                        "connection needs, bound to {ips}: keys with bound IPs do not expire this way.",
                        "On Bybit, open API Management and create a new key with the permissions this "
                        f"connection needs, bound to {_NO_IPS}: keys with bound IPs do not expire this way.",
                    ),
                    UPDATE_STEP,
                    "Delete the expired key on Bybit.",
                ),
            )
        },
    },
    "expires_soon": {
        "binance": {
            None: Texts(
                remedy=(
                    WHITELIST_STEP["binance"],
                    "With trusted IPs, Binance no longer turns off the key's trading permission.",
                )
            ),
            "trading_authority": Texts(
                message=(
                    "This key works, but Binance will turn off its spot and margin trading in {days} "
                    "({expires_on}) because it has no trusted IPs.",
                    "This key works, but Binance will turn off its spot and margin trading in {days} "
                    "because it has no trusted IPs.",
                    "This key works, but Binance will soon turn off its spot and margin trading because it "
                    "has no trusted IPs.",
                ),
            ),
        },
        "okx": {
            None: Texts(
                remedy=(
                    WHITELIST_STEP["okx"],
                    "OKX deletes keys that can trade or withdraw, have no IP address and go 14 days "
                    "without use; keys with an IP address are kept.",
                )
            )
        },
        "bybit": {
            None: Texts(
                remedy=(
                    WHITELIST_STEP["bybit"],
                    "Keys with bound IPs do not expire after 90 days; otherwise create a new key before "
                    "then and update this connection with it.",
                )
            )
        },
    },
    "account_restricted": {
        "binance": {
            "api_disabled": Texts(
                message="Binance has locked the API keys of this account.",
            ),
            "region_restricted": Texts(
                remedy=(
                    "Binance refuses requests from addresses in regions it does not serve (HTTP 451, "
                    "“restricted location”), even public ones: if that is the case, the operator must send "
                    "from an address in a served region.",
                    "If your account's country is not served, see Binance's terms of use (eligibility).",
                )
            ),
            "agreement_pending": Texts(
                message="Binance is waiting for you to accept an agreement before this key can be used.",
                remedy=(
                    "Log in to Binance, open API Management and accept the API agreement it shows (asked "
                    "once, for the first key created after August 2023).",
                    "If this connection trades futures, accept the futures agreement too when Binance "
                    "shows it.",
                ),
            ),
        },
        "okx": {
            "api_disabled": Texts(
                message="OKX has frozen API access for this account (OKX error 50100).",
                remedy=("Contact OKX customer service and ask them to lift the API freeze.",),
            ),
        },
        "bybit": {
            "region_restricted": Texts(
                remedy=(
                    "Bybit refuses addresses in the US and mainland China (HTTP 403) and accounts of "
                    "regions it does not serve: if keysentry runs there, the operator must send from an "
                    "address in a served region.",
                    "If your account's region is not served, a Bybit regional site may serve it: create the "
                    "key there and connect it to that site.",
                )
            ),
        },
    },
    "withdrawal_enabled": {
        "binance": {
            None: Texts(
                remedy=(
                    (
                        "On Binance, open API Management, choose Edit restrictions on this key, untick "
                        "{forbidden_settings} and save.",
                        "On Binance, open API Management, choose Edit restrictions on this key, untick "
                        "“Enable Withdrawals” and any transfer permission, and save.",
                    ),
                )
            )
        },
        "okx": {
            None: Texts(
                remedy=(
                    (
                        "On OKX, open API, edit this key and clear {forbidden_settings}.",
                        "On OKX, open API, edit this key and clear “Withdraw”.",
                    ),
                    _NEW_KEY_IF_LOCKED,
                )
            )
        },
        "bybit": {
            None: Texts(
                remedy=(
                    (
                        "On Bybit, open API Management, choose Edit on this key and clear "
                        "{forbidden_settings}.",
                        "On Bybit, open API Management, choose Edit on this key and clear the Wallet "
                        "permissions (withdrawal and transfers).",
                    ),
                    _NEW_KEY_IF_LOCKED,
                )
            )
        },
        "kucoin": {
            None: Texts(
                remedy=(
                    (
                        "On KuCoin, open API Management, edit this key and clear {forbidden_settings}.",
                        "On KuCoin, open API Management, edit this key and clear “Withdrawal” and "
                        "“Transfer”.",
                    ),
                    _NEW_KEY_IF_LOCKED,
                )
            )
        },
    },
    "incorrect_permissions": {
        "binance": {
            None: Texts(
                remedy=(
                    (
                        "On Binance, open API Management, choose Edit restrictions on this key, tick "
                        "{missing_settings} and save.",
                        "On Binance, open API Management, choose Edit restrictions on this key, tick the "
                        "missing permissions and save.",
                    ),
                    _TRUSTED_IPS_FIRST,
                )
            )
        },
        "okx": {
            None: Texts(
                remedy=(
                    (
                        "On OKX, open API, edit this key and enable {missing_settings}.",
                        "On OKX, open API, edit this key and enable the missing permissions.",
                    ),
                    _NEW_KEY_IF_LOCKED,
                )
            )
        },
        "bybit": {
            None: Texts(
                remedy=(
                    "On Bybit, open API Management and choose Edit on this key.",
                    "For trading, set the key to Read-Write: a Read-Only Bybit key cannot trade.",
                    ("Tick {missing_settings} and save.", "Tick the missing permissions and save."),
                )
            )
        },
        "kucoin": {
            None: Texts(
                remedy=(
                    (
                        "On KuCoin, open API Management, edit this key and tick {missing_settings}.",
                        "On KuCoin, open API Management, edit this key and tick the missing permissions.",
                    ),
                    _NEW_KEY_IF_LOCKED,
                )
            )
        },
    },
    "inactive_futures": {
        "binance": {
            "account_not_opened": Texts(
                remedy=(
                    "Open a futures account on Binance.",
                    "Then create a new API key: Binance cannot use the futures API with a key created before "
                    "the futures account was opened.",
                    "Tick “Enable Futures” on the new key and update this connection with it.",
                )
            ),
            "permission_missing": Texts(
                remedy=(
                    "On Binance, open API Management, choose Edit restrictions on this key and tick "
                    "“Enable Futures”.",
                    "If it cannot be ticked, the key predates the futures account or portfolio margin is on: "
                    "create a new key and update this connection with it.",
                )
            ),
        },
        "okx": {
            "account_not_opened": Texts(
                message="This OKX account is in a spot-only account mode, so no key can trade futures.",
                remedy=(
                    "In OKX's trading settings, switch the account mode to one that allows futures "
                    "(any mode other than the spot-only one).",
                    "Make sure the key has “Trade”, then check again.",
                ),
            ),
            "permission_missing": Texts(
                remedy=("On OKX, open API, edit this key and enable “Trade”: on OKX it covers futures too.",)
            ),
        },
        "bybit": {
            "permission_missing": Texts(
                remedy=(
                    "On Bybit, open API Management, choose Edit on this key and set it to Read-Write.",
                    "Tick {futures_setting} and save.",
                )
            ),
        },
        "kucoin": {
            "permission_missing": Texts(
                remedy=(
                    "On KuCoin, open API Management, edit this key and tick “Futures Trading”.",
                    _NEW_KEY_IF_LOCKED,
                )
            ),
        },
    },
    "temporary_issue": {
        "binance": {
            "ip_banned": Texts(
                remedy=(
                    "Nothing to change on the key: keysentry waits out the ban and checks again.",
                    "Binance bans an address that keeps sending after a rate-limit warning (HTTP 418); "
                    "bans grow from 2 minutes to 3 days, so the operator should lower the check rate.",
                )
            ),
        },
        "bybit": {
            "rate_limited": Texts(
                remedy=(
                    "Nothing to change on the key: keysentry checks again later.",
                    "Bybit blocks an address that exceeds its request limit for at least 10 minutes "
                    "(HTTP 403, “access too frequent”); if it repeats, the operator should lower the check rate.",
                )
            ),
        },
    },
    "no_ip_restriction": {
        ex: {None: Texts(remedy=(WHITELIST_STEP[ex], "Keep the addresses your bots send from on it too."))}
        for ex in KNOWN_EXCHANGES
    },
    "permissions_broader_than_needed": {
        "binance": {
            None: Texts(
                remedy=(
                    (
                        "On Binance, open API Management, choose Edit restrictions on this key, untick "
                        "{excess_settings} and save.",
                        "On Binance, open API Management, choose Edit restrictions on this key, untick what "
                        "this connection does not need and save.",
                    ),
                )
            )
        },
        "okx": {
            None: Texts(
                remedy=(
                    "On OKX one “Trade” permission covers spot, margin, futures and options alike: if this "
                    "connection trades at all, the key cannot be narrowed further.",
                    (
                        "Otherwise open API on OKX, edit this key and clear {excess_settings}.",
                        "Otherwise open API on OKX, edit this key and clear what this connection does not need.",
                    ),
                )
            )
        },
        "bybit": {
            None: Texts(
                remedy=(
                    (
                        "On Bybit, open API Management, choose Edit on this key and clear {excess_settings}.",
                        "On Bybit, open API Management, choose Edit on this key and clear what this "
                        "connection does not need.",
                    ),
                )
            )
        },
        "kucoin": {
            None: Texts(
                remedy=(
                    (
                        "On KuCoin, open API Management, edit this key and clear {excess_settings}.",
                        "On KuCoin, open API Management, edit this key and clear what this connection does "
                        "not need.",
                    ),
                )
            )
        },
    },
    "wrong_environment": {
        ex: {None: Texts(remedy=ENVIRONMENT_REMEDIES[ex])} for ex in ("binance", "okx", "bybit")
    },
    "ambiguous_refusal": {
        "binance": {
            None: Texts(
                message=(
                    "Binance refused the key with error -2015, which it gives alike for an unknown key, an "
                    "address missing from the key's trusted IPs and a missing permission, so the cause is not "
                    "certain. Most likely: {likely}. Otherwise, in order: {candidates}.",
                    "Binance refused the key with error -2015, which it gives alike for an unknown key, an "
                    "address missing from the key's trusted IPs and a missing permission, so the cause is not "
                    "certain. Most likely: {likely}.",
                    "Binance refused the key with error -2015, which it gives alike for an unknown key, an "
                    "address missing from the key's trusted IPs and a missing permission, so the cause is not "
                    "certain.",
                )
            )
        }
    },
}
