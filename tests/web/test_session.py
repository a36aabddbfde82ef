"""Session cookies and CSRF tokens of the web page, as units: sealing, tampering, expiry, origin checks."""

from __future__ import annotations

import base64

import pytest
from starlette.requests import Request

from keysentry.web.session import (
    SESSION_KEY_ENV,
    SessionCodec,
    cross_site,
    session_key_from_env,
)

KEY = bytes(range(32))
NOW = 1_800_000_000.0


def request(**headers: str) -> Request:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "query_string": b""})


def test_a_sealed_session_opens_to_the_same_token_and_hides_it() -> None:
    codec = SessionCodec(KEY)
    session = codec.new("ks_the-tenant-token", now=NOW)
    value = codec.seal(session)
    assert "ks_the-tenant-token" not in value
    assert "the-tenant-token" not in base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode(
        "latin-1"
    )
    opened = codec.open(value, now=NOW + 60)
    assert opened is not None
    assert (opened.sid, opened.token, opened.expires_at) == (
        session.sid,
        "ks_the-tenant-token",
        session.expires_at,
    )
    assert "the-tenant-token" not in repr(opened) and "the-tenant-token" not in str(opened)


def test_each_seal_differs_and_each_session_has_its_own_id() -> None:
    codec = SessionCodec(KEY)
    one, two = codec.new("t", now=NOW), codec.new("t", now=NOW)
    assert one.sid != two.sid
    assert codec.seal(one) != codec.seal(one)  # a fresh nonce each time


@pytest.mark.parametrize(
    "damage",
    [
        # one character changed, mid-value: the last one may carry only padding bits
        lambda v: v[:30] + ("A" if v[30] != "A" else "B") + v[31:],
        lambda v: v[:-2] + ("A" if v[-2] != "A" else "B") + v[-1:],
        lambda v: v[:20],  # truncated
        lambda v: "A" + v,  # shifted
        lambda v: "not base64 at all!",
        lambda v: "",
        lambda v: "x" * 5000,
    ],
)
def test_an_altered_cookie_opens_to_nothing(damage: object) -> None:
    codec = SessionCodec(KEY)
    value = codec.seal(codec.new("t", now=NOW))
    assert codec.open(damage(value), now=NOW) is None  # type: ignore[operator]


def test_a_cookie_sealed_under_another_key_opens_to_nothing() -> None:
    value = SessionCodec(KEY).seal(SessionCodec(KEY).new("t", now=NOW))
    assert SessionCodec(bytes(32)).open(value, now=NOW) is None
    assert SessionCodec().open(value, now=NOW) is None  # a random key per process by default


def test_a_session_expires_after_its_lifetime() -> None:
    codec = SessionCodec(KEY, lifetime_s=3600)
    value = codec.seal(codec.new("t", now=NOW))
    assert codec.open(value, now=NOW + 3599) is not None
    assert codec.open(value, now=NOW + 3600) is None


def test_flash_messages_ride_along_and_are_cut_to_size() -> None:
    codec = SessionCodec(KEY)
    session = codec.new(now=NOW).with_flash("done " * 200)
    opened = codec.open(codec.seal(session), now=NOW)
    assert opened is not None and opened.flash is not None
    assert opened.flash.startswith("done") and len(opened.flash) <= 300
    assert opened.token is None


def test_the_csrf_token_is_bound_to_the_session_id() -> None:
    codec = SessionCodec(KEY)
    one, two = codec.new("t", now=NOW), codec.new("t", now=NOW)
    token = codec.csrf_token(one)
    assert codec.csrf_ok(one, token)
    assert not codec.csrf_ok(two, token)  # another session's token
    assert not codec.csrf_ok(one, "")
    assert not codec.csrf_ok(one, None)
    assert not codec.csrf_ok(None, token)
    assert not codec.csrf_ok(one, token[:-1])
    # the same session under another key has another token: a key change voids old forms
    assert not SessionCodec(bytes(32)).csrf_ok(one, token)


def test_the_session_key_from_the_environment() -> None:
    assert session_key_from_env({}) is None
    assert session_key_from_env({SESSION_KEY_ENV: "   "}) is None
    key = session_key_from_env({SESSION_KEY_ENV: "k" * 40})
    assert key is not None and len(key) == 32
    assert key == session_key_from_env({SESSION_KEY_ENV: "k" * 40})  # stable: several processes agree
    assert key != session_key_from_env({SESSION_KEY_ENV: "j" * 40})
    with pytest.raises(ValueError, match=SESSION_KEY_ENV) as caught:
        session_key_from_env({SESSION_KEY_ENV: "short-key-value"})
    assert "short-key-value" not in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"host": "127.0.0.1:8600"}, False),  # no Origin (older browsers, scripts): the CSRF token decides
        ({"host": "127.0.0.1:8600", "origin": "http://127.0.0.1:8600"}, False),
        ({"host": "keys.example.com", "origin": "https://keys.example.com"}, False),
        ({"host": "127.0.0.1:8600", "origin": "http://127.0.0.1:8601"}, True),  # another port: another origin
        ({"host": "127.0.0.1:8600", "origin": "https://evil.example"}, True),
        ({"host": "127.0.0.1:8600", "origin": "null"}, True),
        ({"host": "127.0.0.1:8600", "sec-fetch-site": "same-origin"}, False),
        ({"host": "127.0.0.1:8600", "sec-fetch-site": "none"}, False),  # typed in the address bar
        ({"host": "127.0.0.1:8600", "sec-fetch-site": "same-site"}, True),
        ({"host": "127.0.0.1:8600", "sec-fetch-site": "cross-site", "origin": "http://127.0.0.1:8600"}, True),
    ],
)
def test_cross_site_requests_are_told_apart(headers: dict[str, str], expected: bool) -> None:
    assert cross_site(request(**headers)) is expected
