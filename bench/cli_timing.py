"""Wall time of `keysentry check --help` and of a full `keysentry check` process, as a trader runs them.

The commands below run in turn (one run of each, then the next run of each, ...), `--runs` times
after one unmeasured round that warms the file cache, pinned to one core; medians are kept:

- baseline: `python -c pass`, the interpreter starting and stopping;
- help: `python -m keysentry check --help`, and the installed `keysentry check --help` script;
- check: `python -m keysentry check <exchange> --base-url <simulator> --json` with a healthy
  key's credentials in KEYSENTRY_API_KEY / _SECRET / _PASSPHRASE, against the simulators
  running in a child process on the other core (no injected latency);
- a prototype, not a target: the help with `TYPER_USE_RICH=0`, which renders typer's plain help
  as `typer.Typer(rich_markup_mode=None)` in keysentry/cli.py would.

Each command's CPU time (user + system, from the rusage of waited-for children) is printed too:
on a machine shared with other work the wall time also holds the wait for the core.

When a target is missed (or with `--importtime`) it runs `python -X importtime` on that command
and prints the imports that cost the most: what to import lazily.

    python bench/cli_timing.py [--exchange binance] [--runs 7] [--importtime]

Targets (issue 3): `--help` under 0.5 s, a full check's process under 1.5 s. Exit code 0 when
both are met, 1 when not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    EXCHANGES,
    SimServer,
    available_exchanges,
    bench_key,
    cores,
    healthy_scenario,
    machine,
    median,
)

TARGET_HELP_S = 0.5
TARGET_CHECK_S = 1.5
PYTHON = sys.executable
SCRIPT = Path(PYTHON).with_name("keysentry")  # the console script installed next to the interpreter


@dataclass
class Command:
    name: str
    argv: list[str]
    env: dict[str, str]
    target_s: float | None = None  # None: not a target row
    note: str = ""
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system seconds of the process
    stdout: str = ""

    @property
    def median(self) -> float:
        return median(self.times)

    def run(self, measured: bool) -> None:
        before = _children_cpu_s()
        started = time.perf_counter()
        done = subprocess.run(self.argv, env=self.env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        cpu = _children_cpu_s() - before
        if done.returncode != 0:
            raise SystemExit(f"{self.name}: exit code {done.returncode}\n{done.stderr.strip()[-2000:]}")
        self.stdout = done.stdout
        if measured:
            self.times.append(elapsed)
            self.cpu.append(cpu)


def _children_cpu_s() -> float:
    """CPU seconds of every child process waited for so far: the delta around one run is its own.

    Wall time is the target, but on a machine shared with other work it includes waiting for the
    core; the CPU time shows what the command itself costs.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without KEYSENTRY_* settings, so only what the bench sets applies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
    env.update(extra or {})
    return env


def import_costs(command: Command, top: int = 15) -> list[tuple[int, int, str]]:
    """(cumulative µs, depth, module) of the costliest imports near the top of the import tree."""
    traced = [command.argv[0], "-X", "importtime", *command.argv[1:]]
    done = subprocess.run(traced, env=command.env, capture_output=True, text=True, check=False)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        if depth <= 2:
            rows.append((int(cumulative), depth, name.strip()))
    return sorted(rows, reverse=True)[:top]


def show_imports(command: Command) -> None:
    print(f"costliest imports of `{command.name}` (python -X importtime; depth 0: imported by the command):")
    for cumulative, depth, name in import_costs(command):
        print(f"  {cumulative / 1000:7.1f} ms  {'  ' * depth}{name}")


def commands(exchange: str, base_url: str) -> list[Command]:
    key = bench_key(exchange, 0)
    creds = {"KEYSENTRY_API_KEY": key.api_key, "KEYSENTRY_API_SECRET": key.secret}
    if key.passphrase:
        creds["KEYSENTRY_API_PASSPHRASE"] = key.passphrase
    help_m = [PYTHON, "-m", "keysentry", "check", "--help"]
    out = [
        Command("python -c pass", [PYTHON, "-c", "pass"], clean_env()),
        Command("python -m keysentry check --help", help_m, clean_env(), TARGET_HELP_S),
    ]
    if SCRIPT.exists():
        out.append(
            Command("keysentry check --help", [str(SCRIPT), "check", "--help"], clean_env(), TARGET_HELP_S)
        )
    check = [PYTHON, "-m", "keysentry", "check", exchange, "--base-url", base_url, "--json"]
    out.append(Command(f"keysentry check {exchange} --json", check, clean_env(creds), TARGET_CHECK_S))
    out.append(
        Command(
            "  help, TYPER_USE_RICH=0",
            help_m,
            clean_env({"TYPER_USE_RICH": "0"}),
            note="prototype: typer's plain help, no rich",
        )
    )
    return out


def report(timed: Sequence[Command], args: argparse.Namespace) -> bool:
    baseline = timed[0].median
    print(
        f"{machine()}; each command pinned to one core, the simulators on the other; medians of {args.runs} runs"
    )
    print(
        f"{'command':<34} {'median s':>8} {'min':>6} {'max':>6} {'minus python -c pass':>21} "
        f"{'CPU s':>6}  verdict"
    )
    ok = True
    for c in timed:
        if c.target_s is None:
            verdict = c.note
        else:
            met = c.median < c.target_s
            ok = ok and met
            verdict = f"{'meets' if met else 'MISSES'} (< {c.target_s} s)"
        print(
            f"{c.name:<34} {c.median:>8.3f} {min(c.times):>6.3f} {max(c.times):>6.3f} "
            f"{c.median - baseline:>20.3f}s {median(c.cpu):>6.3f}  {verdict}"
        )
    shown: set[str] = set()
    for c in timed:
        kind = "help" if "--help" in c.argv else "check"
        if c.target_s is not None and (args.importtime or c.median >= c.target_s) and kind not in shown:
            shown.add(kind)  # both ways of asking for help import the same modules
            show_imports(c)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchange", default="binance", choices=EXCHANGES)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--importtime", action="store_true", help="print the import costs even when met")
    args = parser.parse_args()
    have, _ = available_exchanges([args.exchange])
    if not have:
        print(f"keysentry has no adapter for {args.exchange} yet")
        return 1
    server_core, client_core = cores()
    os.sched_setaffinity(0, {client_core})  # the commands inherit it
    with SimServer(healthy_scenario([args.exchange], 1), server_core) as server:
        timed = commands(args.exchange, server.urls[args.exchange])
        for i in range(args.runs + 1):
            for c in timed:
                c.run(measured=i > 0)
        check = next(c for c in timed if c.target_s == TARGET_CHECK_S)
        status = json.loads(check.stdout.splitlines()[0])["status"]
        if status != "connected":
            raise SystemExit(f"the healthy key was diagnosed {status}: the bench scenario is broken")
        return 0 if report(timed, args) else 1


if __name__ == "__main__":
    sys.exit(main())
