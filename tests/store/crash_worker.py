"""Processes for the crash tests to kill with SIGKILL at random moments (tests/store/test_crash.py).

    python crash_worker.py update PLAN.json   switch each connection between its two keys, forever
    python crash_worker.py rewrap PLAN.json   rewrap every stored secret (credentials, webhooks) to the
                                              newest key version

This process is a zygote: it imports everything once, then for each "fork" line on stdin forks
a child that opens the store and does the work, printing "ready <pid>" when it starts. On the
next line ("kill") the zygote kills that child with SIGKILL, reaps it and prints "exit <code>"
(-9 when killed; 0 when the work had ended, after "done <n>"). The zygote, not the test, sends
the signal: until the zygote reaps the child its pid cannot be reused, so a kill that comes after
the work ended can never hit another process of the machine.
So each kill costs a fork, not a Python start, and the test can afford many of them.

The plan names the database (url, schema), the vault directory and, for `update`, the simulator
URL and each connection's two keys. The master key comes from KEYSENTRY_MASTER_KEY.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import traceback
from typing import Any

from sqlalchemy import Connection

from keysentry.connections import ConnectionChanged, ConnectionService, DuplicateKey, KeyRefused, NewKey
from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
from keysentry.diagnosis.profiles import get_profile
from keysentry.domain.secrets import Secret
from keysentry.exchanges.transport import Timeouts, Transport
from keysentry.store import connections as repo
from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.rewrap import StoreRewrapTargets
from keysentry.vault import RewrapReport, Vault, rewrap

# What the work imports lazily, imported once here so that each forked child starts at once
# (ConnectionService() alone imports ~85 modules, pydantic among them: a second or more per child
# on a loaded machine, where the child must be ready within the test's READY_TIMEOUT_S).
PRELOAD = (
    "keysentry.monitor.policy",
    "keysentry.monitor.service",
    "aiosqlite",
    "asyncpg",
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "keysentry.credentials",
    "keysentry.exchanges.bybit",
    "keysentry.diagnosis.catalog",
)


def _ready() -> None:
    print(f"ready {os.getpid()}", flush=True)


def _open_vault(plan: dict[str, Any]) -> Vault:
    return Vault.open(plan["vault_dir"], master_key=os.environ["KEYSENTRY_MASTER_KEY"], create=False)


async def _update(plan: dict[str, Any]) -> None:
    db = await Database.open(plan["url"], schema=plan["schema"], migrate=False)
    vault = _open_vault(plan)
    async with Transport(timeouts=Timeouts(connect=2.0, total=5.0)) as transport:
        service = ConnectionService(
            db,
            vault=vault,
            engine=DiagnosisEngine(transport),
            options=lambda e, env, p: CheckOptions(
                profile=get_profile(p), environment=env, base_url=plan["base_url"]
            ),
        )
        keys = {
            cid: [NewKey(k["api_key"], Secret(k["secret"])) for k in pair]
            for cid, pair in plan["connections"].items()
        }
        # start each connection with the key that is NOT current: a child that began with the
        # current key would spend its first round trip on DuplicateKey, and on a loaded machine
        # many children were killed before they had switched anything (no crash mid-update tested)
        turn: dict[str, int] = {}
        async with db.session() as s:
            for cid, pair in keys.items():
                row = await repo.get_live(s, "local", cid)
                current = row.api_key_hash if row is not None else None
                turn[cid] = int(current == creds.api_key_hash(vault, pair[0].api_key))

        async def switch(cid: str) -> None:
            while True:
                # DuplicateKey: that key is current already, so the other one is next;
                # KeyRefused: the simulator could not answer this once, and nothing was switched;
                # ConnectionChanged: on PostgreSQL the killed worker's last COMMIT may land after this
                # worker read the connection: the compare-and-swap refuses the stale switch
                with contextlib.suppress(DuplicateKey, KeyRefused, ConnectionChanged):
                    await service.update_credentials("local", cid, keys[cid][turn[cid]], actor="crash-test")
                turn[cid] = 1 - turn[cid]

        _ready()
        await asyncio.gather(*(switch(cid) for cid in keys))


async def _rewrap(plan: dict[str, Any]) -> None:
    db = await Database.open(plan["url"], schema=plan["schema"], migrate=False)
    vault = _open_vault(plan)

    def run(conn: Connection) -> RewrapReport:
        targets = StoreRewrapTargets(conn)
        report = rewrap(vault, targets, batch=int(plan["batch"]))
        targets.finish()
        return report

    _ready()
    report = await db.run_sync(run)
    print(f"done {report.rewrapped}", flush=True)
    await db.close()


def _child(mode: str, plan: dict[str, Any]) -> None:
    code = 0
    try:
        asyncio.run(_update(plan) if mode == "update" else _rewrap(plan))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    mode, plan_path = sys.argv[1], sys.argv[2]
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    for name in PRELOAD:
        importlib.import_module(name)
    print("zygote", flush=True)
    while sys.stdin.readline().strip() == "fork":
        pid = os.fork()
        if pid == 0:
            _child(mode, plan)
        sys.stdin.readline()  # "kill" (or EOF: the test is gone)
        os.kill(pid, signal.SIGKILL)  # not reaped yet: `pid` is still this child, even if it ended
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    main()
