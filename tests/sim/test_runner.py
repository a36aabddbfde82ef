"""`keysentry sim`: listing keys, serving until a signal, and usage errors (exit 3, no traceback)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from keysentry.sim.runner import DEMO_SCENARIO, run_cli
from keysentry.sim.scenario import load_scenario, parse_scenario
from keysentry.sim.server import SimCluster

pytestmark = pytest.mark.timeout(60)

SMALL = {
    "admin_token": "runner-test-token",
    "exchanges": {
        "binance": {
            "environments": ["mainnet", "testnet"],
            "accounts": [
                {"id": "1", "keys": [{"api_key": "a" * 64, "secret": "b" * 64, "permissions": ["reading"]}]}
            ],
        }
    },
}


def keysentry(*args: str) -> list[str]:
    return [sys.executable, "-m", "keysentry", *args]


def test_list_keys_prints_one_json_line_per_key_with_what_a_client_sends() -> None:
    done = subprocess.run(
        keysentry("sim", "--scenario", str(DEMO_SCENARIO), "--list-keys"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    scenario = load_scenario(DEMO_SCENARIO)
    keys = {
        (name, k.api_key): k
        for name, spec in scenario.exchanges.items()
        for a in spec.accounts
        for k in a.keys
    }
    assert len(lines) == len(keys)
    for line in lines:
        assert {"exchange", "environment", "label", "api_key", "secret", "passphrase", "intent"} <= set(line)
        key = keys[(line["exchange"], line["api_key"])]
        assert line["environment"] == key.environment and line["intent"] == key.intent
        assert line["secret"] == (key.client_secret or key.secret)
        assert line["passphrase"] == (key.client_passphrase or key.passphrase)
        assert line.get("clock_offset_ms", 0) == key.clock_offset_ms
        assert ("key_version" in line) == (line["exchange"] == "kucoin")
    # the demo aids are there to be handed out: at least one wrong secret among the demo keys
    assert any(k.client_secret for k in keys.values())


async def start(*args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        *keysentry(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("keys:"):
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line, f"the simulator stopped early: {lines}"
        lines.append(line.rstrip("\n"))
    return proc, lines


def served(lines: list[str]) -> dict[tuple[str, str], str]:
    """(exchange, environment) -> base URL, from the lines the runner prints."""
    urls: dict[tuple[str, str], str] = {}
    for line in lines:
        found = re.match(r"(\w+) +(\w+) +(http://\S+)", line)
        if found:
            urls[(found[1], found[2])] = found[3]
    return urls


async def stop(proc: asyncio.subprocess.Process, sig: signal.Signals) -> tuple[int, str]:
    proc.send_signal(sig)
    code = await asyncio.wait_for(proc.wait(), 5)
    assert proc.stderr is not None
    return code, (await proc.stderr.read()).decode()


async def test_the_demo_serves_every_exchange_until_ctrl_c() -> None:
    proc, lines = await start("sim", "--scenario", str(DEMO_SCENARIO), "--port", "0")
    try:
        urls = served(lines)
        scenario = load_scenario(DEMO_SCENARIO)
        assert set(urls) == {
            (name, env) for name, spec in scenario.exchanges.items() for env in spec.environments
        }
        admin = re.search(r"^admin +(http://\S+) +Authorization: Bearer (\S+)$", lines[-2])
        assert admin, lines[-2]
        async with aiohttp.ClientSession() as session:
            async with session.get(urls[("binance", "mainnet")] + "/api/v3/time") as resp:
                assert resp.status == 200 and "serverTime" in await resp.json()
            headers = {"Authorization": f"Bearer {admin[2]}"}
            async with session.get(admin[1] + "/admin/state", headers=headers) as resp:
                assert resp.status == 200
                assert set((await resp.json())["exchanges"]) == set(scenario.exchanges)
    finally:
        code, stderr = await stop(proc, signal.SIGINT)
    assert code == 0
    assert "Traceback" not in stderr


async def test_sigterm_stops_cleanly_and_the_admin_token_comes_from_the_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "small.json"
    scenario.write_text(json.dumps(SMALL))
    proc, lines = await start("sim", "--scenario", str(scenario), "--port", "0")
    try:
        assert set(served(lines)) == {("binance", "mainnet"), ("binance", "testnet")}
        assert lines[2].startswith("admin") and lines[2].endswith("Authorization: Bearer runner-test-token")
    finally:
        code, stderr = await stop(proc, signal.SIGTERM)
    assert code == 0
    assert "Traceback" not in stderr


def test_a_bad_scenario_is_a_usage_error_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges:\n  binance:\n    faults: {error_rate: 3}\n")
    done = subprocess.run(
        keysentry("sim", "--scenario", str(bad)), capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 3
    assert "exchanges.binance.faults.error_rate" in done.stderr and str(bad) in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_missing_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(tmp_path / "nope.yaml", host="127.0.0.1", port=0, list_keys=True, admin_token=None)
    assert code == 3
    assert f"cannot read scenario file {tmp_path / 'nope.yaml'}" in capsys.readouterr().err


def test_a_port_in_use_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.json"
    scenario.write_text(json.dumps(SMALL))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the second simulator's port is the taken one: the first must not stay open either
        code = run_cli(scenario, host="127.0.0.1", port=port - 1, list_keys=False, admin_token=None)
    assert code == 3
    err = capsys.readouterr().err
    assert "already in use" in err and "--port" in err
    with socket.socket() as again:
        again.bind(("127.0.0.1", port - 1))  # released on the way out


def test_simulators_that_reject_the_scenario_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {
        "exchanges": {
            "binance": {
                "accounts": [
                    {
                        "id": "1",
                        "keys": [{"api_key": "a" * 64, "secret": "b" * 64, "permissions": ["teleport"]}],
                    }
                ]
            }
        }
    }
    scenario = tmp_path / "perm.json"
    scenario.write_text(json.dumps(bad))
    code = run_cli(scenario, host="127.0.0.1", port=0, list_keys=False, admin_token=None)
    assert code == 3
    err = capsys.readouterr().err
    assert str(scenario) in err and "teleport" in err


def test_a_port_range_past_65535_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.json"
    scenario.write_text(json.dumps(SMALL))
    assert run_cli(scenario, host="127.0.0.1", port=65534, list_keys=False, admin_token=None) == 3
    assert "leaves no room for 3 servers" in capsys.readouterr().err


def test_an_address_not_on_this_machine_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.json"
    scenario.write_text(json.dumps(SMALL))
    # 192.0.2.0/24 is reserved for documentation: never assigned here, so binding fails at once
    assert run_cli(scenario, host="192.0.2.1", port=0, list_keys=False, admin_token=None) == 3
    assert "cannot listen on 192.0.2.1" in capsys.readouterr().err


async def test_stopping_does_not_wait_for_requests_hanging_in_a_timeout_fault() -> None:
    data = json.loads(json.dumps(SMALL))
    data["exchanges"]["binance"]["faults"] = {"timeout_rate": 1.0, "timeout_s": 60}
    cluster = SimCluster(parse_scenario(data))
    await cluster.start()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(asyncio.TimeoutError):
                await session.get(
                    cluster.url("binance") + "/api/v3/time", timeout=aiohttp.ClientTimeout(total=0.2)
                )
    finally:
        started = time.monotonic()
        await cluster.stop()
    assert time.monotonic() - started < 2
