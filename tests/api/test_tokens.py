"""API tokens and the admin token, as units: format, hashing, constant-time match, refusing weak ones."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from api.harness import settings_for
from keysentry.api.app import create_app
from keysentry.api.tokens import AdminToken, AdminTokenRejected, generate_token, hash_token, looks_like_token


def test_tokens_are_prefixed_random_and_hidden_in_reprs() -> None:
    made = {generate_token() for _ in range(50)}
    values = {t.value.reveal() for t in made}
    assert len(values) == 50
    for t in made:
        value = t.value.reveal()
        assert looks_like_token(value)
        assert len(value) == 3 + 43  # ks_ and 32 bytes of urlsafe base64
        assert t.token_hash == hashlib.sha256(value.encode()).hexdigest() == hash_token(value)
        assert value.startswith(t.prefix) and len(t.prefix) == 7
        assert value not in repr(t) and value not in str(t)


@pytest.mark.parametrize(
    "weak",
    [
        "short-but-random-Xk3",
        "changeme-changeme-changeme-changeme",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "ababababababababababababababababab",
        "this-is-my-admin-PASSWORD-for-production",
        "REPLACE_WITH_A_REAL_TOKEN_0123456789",
        "your-secret-token-goes-here-please-xyz",
    ],
)
def test_weak_admin_tokens_are_refused_without_echoing_them(weak: str) -> None:
    with pytest.raises(AdminTokenRejected) as caught:
        AdminToken(weak)
    assert weak not in str(caught.value)
    assert "secrets.token_urlsafe" in str(caught.value)


def test_the_admin_token_matches_only_itself_and_hides_in_its_repr() -> None:
    value = secrets.token_urlsafe(32)
    admin = AdminToken(value)
    assert admin.matches(value)
    assert not admin.matches(value[:-1] + ("A" if value[-1] != "A" else "B"))
    assert not admin.matches("")
    assert value not in repr(admin)


def test_a_weak_admin_token_refuses_to_build_the_app(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from keysentry.connections import ConnectionService
    from keysentry.store.db import Database, create_engine, resolve_url

    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'k.db'}").model_copy(
        update={"admin_token": SecretStr("changeme")}
    )
    url = resolve_url(settings.database_url, tmp_path)
    service = ConnectionService(Database(create_engine(url), url), vault=None, engine=None)
    with pytest.raises(AdminTokenRejected, match="at least 32"):
        create_app(settings, service=service)
