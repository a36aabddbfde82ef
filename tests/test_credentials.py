"""Cleaning and checking pasted credentials (keysentry.credentials)."""

from __future__ import annotations

import json
import random
import string
import uuid
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keysentry.credentials import (  # the private pipeline only for the properties about it
    _EXCHANGES,
    SUPPORTED_EXCHANGES,
    CleanedInput,
    FieldName,
    _clean,
    _clean_as_given,
    _clean_credentials,
    check_field,
    clean_credentials,
    requires_passphrase,
)
from keysentry.domain import Finding, Severity, Status

# Valid credentials per exchange, written from the shared key formats (not from the module's table).
BINANCE = ("vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j", None)  # fmt: skip
OKX = ("3f2b8c1e-9a4d-4e6f-8b2a-7c5d1e0f9a3b", "8D1C5E2F7A9B3C4D6E0F1A2B3C4D5E6F", "Tr4de-Bot!2024")
BYBIT = ("XQ7mK2pL9sN4vR8tW1", "aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5", None)
KUCOIN = ("5f3a9c2e7b1d4f6a8c0e2b4d", "c2a7e9f1-3b5d-4a6c-8e0f-1a2b3c4d5e6f", "kc-pass7")
VALID: dict[str, tuple[str, str, str | None]] = {
    "binance": BINANCE,
    "okx": OKX,
    "bybit": BYBIT,
    "kucoin": KUCOIN,
}
# Exchanges whose key and secret formats differ, so a swap can be proven.
DISTINCT_FORMATS = ["okx", "bybit", "kucoin"]
CLEANING_CODES = {
    "input_whitespace_removed",
    "input_invisible_removed",
    "input_quotes_removed",
    "input_translated_characters",
    "input_key_secret_swapped",
    "input_passphrase_in_wrong_field",
    "input_passphrase_not_needed",
}


def codes(result: CleanedInput | tuple[Finding, ...]) -> list[str]:
    findings = result.findings if isinstance(result, CleanedInput) else result
    return [f.code for f in findings]


def only(result: CleanedInput | tuple[Finding, ...], code: str) -> Finding:
    findings = result.findings if isinstance(result, CleanedInput) else result
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, f"expected one {code}, got {[f.code for f in findings]}"
    return matching[0]


def revealed(result: CleanedInput) -> tuple[str, str, str | None]:
    assert result.credentials is not None, codes(result)
    creds = result.credentials
    pp = creds.passphrase.reveal() if creds.passphrase is not None else None
    return creds.api_key, creds.secret.reveal(), pp


def clean(exchange: str, key: str, secret: str, pp: str | None = None, **kw: int) -> CleanedInput:
    return clean_credentials(exchange, key, secret, pp, **kw)


# --- the public surface ------------------------------------------------------------------------


def test_supported_exchanges_and_passphrase_requirement() -> None:
    assert set(SUPPORTED_EXCHANGES) == {"binance", "okx", "bybit", "kucoin"}
    assert [requires_passphrase(e) for e in ("binance", "okx", "bybit", "kucoin")] == [
        False,
        True,
        False,
        True,
    ]
    assert requires_passphrase(" OKX ")  # names are matched case-insensitively


@pytest.mark.parametrize(
    "call",
    [
        lambda: clean_credentials("kraken", "a", "b"),
        lambda: check_field("binanceus", "api_key", "a"),
        lambda: requires_passphrase(""),
    ],
)
def test_unknown_exchange_lists_supported_ones(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="unknown exchange") as info:
        call()
    for name in SUPPORTED_EXCHANGES:
        assert name in str(info.value)


def test_bad_key_version_and_field_are_refused() -> None:
    with pytest.raises(ValueError, match="key_version"):
        clean("kucoin", *KUCOIN[:2], KUCOIN[2], key_version=4)
    with pytest.raises(ValueError, match="unknown field"):
        check_field("okx", "password", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("exchange", SUPPORTED_EXCHANGES)
def test_valid_input_is_unchanged_and_silent(exchange: str) -> None:
    key, secret, pp = VALID[exchange]
    result = clean(exchange, key, secret, pp)
    assert result.ok and not result.changed and result.findings == ()
    assert revealed(result) == (key, secret, pp)
    fields: list[tuple[FieldName, str]] = [("api_key", key), ("secret", secret), ("passphrase", pp or "")]
    for field, value in fields:
        assert check_field(exchange, field, value) == ()


def test_key_version_reaches_the_credentials() -> None:
    result = clean("kucoin", *KUCOIN, key_version=1)
    assert result.credentials is not None and result.credentials.key_version == 1


def test_masked_key_is_given_only_for_a_plausible_key() -> None:
    key, secret, pp = OKX
    assert (
        clean("okx", f" {key}", secret, None).masked_key == f"{key[:4]}…{key[-4:]}"
    )  # unusable, still named
    assert clean("okx", secret, key, pp).masked_key == f"{key[:4]}…{key[-4:]}"  # after the swap back
    assert clean("okx", key[:-1], secret, pp).masked_key is None
    assert clean("binance", BINANCE[1], BINANCE[1]).masked_key is None  # that would show the secret


def test_cleaned_input_repr_hides_secrets() -> None:
    result = clean("okx", *OKX)
    text = repr(result) + str(result.credentials)
    assert OKX[1] not in text and OKX[2] not in text and OKX[0] not in text


# --- whitespace, invisible characters, quotes ---------------------------------------------------


@pytest.mark.parametrize("exchange", SUPPORTED_EXCHANGES)
def test_whitespace_around_and_inside_is_removed_and_reported(exchange: str) -> None:
    key, secret, pp = VALID[exchange]
    noisy_key = f"  {key[:5]} {key[5:]}\n"
    noisy_secret = f"\t{secret[:3]}\u00a0{secret[3:]}\u3000"
    result = clean(exchange, noisy_key, noisy_secret, pp)
    assert result.ok and result.changed
    assert revealed(result) == (key, secret, pp)
    found = [f for f in result.findings if f.code == "input_whitespace_removed"]
    assert [(f.details["field"], f.details["where"]) for f in found] == [
        ("api_key", {"start": 2, "inside": 1, "end": 1}),
        ("secret", {"start": 1, "inside": 1, "end": 1}),
    ]
    assert all(f.severity is Severity.WARNING and f.status is None and f.remedy for f in found)


@pytest.mark.parametrize("exchange", SUPPORTED_EXCHANGES)
def test_invisible_characters_are_removed_and_named(exchange: str) -> None:
    key, secret, pp = VALID[exchange]
    result = clean(exchange, "\ufeff" + key, secret[:10] + "\u200b\u200d" + secret[10:] + "\u2060", pp)
    assert result.ok and revealed(result) == (key, secret, pp)
    secret_finding = [f for f in result.findings if f.code == "input_invisible_removed"][1]
    assert secret_finding.details["count"] == 3
    assert "zero-width space" in secret_finding.message and "word joiner" in secret_finding.message


@pytest.mark.parametrize("wrapped", ['"{}"', "'{}'", "“{}”", "«{}»", "`{}`", ' "{}" ', "'\"{}\"'", "“{}"])
def test_quotes_around_key_and_secret_are_removed(wrapped: str) -> None:
    key, secret, _ = BYBIT
    result = clean("bybit", wrapped.format(key), wrapped.format(secret))
    assert result.ok and revealed(result)[:2] == (key, secret)
    assert codes(result).count("input_quotes_removed") == 2


def test_quotes_inside_a_key_are_not_removed() -> None:
    key, secret, _ = BINANCE
    result = clean("binance", key[:10] + '"' + key[11:], secret)
    assert not result.ok and result.credentials is None
    assert only(result, "input_key_format").details["bad_positions"] == [11]


def test_passphrase_keeps_ascii_quotes_but_drops_typographic_wrapping() -> None:
    key, secret, _ = OKX
    kept = clean("okx", key, secret, "'Tr4de-Bot'")
    assert kept.ok and revealed(kept)[2] == "'Tr4de-Bot'"
    assert only(kept, "input_passphrase_quoted").severity is Severity.WARNING
    dropped = clean("okx", key, secret, " “Tr4de-Bot” ")
    assert dropped.ok and revealed(dropped)[2] == "Tr4de-Bot"
    assert "input_quotes_removed" in codes(dropped) and "input_whitespace_removed" in codes(dropped)


def test_passphrase_keeps_inner_spaces_and_maps_special_spaces_to_them() -> None:
    key, secret, _ = KUCOIN
    plain = clean("kucoin", key, secret, "my pass 7")
    assert plain.findings == () and revealed(plain)[2] == "my pass 7"
    nbsp = clean("kucoin", key, secret, "my\u00a0pass 7\n")
    assert revealed(nbsp)[2] == "my pass 7"
    assert set(codes(nbsp)) == {"input_translated_characters", "input_whitespace_removed"}


# --- translated (look-alike) characters ---------------------------------------------------------


def test_cyrillic_and_greek_look_alikes_are_mapped_back_with_positions() -> None:
    key, secret, _ = BINANCE
    p, n = secret.index("P"), secret.index("N")
    fixable = "".join({p: "Р", n: "Ν"}.get(i, c) for i, c in enumerate(secret))  # Cyrillic Er, Greek Nu
    result = clean("binance", key, fixable)
    assert result.ok and revealed(result)[1] == secret
    found = only(result, "input_translated_characters")
    assert found.severity is Severity.WARNING and found.status is None
    assert found.details["characters"] == [
        {"position": min(p, n) + 1, "kind": "Greek letter" if n < p else "Cyrillic letter", "replaced": True},
        {"position": max(p, n) + 1, "kind": "Cyrillic letter" if n < p else "Greek letter", "replaced": True},
    ]
    assert any("translat" in r for r in found.remedy)


def test_letter_of_another_alphabet_without_latin_twin_is_non_ascii() -> None:
    key, secret, _ = BINANCE
    m = secret.index("m")
    result = clean("binance", key, secret[:m] + "м" + secret[m + 1 :])  # Cyrillic em: no Latin twin
    assert result.credentials is None
    assert "input_translated_characters" not in codes(result)
    non_ascii = only(result, "input_non_ascii")
    assert non_ascii.status is Status.SECRET_MISMATCH
    assert non_ascii.details["characters"] == [{"position": m + 1, "kind": "Cyrillic letter"}]


def test_full_width_and_other_script_digits_are_mapped_back() -> None:
    key, secret, _ = BYBIT
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in key[:4]) + key[4:]  # "ＸＱ７ｍ..."
    arabic_digit = secret[:2] + "٣" + secret[3:]  # secret[2] is '3'
    assert secret[2] == "3"
    result = clean("bybit", full_width, arabic_digit)
    assert result.ok and revealed(result)[:2] == (key, secret)
    kinds = {c["kind"] for f in result.findings for c in f.details.get("characters", [])}
    assert kinds == {"full-width character", "digit of another script"}


def test_typographic_dashes_are_mapped_only_where_dashes_belong() -> None:
    key, secret, pp = OKX
    result = clean("okx", key.replace("-", "–", 2).replace("-", "—"), secret, pp)
    assert result.ok and revealed(result)[0] == key
    assert [c["position"] for c in only(result, "input_translated_characters").details["characters"]] == [
        9,
        14,
        19,
        24,
    ]
    # A Bybit key has no dashes: an en dash there cannot be mapped to anything.
    dashed = clean("bybit", BYBIT[0][:5] + "–" + BYBIT[0][6:], BYBIT[1])
    translated = only(dashed, "input_translated_characters")
    assert translated.severity is Severity.ERROR and translated.status is Status.INVALID_KEY
    assert translated.details["characters"] == [
        {"position": 6, "kind": "typographic dash", "replaced": False}
    ]


def test_look_alike_that_does_not_fit_the_alphabet_is_reported_not_guessed() -> None:
    key, secret, pp = OKX  # the OKX secret is capital hex: a small Cyrillic 'а' cannot be right
    result = clean("okx", key, "а" + secret[1:], pp)
    assert result.credentials is None
    translated = only(result, "input_translated_characters")
    assert translated.status is Status.SECRET_MISMATCH
    assert translated.details["characters"][0]["replaced"] is False
    assert "input_secret_format" in codes(result)
    # The capital Cyrillic 'А' stands for capital hex 'A' unambiguously.
    assert clean("okx", key, "А" + secret[1:], pp).ok


def test_ambiguous_look_alike_is_not_mapped() -> None:
    key, secret, _ = BINANCE
    # Cyrillic palochka looks like both 'I' and 'l', and both are letters of a Binance key.
    result = clean("binance", "Ӏ" + key[1:], secret)
    assert not result.ok
    assert only(result, "input_translated_characters").details["characters"][0]["replaced"] is False


def test_other_non_ascii_characters_are_errors_of_their_field() -> None:
    key, secret, pp = KUCOIN
    result = clean("kucoin", key[:-1] + "€", secret, pp[:-1] + "中")
    assert result.credentials is None
    statuses = {f.details["field"]: f.status for f in result.findings if f.code == "input_non_ascii"}
    assert statuses == {"api_key": Status.INVALID_KEY, "passphrase": Status.PASSPHRASE_INVALID}


# --- swaps, equal fields, passphrase slips --------------------------------------------------------


@pytest.mark.parametrize("exchange", DISTINCT_FORMATS)
def test_swapped_key_and_secret_are_put_back(exchange: str) -> None:
    key, secret, pp = VALID[exchange]
    result = clean(exchange, f" {secret} ", key, pp)
    assert result.ok and result.changed
    assert revealed(result) == (key, secret, pp)
    swapped = only(result, "input_key_secret_swapped")
    assert swapped.severity is Severity.WARNING and swapped.status is None


def test_binance_swap_is_not_claimed_since_formats_are_equal() -> None:
    key, secret, _ = BINANCE
    result = clean("binance", secret, key)
    assert result.ok and result.findings == () and not result.changed
    assert revealed(result)[:2] == (secret, key)


@pytest.mark.parametrize("exchange", SUPPORTED_EXCHANGES)
@pytest.mark.parametrize("which", ["key", "secret"])
def test_key_equal_to_secret_is_an_error(exchange: str, which: str) -> None:
    key, secret, pp = VALID[exchange]
    value = key if which == "key" else secret
    result = clean(exchange, value, " " + value, pp)
    assert result.credentials is None
    equal = only(result, "input_key_equals_secret")
    assert equal.severity is Severity.ERROR and equal.status is Status.INVALID_KEY
    assert "input_secret_format" not in codes(result)  # the equality is the explanation


@pytest.mark.parametrize("exchange", ["okx", "kucoin"])
@pytest.mark.parametrize("passphrase", [None, "", "   ", "\u200b"])
def test_missing_passphrase_is_an_error(exchange: str, passphrase: str | None) -> None:
    key, secret, _ = VALID[exchange]
    result = clean(exchange, key, secret, passphrase)
    assert result.credentials is None
    missing = only(result, "input_passphrase_missing")
    assert missing.status is Status.PASSPHRASE_INVALID and missing.remedy
    assert check_field(exchange, "passphrase", passphrase or "")[-1].code == "input_passphrase_missing"


@pytest.mark.parametrize("exchange", ["okx", "kucoin"])
def test_secret_and_passphrase_swapped_are_put_back(exchange: str) -> None:
    key, secret, pp = VALID[exchange]
    assert pp is not None
    result = clean(exchange, key, pp, secret)
    assert result.ok and revealed(result) == (key, secret, pp)
    fixed = only(result, "input_passphrase_in_wrong_field")
    assert fixed.severity is Severity.WARNING and fixed.details == {
        "field": "passphrase",
        "looks_like": "secret",
        "swapped": True,
    }


def test_key_and_passphrase_swapped_are_put_back() -> None:
    key, secret, pp = KUCOIN
    assert pp is not None
    result = clean("kucoin", pp, secret, key)
    assert result.ok and revealed(result) == (key, secret, pp)
    assert only(result, "input_passphrase_in_wrong_field").details["looks_like"] == "api_key"


@pytest.mark.parametrize("exchange", ["okx", "kucoin"])
@pytest.mark.parametrize("slip", ["api_key", "secret"])
def test_key_or_secret_pasted_as_passphrase_is_an_error(exchange: str, slip: str) -> None:
    key, secret, _ = VALID[exchange]
    result = clean(exchange, key, secret, key if slip == "api_key" else secret)
    assert result.credentials is None
    wrong = only(result, "input_passphrase_in_wrong_field")
    assert wrong.status is Status.PASSPHRASE_INVALID and wrong.details["looks_like"] == slip


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_passphrase_for_an_exchange_without_one_is_ignored_and_reported(exchange: str) -> None:
    key, secret, _ = VALID[exchange]
    result = clean(exchange, key, secret, "something")
    assert result.ok and result.changed and revealed(result)[2] is None
    assert only(result, "input_passphrase_not_needed").severity is Severity.WARNING
    assert clean(exchange, key, secret, "").findings == ()


# --- format after cleaning ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "field", "bad", "code", "status"),
    [
        ("binance", "api_key", BINANCE[0][:-1], "input_key_format", Status.INVALID_KEY),
        ("binance", "secret", BINANCE[1][:-1] + "_", "input_secret_format", Status.SECRET_MISMATCH),
        ("okx", "api_key", OKX[0].replace("-", ""), "input_key_format", Status.INVALID_KEY),
        ("okx", "api_key", OKX[0].upper(), "input_key_format", Status.INVALID_KEY),
        ("okx", "secret", OKX[1].lower(), "input_secret_format", Status.SECRET_MISMATCH),
        ("okx", "passphrase", "7chars!", "input_passphrase_format", Status.PASSPHRASE_INVALID),
        ("okx", "passphrase", "x" * 33, "input_passphrase_format", Status.PASSPHRASE_INVALID),
        ("bybit", "api_key", BYBIT[0] + "Z", "input_key_format", Status.INVALID_KEY),
        ("bybit", "secret", BYBIT[1][:-1] + "!", "input_secret_format", Status.SECRET_MISMATCH),
        ("kucoin", "api_key", KUCOIN[0][:-2] + "gg", "input_key_format", Status.INVALID_KEY),
        ("kucoin", "secret", KUCOIN[1][:-1], "input_secret_format", Status.SECRET_MISMATCH),
        ("kucoin", "passphrase", "6chars", "input_passphrase_format", Status.PASSPHRASE_INVALID),
    ],
)
def test_wrong_format_after_cleaning_is_an_error(
    exchange: str, field: FieldName, bad: str, code: str, status: Status
) -> None:
    key, secret, pp = VALID[exchange]
    key, secret = (bad if field == "api_key" else key), (bad if field == "secret" else secret)
    result = clean(exchange, key, secret, bad if field == "passphrase" else pp)
    assert result.credentials is None and not result.ok
    finding = only(result, code)
    assert finding.severity is Severity.ERROR and finding.status is status and finding.remedy
    assert finding.details["length"] == len(bad)
    assert check_field(exchange, field, bad) == (finding,)


def test_passphrase_length_bounds_differ_between_okx_and_kucoin() -> None:
    seven = "Seven!7"
    assert clean("kucoin", *KUCOIN[:2], seven).ok
    assert not clean("okx", *OKX[:2], seven).ok


def test_empty_key_and_secret_are_format_errors() -> None:
    result = clean("bybit", "", " ")
    assert codes(result) == ["input_whitespace_removed", "input_key_format", "input_secret_format"]
    assert all("empty" in f.message for f in result.findings[1:])


def test_key_of_another_exchange_is_pointed_out() -> None:
    result = clean("binance", BYBIT[0], BINANCE[1])
    finding = only(result, "input_key_format")
    assert finding.details["looks_like_exchange"] == ["bybit"]
    assert "Bybit" in finding.remedy[0]
    assert (
        only(clean("binance", BINANCE[0][:-1], BINANCE[1]), "input_key_format").details["looks_like_exchange"]
        == []
    )


def test_value_in_the_other_field_is_named_as_such() -> None:
    _, secret, pp = OKX
    other_secret = "0123456789ABCDEF0123456789ABCDEF"
    result = clean("okx", other_secret, secret, pp)  # a secret where the key belongs, not a swap
    wrong = only(result, "input_wrong_field")
    assert wrong.status is Status.INVALID_KEY and wrong.details["looks_like"] == "secret"
    assert "input_key_format" not in codes(result)
    assert codes(check_field("kucoin", "secret", KUCOIN[0])) == ["input_wrong_field"]
    assert codes(check_field("binance", "secret", BINANCE[0])) == []  # same format: cannot tell


# --- check_field for as-you-type warnings -------------------------------------------------------


def test_check_field_reports_cleaning_and_the_remaining_problem() -> None:
    findings = check_field("okx", "api_key", " " + OKX[0].replace("a", "а") + "\u200b")
    assert codes(findings) == [
        "input_invisible_removed",
        "input_whitespace_removed",
        "input_translated_characters",
    ]
    assert codes(check_field("okx", "secret", OKX[1][:20])) == ["input_secret_format"]
    assert codes(check_field("bybit", "passphrase", "x")) == ["input_passphrase_not_needed"]
    assert check_field("bybit", "passphrase", " ") == ()
    assert codes(check_field("okx", "passphrase", OKX[1])) == ["input_passphrase_in_wrong_field"]


# --- properties ---------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))


def _text(alphabet: str, n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=n, max_size=n)


def _passphrase(lo: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=PRINTABLE, min_size=lo, max_size=32).filter(
        lambda p: p == p.strip() and not (p[0] == p[-1] and p[0] in "\"'")
    )


_lower_uuid = st.uuids().map(str)
VALID_STRATEGIES: dict[str, st.SearchStrategy[tuple[str, str, str | None]]] = {
    "binance": st.tuples(_text(ALNUM, 64), _text(ALNUM, 64), st.none()),
    "okx": st.tuples(_lower_uuid, _text("0123456789ABCDEF", 32), _passphrase(8)),
    "bybit": st.tuples(_text(ALNUM, 18), _text(ALNUM, 36), st.none()),
    "kucoin": st.tuples(_text("0123456789abcdef", 24), _lower_uuid, _passphrase(7)),
}


@st.composite
def valid_credentials(draw: st.DrawFn) -> tuple[str, str, str, str | None]:
    exchange = draw(st.sampled_from(SUPPORTED_EXCHANGES))
    key, secret, pp = draw(VALID_STRATEGIES[exchange])
    assume(key != secret and pp not in (key, secret))
    if pp is not None:  # a passphrase in the exact format of the key or secret is flagged, rightly
        assume(not all(c in "0123456789ABCDEF" for c in pp) or len(pp) != 32)
        assume(not all(c in "0123456789abcdef" for c in pp) or len(pp) != 24)
        assume(len(pp) != 36 or pp.count("-") != 4)
    return exchange, key, secret, pp


NOISE = [" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u200b", "\u200c", "\u200d", "\ufeff", "\u2060"]
QUOTES = ['"', "'", "`", "“", "”", "‘", "’", "«", "»"]
noise = st.lists(st.sampled_from(NOISE + QUOTES), max_size=6).map("".join)
pp_noise = st.lists(st.sampled_from(NOISE), max_size=4).map("".join)


@settings(max_examples=100)
@given(valid_credentials())
def test_property_valid_input_is_unchanged_and_silent(creds: tuple[str, str, str, str | None]) -> None:
    exchange, key, secret, pp = creds
    result = clean(exchange, key, secret, pp)
    assert result.findings == () and not result.changed
    assert revealed(result) == (key, secret, pp)


@settings(max_examples=150)
@given(valid_credentials(), noise, noise, noise, noise, pp_noise, pp_noise, st.booleans())
def test_property_surrounding_noise_cleans_back(
    creds: tuple[str, str, str, str | None],
    k1: str,
    k2: str,
    s1: str,
    s2: str,
    p1: str,
    p2: str,
    typographic_quotes: bool,
) -> None:
    exchange, key, secret, pp = creds
    noisy_pp = None
    if pp is not None:
        noisy_pp = p1 + (f"“{pp}”" if typographic_quotes else pp) + p2
    result = clean(exchange, k1 + key + k2, s1 + secret + s2, noisy_pp)
    assert revealed(result) == (key, secret, pp), codes(result)
    assert set(codes(result)) <= CLEANING_CODES
    assert result.changed == bool(k1 or k2 or s1 or s2 or (noisy_pp != pp))


LOOK_ALIKES = dict(zip("aeopcxyABEKMHOPCTX0123456789", "аеорсхуАВЕКМНОРСТХ０１２３４５６７８９", strict=True))


@settings(max_examples=80)
@given(valid_credentials(), st.data())
def test_property_translated_characters_map_back_at_their_positions(
    creds: tuple[str, str, str, str | None], data: st.DataObject
) -> None:
    exchange, key, secret, pp = creds
    candidates = [i for i, c in enumerate(secret) if c in LOOK_ALIKES]
    assume(candidates)
    chosen = sorted(data.draw(st.sets(st.sampled_from(candidates), min_size=1, max_size=5)))
    translated = "".join(LOOK_ALIKES[c] if i in chosen else c for i, c in enumerate(secret))
    result = clean(exchange, key, translated, pp)
    assert revealed(result) == (key, secret, pp)
    finding = only(result, "input_translated_characters")
    assert [c["position"] for c in finding.details["characters"]] == [i + 1 for i in chosen]


@settings(max_examples=200)
@given(
    st.sampled_from(SUPPORTED_EXCHANGES),
    st.text(
        st.sampled_from([*NOISE, *QUOTES, "a", "F", "7", "-", "а", "Ӏ", "５", "€", "“", "!", "'"]),
        max_size=40,
    ),
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_property_cleaning_is_idempotent(exchange: str, key: str, secret: str, pp: str) -> None:
    # Feed the cleaned values back in: nothing more may change, whatever the input was.
    ex = _EXCHANGES[exchange]
    for value, fmt in ((key, ex.api_key), (secret, ex.secret), (pp, ex.passphrase or ex.api_key)):
        once = _clean(value, fmt)
        twice = _clean(once.value, fmt)
        assert twice.value == once.value
        assert not (twice.invisible or twice.whitespace or twice.quotes)
        assert not any(c.replaced for c in twice.translated)


@settings(max_examples=80)
@given(valid_credentials(), noise, noise)
def test_property_cleaned_credentials_clean_to_themselves(
    creds: tuple[str, str, str, str | None], n1: str, n2: str
) -> None:
    exchange, key, secret, pp = creds
    first = clean(exchange, n1 + secret + n2, n2 + key + n1, pp)  # swapped too, where provable
    if first.credentials is None:
        return
    again = clean(exchange, *revealed(first))
    assert not again.changed and revealed(again) == revealed(first)
    assert not set(codes(again)) & CLEANING_CODES


def full_pipeline(exchange: str, key: str, secret: str, pp: str | None, version: int = 2) -> CleanedInput:
    return _clean_credentials(exchange, _EXCHANGES[exchange], key, secret, pp or None, version)


# Values of every exchange's fields, and near misses: each field may get any of them.
NEAR_MISSES = [v for creds in VALID.values() for v in creds if v is not None] + [
    '"Tr4de-Bot!2024"',
    "'kc-pass7'",
    "kc-pass7 ",
    "",
    " ",
    "short",
    "8D1C5E2F7A9B3C4D6E0F1A2B3C4D5E6",
    "Ӏx",
]
any_field = st.one_of(st.sampled_from(NEAR_MISSES), st.text(st.sampled_from([*PRINTABLE, *NOISE, "а"])))


@settings(max_examples=400)
@given(
    st.sampled_from(SUPPORTED_EXCHANGES),
    any_field,
    any_field,
    st.none() | any_field,
    st.sampled_from([1, 2, 3]),
)
def test_property_the_shortcut_for_clean_input_agrees_with_the_full_pipeline(
    exchange: str, key: str, secret: str, pp: str | None, version: int
) -> None:
    # clean_credentials takes a shortcut when nothing needs cleaning; it must change no result.
    expected = full_pipeline(exchange, key, secret, pp, version)
    assert clean_credentials(exchange, key, secret, pp, key_version=version) == expected


@settings(max_examples=100)
@given(valid_credentials(), st.booleans())
def test_property_valid_input_takes_the_shortcut_to_the_same_result(
    creds: tuple[str, str, str, str | None], swapped: bool
) -> None:
    exchange, key, secret, pp = creds
    if swapped:
        key, secret = secret, key
    shortcut = _clean_as_given(_EXCHANGES[exchange], key, secret, pp, 2)
    assert (shortcut is not None) == (
        not swapped or _EXCHANGES[exchange].api_key == _EXCHANGES[exchange].secret
    )
    assert clean(exchange, key, secret, pp) == full_pipeline(exchange, key, secret, pp)


CORRUPTIONS = st.sampled_from(["", " ", "\u200b", "а", "Ӏ", "€", "–", '"', "x", "１"])


def canary_credentials(exchange: str, seed: int) -> tuple[str, str, str | None]:
    """Random-looking valid credentials: hypothesis would otherwise shrink a passphrase into
    words that occur in the messages themselves."""
    rng = random.Random(seed)

    def pick(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    def lower_uuid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128)))

    pp = pick(ALNUM + "!#%&*+-=?@^_~", 16)
    return {
        "binance": (pick(ALNUM, 64), pick(ALNUM, 64), None),
        "okx": (lower_uuid(), pick("0123456789ABCDEF", 32), pp),
        "bybit": (pick(ALNUM, 18), pick(ALNUM, 36), None),
        "kucoin": (pick("0123456789abcdef", 24), lower_uuid(), pp),
    }[exchange]


@settings(max_examples=150)
@given(
    st.sampled_from(SUPPORTED_EXCHANGES),
    st.integers(0, 2**32),
    CORRUPTIONS,
    CORRUPTIONS,
    st.integers(0, 40),
    st.sampled_from(["ok", "equal", "pp"]),
)
def test_property_no_finding_reveals_the_secret_passphrase_or_key(
    exchange: str, seed: int, c1: str, c2: str, at: int, mode: str
) -> None:
    key, secret, pp = canary_credentials(exchange, seed)
    bad_secret = secret[:at] + c1 + secret[at:]
    bad_key = key if mode != "equal" else secret
    bad_pp = secret if mode == "pp" else (pp[:at] + c2 + pp[at:] if pp else c2 or None)
    outputs = [clean(exchange, bad_key[:at] + c2 + bad_key[at:], bad_secret, bad_pp).findings]
    outputs += [check_field(exchange, "secret", bad_secret), check_field(exchange, "api_key", bad_secret)]
    outputs += [check_field(exchange, "passphrase", bad_pp or "")]
    text = json.dumps([f.to_json() for fs in outputs for f in fs], ensure_ascii=False)
    text += "".join(repr(f) for fs in outputs for f in fs)
    for canary in [secret, key] + ([pp] if pp else []):
        for i in range(len(canary) - 5):
            assert canary[i : i + 6] not in text, "a fragment of a credential leaked into a finding"
