"""`keysentry serve` behind a TLS-terminating proxy: forwarded headers count only from proxies the operator named."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from e2e.conftest import CleanEnv
from e2e.test_api_e2e import _serve_command, _wait_for_banner

pytestmark = pytest.mark.e2e

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}


@contextmanager
def _served(env: dict[str, str], folder: Path) -> Iterator[str]:
    stderr = folder / "stderr.txt"
    with stderr.open("w", encoding="utf-8") as err:
        process = subprocess.Popen(_serve_command(), stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        yield _wait_for_banner(process, stderr)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


async def _login_cookie(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/login", headers=FORWARDED) as r:
        assert r.status == 200
        return r.headers["Set-Cookie"]


@pytest.mark.parametrize(("trusted", "secure"), [("127.0.0.1", True), ("", False), ("10.0.0.0/8", False)])
async def test_the_cookie_is_secure_only_behind_a_trusted_proxy(
    clean_env: CleanEnv, tmp_path: Path, trusted: str, secure: bool
) -> None:
    env = clean_env(KEYSENTRY_DATA_DIR=str(tmp_path / "data"), KEYSENTRY_FORWARDED_ALLOW_IPS=trusted)
    with _served(env, tmp_path) as base:
        cookie = await _login_cookie(base)
    assert ("; secure" in cookie.lower()) is secure, cookie


def test_a_bad_proxy_list_is_refused_with_what_to_write(clean_env: CleanEnv, tmp_path: Path) -> None:
    env = clean_env(KEYSENTRY_DATA_DIR=str(tmp_path / "data"), KEYSENTRY_FORWARDED_ALLOW_IPS="10.0.0.5,proxy")
    done = subprocess.run(_serve_command(), capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 3
    assert "KEYSENTRY_FORWARDED_ALLOW_IPS" in done.stderr and "'proxy'" in done.stderr
    assert "Traceback" not in done.stderr
