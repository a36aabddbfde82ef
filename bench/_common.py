"""What the issue-3 benches share: healthy keys, a simulator process, the raw signed request.

- `bench_key(exchange, n)`: the n-th healthy key of an exchange, in the exchange's key format.
- `healthy_scenario(...)`: a scenario with one account per key, every key able to pass the
  `trading` profile, optionally with a fixed latency on every request.
- `SimServer`: the scenario's simulators in a child process pinned to one core, so the
  client's CPU is measured alone (`python bench/_common.py --serve FILE` is that child).
- `raw_request(...)`: the floor: one request to the exchange's key-introspection endpoint,
  signed by a few lines of hmac written here, sent on one shared aiohttp session.
- `naive_ccxt_check(...)`: what most tools do: a new ccxt object per key, one implicit call
  to the same introspection endpoint, close.
- `CountingTransport`: wraps keysentry's transport to count the HTTP calls a check makes.

Only loopback is used: the simulators listen on 127.0.0.1 and every URL points there.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

EXCHANGES = ("binance", "okx", "bybit", "kucoin")
# The implicit ccxt method that calls each exchange's key-introspection endpoint.
CCXT_INTROSPECTION = {
    "binance": "sapi_get_account_apirestrictions",
    "okx": "private_get_account_config",
    "bybit": "private_get_v5_user_query_api",
    "kucoin": "private_get_user_api_key",
}
INTROSPECTION_PATH = {
    "binance": "/sapi/v1/account/apiRestrictions",
    "okx": "/api/v5/account/config",
    "bybit": "/v5/user/query-api",
    "kucoin": "/api/v1/user/api-key",
}
PASSPHRASE = "Bench-pass-01"
# Native permissions that pass the default `trading` profile (reads + spot trading, no withdrawal).
PERMISSIONS = {
    "binance": ["reading", "spot_and_margin_trading"],
    "okx": ["read_only", "trade"],
    "bybit": ["Spot.SpotTrade"],
    "kucoin": ["General", "Spot"],
}
# Whitelisting all of loopback: no "no IP restriction" notice and no expiry rule applies.
WHITELIST = ["127.0.0.0/8"]


# -- keys and scenarios --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class BenchKey:
    exchange: str
    api_key: str
    secret: str
    passphrase: str | None = None
    key_version: int = 2


def bench_key(exchange: str, n: int) -> BenchKey:
    """The n-th key, in the format the exchange (and its simulator) enforces."""
    uuid = f"0000be7c-0000-4000-8000-{n:012x}"
    if exchange == "binance":
        return BenchKey(exchange, f"BenchKey{n:056d}", f"BenchSecret{n:053d}")
    if exchange == "okx":
        return BenchKey(exchange, uuid, f"{n:032X}", PASSPHRASE)
    if exchange == "bybit":
        return BenchKey(exchange, f"BenchKey{n:010d}", f"BenchSecret{n:025d}")
    if exchange == "kucoin":
        return BenchKey(exchange, f"be{n:022x}", uuid, PASSPHRASE)
    raise ValueError(f"no bench keys for {exchange!r}")


def healthy_scenario(exchanges: Sequence[str], keys: int, latency_ms: float | None = None) -> dict[str, Any]:
    """One account per key; every key passes the `trading` profile."""
    spec: dict[str, Any] = {}
    for exchange in exchanges:
        accounts = []
        for n in range(keys):
            k = bench_key(exchange, n)
            key: dict[str, Any] = {
                "api_key": k.api_key,
                "secret": k.secret,
                "permissions": PERMISSIONS[exchange],
                "ip_whitelist": WHITELIST,
                "label": f"bench {n}",
            }
            if k.passphrase is not None:
                key["passphrase"] = k.passphrase
            if exchange == "kucoin":
                key["key_version"] = k.key_version
            accounts.append({"id": str(354_900_000 + n), "keys": [key]})
        exchange_spec: dict[str, Any] = {"accounts": accounts}
        if latency_ms is not None:
            exchange_spec["faults"] = {"latency": {"distribution": "fixed", "ms": latency_ms}}
        spec[exchange] = exchange_spec
    return {"seed": 1, "exchanges": spec}


def available_exchanges(wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(exchanges whose keysentry adapter exists, those whose adapter is missing)."""
    import importlib.util

    from keysentry.diagnosis.engine import ADAPTERS

    have: list[str] = []
    missing: list[str] = []
    for exchange in wanted:
        module = ADAPTERS[exchange].partition(":")[0]
        (have if importlib.util.find_spec(module) is not None else missing).append(exchange)
    return have, missing


# -- the simulator process -----------------------------------------------------------------------


def cores() -> tuple[int, int]:
    """(server core, client core); exits when the machine has only one."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        raise SystemExit("needs two cores: one for the simulators, one for the client measured")
    return available[0], available[1]


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimServer:
    """The scenario's simulators in a child process pinned to `core`, until closed.

    Rate limits are lifted (every count-type limit set very high): a bench sends far more than
    one user would, and a 429 would measure the rate limiter, not the check.
    """

    def __init__(self, scenario: Mapping[str, Any], core: int) -> None:
        self._file = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-scenario-", delete=False)  # noqa: SIM115
        json.dump(scenario, self._file)
        self._file.close()
        cmd = [sys.executable, __file__, "--serve", self._file.name, "--core", str(core)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.close()
            raise SystemExit(f"the simulators did not start (exit code {self.proc.poll()})")
        self.urls: dict[str, str] = json.loads(line.removeprefix("READY "))

    def cpu_s(self) -> float:
        return _proc_cpu_s(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        Path(self._file.name).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _serve(data: dict[str, Any]) -> None:
    from keysentry.sim.scenario import parse_scenario
    from keysentry.sim.server import SimCluster, simulator_class

    for name, spec in data["exchanges"].items():
        limits = simulator_class(name).default_limits
        spec["limits"] = {k: 1e12 for k in limits if not k.endswith("_s")}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with SimCluster(parse_scenario(data)) as cluster:
        urls = {name: cluster.url(name) for name in data["exchanges"]}
        sys.stdout.write(f"READY {json.dumps(urls)}\n")
        sys.stdout.flush()
        await stop.wait()


# -- the floor: one raw signed request -------------------------------------------------------------


def _hmac(secret: str, message: str) -> bytes:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()


def raw_request(exchange: str, base_url: str, key: BenchKey) -> tuple[str, dict[str, str]]:
    """(url, headers) of one GET to the introspection endpoint, signed now."""
    path = INTROSPECTION_PATH[exchange]
    ms = int(time.time() * 1000)
    if exchange == "binance":
        query = f"timestamp={ms}&recvWindow=5000"
        signature = _hmac(key.secret, query).hex()
        return f"{base_url}{path}?{query}&signature={signature}", {"X-MBX-APIKEY": key.api_key}
    if exchange == "okx":
        ts = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        sign = base64.b64encode(_hmac(key.secret, f"{ts}GET{path}")).decode()
        headers = {"OK-ACCESS-KEY": key.api_key, "OK-ACCESS-SIGN": sign, "OK-ACCESS-TIMESTAMP": ts}
        headers["OK-ACCESS-PASSPHRASE"] = key.passphrase or ""
        return base_url + path, headers
    if exchange == "bybit":
        sign = _hmac(key.secret, f"{ms}{key.api_key}5000").hex()
        headers = {"X-BAPI-API-KEY": key.api_key, "X-BAPI-TIMESTAMP": str(ms), "X-BAPI-RECV-WINDOW": "5000"}
        headers["X-BAPI-SIGN"] = sign
        return base_url + path, headers
    if exchange == "kucoin":
        sign = base64.b64encode(_hmac(key.secret, f"{ms}GET{path}")).decode()
        passphrase = base64.b64encode(_hmac(key.secret, key.passphrase or "")).decode()
        headers = {"KC-API-KEY": key.api_key, "KC-API-SIGN": sign, "KC-API-TIMESTAMP": str(ms)}
        headers |= {"KC-API-PASSPHRASE": passphrase, "KC-API-KEY-VERSION": str(key.key_version)}
        return base_url + path, headers
    raise ValueError(f"no raw request for {exchange!r}")


def answered_ok(exchange: str, status: int, body: bytes) -> bool:
    """Whether an introspection answer is a success (errors can be cheaper, so they must not count)."""
    if status != 200:
        return False
    data = json.loads(body)
    if exchange == "binance":
        return "code" not in data
    if exchange == "bybit":
        return bool(data.get("retCode") == 0)
    return str(data.get("code")) in {"0", "200000"}


def raw_session(limit: int = 100) -> Any:
    """The cheapest aiohttp client set-up: one session, kept-alive connections, no cookie jar."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=limit), cookie_jar=aiohttp.DummyCookieJar()
    )


async def send_raw(session: Any, exchange: str, base_url: str, key: BenchKey) -> tuple[int, bytes]:
    url, headers = raw_request(exchange, base_url, key)
    async with session.get(url, headers=headers) as response:
        return response.status, await response.read()


# -- what most tools do -------------------------------------------------------------------------------


def _rebase(urls: Any, base_url: str) -> Any:
    """Every URL in ccxt's `urls['api']` with scheme and host replaced by the simulator's."""
    if isinstance(urls, str):
        path = urlsplit(urls).path
        return base_url + path.rstrip("/")
    if isinstance(urls, dict):
        return {k: _rebase(v, base_url) for k, v in urls.items()}
    return urls


async def naive_ccxt_check(ccxt_async: Any, exchange: str, base_url: str, key: BenchKey) -> Any:
    """A new ccxt client for this key, the implicit introspection call, close."""
    cls = getattr(ccxt_async, exchange)
    config: dict[str, Any] = {"apiKey": key.api_key, "secret": key.secret}
    if key.passphrase is not None:
        config["password"] = key.passphrase
    client = cls(config)
    try:
        client.urls["api"] = _rebase(client.urls["api"], base_url)
        if exchange == "kucoin":
            client.options["partner"] = {}  # else ccxt adds its broker headers
        return await getattr(client, CCXT_INTROSPECTION[exchange])()
    finally:
        await client.close()


# -- counting keysentry's calls --------------------------------------------------------------------------


class CountingTransport:
    """keysentry's HttpTransport protocol around another transport, counting requests."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.count = 0

    @property
    def egress_ips(self) -> tuple[str, ...]:
        ips: tuple[str, ...] = self.inner.egress_ips
        return ips

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        egress_ip: str | None = None,
        timeouts: Any = None,
    ) -> Any:
        self.count += 1
        return await self.inner.request(
            method, url, headers=headers, body=body, egress_ip=egress_ip, timeouts=timeouts
        )

    async def close(self) -> None:
        await self.inner.close()


# -- small helpers ---------------------------------------------------------------------------------------


def cpu_s() -> float:
    """CPU seconds (user + system) of this process so far."""
    return time.process_time()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def machine() -> str:
    import platform

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description="run a bench scenario's simulators (used by the benches)")
    parser.add_argument("--serve", required=True, help="scenario JSON file")
    parser.add_argument("--core", type=int)
    args = parser.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    asyncio.run(_serve(json.loads(Path(args.serve).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
