"""Crash safety: a process killed with SIGKILL at random moments never leaves a key unreadable.

Update-credentials: a worker switches connections between two keys of their account in a
loop; it is killed at random points. After each kill every live connection has exactly one
current credential version, and it decrypts to one of the two keys, never neither.

Rewrap: the vault is rotated and a worker rewraps credentials and webhooks; it is killed at
random points. After each kill every secret (credential fields, webhook URLs and secrets) still
decrypts; at the end a rewrap run completes and every secret is on the newest key version.

Kill moments are random but adaptive, so that a slow (loaded) machine still has its kills land
in the middle of the work and a fast one does not see the work end first: each round's delay is
drawn from [0, scale], and the scale grows after a round killed before any work was committed and
shrinks after a round whose work had ended (or went far). Rounds go on past the planned count,
within a bound, until enough kills have landed mid-work; the test asserts that they did.

The random seed is printed with each failure: rerun with KEYSENTRY_CRASH_SEED=<seed>.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import canary
from keysentry.connections import ConnectionChanged, DuplicateKey
from keysentry.domain.secrets import mask_key
from keysentry.monitor import delivery
from keysentry.store import connections as repo
from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.models import CredentialVersion
from keysentry.store.monitoring import Webhook
from keysentry.store.rewrap import StoreRewrapTargets
from keysentry.vault import RewrapReport, Vault, generate_master_key, rewrap
from store.backends import (
    GOOD,
    Bench,
    SimKey,
    Target,
    bench,
    bybit_key,
    open_all,
    populate,
)

WORKER = Path(__file__).with_name("crash_worker.py")
UPDATE_KILLS = 20  # rounds planned; more (up to UPDATE_MAX_ROUNDS) while too few made progress
UPDATE_MAX_ROUNDS = 45
UPDATE_MIN_PRODUCTIVE = 5  # rounds in which updates committed before the kill
REWRAP_KILLS = 15
REWRAP_MAX_ROUNDS = 40
REWRAP_MIN_MID = 3  # kills that landed with the store part on the new key version, part on older
MAX_SCALE_S = 4.0
REWRAP_WEBHOOKS = 10
READY_TIMEOUT_S = 30.0
# A SIGKILL waits for a disk write in progress (an fsync of the WAL under a loaded CI disk): give it time.
# While the child is still in uninterruptible sleep (state D: the kernel finishing that I/O) the
# wait goes on, up to EXIT_PATIENCE waits in all; any other state at a timeout is a failure.
EXIT_TIMEOUT_S = 20.0
EXIT_PATIENCE = 4
SEED = int(os.environ.get("KEYSENTRY_CRASH_SEED", random.randrange(1 << 30)))


def _proc_state(pid: int) -> str:
    """The kernel's view of a process (state, and what it waits on), for a failure message."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return "gone"
    return f"state {stat}, waiting in {wchan or '-'}"


class Zygote:
    """The worker process: forks a child per round, which the test kills (see crash_worker.py)."""

    def __init__(self, mode: str, plan: Path, master_key: str) -> None:
        self.mode, self.plan, self.master_key = mode, plan, master_key
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []
        self.errors = bytearray()
        self._drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Zygote:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
        env["KEYSENTRY_MASTER_KEY"] = self.master_key
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            self.mode,
            str(self.plan),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        # read stderr all along: a full pipe (64 KiB) would block the next child's or the zygote's
        # write to it, which looks exactly like a worker that is never ready or never reaped
        self._drain = asyncio.create_task(self._read_errors())
        assert await self._line() == "zygote", await self._failure()
        return self

    async def _read_errors(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.errors += chunk

    async def _line(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            # EOF: the zygote is gone. Without this the wait for "exit" below would read "" forever
            # (a pytest-timeout with no reason given)
            raise AssertionError(
                f"the zygote ended (said {self.output[-5:]}; seed {SEED}): {await self._failure()}"
            )
        line = raw.decode(errors="replace").strip()
        self.output.append(line)
        return line

    async def _failure(self) -> str:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        if self._drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drain), 10)
        return self.errors.decode(errors="replace")[-3000:]

    async def run_until_killed(self, delay_s: float) -> bool:
        """Fork a worker, let it work `delay_s`, SIGKILL it. True if it was still working then."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"fork\n")
        await self.proc.stdin.drain()
        try:
            ready = await self._line()
        except TimeoutError:
            raise AssertionError(
                f"worker not ready within {READY_TIMEOUT_S} s (seed {SEED}): {await self._failure()}"
            ) from None
        if not ready.startswith("ready "):
            raise AssertionError(f"worker did not start ({ready!r}): {await self._failure()}")
        await asyncio.sleep(delay_s)
        pid = int(ready.split()[1])
        # the zygote sends the SIGKILL (no cleanup, no rollback, no flush): it has not reaped the
        # child yet, so the pid is still the child's even when its work has ended
        self.proc.stdin.write(b"kill\n")
        await self.proc.stdin.drain()
        waits = 0
        while True:
            try:
                line = await self._line(EXIT_TIMEOUT_S)
            except TimeoutError:
                waits += 1
                state = _proc_state(pid)
                if state.startswith("state D") and waits < EXIT_PATIENCE:
                    continue  # the kernel is finishing a disk write of the killed child
                raise AssertionError(
                    f"worker {pid} killed {delay_s:.3f} s after start is not reaped after "
                    f"{waits * EXIT_TIMEOUT_S:.0f} s ({state}); zygote said {self.output[-5:]}; "
                    f"seed {SEED}; stderr: {self.errors.decode(errors='replace')[-2000:]}"
                ) from None
            if line.startswith("exit "):
                break
            # else "done <n>": the work ended before the kill
        code = int(line.split()[1])
        if code != -signal.SIGKILL:
            assert code == 0, f"worker failed: {await self._failure()}"
        return code == -signal.SIGKILL

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            if self._drain is not None:
                await asyncio.wait_for(self._drain, 10)
        errors = self.errors.decode(errors="replace")
        canary.assert_no_leak("\n".join(self.output) + errors, "the worker's output")


# -- update credentials -------------------------------------------------------------------------------


async def check_updates(db: Database, vault: Vault, pairs: dict[str, tuple[SimKey, SimKey]]) -> int:
    """Every connection has one current version that opens to one of its two keys, its newest one.
    Returns how many updates the connections have had in all."""
    updates = 0
    # One snapshot for the whole check: on PostgreSQL a killed worker's COMMIT, already sent, may
    # still land while we read (its server process commits after the client died).
    async with db.engine.connect() as conn:
        snapshot = await conn.execution_options(isolation_level="SERIALIZABLE")
        async with AsyncSession(bind=snapshot) as s:
            for cid, pair in pairs.items():
                row = await repo.get_live(s, "local", cid)
                assert row is not None
                versions = await creds.versions(s, cid)
                current = [v for v in versions if v.revoked_at is None]
                assert len(current) == 1, f"{cid}: {len(current)} current versions (seed {SEED})"
                assert row.current_version == current[0].version == max(v.version for v in versions)
                opened = creds.open_version(vault, current[0], tenant_id="local")
                known = {(k.api_key, k.secret) for k in pair}
                assert (opened.api_key, opened.secret.reveal()) in known, (
                    f"{cid} opens to neither key (seed {SEED})"
                )
                assert row.api_key_hash == creds.api_key_hash(vault, opened.api_key)
                assert row.masked_key == mask_key(opened.api_key)
                for old in versions:  # revoked versions are kept, and still open to a known key
                    was = creds.open_version(vault, old, tenant_id="local")
                    assert (was.api_key, was.secret.reveal()) in known
                updates += row.current_version - 1
    return updates


def update_spec(pairs: list[tuple[SimKey, SimKey]]) -> dict[str, Any]:
    accounts = [{"id": a.account, "keys": [a.spec(**GOOD), b.spec(**GOOD)]} for a, b in pairs]
    # the worker updates as fast as it can: lift Bybit's rate limits so every check gets an answer
    names = ("ip_requests", "uid_query_api", "uid_wallet_balance", "uid_account_info", "uid_execution_list")
    names += ("uid_position_list", "uid_deposit_address", "uid_order_create", "uid_order_create_spot")
    limits = dict.fromkeys(names, 1_000_000)
    return {"seed": 1, "exchanges": {"bybit": {"accounts": accounts, "limits": limits}}}


async def test_update_credentials_survives_sigkill_anywhere(db_target: Target, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"crash seed {SEED}")
    master = generate_master_key()
    vault = Vault.open(tmp_path / "vault", master_key=master)
    pairs = [(bybit_key(f"4000000{i}"), bybit_key(f"4000000{i}")) for i in range(3)]
    db = await db_target.open()
    try:
        async with bench(db, vault, spec=update_spec(pairs)) as b:
            by_id = await _connect(b, pairs)
            plan = tmp_path / "plan.json"
            plan.write_text(
                json.dumps(
                    {
                        "url": db_target.url,
                        "schema": db_target.schema,
                        "vault_dir": str(tmp_path / "vault"),
                        "base_url": b.cluster.url("bybit"),
                        "connections": {
                            cid: [{"api_key": k.api_key, "secret": k.secret} for k in pair]
                            for cid, pair in by_id.items()
                        },
                    }
                )
            )
            progress = [0]
            productive = 0  # rounds in which updates were committed before the kill
            scale = 0.3
            async with Zygote("update", plan, master) as zygote:
                rounds = 0
                while rounds < UPDATE_KILLS or (
                    productive < UPDATE_MIN_PRODUCTIVE and rounds < UPDATE_MAX_ROUNDS
                ):
                    rounds += 1
                    await zygote.run_until_killed(rng.uniform(0.01, scale))
                    progress.append(await check_updates(db, vault, by_id))
                    made = progress[-1] - progress[-2]
                    productive += made > 0
                    # too slow to commit an update (a loaded machine): give the next one longer;
                    # several updates in one round: kill sooner, so kills keep landing early too
                    if made == 0:
                        scale = min(scale * 1.4, MAX_SCALE_S)
                    elif made > 2:
                        scale = max(scale * 0.7, 0.3)
            # the kills landed while updates were happening, and the store still takes updates
            assert productive >= UPDATE_MIN_PRODUCTIVE, (
                f"too few rounds committed updates before their kill: {progress} (seed {SEED})"
            )
            for cid, pair in by_id.items():
                for key in pair:
                    await _update_until_settled(b, cid, key)
            await check_updates(db, vault, by_id)
    finally:
        await db.close()


async def _update_until_settled(b: Bench, cid: str, key: SimKey) -> None:
    """An update after the kills: it works, or says the key is current already. A last COMMIT of a
    killed worker may still land meanwhile (PostgreSQL): then the service says to run it again."""
    for _ in range(20):
        try:
            await b.service.update_credentials("local", cid, key.new())
            return
        except DuplicateKey:
            return
        except ConnectionChanged:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} kept changing after every worker was killed")


async def _connect(b: Bench, pairs: list[tuple[SimKey, SimKey]]) -> dict[str, tuple[SimKey, SimKey]]:
    out: dict[str, tuple[SimKey, SimKey]] = {}
    for i, (first, second) in enumerate(pairs):
        outcome = await b.service.add("local", "bybit", first.new(), label=f"bot {i}")
        out[outcome.connection.id] = (first, second)
    return out


# -- rewrap ---------------------------------------------------------------------------------------------


async def test_rewrap_survives_sigkill_anywhere_and_completes(db_target: Target, tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    master = generate_master_key()
    vault = Vault.open(tmp_path / "vault", master_key=master)
    db = await db_target.open()
    try:
        held = await populate(db, vault, 60)
        hooks = await _register_webhooks(db, vault, REWRAP_WEBHOOKS)
        plan = tmp_path / "plan.json"
        plan.write_text(
            json.dumps(
                {
                    "url": db_target.url,
                    "schema": db_target.schema,
                    "vault_dir": str(tmp_path / "vault"),
                    "batch": 4,
                }
            )
        )
        mid_rewrap = 0  # kills that landed after some secrets moved to the new version, not all
        outcomes: list[str] = []
        scale = 0.25
        async with Zygote("rewrap", plan, master) as zygote:
            while len(outcomes) < REWRAP_KILLS or (
                mid_rewrap < REWRAP_MIN_MID and len(outcomes) < REWRAP_MAX_ROUNDS
            ):
                vault.rotate()  # each round has a newer version to move to
                killed = await zygote.run_until_killed(rng.uniform(0.0, scale))
                assert await open_all(db, vault) == held, f"a secret no longer opens (seed {SEED})"
                assert await _open_webhooks(db, vault) == hooks, f"a webhook no longer opens (seed {SEED})"
                spread = await _versions_in_use(db)
                assert max(spread) <= vault.current_version
                if killed and vault.current_version in spread and len(spread) > 1:
                    mid_rewrap += 1
                    outcomes.append("mid")
                elif killed and vault.current_version not in spread:
                    outcomes.append("early")  # before the first batch committed: wait longer
                    scale = min(scale * 1.5, MAX_SCALE_S)
                else:
                    outcomes.append("late")  # the rewrap had ended (or all but ended): kill sooner
                    scale = max(scale * 0.7, 0.02)
        assert mid_rewrap >= REWRAP_MIN_MID, (
            f"too few kills landed in the middle of a rewrap: {outcomes} (seed {SEED})"
        )
        report = await _rewrap_store(db, vault, batch=50)
        assert report.ok
        assert await _versions_in_use(db) == {vault.current_version}
        assert await open_all(db, vault) == held
        assert await _open_webhooks(db, vault) == hooks
        assert (await _rewrap_store(db, vault)).scanned == 0
    finally:
        await db.close()


async def _versions_in_use(db: Database) -> set[int]:
    cv = CredentialVersion
    async with db.session() as s:
        rows = await s.execute(
            select(cv.api_key_key_version, cv.secret_key_version, cv.passphrase_key_version, func.count())
            .where(cv.destroyed_at.is_(None))
            .group_by(cv.api_key_key_version, cv.secret_key_version, cv.passphrase_key_version)
        )
        found = {v for r in rows for v in r[:3] if v is not None}
        hooks = await s.execute(select(Webhook.url_key_version, Webhook.secret_key_version).distinct())
        return found | {v for r in hooks for v in r}


async def _register_webhooks(db: Database, vault: Vault, n: int) -> dict[str, tuple[str, str]]:
    """n webhooks of tenant t1, registered as the API does; id -> (URL, signing secret)."""
    out: dict[str, tuple[str, str]] = {}
    for i in range(n):
        url = f"https://hooks.example.com/crash/{i}"
        view, secret = await delivery.create_webhook(
            db, vault, tenant_id="t1", url=url, event_types=None, actor="crash-test", now=datetime.now(UTC)
        )
        out[view.id] = (url, secret.reveal())
    return out


async def _open_webhooks(db: Database, vault: Vault) -> dict[str, tuple[str, str]]:
    async with db.session() as s:
        rows = (await s.execute(select(Webhook))).scalars().all()
    return {
        r.id: (
            vault.decrypt(
                r.url_ciphertext,
                tenant=r.tenant_id,
                connection=r.id,
                field=delivery.URL_FIELD,
                key_version=r.url_key_version,
            ).reveal(),
            vault.decrypt(
                r.secret_ciphertext,
                tenant=r.tenant_id,
                connection=r.id,
                field=delivery.SECRET_FIELD,
                key_version=r.secret_key_version,
            ).reveal(),
        )
        for r in rows
    }


async def _rewrap_store(db: Database, vault: Vault, batch: int = 500) -> RewrapReport:
    def go(conn: SyncConnection) -> RewrapReport:
        targets = StoreRewrapTargets(conn)
        report = rewrap(vault, targets, batch=batch)
        targets.finish()
        return report

    return await db.run_sync(go)
