"""Browser sessions of the web page: an encrypted cookie, CSRF tokens and a same-origin check.

The cookie holds the tenant token the user signed in with, sealed with AES-256-GCM under the
session key, plus a random session id and an expiry. Every request opens it and asks the
token table again (`authenticate`), so revoking a token ends its sessions at once, and the
cookie is useless without the server's key. Flags: HttpOnly, SameSite=Strict, Path=/, and
Secure when the page is served over https.

CSRF: every form carries a synchronizer token, an HMAC of the session id under a key derived
from the session key; JavaScript sends the same token in `X-CSRF-Token`. A POST is refused
unless the token matches its session, and also when the browser says the request comes from
another site (`Origin`, `Sec-Fetch-Site`). Visitors who are not signed in get an anonymous
session too, so the sign-in form is protected as well; signing in starts a new session id.

The session key is KEYSENTRY_WEB_SESSION_KEY when set (any string of 32 characters or more; set
it when several processes serve the page, so they all accept each other's cookies), otherwise
a random key per process: restarting the service then signs everyone out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "COOKIE_NAME",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_KEY_ENV",
    "Session",
    "SessionCodec",
    "cross_site",
    "session_key_from_env",
]

COOKIE_NAME = "ks_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_KEY_ENV = "KEYSENTRY_WEB_SESSION_KEY"
MIN_KEY_CHARS = 32
DEFAULT_LIFETIME_S = 12 * 3600
MAX_TOKEN_CHARS = 512
MAX_FLASH_CHARS = 300
_AAD = b"keysentry web session v1"
_NONCE = 12


def session_key_from_env(environ: dict[str, str] | None = None) -> bytes | None:
    """The configured session key (32 bytes derived from the variable), or None when unset."""
    raw = (os.environ if environ is None else environ).get(SESSION_KEY_ENV, "").strip()
    if not raw:
        return None
    if len(raw) < MIN_KEY_CHARS:
        raise ValueError(
            f"{SESSION_KEY_ENV} must be at least {MIN_KEY_CHARS} characters long; generate one with "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
        )
    return hashlib.sha256(b"keysentry-web-session-key\0" + raw.encode()).digest()


@dataclass(frozen=True, slots=True, repr=False)
class Session:
    """One browser's session. `token` is the tenant token it signed in with (None: not signed in)."""

    sid: str
    expires_at: int
    token: str | None = None
    flash: str | None = None
    changed: bool = field(default=False, compare=False)

    def __repr__(self) -> str:
        signed_in = self.token is not None
        return f"Session(sid={self.sid[:4]}…, signed_in={signed_in}, expires_at={self.expires_at})"

    __str__ = __repr__

    def with_flash(self, message: str | None) -> Session:
        shown = message[:MAX_FLASH_CHARS] if message else None
        return replace(self, flash=shown, changed=True)


class SessionCodec:
    """Seals sessions into cookie values and derives their CSRF tokens."""

    def __init__(self, key: bytes | None = None, *, lifetime_s: int = DEFAULT_LIFETIME_S) -> None:
        key = key if key is not None else secrets.token_bytes(32)
        if len(key) != 32:
            raise ValueError("the session key must be 32 bytes")
        self._aead = AESGCM(hashlib.sha256(b"seal\0" + key).digest())
        self._csrf_key = hashlib.sha256(b"csrf\0" + key).digest()
        self.lifetime_s = lifetime_s

    def __repr__(self) -> str:
        return f"SessionCodec(lifetime_s={self.lifetime_s})"

    # -- sessions -------------------------------------------------------------------------------

    def new(self, token: str | None = None, *, now: float | None = None) -> Session:
        moment = time.time() if now is None else now
        return Session(
            sid=secrets.token_urlsafe(18),
            expires_at=int(moment) + self.lifetime_s,
            token=token,
            changed=True,
        )

    def seal(self, session: Session) -> str:
        payload: dict[str, Any] = {"sid": session.sid, "exp": session.expires_at}
        if session.token is not None:
            payload["tok"] = session.token
        if session.flash:
            payload["flash"] = session.flash
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._aead.encrypt(nonce, json.dumps(payload, separators=(",", ":")).encode(), _AAD)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The session in a cookie value; None when absent, altered, sealed by another key or expired."""
        if not value or len(value) > 4096:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD)
            payload = json.loads(plain)
            sid, expires_at = str(payload["sid"]), int(payload["exp"])
            token = payload.get("tok")
            flash = payload.get("flash")
        except (binascii.Error, ValueError, InvalidTag, KeyError, TypeError):
            return None
        if expires_at <= (time.time() if now is None else now):
            return None
        return Session(
            sid=sid,
            expires_at=expires_at,
            token=str(token) if token is not None else None,
            flash=str(flash) if flash else None,
        )

    # -- CSRF -----------------------------------------------------------------------------------

    def csrf_token(self, session: Session) -> str:
        digest = hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def csrf_ok(self, session: Session | None, presented: str | None) -> bool:
        if session is None or not presented:
            return False
        return hmac.compare_digest(self.csrf_token(session).encode(), presented.strip().encode()[:200])

    # -- cookies --------------------------------------------------------------------------------

    def set_cookie(self, response: Response, session: Session, *, secure: bool) -> None:
        max_age = max(0, session.expires_at - int(time.time()))
        response.set_cookie(
            COOKIE_NAME,
            self.seal(session),
            max_age=max_age,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response, *, secure: bool) -> None:
        response.delete_cookie(COOKIE_NAME, path="/", secure=secure, httponly=True, samesite="strict")


def cross_site(request: Request) -> bool:
    """True when the browser says this request was sent by a page of another origin."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in {"same-origin", "none"}:
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False  # older browsers and non-browser clients: the CSRF token still decides
    if origin == "null":
        return True  # sandboxed frames, data: URLs and some redirects: never our own page
    host = request.headers.get("host", "")
    netloc = origin.split("://", 1)[-1]
    return netloc.lower() != host.lower()
