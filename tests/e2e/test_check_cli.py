"""`keysentry check` end to end: the simulators and the command each run as their own process.

`python -m keysentry sim --port 0` serves a scenario built here; every check is
`python -m keysentry check ...` with the credentials in KEYSENTRY_API_* (or a file), and is
judged on its exit code (0 ok, 1 warning, 2 error, 3 unknown or usage error), its JSON or its
human output. Every process's stdout and stderr is scanned for the canary secrets.

Most runs are independent, so `batch` starts them all at once (processes, not threads, do the
work) and each test reads its own; runs that change the simulators' state run alone after.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import canary
from keysentry.domain import Status

pytestmark = pytest.mark.e2e

CLI = (sys.executable, "-m", "keysentry")
RUN_TIMEOUT_S = 60
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The fields of the contract (DESIGN.md) with the JSON types each may take.
CONTRACT: Mapping[str, tuple[type, ...]] = {
    "exchange": (str,),
    "status": (str,),
    "severity": (str,),
    "summary": (str,),
    "account_id": (str, type(None)),
    "permissions": (list,),
    "missing_permissions": (list,),
    "ip_restricted": (bool, type(None)),
    "ip_whitelist": (list,),
    "expires_at": (str, type(None)),
    "expires_in_days": (int, type(None)),
    "findings": (list,),
    "checked_at": (str,),
    "latency_ms": (int, float),
}
FINDING: Mapping[str, type] = {"code": str, "severity": str, "message": str, "remedy": list}
EXIT = {"ok": 0, "warning": 1, "error": 2, "unknown": 3}

NewApiKey = Callable[..., str]
CleanEnv = Callable[..., dict[str, str]]


@dataclass(frozen=True, slots=True, repr=False)
class Key:
    exchange: str
    api_key: str
    secret: str
    passphrase: str | None = None

    def env(self) -> dict[str, str]:
        out = {"KEYSENTRY_API_KEY": self.api_key, "KEYSENTRY_API_SECRET": self.secret}
        if self.passphrase is not None:
            out["KEYSENTRY_API_PASSPHRASE"] = self.passphrase
        return out

    def entry(self, label: str) -> dict[str, str]:
        out = {"exchange": self.exchange, "api_key": self.api_key, "secret": self.secret, "label": label}
        if self.passphrase is not None:
            out["passphrase"] = self.passphrase
        return out


HEALTHY: Mapping[str, Mapping[str, Any]] = {
    "binance": {
        "permissions": ["reading", "spot_and_margin_trading", "futures"],
        "ip_whitelist": ["127.0.0.0/8"],
    },
    "okx": {"permissions": ["read_only", "trade"], "ip_whitelist": ["127.0.0.0/8"]},
    "bybit": {"permissions": ["Spot.SpotTrade"], "ip_whitelist": ["127.0.0.0/8"]},
    "kucoin": {"permissions": ["General", "Spot"], "ip_whitelist": ["127.0.0.0/8"]},
}
# name -> (exchange, key fields over HEALTHY)
KEYS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "binance": ("binance", {}),
    "binance_expiring": ("binance", {"ip_whitelist": [], "expires_at": "+5d"}),
    "binance_gone": ("binance", {"deleted": True}),
    "binance_second_ip": ("binance", {"ip_whitelist": ["127.0.0.3"]}),
    "binance_testnet": ("binance", {"environment": "testnet"}),
    "okx": ("okx", {}),
    "bybit": ("bybit", {}),
    "kucoin": ("kucoin", {}),
}


@dataclass
class Sim:
    urls: dict[tuple[str, str], str]
    admin_url: str
    admin_token: str
    keys: dict[str, Key]
    closed_url: str  # nothing listens there: connections are refused

    def url(self, exchange: str, environment: str = "mainnet") -> str:
        return self.urls[(exchange, environment)]

    def base_url_env(self) -> dict[str, str]:
        """KEYSENTRY_<EXCHANGE>[_<ENV>]_BASE_URL for every simulator."""
        out = {}
        for (exchange, env), url in self.urls.items():
            middle = "" if env == "mainnet" else f"_{env.upper()}"
            out[f"KEYSENTRY_{exchange.upper()}{middle}_BASE_URL"] = url
        return out

    def admin(self, method: str, path: str, body: Any = None) -> None:
        request = urllib.request.Request(
            f"{self.admin_url}/admin/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            assert response.status == 200


@pytest.fixture(scope="module")
def sim(start_sim: Callable[[Mapping[str, Any]], Any], new_api_key: NewApiKey) -> Iterator[Sim]:
    exchanges: dict[str, Any] = {
        "binance": {"environments": ["mainnet", "testnet"], "accounts": []},
        "okx": {"accounts": []},
        "bybit": {"accounts": []},
        "kucoin": {"accounts": []},
    }
    keys: dict[str, Key] = {}
    for n, (name, (exchange, fields)) in enumerate(KEYS.items(), 1):
        key = Key(
            exchange,
            new_api_key(exchange),
            canary.secret(exchange),
            canary.passphrase(exchange) if exchange in {"okx", "kucoin"} else None,
        )
        keys[name] = key
        spec = {"api_key": key.api_key, "secret": key.secret, "label": name, **HEALTHY[exchange], **fields}
        if key.passphrase is not None:
            spec["passphrase"] = key.passphrase
        account = {
            "id": str(20_000_000 + n),
            "deposit_addresses": {"USDT": "0x" + "7a1d" * 10},
            "keys": [spec],
        }
        exchanges[exchange]["accounts"].append(account)
    server = start_sim({"seed": 11, "exchanges": exchanges})
    # Bound but not listening: the port stays ours, and connecting to it is refused.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        yield Sim(server.urls, server.admin_url, server.admin_token, keys, closed_url)


# -- running the command ----------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no JSON on stdout: {self}"
        return lines

    def __str__(self) -> str:
        # For failure messages: an argument or the output may hold a canary, which must not be shown.
        shown = (
            f"keysentry {' '.join(self.args)} -> {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )
        return canary.redact(shown)

    __repr__ = __str__


def run(args: Sequence[str], env: Mapping[str, str]) -> Result:
    """One `keysentry` process, its stdin an empty pipe: not a terminal, so it never prompts."""
    done = subprocess.run(
        [*CLI, *args],
        input="",
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    result = Result(tuple(args), done.returncode, done.stdout, done.stderr)
    canary.assert_no_leak(result.stdout + result.stderr, f"the output of keysentry {' '.join(args)}")
    return result


@dataclass(frozen=True)
class Run:
    """A planned run: the arguments, the environment on top of a clean one, and what it must give."""

    args: tuple[str, ...]
    env: Callable[[Sim, Path], Mapping[str, str]] = lambda sim, tmp: {}
    code: int = 0
    status: Status | None = None  # with --json: the status of the one key
    stderr_has: str = ""  # for usage errors: what the message must say
    files: Mapping[str, Callable[[Sim], str]] = field(default_factory=dict)  # name -> content


def _key(name: str, **extra: str) -> Callable[[Sim, Path], Mapping[str, str]]:
    return lambda sim, tmp: {**sim.keys[name].env(), **extra}


def _sim_key(name: str, **extra: str) -> Callable[[Sim, Path], Mapping[str, str]]:
    """The key's credentials and the simulators' base URLs, from the environment."""
    return lambda sim, tmp: {**sim.keys[name].env(), **sim.base_url_env(), **extra}


def _bad_json(sim: Sim) -> str:
    # Cut off mid-way, as a failed copy leaves it: the parser's message would quote the secret.
    return json.dumps([sim.keys["binance"].entry("a")])[:-20]


def _no_secret(sim: Sim) -> str:
    return json.dumps([{"exchange": "okx", "api_key": sim.keys["okx"].api_key, "passphrase": "Canary!x"}])


def _unknown_exchange_in_file(sim: Sim) -> str:
    return json.dumps([{**sim.keys["binance"].entry("a"), "exchange": "bitfinex"}])


B = ("check", "binance", "--json")
RUNS: Mapping[str, Run] = {
    "connected": Run(B, _sim_key("binance"), 0, Status.CONNECTED),
    "connected_via_base_url": Run(
        ("check", "binance", "--json", "--profile", "futures-trading", "--base-url", "{binance}"),
        # Every family goes to --base-url: the configured (closed) mainnet URL is not used, and the
        # futures account (fapi) is reached, or the futures profile could not pass.
        lambda sim, tmp: {**sim.keys["binance"].env(), "KEYSENTRY_BINANCE_BASE_URL": sim.closed_url},
        0,
        Status.CONNECTED,
    ),
    "expires_soon": Run(B, _sim_key("binance_expiring"), 1, Status.EXPIRES_SOON),
    "temporary_issue": Run(
        ("check", "okx", "--json", "--base-url", "{closed}"), _key("okx"), 1, Status.TEMPORARY_ISSUE
    ),
    "secret_mismatch": Run(
        ("check", "bybit", "--json"),
        lambda sim, tmp: {**sim.base_url_env(), **sim.keys["bybit"].env(), "KEYSENTRY_API_SECRET": canary.bybit_secret()},
        2,
        Status.SECRET_MISMATCH,
    ),
    "invalid_key": Run(B, _sim_key("binance_gone"), 2, Status.INVALID_KEY),
    "passphrase_missing": Run(("check", "kucoin", "--json"), _sim_key("kucoin", KEYSENTRY_API_PASSPHRASE=""), 2,
                              Status.PASSPHRASE_INVALID),
    "ip_not_allowed_two_egress": Run(B, _sim_key("binance_second_ip", KEYSENTRY_EGRESS_IPS="127.0.0.2,127.0.0.3"), 2,
                                     Status.IP_NOT_ALLOWED),
    "testnet_env": Run(("check", "binance", "--json", "--env", "testnet"), _sim_key("binance_testnet"), 0,
                       Status.CONNECTED),
    "wrong_environment": Run(B, _sim_key("binance_testnet"), 2, Status.INVALID_KEY),
    "human": Run(("check", "binance"), _sim_key("binance_expiring"), 1),
    "human_forced_colour": Run(("check", "binance"), _sim_key("binance_expiring", FORCE_COLOR="1"), 1),
    # -- usage errors: exit code 3, a message, nothing checked
    "help": Run(("check", "--help"), code=0),
    "unknown_exchange": Run(("check", "bitfinex"), _key("binance"), 3, stderr_has="unsupported exchange"),
    "no_credentials": Run(("check", "binance"), code=3, stderr_has="KEYSENTRY_API_KEY"),
    "secret_not_set": Run(("check", "binance"), lambda sim, tmp: {"KEYSENTRY_API_KEY": sim.keys["binance"].api_key},
                          3, stderr_has="KEYSENTRY_API_SECRET"),
    "from_file_missing": Run(("check", "binance", "--from-file", "{tmp}/nowhere.json"), code=3, stderr_has="cannot read"),
    "from_file_not_json": Run(("check", "binance", "--from-file", "{tmp}/keys.json"), code=3, stderr_has="not valid",
                              files={"keys.json": _bad_json}),
    "from_file_entry_without_secret": Run(("check", "okx", "--from-file", "{tmp}/keys.json"), code=3,
                                          stderr_has="entry 1", files={"keys.json": _no_secret}),
    "from_file_unknown_exchange": Run(("check", "binance", "--from-file", "{tmp}/keys.json"), code=3,
                                      stderr_has="bitfinex", files={"keys.json": _unknown_exchange_in_file}),
    "unknown_env": Run(("check", "binance", "--env", "moon"), _sim_key("binance"), 3, stderr_has="moon"),
    "unknown_profile": Run(("check", "binance", "--profile", "yolo"), _sim_key("binance"), 3, stderr_has="yolo"),
    "bad_base_url": Run(("check", "binance", "--base-url", "ftp://example"), _key("binance"), 3,
                        stderr_has="base URL"),
    # Credentials are never taken from the command line: there is no option, and no argument, for them.
    "api_key_option": Run(("check", "binance", "--api-key", "{api_key}"), code=3),
    "secret_as_argument": Run(("check", "binance", "{api_key}", "{secret}"), code=3),
}  # fmt: skip
# Runs whose expected result a bug in code this file does not own prevents; strict, so a fix shows.
KNOWN_BUGS: Mapping[str, str] = {}  # known bugs as strict xfails: empty since the fixes landed


class Batch:
    """Every run of RUNS, started together; `result(name)` waits for one."""

    def __init__(self, sim: Sim, tmp: Path, clean_env: CleanEnv) -> None:
        self.sim, self.tmp, self.clean_env = sim, tmp, clean_env
        self._pool = ThreadPoolExecutor(max_workers=6)  # threads only wait: the processes work
        self._futures: dict[str, Future[Result]] = {}
        for name, planned in RUNS.items():
            self._futures[name] = self._pool.submit(self._run, name, planned)

    def _run(self, name: str, planned: Run) -> Result:
        folder = self.tmp / name
        folder.mkdir()
        for file_name, content in planned.files.items():
            (folder / file_name).write_text(content(self.sim), encoding="utf-8")
        binance = self.sim.keys["binance"]
        fill = {"binance": self.sim.url("binance"), "closed": self.sim.closed_url, "tmp": str(folder),
                "api_key": binance.api_key, "secret": binance.secret}  # fmt: skip
        args = [a.format_map(fill) for a in planned.args]
        env = self.clean_env(KEYSENTRY_DATA_DIR=str(folder), **planned.env(self.sim, folder))
        return run(args, env)

    def result(self, name: str) -> Result:
        return self._futures[name].result(timeout=RUN_TIMEOUT_S * 2)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def batch(sim: Sim, tmp_path_factory: pytest.TempPathFactory, clean_env: CleanEnv) -> Iterator[Batch]:
    started = Batch(sim, tmp_path_factory.mktemp("runs"), clean_env)
    yield started
    started.close()


def _params(names: Sequence[str]) -> list[Any]:
    return [
        pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n])])
        if n in KNOWN_BUGS
        else n
        for n in names
    ]


def assert_contract(obj: Mapping[str, Any]) -> None:
    for name, types in CONTRACT.items():
        assert name in obj, f"the JSON has no {name!r}: {sorted(obj)}"
        value = obj[name]
        # bool is an int to Python, not to a JSON reader: only where the contract allows it.
        fits = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        assert fits, f"{name} is a {type(value).__name__}: {value!r}"
    assert obj["status"] in {s.value for s in Status}
    assert obj["severity"] in EXIT
    assert all(isinstance(p, str) for p in [*obj["permissions"], *obj["missing_permissions"]])
    datetime.fromisoformat(obj["checked_at"])
    if obj["expires_at"] is not None:
        datetime.fromisoformat(obj["expires_at"])
    for f in obj["findings"]:
        for name, kind in FINDING.items():
            assert isinstance(f.get(name), kind), f"finding {f.get('code')}: {name} = {f.get(name)!r}"
        assert all(isinstance(step, str) and step for step in f["remedy"])


# -- exit codes, JSON and statuses ------------------------------------------------------------------

STATUS_RUNS = [n for n, r in RUNS.items() if r.status is not None]


@pytest.mark.parametrize("name", _params(STATUS_RUNS))
def test_status_and_exit_code(batch: Batch, name: str) -> None:
    planned, result = RUNS[name], batch.result(name)
    (obj,) = result.json_lines()
    assert planned.status is not None
    assert obj["status"] == planned.status.value, f"{name}: {obj['status']}: {obj['summary']}\n{result}"
    assert result.code == planned.code == EXIT[obj["severity"]], str(result)
    assert_contract(obj)
    assert obj["summary"] and "Traceback" not in result.stderr


def test_json_of_a_working_key(batch: Batch, sim: Sim) -> None:
    (obj,) = batch.result("connected").json_lines()
    assert obj["exchange"] == "binance"
    assert obj["account_id"] is not None and obj["account_id"].isdigit()
    assert {"balance_read", "spot_trade"} <= set(obj["permissions"])
    assert obj["ip_restricted"] is True and obj["missing_permissions"] == []
    assert obj["latency_ms"] > 0
    # The key is named only masked: never whole, as a person's screen or a log would show it.
    assert sim.keys["binance"].api_key not in batch.result("connected").stdout


def test_base_url_reaches_every_api_family(batch: Batch) -> None:
    (obj,) = batch.result("connected_via_base_url").json_lines()
    assert obj["status"] == "connected", obj["summary"]
    assert obj["ip_restricted"] is True  # read from the wallet family (/sapi)
    assert obj["account_id"] is not None  # from spot (/api)
    assert "futures_trade" in obj["permissions"]  # the futures account (/fapi) answered too
    assert "inactive_futures" not in {f["code"] for f in obj["findings"]}


def test_json_of_an_expiring_key(batch: Batch) -> None:
    (obj,) = batch.result("expires_soon").json_lines()
    # +5d in the scenario, loaded seconds before: 4 days and some hours count as 5 (rounded up).
    assert obj["expires_in_days"] == 5, (obj["expires_at"], obj["checked_at"])
    assert obj["ip_restricted"] is False
    codes = [f["code"] for f in obj["findings"]]
    assert {"expires_soon", "no_ip_restriction"} <= set(codes)
    soon = next(f for f in obj["findings"] if f["code"] == "expires_soon")
    assert soon["severity"] == "warning" and soon["remedy"]


def test_the_exchange_could_not_answer(batch: Batch) -> None:
    (obj,) = batch.result("temporary_issue").json_lines()
    # Nothing is said about the key: no permission judged, nothing missing, nothing invalid.
    assert obj["permissions"] == [] and obj["missing_permissions"] == []
    assert {f.get("status") for f in obj["findings"]} == {"temporary_issue"}


def test_other_environment_is_named(batch: Batch) -> None:
    (obj,) = batch.result("wrong_environment").json_lines()
    found = next(f for f in obj["findings"] if f["code"] == "wrong_environment")
    assert found["details"]["found_in"] == "testnet" and found["details"]["checked_in"] == "mainnet"
    (on_testnet,) = batch.result("testnet_env").json_lines()
    assert on_testnet["environment"] == "testnet"
    assert "wrong_environment" not in {f["code"] for f in on_testnet["findings"]}


def test_egress_addresses_come_from_the_environment(batch: Batch) -> None:
    (obj,) = batch.result("ip_not_allowed_two_egress").json_lines()
    finding = next(f for f in obj["findings"] if f["code"] == "ip_not_allowed")
    # The fix names the addresses to whitelist: the ones configured, not a guess.
    assert "127.0.0.2" in " ".join(finding["remedy"]) + finding["message"]


def test_missing_passphrase_is_found_before_anything_is_sent(batch: Batch) -> None:
    (obj,) = batch.result("passphrase_missing").json_lines()
    assert "input_passphrase_missing" in {f["code"] for f in obj["findings"]}
    assert obj["latency_ms"] == 0


# -- human output -----------------------------------------------------------------------------------


def test_human_output(batch: Batch) -> None:
    result = batch.result("human")
    out = result.stdout
    assert result.code == 1, str(result)
    assert "EXPIRES_SOON" in out and "binance" in out
    assert not ANSI.search(out), "NO_COLOR is set: no colour codes"
    assert "expires_soon" in out and "no_ip_restriction" in out  # every finding, by code
    # Numbered fix steps: each finding's count from 1, and some finding has more than one.
    steps = [int(n) for n in re.findall(r"^\s+(\d+)\. \S", out, re.MULTILINE)]
    assert steps and all(n == 1 or n == prev + 1 for prev, n in zip([0, *steps], steps, strict=False)), out
    assert max(steps) >= 2, out
    assert "expires in 5 days" in out


def test_human_output_in_colour_when_forced(batch: Batch) -> None:
    result = batch.result("human_forced_colour")
    assert ANSI.search(result.stdout), result.stdout
    assert "EXPIRES_SOON" in ANSI.sub("", result.stdout)


# -- usage errors -----------------------------------------------------------------------------------

USAGE_RUNS = [n for n, r in RUNS.items() if r.code == 3]


@pytest.mark.parametrize("name", _params(USAGE_RUNS))
def test_usage_error(batch: Batch, name: str) -> None:
    planned, result = RUNS[name], batch.result(name)
    assert result.code == 3, str(result)
    assert result.stdout.strip() == "", "a usage error checks nothing and prints no result"
    assert planned.stderr_has in result.stderr, str(result)
    assert "Traceback" not in result.stderr


def test_help(batch: Batch) -> None:
    result = batch.result("help")
    assert result.code == 0, str(result)
    for option in ("--profile", "--env", "--base-url", "--json", "--from-file"):
        assert option in result.stdout
    # Help tells where credentials come from, and offers no option to pass them.
    assert "KEYSENTRY_API_KEY" in result.stdout
    assert not re.search(r"--(api-key|secret|passphrase)\b", result.stdout)


# -- many keys from a file --------------------------------------------------------------------------


def _file_keys(sim: Sim) -> list[tuple[str, Key]]:
    names = ("binance", "okx", "bybit", "kucoin", "binance_gone")
    return [(n, sim.keys[n]) for n in names]


def test_from_file_json_lines_concurrently(
    batch: Batch, sim: Sim, tmp_path: Path, clean_env: CleanEnv
) -> None:
    keys = _file_keys(sim)
    path = tmp_path / "keys.jsonl"
    path.write_text("\n".join(json.dumps(k.entry(n)) for n, k in keys) + "\n", encoding="utf-8")
    batch.close()  # the other runs are done: the added latency below slows only this one
    latency = {"latency": {"distribution": "fixed", "ms": 300}}
    for exchange in ("binance", "okx", "bybit", "kucoin"):
        sim.admin("PUT", f"{exchange}/faults", latency)
    try:
        result = run(
            ["check", "binance", "--json", "--from-file", str(path)], clean_env(**sim.base_url_env())
        )
    finally:
        for exchange in ("binance", "okx", "bybit", "kucoin"):
            sim.admin("DELETE", f"{exchange}/faults")
    lines = result.json_lines()
    assert [(o["exchange"], o["status"]) for o in lines] == [
        ("binance", "connected"),
        ("okx", "connected"),
        ("bybit", "connected"),
        ("kucoin", "connected"),
        ("binance", "invalid_key"),
    ], str(result)
    assert result.code == 2, "the worst key decides the exit code"
    for obj in lines:
        assert_contract(obj)
    # Concurrently: every check was in flight at one same moment. One after another, each would
    # have started after the previous one ended (each takes at least the 300 ms added above).
    spans = []
    for obj in lines:
        end = datetime.fromisoformat(obj["checked_at"]).timestamp()
        spans.append((end - obj["latency_ms"] / 1000, end))
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans


def test_from_file_yaml_with_labels_and_progress(sim: Sim, tmp_path: Path, clean_env: CleanEnv) -> None:
    """Human output for many keys names each by its label; on a terminal, stderr shows the progress."""
    keys = _file_keys(sim)
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump([k.entry(f"bot {n}") for n, k in keys]), encoding="utf-8")
    code, stdout, terminal = _run_with_terminal_stderr(
        ["check", "binance", "--from-file", str(path)], clean_env(**sim.base_url_env())
    )
    canary.assert_no_leak(stdout + terminal, "the output of keysentry check --from-file (YAML)")
    assert code == 2, stdout + terminal
    for n, _ in keys:
        assert f"(bot {n})" in stdout
    assert stdout.count("CONNECTED") == 4 and stdout.count("INVALID_KEY") == 1, stdout
    assert "checking keys" in ANSI.sub("", terminal), "no progress bar on the terminal"


def _run_with_terminal_stderr(args: Sequence[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (what a person sees) and stdout on a pipe."""
    main, child = os.openpty()
    try:
        process = subprocess.Popen(
            [*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child, env=dict(env)
        )
        os.close(child)
        chunks: list[bytes] = []
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        process.stdout.close()
        code = process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        os.close(main)
    return code, stdout, b"".join(chunks).decode(errors="replace")
