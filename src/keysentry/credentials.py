"""Cleaning and checking pasted API credentials before any network call.

Users copy keys from exchange web pages and bring along stray spaces, zero-width characters,
quotation marks, and letters that page translation swapped for look-alikes from other
alphabets; they also swap fields or forget the passphrase. Each of these is its own finding.
Whatever was changed is reported, so the user knows, and nothing that cannot be right is sent.

The pipeline per field is: drop invisible characters, strip whitespace and quotation marks
around the value, drop whitespace inside it, map look-alikes back to ASCII where the field's
alphabet leaves exactly one candidate, then check the exchange's format. Across fields it
detects swaps (only where the formats prove them), equal key and secret, and passphrase slips.

Messages and details name fields, positions (1-based, in the cleaned value), counts and kinds
of characters, never the characters of a secret, passphrase or key.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from keysentry.domain import Finding, Severity, Status
from keysentry.domain.secrets import ApiCredentials, Secret, mask_key

__all__ = [
    "SUPPORTED_EXCHANGES",
    "CleanedInput",
    "FieldName",
    "check_field",
    "clean_credentials",
    "requires_passphrase",
]

FieldName = Literal["api_key", "secret", "passphrase"]

# ---------------------------------------------------------------------------------------------
# Format table: what each exchange's key, secret and passphrase look like.

_ALNUM = string.ascii_letters + string.digits
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))


@dataclass(frozen=True)
class _Format:
    alphabet: frozenset[str]
    pattern: re.Pattern[str]
    describe: str
    min_len: int
    max_len: int


def _fmt(alphabet: str, pattern: str, describe: str, min_len: int, max_len: int | None = None) -> _Format:
    return _Format(frozenset(alphabet), re.compile(pattern), describe, min_len, max_len or min_len)


def _alnum(n: int) -> _Format:
    return _fmt(_ALNUM, rf"[A-Za-z0-9]{{{n}}}", f"{n} letters and digits", n)


_LOWER_UUID = _fmt(
    "0123456789abcdef-",
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "36 characters in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, digits and lowercase a-f",
    36,
)


def _passphrase(lo: int, hi: int) -> _Format:
    # Chosen by the user: any printable ASCII, but a space at either end is taken as a paste slip.
    return _fmt(
        _PRINTABLE,
        rf"(?! )[\x20-\x7e]{{{lo},{hi}}}(?<! )",
        f"{lo} to {hi} characters: letters, digits, punctuation",
        lo,
        hi,
    )


@dataclass(frozen=True)
class _Exchange:
    title: str
    api_key: _Format
    secret: _Format
    passphrase: _Format | None

    def field(self, name: FieldName) -> _Format | None:
        return {"api_key": self.api_key, "secret": self.secret, "passphrase": self.passphrase}[name]


_EXCHANGES: Mapping[str, _Exchange] = {
    "binance": _Exchange("Binance", _alnum(64), _alnum(64), None),
    "okx": _Exchange(
        "OKX",
        _LOWER_UUID,
        _fmt("0123456789ABCDEF", r"[0-9A-F]{32}", "32 characters, digits and capital A-F", 32),
        _passphrase(8, 32),
    ),
    "bybit": _Exchange("Bybit", _alnum(18), _alnum(36), None),
    "kucoin": _Exchange(
        "KuCoin",
        _fmt("0123456789abcdef", r"[0-9a-f]{24}", "24 characters, digits and lowercase a-f", 24),
        _LOWER_UUID,
        _passphrase(7, 32),
    ),
}
SUPPORTED_EXCHANGES: tuple[str, ...] = tuple(_EXCHANGES)
_KEY_VERSIONS = (1, 2, 3)

# ---------------------------------------------------------------------------------------------
# Character tables.

# Invisible characters web pages carry along; any other format (Cf) or control (Cc) character
# that is not whitespace is dropped too.
_INVISIBLE: Mapping[str, str] = {
    "\u200b": "zero-width space",
    "\u200c": "zero-width non-joiner",
    "\u200d": "zero-width joiner",
    "\u2060": "word joiner",
    "\ufeff": "byte order mark",
    "\u00ad": "soft hyphen",
    "\u200e": "left-to-right mark",
    "\u200f": "right-to-left mark",
    "\u061c": "Arabic letter mark",
    "\u180e": "Mongolian vowel separator",
    "\u034f": "combining grapheme joiner",
}

_ASCII_QUOTES = "\"'`"
_TYPO_DOUBLE = "“”„‟«»〝〞＂"
_TYPO_SINGLE = "‘’‚‛‹›′＇"
_QUOTES = frozenset(_ASCII_QUOTES + _TYPO_DOUBLE + _TYPO_SINGLE + "「」『』")
# Pairs that wrap a whole passphrase; ASCII quotes are left alone there (a passphrase may use them).
_TYPO_PAIRS = frozenset(
    {"“”", "””", "„“", "„”", "«»", "»«", "‘’", "’’", "‚‘", "‹›", "「」", "『』", "＂＂", "＇＇"}
)
_DASHES = frozenset("‐‑‒–—―−﹘﹣－")

# Letters of other alphabets that page translation or a foreign keyboard puts in place of Latin
# ones. More than one candidate means the look-alike alone cannot tell which was meant.
_LOOKALIKES: Mapping[str, tuple[str, ...]] = {
    # Cyrillic capitals
    "А": ("A",), "В": ("B",), "Е": ("E",), "К": ("K",), "М": ("M",), "Н": ("H",), "О": ("O",),
    "Р": ("P",), "С": ("C",), "Т": ("T",), "Х": ("X",), "У": ("Y",), "Ѕ": ("S",), "І": ("I",),
    "Ј": ("J",), "Ԛ": ("Q",), "Ԝ": ("W",), "З": ("3",), "Ӏ": ("I", "l"),
    # Cyrillic small
    "а": ("a",), "е": ("e",), "о": ("o",), "р": ("p",), "с": ("c",), "у": ("y",), "х": ("x",),
    "ѕ": ("s",), "і": ("i",), "ј": ("j",), "ԁ": ("d",), "ԛ": ("q",), "ԝ": ("w",), "һ": ("h",),
    "ӏ": ("l", "I"),
    # Greek capitals
    "Α": ("A",), "Β": ("B",), "Ε": ("E",), "Ζ": ("Z",), "Η": ("H",), "Ι": ("I", "l"), "Κ": ("K",),
    "Μ": ("M",), "Ν": ("N",), "Ο": ("O",), "Ρ": ("P",), "Τ": ("T",), "Υ": ("Y",), "Χ": ("X",),
    # Greek small
    "α": ("a",), "ι": ("i",), "κ": ("k",), "ν": ("v",), "ο": ("o",), "ρ": ("p",), "υ": ("u",),
    # Turkish casing of i
    "ı": ("i",), "İ": ("I",),
}  # fmt: skip


def _candidates(c: str) -> tuple[str, ...]:
    """ASCII characters a non-ASCII character may stand for; empty when it is no look-alike."""
    if c in _LOOKALIKES:
        return _LOOKALIKES[c]
    if c in _DASHES:
        return ("-",)
    if c in _TYPO_DOUBLE:
        return ('"',)
    if c in _TYPO_SINGLE:
        return ("'",)
    digit = unicodedata.decimal(c, None)  # digits of other scripts: Arabic-Indic, Devanagari...
    if digit is not None:
        return (str(digit),)
    folded = unicodedata.normalize("NFKC", c)  # full-width, circled, styled letters and digits
    if len(folded) == 1 and folded.isascii() and folded != c:
        return (folded,)
    return ()


def _kind(c: str) -> str:
    """What a person would call the character, without saying which one it is."""
    name = unicodedata.name(c, "")
    if c in _DASHES:
        return "typographic dash"
    if c in _QUOTES:
        return "typographic quotation mark"
    for prefix, kind in (("FULLWIDTH", "full-width character"), ("CYRILLIC", "Cyrillic letter")):
        if name.startswith(prefix):
            return kind
    if name.startswith("GREEK"):
        return "Greek letter"
    if unicodedata.decimal(c, None) is not None:
        return "digit of another script"
    if c.isspace():
        return "special space"
    if unicodedata.category(c).startswith("L"):
        return "letter of another alphabet"
    return "non-ASCII character"


# ---------------------------------------------------------------------------------------------
# One field through the pipeline.


@dataclass(frozen=True)
class _Char:
    position: int  # 1-based, in the cleaned value
    kind: str
    replaced: bool


@dataclass(frozen=True)
class _Cleaned:
    raw: str
    value: str
    invisible: tuple[str, ...] = ()  # names of the removed invisible characters
    whitespace: tuple[tuple[str, int], ...] = ()  # (where, count) removed
    quotes: int = 0
    kept_ascii_quotes: bool = False
    translated: tuple[_Char, ...] = ()
    foreign: tuple[_Char, ...] = ()
    valid: bool = False


def _is_invisible(c: str) -> bool:
    return c in _INVISIBLE or (not c.isspace() and unicodedata.category(c) in ("Cf", "Cc"))


def _as_given(raw: str, fmt: _Format) -> bool:
    """Whether `raw` already has the format and nothing the pipeline would change or report.

    The common case (a clean paste, and every monitor re-check): the full pipeline would
    return the input unchanged. Measured: 60-90 µs saved per check.
    """
    return (
        raw.isascii() and raw.isprintable() and raw == raw.strip() and fmt.pattern.fullmatch(raw) is not None
    )


def _ascii_quoted(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"


def _clean(raw: str, fmt: _Format) -> _Cleaned:
    passphrase_mode = " " in fmt.alphabet
    if _as_given(raw, fmt):
        return _Cleaned(
            raw=raw, value=raw, kept_ascii_quotes=passphrase_mode and _ascii_quoted(raw), valid=True
        )
    invisible = tuple(_INVISIBLE.get(c, f"U+{ord(c):04X}") for c in raw if _is_invisible(c))
    s = "".join(c for c in raw if not _is_invisible(c))

    start_ws = end_ws = quotes = 0
    while True:
        before = s
        start_ws += len(s) - len(s.lstrip())
        end_ws += len(s.lstrip()) - len(s.strip())
        s = s.strip()
        if passphrase_mode:
            # Only typographic pairs wrap a passphrase for sure; ASCII quotes may belong to it.
            if len(s) >= 2 and s[0] + s[-1] in _TYPO_PAIRS:
                s, quotes = s[1:-1], quotes + 2
        else:
            # Keys and secrets never contain quotation marks: any at the ends are wrapping.
            core = s.strip("".join(_QUOTES))
            quotes += len(s) - len(core)
            s = core
        if s == before:
            break

    # Inside a passphrase the plain space is a legal character, and special spaces that fold to
    # it are left to the look-alike step; everything else that is whitespace goes.
    def dropped(c: str) -> bool:
        return c.isspace() and not (passphrase_mode and unicodedata.normalize("NFKC", c) == " ")

    inside_ws = sum(1 for c in s if dropped(c))
    s = "".join(c for c in s if not dropped(c))

    chars: list[str] = []
    translated: list[_Char] = []
    foreign: list[_Char] = []
    for pos, c in enumerate(s, start=1):
        if c.isascii():  # ASCII outside the alphabet is left to the format check
            chars.append(c)
            continue
        candidates = _candidates(c)
        fitting = {x for x in candidates if x in fmt.alphabet}
        if len(fitting) == 1:
            chars.append(fitting.pop())
            translated.append(_Char(pos, _kind(c), replaced=True))
        else:
            chars.append(c)
            (translated if candidates else foreign).append(_Char(pos, _kind(c), replaced=False))
    value = "".join(chars)

    whitespace = tuple(
        (where, n) for where, n in (("start", start_ws), ("inside", inside_ws), ("end", end_ws)) if n
    )
    return _Cleaned(
        raw=raw,
        value=value,
        invisible=invisible,
        whitespace=whitespace,
        quotes=quotes,
        kept_ascii_quotes=passphrase_mode and _ascii_quoted(value),
        translated=tuple(translated),
        foreign=tuple(foreign),
        valid=_matches(value, fmt),
    )


def _matches(value: str, fmt: _Format | None) -> bool:
    return fmt is not None and fmt.pattern.fullmatch(value) is not None


# ---------------------------------------------------------------------------------------------
# Findings: a message catalogue, worded for the person who pasted the key. Placeholders are
# filled with field and exchange names, counts, positions and kinds of characters only.

_LABEL: Mapping[FieldName, str] = {"api_key": "API key", "secret": "secret key", "passphrase": "passphrase"}
_STATUS: Mapping[FieldName, Status] = {
    "api_key": Status.INVALID_KEY,
    "secret": Status.SECRET_MISMATCH,
    "passphrase": Status.PASSPHRASE_INVALID,
}
_FORMAT_CODE: Mapping[FieldName, str] = {
    "api_key": "input_key_format",
    "secret": "input_secret_format",
    "passphrase": "input_passphrase_format",
}
_OTHER: Mapping[FieldName, FieldName] = {"api_key": "secret", "secret": "api_key", "passphrase": "secret"}

_CLEANED_OK = "Nothing else to do if the check passes: the cleaned value is the one used."
_COPY_AGAIN = (
    "Copy the {label} again with the copy button next to it on the exchange's API management page, "
    "rather than selecting the text."
)
_NO_TRANSLATION = (
    "Turn off page translation for the exchange's website (in the browser's translate menu, choose "
    "never to translate this site), then copy the {label} again."
)
_RECREATE = (
    "If the exchange no longer shows the secret key (most show it only once, when the key is created), "
    "delete the API key and create a new one."
)
_ENTER_PASSPHRASE = (
    "Enter the passphrase you chose when you created this API key on {title}; it is not your account "
    "password."
)

_TEXT: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "input_invisible_removed": (
        "Removed {count} ({names}) from the {label}; text copied from web pages carries them along, "
        "and the exchange would reject the key because of them.",
        (_CLEANED_OK, _COPY_AGAIN),
    ),
    "input_whitespace_removed": ("Removed {count} {where} of the {label}.", (_CLEANED_OK, _COPY_AGAIN)),
    "input_quotes_removed": (
        "Removed {count} from around the {label}.",
        (_CLEANED_OK, "Paste only the value itself, without quotation marks around it."),
    ),
    "input_translated_characters": (
        "The {label} contained {count} from other alphabets or typographic forms ({kinds}) at "
        "{positions}, which is what browser page translation does to keys. {outcome}",
        (_NO_TRANSLATION, _COPY_AGAIN),
    ),
    "input_non_ascii": (
        "The {label} contains {count} that cannot be part of it ({kinds}) at {positions}.",
        (_COPY_AGAIN, _NO_TRANSLATION),
    ),
    "input_passphrase_quoted": (
        "The passphrase starts and ends with a quotation mark. It was kept as entered, since a "
        "passphrase may contain quotation marks.",
        ("If the quotation marks are not part of your passphrase, remove them.",),
    ),
    "input_key_secret_swapped": (
        "The API key and the secret key were entered in each other's fields; their {title} formats "
        "show which is which, so they were swapped back.",
        (_CLEANED_OK, "Next time paste the API key and the secret key into their own fields."),
    ),
    "input_passphrase_in_wrong_field:fixed": (
        "The passphrase and the {label} were entered in each other's fields; their {title} formats "
        "show which is which, so they were swapped back.",
        (_CLEANED_OK, "Next time paste the {label} and the passphrase into their own fields."),
    ),
    "input_passphrase_in_wrong_field": (
        "What was entered as the passphrase looks like the {label}, not a passphrase. The passphrase "
        "is the word you chose yourself when you created the key on {title}.",
        (_ENTER_PASSPHRASE,),
    ),
    "input_passphrase_not_needed": (
        "{title} API keys have no passphrase, so the passphrase entered was ignored.",
        (
            "Leave the passphrase empty for {title}.",
            "If the key is from an exchange that uses passphrases (OKX, KuCoin), choose that exchange.",
        ),
    ),
    "input_passphrase_missing": (
        "{title} API keys need the passphrase you chose when you created the key, and none was entered.",
        (
            _ENTER_PASSPHRASE,
            "A forgotten passphrase cannot be recovered: delete the key and create a new one.",
        ),
    ),
    "input_key_equals_secret": (
        "The API key and the secret key are the same. They are two different values, both shown on "
        "the exchange's page when the key is created.",
        ("Paste the API key into the API key field and the secret key into the secret field.", _RECREATE),
    ),
    "input_wrong_field": (
        "What was entered as the {label} has the format of the {title} {other}: the values may have "
        "been pasted into the wrong fields.",
        ("Paste the {label} into this field and the {other} into its own field.",),
    ),
    "input_key_format": (
        "The API key does not have the format {title} uses ({expected}): {problem}.",
        (_COPY_AGAIN,),
    ),
    "input_secret_format": (
        "The secret key does not have the format {title} uses ({expected}): {problem}.",
        (_COPY_AGAIN, _RECREATE),
    ),
    "input_passphrase_format": (
        "The passphrase does not have the format {title} uses ({expected}): {problem}.",
        (_ENTER_PASSPHRASE,),
    ),
}


def _finding(
    key: str, status: Status | None, words: Mapping[str, str], hint: str | None = None, **details: Any
) -> Finding:
    """A finding from the catalogue; it is an error exactly when it stands for a status."""
    message, remedy = _TEXT[key]
    steps = tuple(step.format_map(words) for step in remedy)
    severity = Severity.ERROR if status is not None else Severity.WARNING
    code = key.split(":")[0]
    return Finding(
        code, severity, message.format_map(words), (hint, *steps) if hint else steps, status, details
    )


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


def _positions(positions: list[int]) -> str:
    head = ", ".join(map(str, positions[:8])) + (
        f" and {len(positions) - 8} more" if len(positions) > 8 else ""
    )
    return ("position " if len(positions) == 1 else "positions ") + head


def _cleaning_findings(field: FieldName, c: _Cleaned) -> list[Finding]:
    words = {"label": _LABEL[field]}
    out: list[Finding] = []
    if c.invisible:
        names = sorted(set(c.invisible))
        count = _plural(len(c.invisible), "invisible character")
        out.append(
            _finding(
                "input_invisible_removed",
                None,
                words | {"count": count, "names": ", ".join(names)},
                field=field,
                count=len(c.invisible),
                characters=names,
            )
        )
    if c.whitespace:
        total = sum(n for _, n in c.whitespace)
        where = " and ".join(
            {"start": "at the start", "inside": "inside", "end": "at the end"}[w] for w, _ in c.whitespace
        )
        count = _plural(total, "space or line break", "spaces or line breaks")
        out.append(
            _finding(
                "input_whitespace_removed",
                None,
                words | {"count": count, "where": where},
                field=field,
                count=total,
                where=dict(c.whitespace),
            )
        )
    if c.quotes:
        count = _plural(c.quotes, "quotation mark")
        out.append(
            _finding("input_quotes_removed", None, words | {"count": count}, field=field, count=c.quotes)
        )
    for code, chars in (("input_translated_characters", c.translated), ("input_non_ascii", c.foreign)):
        if not chars:
            continue
        kept = [ch.position for ch in chars if not ch.replaced]
        outcome = "Each was changed back to the plain character it stands for."
        if kept:
            outcome = f"At {_positions(kept)} it could not be told for sure which character was meant."
        facts = [{"position": ch.position, "kind": ch.kind} for ch in chars]
        if code == "input_translated_characters":
            facts = [f | {"replaced": ch.replaced} for f, ch in zip(facts, chars, strict=True)]
        words_here = words | {
            "count": _plural(len(chars), "character"),
            "kinds": ", ".join(sorted({ch.kind for ch in chars})),
            "positions": _positions([ch.position for ch in chars]),
            "outcome": outcome,
        }
        out.append(
            _finding(code, _STATUS[field] if kept else None, words_here, field=field, characters=facts)
        )
    if c.kept_ascii_quotes:
        out.append(_finding("input_passphrase_quoted", None, words, field=field))
    return out


def _format_problem(value: str, fmt: _Format) -> tuple[str, dict[str, Any]]:
    if not value:
        return "it is empty", {"length": 0, "bad_positions": []}
    bad = [i for i, ch in enumerate(value, start=1) if ch not in fmt.alphabet]
    problems: list[str] = []
    if not fmt.min_len <= len(value) <= fmt.max_len:
        problems.append(f"it has {_plural(len(value), 'character')}")
    if bad:
        holds = "holds a character" if len(bad) == 1 else "hold characters"
        problems.append(f"{_positions(bad)} {holds} it never contains")
    if not problems:  # right length and characters: only the dashes of a UUID can be misplaced
        problems.append("the dashes are not where the format has them")
    return "; ".join(problems), {"length": len(value), "bad_positions": bad}


def _format_finding(exchange: str, field: FieldName, value: str) -> Finding:
    ex = _EXCHANGES[exchange]
    fmt = ex.field(field)
    assert fmt is not None  # callers only ask about fields the exchange has
    problem, details = _format_problem(value, fmt)
    elsewhere = [n for n, e in _EXCHANGES.items() if n != exchange and _matches(value, e.field(field))]
    hint = None
    if elsewhere:
        titles = " or ".join(_EXCHANGES[n].title for n in elsewhere)
        hint = f"This looks like a {titles} {_LABEL[field]}: check that you chose the right exchange."
    words = {"label": _LABEL[field], "title": ex.title, "expected": fmt.describe, "problem": problem}
    return _finding(
        _FORMAT_CODE[field],
        _STATUS[field],
        words,
        hint,
        field=field,
        expected=fmt.describe,
        looks_like_exchange=elsewhere,
        **details,
    )


def _titled(key: str, exchange: str, status: Status | None = None, **details: Any) -> Finding:
    return _finding(key, status, {"title": _EXCHANGES[exchange].title}, **details)


def _passphrase_slip(exchange: str, looks_like: FieldName, *, fixed: bool) -> Finding:
    words = {"title": _EXCHANGES[exchange].title, "label": _LABEL[looks_like]}
    key = "input_passphrase_in_wrong_field" + (":fixed" if fixed else "")
    status = None if fixed else Status.PASSPHRASE_INVALID
    return _finding(key, status, words, field="passphrase", looks_like=looks_like, swapped=fixed)


def _wrong_field(exchange: str, field: FieldName, looks_like: FieldName) -> Finding:
    words = {"title": _EXCHANGES[exchange].title, "label": _LABEL[field], "other": _LABEL[looks_like]}
    return _finding("input_wrong_field", _STATUS[field], words, field=field, looks_like=looks_like)


# ---------------------------------------------------------------------------------------------
# Across fields, and the public API.


@dataclass(frozen=True)
class CleanedInput:
    """Cleaned credentials (None when they cannot be right) and every finding about the input."""

    credentials: ApiCredentials | None
    findings: tuple[Finding, ...]
    changed: bool
    # The cleaned API key, masked, whenever it has the key's format and is not also the secret:
    # shown even when the credentials cannot be used, so the user knows which key is meant.
    masked_key: str | None = None

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)


def _exchange(exchange: str) -> str:
    name = exchange.strip().lower()
    if name not in _EXCHANGES:
        shown = exchange if len(exchange) <= 40 else exchange[:40] + "…"
        raise ValueError(f"unknown exchange {shown!r}; supported exchanges: {', '.join(SUPPORTED_EXCHANGES)}")
    return name


def requires_passphrase(exchange: str) -> bool:
    return _EXCHANGES[_exchange(exchange)].passphrase is not None


def _passphrase_looks_like(ex: _Exchange, value: str) -> FieldName | None:
    """The field whose exact format a passphrase has (no one chooses such a passphrase)."""
    return "secret" if _matches(value, ex.secret) else "api_key" if _matches(value, ex.api_key) else None


def _field_error(exchange: str, field: FieldName, cleaned: _Cleaned) -> Finding | None:
    """The one error a field's cleaned value earns on its own, if any."""
    ex = _EXCHANGES[exchange]
    if field == "passphrase":
        if not cleaned.value:
            return _titled("input_passphrase_missing", exchange, Status.PASSPHRASE_INVALID, field=field)
        slip = _passphrase_looks_like(ex, cleaned.value)
        if slip is not None:
            return _passphrase_slip(exchange, slip, fixed=False)
    if cleaned.valid:
        return None
    other = _OTHER[field]
    if (
        field != "passphrase"
        and ex.field(other) != ex.field(field)
        and _matches(cleaned.value, ex.field(other))
    ):
        return _wrong_field(exchange, field, other)
    return _format_finding(exchange, field, cleaned.value)


def check_field(exchange: str, field: FieldName, value: str) -> tuple[Finding, ...]:
    """Findings about one field on its own, for warnings while the user types."""
    name = _exchange(exchange)
    if field not in get_args(FieldName):
        raise ValueError(f"unknown field {field!r}; fields: {', '.join(get_args(FieldName))}")
    fmt = _EXCHANGES[name].field(field)
    if fmt is None:  # a passphrase for an exchange that has none
        return (_titled("input_passphrase_not_needed", name, field=field),) if value.strip() else ()
    cleaned = _clean(value, fmt)
    error = _field_error(name, field, cleaned)
    return (*_cleaning_findings(field, cleaned), *((error,) if error else ()))


@dataclass
class _Slots:
    """The three fields while the cross-field steps move values between them."""

    api_key: _Cleaned
    secret: _Cleaned
    passphrase: _Cleaned | None


def _unswap_key_secret(ex: _Exchange, slots: _Slots) -> bool:
    if slots.api_key.valid or slots.secret.valid or ex.api_key == ex.secret:
        return False  # equal formats (Binance) can never prove a swap
    as_key, as_secret = _clean(slots.secret.raw, ex.api_key), _clean(slots.api_key.raw, ex.secret)
    if not (as_key.valid and as_secret.valid):
        return False
    slots.api_key, slots.secret = as_key, as_secret
    return True


def _unswap_passphrase(ex: _Exchange, slots: _Slots) -> FieldName | None:
    """Put back a passphrase that swapped places with the secret or the key, when formats prove it."""
    pp, pp_fmt = slots.passphrase, ex.passphrase
    if pp is None or pp_fmt is None or not pp.value:
        return None
    others: tuple[tuple[FieldName, _Cleaned, _Format], ...] = (
        ("secret", slots.secret, ex.secret),
        ("api_key", slots.api_key, ex.api_key),
    )
    for field, current, fmt in others:
        if current.valid:
            continue
        as_field, as_pp = _clean(pp.raw, fmt), _clean(current.raw, pp_fmt)
        if as_field.valid and as_pp.valid and _passphrase_looks_like(ex, as_pp.value) is None:
            setattr(slots, field, as_field)
            slots.passphrase = as_pp
            return field
    return None


def clean_credentials(
    exchange: str, api_key: str, secret: str, passphrase: str | None = None, *, key_version: int = 2
) -> CleanedInput:
    """Clean pasted credentials and report every problem found, before anything is sent."""
    name = exchange if exchange in _EXCHANGES else _exchange(exchange)
    if key_version not in _KEY_VERSIONS:
        raise ValueError(f"key_version must be 1, 2 or 3, not {key_version!r}")
    ex = _EXCHANGES[name]
    given_pp = passphrase or None
    return _clean_as_given(ex, api_key, secret, given_pp, key_version) or _clean_credentials(
        name, ex, api_key, secret, given_pp, key_version
    )


def _clean_as_given(
    ex: _Exchange, api_key: str, secret: str, passphrase: str | None, key_version: int
) -> CleanedInput | None:
    """The result for credentials that need no cleaning and earn no finding; None for any other.

    Every field has its format as given (`_as_given`), so the steps across fields have nothing
    to move either: what `_clean_credentials` would return, in a third of the time (2-3.5 µs).
    """
    if api_key == secret or not (_as_given(api_key, ex.api_key) and _as_given(secret, ex.secret)):
        return None
    pp_fmt = ex.passphrase
    if pp_fmt is None:
        if passphrase is not None:  # one entered for an exchange without: worth a finding
            return None
        pp = None
    elif (
        passphrase is None
        or passphrase in (api_key, secret)
        or not _as_given(passphrase, pp_fmt)
        or _ascii_quoted(passphrase)
        or _passphrase_looks_like(ex, passphrase) is not None
    ):
        return None
    else:
        pp = Secret(passphrase)
    return CleanedInput(
        ApiCredentials(api_key, Secret(secret), pp, key_version), (), False, mask_key(api_key)
    )


def _clean_credentials(
    name: str, ex: _Exchange, api_key: str, secret: str, given_pp: str | None, key_version: int
) -> CleanedInput:
    slots = _Slots(
        _clean(api_key, ex.api_key),
        _clean(secret, ex.secret),
        _clean(given_pp, ex.passphrase) if given_pp is not None and ex.passphrase is not None else None,
    )

    moved: list[Finding] = []
    if _unswap_key_secret(ex, slots):
        moved.append(_titled("input_key_secret_swapped", name))
    slip = _unswap_passphrase(ex, slots)
    if slip is not None:
        moved.append(_passphrase_slip(name, slip, fixed=True))
    dropped_pp = ex.passphrase is None and given_pp is not None and bool(given_pp.strip())
    if dropped_pp:
        moved.append(_titled("input_passphrase_not_needed", name, field="passphrase"))

    key, sec, pp = slots.api_key, slots.secret, slots.passphrase
    findings = [*_cleaning_findings("api_key", key), *_cleaning_findings("secret", sec)]
    findings += [*(_cleaning_findings("passphrase", pp) if pp else ()), *moved]

    errors: list[Finding | None] = []
    if key.value and key.value == sec.value:
        # One value in both fields: a format error of the secret would only repeat this.
        errors += [
            _finding("input_key_equals_secret", Status.INVALID_KEY, {}),
            _field_error(name, "api_key", key),
        ]
    else:
        errors += [_field_error(name, "api_key", key), _field_error(name, "secret", sec)]
    if ex.passphrase is not None:
        pp = pp or _clean("", ex.passphrase)
        if pp.value and pp.value in (key.value, sec.value):
            errors.append(
                _passphrase_slip(name, "api_key" if pp.value == key.value else "secret", fixed=False)
            )
        else:
            errors.append(_field_error(name, "passphrase", pp))
    findings += [e for e in errors if e is not None]

    final_pp = pp.value if pp is not None and pp.value else None
    changed = dropped_pp or (key.value, sec.value, final_pp) != (
        api_key,
        secret,
        given_pp if ex.passphrase else None,
    )
    masked = mask_key(key.value) if key.valid and key.value != sec.value else None
    if any(f.severity is Severity.ERROR for f in findings):
        return CleanedInput(None, tuple(findings), changed, masked)
    creds = ApiCredentials(key.value, Secret(sec.value), Secret(final_pp) if final_pp else None, key_version)
    return CleanedInput(creds, tuple(findings), changed, masked)
