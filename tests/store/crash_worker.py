"""Processes for the crash tests to kill with SIGKILL at random moments (tests/store/test_crash.py).

    python crash_worker.py update PLAN.json   switch each connection between its two keys, forever
    python crash_worker.py rewrap PLAN.json   rewrap every stored secret (credentials, webhooks) to the
                                              newest key version

This process is a zygote: it imports everything once, then for each "fork" line on stdin forks
a child that opens the store and does the work, printing "ready <pid>" when it starts. The test
kills that child with SIGKILL; the zygote reaps it and prints "exit <code>" (-9 when killed).
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
import sys
import traceback
from typing import Any

from sqlalchemy import Connection

from keysentry.connections import ConnectionChanged, ConnectionService, DuplicateKey, KeyRefused, NewKey
from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
from keysentry.diagnosis.profiles import get_profile
from keysentry.domain.secrets import Secret
from keysentry.exchanges.transport import Timeouts, Transport
from keysentry.store.db import Database
from keysentry.store.rewrap import StoreRewrapTargets
from keysentry.vault import RewrapReport, Vault, rewrap

# What the work imports lazily, imported once here so that each forked child starts at once.
PRELOAD = (
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
        turn = dict.fromkeys(keys, 0)

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
    for line in sys.stdin:
        if line.strip() != "fork":
            break
        pid = os.fork()
        if pid == 0:
            _child(mode, plan)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    main()
