"""Fixtures of the end-to-end tests: API keys in each exchange's format, and `keysentry sim` as a process.

Secrets and passphrases come from tests/canary.py (registered, so a leak anywhere fails the
test); API keys are not secrets (keysentry shows them masked) and come from `new_api_key`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import canary

_ALNUM = string.ascii_letters + string.digits
_LENGTHS = {"binance": 64, "bybit": 18}
SIM_START_TIMEOUT_S = 20.0

NewApiKey = Callable[..., str]


def api_key(exchange: str, prefix: str = "") -> str:
    """A random API key in `exchange`'s format, starting with `prefix` (which must fit the format)."""
    if exchange in _LENGTHS:
        return prefix + "".join(secrets.choice(_ALNUM) for _ in range(_LENGTHS[exchange] - len(prefix)))
    if exchange == "okx":  # lowercase UUID
        return prefix + str(uuid.uuid4())[len(prefix) :]
    if exchange == "kucoin":  # 24 lowercase hex
        return prefix + secrets.token_hex(12)[len(prefix) :]
    raise ValueError(f"no API key format for {exchange!r}")


@pytest.fixture(scope="session")
def new_api_key() -> NewApiKey:
    """`new_api_key("okx")`: a fresh API key in the exchange's format."""
    return api_key


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without KEYSENTRY_* settings or colour switches, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
    env.pop("FORCE_COLOR", None)
    env.update(NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1", **extra)
    return env


CleanEnv = Callable[..., dict[str, str]]


@pytest.fixture(scope="session")
def clean_env() -> CleanEnv:
    """`clean_env(KEYSENTRY_API_KEY=...)`: an environment for a subprocess that sees only what the test sets."""
    return clean_environ


@dataclass
class SimServer:
    """A running `keysentry sim` process and what it printed: one base URL per (exchange, environment)."""

    process: subprocess.Popen[str]
    stderr: Path
    urls: dict[tuple[str, str], str] = field(default_factory=dict)
    admin_url: str = ""
    admin_token: str = ""

    def url(self, exchange: str, environment: str = "mainnet") -> str:
        return self.urls[(exchange, environment)]


def _read_banner(process: subprocess.Popen[str], stderr: Path) -> SimServer:
    server = SimServer(process, stderr)
    assert process.stdout is not None
    deadline = time.monotonic() + SIM_START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            error = stderr.read_text(encoding="utf-8", errors="replace")
            raise AssertionError(f"keysentry sim exited with {process.wait()} before serving: {error}")
        parts = line.split()
        if parts[:1] == ["admin"]:
            server.admin_url = parts[1]
            server.admin_token = parts[-1]
        elif parts[:1] == ["keys:"]:
            return server
        elif len(parts) >= 3 and parts[2].startswith("http://"):
            server.urls[(parts[0], parts[1])] = parts[2]
    raise AssertionError(f"keysentry sim did not print its URLs within {SIM_START_TIMEOUT_S:g} s")


StartSim = Callable[[Mapping[str, Any]], SimServer]


@pytest.fixture(scope="module")
def start_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartSim]:
    """`start_sim(scenario)`: run `python -m keysentry sim --port 0` on it until the module ends."""
    started: list[SimServer] = []

    def start(scenario: Mapping[str, Any]) -> SimServer:
        folder = tmp_path_factory.mktemp("sim")
        path, stderr = folder / "scenario.yaml", folder / "stderr.txt"
        # Through JSON first: YAML then holds plain types only (no tuples, no aliases).
        path.write_text(yaml.safe_dump(json.loads(json.dumps(scenario))), encoding="utf-8")
        with stderr.open("w", encoding="utf-8") as err:  # a file, not a pipe: nothing blocks on a full pipe
            process = subprocess.Popen(
                [sys.executable, "-m", "keysentry", "sim", "--scenario", str(path), "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=clean_environ(),
            )
        try:
            server = _read_banner(process, stderr)
        except BaseException:
            process.kill()
            process.wait()
            raise
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.send_signal(signal.SIGTERM)
    errors = []
    for server in started:
        try:
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
        if server.process.stdout is not None:
            server.process.stdout.close()
        # The simulators see passphrases in clear (OKX, KuCoin v1): none may reach their output.
        leaks = canary.scan(server.stderr.read_text(encoding="utf-8", errors="replace"))
        if leaks:
            errors.append(f"keysentry sim wrote canary secret(s) {', '.join(leaks)} to stderr")
    assert not errors, "; ".join(errors)
