"""`keysentry sim` and `keysentry demo`: serve a scenario's simulators until Ctrl-C or SIGTERM.

The CLI layer (cli.py) parses options and calls `run_cli`; everything a person sees from the
simulators (URLs, the admin token, key lists, errors) is written here. Exit codes follow the
CLI convention: 0 done, 3 usage error (a bad scenario file, a port in use).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from keysentry.sim.scenario import Scenario, ScenarioError, load_scenario
from keysentry.sim.server import SimCluster

DEMO_SCENARIO: Path = Path(__file__).parent / "scenarios" / "demo.yaml"
EXIT_OK = 0
EXIT_USAGE = 3


def print_schema(out: TextIO | None = None) -> None:
    """Write the scenario file's JSON schema (what `keysentry sim --schema` prints)."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "keysentry simulator scenario",
        **Scenario.model_json_schema(),
    }
    (out or sys.stdout).write(json.dumps(schema, indent=2) + "\n")


def key_lines(scenario: Scenario) -> list[dict[str, Any]]:
    """One record per scenario key, with what a client must send (the demo aids' wrong values included)."""
    lines: list[dict[str, Any]] = []
    for exchange, spec in scenario.exchanges.items():
        for account in spec.accounts:
            for key in account.keys:
                line: dict[str, Any] = {
                    "exchange": exchange,
                    "environment": key.environment,
                    "account_id": account.id,
                    "label": key.label,
                    "api_key": key.api_key,
                    "secret": key.client_secret if key.client_secret is not None else key.secret,
                    "passphrase": (
                        key.client_passphrase if key.client_passphrase is not None else key.passphrase
                    ),
                    "intent": key.intent,
                }
                if exchange == "kucoin":
                    line["key_version"] = key.key_version
                if key.clock_offset_ms:
                    line["clock_offset_ms"] = key.clock_offset_ms
                lines.append(line)
    return lines


def _error(message: str) -> int:
    sys.stderr.write(f"keysentry sim: {message}\n")
    sys.stderr.flush()
    return EXIT_USAGE


def _listen_error(e: OSError, host: str, port: int) -> str:
    if e.errno == errno.EADDRINUSE:
        return (
            f"a port is already in use ({e}); choose another first port with --port, "
            "or --port 0 for free ones"
        )
    if e.errno == errno.EACCES:
        return f"not allowed to listen on {host}:{port} ({e}); use a port above 1023"
    return f"cannot listen on {host} from port {port}: {e.strerror or e}; check --host and --port"


async def _serve(scenario: Scenario, source: Path, host: str, port: int, admin_token: str | None) -> int:
    cluster = SimCluster(scenario, host=host, port=port, admin_token=admin_token)
    try:
        await cluster.start()
    except ScenarioError as e:
        return _error(f"{source}: {e}")
    except OSError as e:
        return _error(_listen_error(e, host, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers off the main thread
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        out = sys.stdout
        for ep in cluster.endpoints:
            meaning = type(ep.sim).environments.get(ep.environment, "")
            out.write(f"{ep.exchange:<8} {ep.environment:<8} {ep.url}  {meaning}\n")
        out.write(f"{'admin':<8} {'':<8} {cluster.admin_url}  Authorization: Bearer {cluster.admin_token}\n")
        out.write(f"keys: keysentry sim --scenario {source} --list-keys; stop with Ctrl-C\n")
        out.flush()
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await cluster.stop()
    return EXIT_OK


def run_cli(scenario: Path, *, host: str, port: int, list_keys: bool, admin_token: str | None) -> int:
    """Load `scenario`, then print its keys or serve it; returns the process exit code."""
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as e:
        return _error(str(e))
    if list_keys:
        sys.stdout.writelines(json.dumps(line) + "\n" for line in key_lines(loaded))
        sys.stdout.flush()
        return EXIT_OK
    count = sum(len(spec.environments) for spec in loaded.exchanges.values()) + 1
    if not 0 <= port <= 65535 - count:
        return _error(f"--port {port} leaves no room for {count} servers; use 1024-{65535 - count}, or 0")
    if admin_token is not None and not admin_token.strip():
        return _error("the admin token is empty; pass a non-empty one or none to get a generated one")
    try:
        return asyncio.run(_serve(loaded, scenario, host, port, admin_token))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return EXIT_OK
