"""`keysentry token create|revoke|list` and the refusals of `keysentry serve` (run as a process)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import canary
from keysentry.api.tokens import authenticate, looks_like_token
from keysentry.store.db import Database
from keysentry.token_command import token_create, token_list, token_revoke


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("KEYSENTRY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEYSENTRY_DATA_DIR", str(tmp_path))
    return tmp_path


def _tenant_of(data_dir: Path, token: str) -> str | None:
    async def look() -> str | None:
        from datetime import UTC, datetime

        db = await Database.open(f"sqlite:///{data_dir / 'keysentry.db'}")
        try:
            found = await authenticate(db, token, datetime.now(UTC))
        finally:
            await db.close()
        return found.tenant_id if found else None

    return asyncio.run(look())


def test_token_create_prints_the_token_alone_and_list_never_shows_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert token_create("acme", name="backend") == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert looks_like_token(token) and out == token + "\n"
    canary.register(token, "cli-token", token[3:])
    assert "created tenant acme" in err and "shown this once" in err
    assert _tenant_of(data_dir, token) == "acme"
    assert token_list("acme", as_json=True) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(t["tenant_id"], t["name"], t["revoked_at"]) for t in listed] == [("acme", "backend", None)]
    assert token.startswith(listed[0]["prefix"])
    assert token_list() == 0
    table = capsys.readouterr().out
    canary.assert_no_leak(table, "the token list")
    assert listed[0]["id"] in table


def test_token_revoke_locks_the_token_out_and_is_audited(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert token_create("acme", name="to revoke", as_json=True) == 0
    made = json.loads(capsys.readouterr().out)
    canary.register(made["token"], "cli-token-json", made["token"][3:])
    assert token_revoke(made["id"]) == 0
    assert _tenant_of(data_dir, made["token"]) is None
    assert token_revoke(made["id"]) == 2  # no live token by that id any more
    assert "no live token" in capsys.readouterr().err

    async def actions() -> list[str]:
        from sqlalchemy import select

        from keysentry.store.models import AuditEntry

        db = await Database.open(f"sqlite:///{data_dir / 'keysentry.db'}")
        try:
            async with db.session() as s:
                rows = (await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
                return [f"{r.action}:{r.target}" for r in rows]
        finally:
            await db.close()

    assert asyncio.run(actions()) == [
        "tenant_create:None",
        f"token_create:{made['id']}",
        f"token_revoke:{made['id']}",
    ]


@pytest.mark.parametrize("tenant", ["Not Valid!", "", "x" * 80])
def test_a_bad_tenant_id_is_a_usage_error_without_a_traceback(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tenant: str
) -> None:
    assert token_create(tenant, name="x") == 3
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
    return subprocess.run(
        [sys.executable, "-m", "keysentry.api", "--port", "0"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_a_placeholder_admin_token(tmp_path: Path) -> None:
    weak = "changeme-please-changeme-please-000"
    done = _serve({"KEYSENTRY_DATA_DIR": str(tmp_path), "KEYSENTRY_ADMIN_TOKEN": weak})
    assert done.returncode == 3
    assert "KEYSENTRY_ADMIN_TOKEN" in done.stderr and "placeholder" in done.stderr
    assert weak not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "keysentry.db").exists()  # refused before touching the database


def test_serve_refuses_a_sealed_vault_with_the_vaults_sentence(tmp_path: Path) -> None:
    admin = secrets.token_urlsafe(32)
    canary.register(admin, "serve-admin-token")
    missing = tmp_path / "nowhere" / "master.key"
    done = _serve(
        {
            "KEYSENTRY_DATA_DIR": str(tmp_path),
            "KEYSENTRY_ADMIN_TOKEN": admin,
            "KEYSENTRY_MASTER_KEY_FILE": str(missing),
        }
    )
    assert done.returncode == 3
    assert str(missing) in done.stderr  # the vault's own sentence, naming what to fix
    assert "Traceback" not in done.stderr
    canary.assert_no_leak(done.stderr + done.stdout, "keysentry serve's output")


def test_serve_names_a_bad_setting_without_its_value(tmp_path: Path) -> None:
    done = _serve({"KEYSENTRY_DATA_DIR": str(tmp_path), "KEYSENTRY_EGRESS_IPS": "10.0.0.1,not-an-address"})
    assert done.returncode == 3
    assert "KEYSENTRY_EGRESS_IPS" in done.stderr
    assert "Traceback" not in done.stderr
