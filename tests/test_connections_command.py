"""The local CLI over the store: what each command prints and returns, against the Bybit simulator.

The commands run as the CLI runs them (their own event loop, settings from KEYSENTRY_*), so the
simulator runs on a thread of its own. Every output is scanned for the canary secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import canary
from keysentry import connections_command as cc
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.vault import generate_master_key
from store.backends import GOOD, bybit_key

KEYS = {
    "a1": bybit_key("80000001"),
    "a2": bybit_key("80000001"),
    "b1": bybit_key("80000002"),
    "soon": bybit_key("80000003"),
    "expired": bybit_key("80000004"),
}


def _spec() -> dict[str, Any]:
    fields = {
        "soon": {"permissions": ["Spot.SpotTrade"], "created_at": "-85d"},  # no IP bound: 90-day rule
        "expired": {"permissions": ["Spot.SpotTrade"], "created_at": "-95d"},
    }
    accounts: dict[str, list[dict[str, Any]]] = {}
    for name, k in KEYS.items():
        accounts.setdefault(k.account, []).append(k.spec(**fields.get(name, GOOD)))
    return {
        "seed": 2,
        "exchanges": {"bybit": {"accounts": [{"id": a, "keys": ks} for a, ks in accounts.items()]}},
    }


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """The Bybit simulator on a thread with its own loop (the commands run theirs with asyncio.run)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cluster = SimCluster(parse_scenario(_spec()))
    asyncio.run_coroutine_threadsafe(cluster.start(), loop).result(timeout=10)
    try:
        yield cluster.url("bybit")
    finally:
        asyncio.run_coroutine_threadsafe(cluster.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


@dataclass
class Cli:
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    data_dir: Path

    def run(self, command: Callable[..., int], *args: Any, key: str | None = None, **kwargs: Any) -> Result:
        with self.monkeypatch.context() as m:
            if key is not None:
                m.setenv("KEYSENTRY_API_KEY", KEYS[key].api_key)
                m.setenv("KEYSENTRY_API_SECRET", KEYS[key].secret)
            code = command(*args, **kwargs)
        captured = self.capsys.readouterr()
        for where, text in (("stdout", captured.out), ("stderr", captured.err)):
            canary.assert_no_leak(text, f"the command's {where}")
            assert "Traceback" not in text, text
        return Result(code, captured.out, captured.err)

    def add(self, key: str, label: str = "bot", **kwargs: Any) -> Result:
        return self.run(cc.add, "bybit", label=label, key=key, **kwargs)

    def check(self, key: str) -> Result:
        """`keysentry check bybit --json` with this key: checks it, stores nothing."""
        from keysentry import check_command

        return self.run(
            check_command.run,
            "bybit",
            key=key,
            profile="trading",
            environment="mainnet",
            base_url=None,
            as_json=True,
            from_file=None,
        )

    def ids(self) -> list[str]:
        return [c["id"] for c in self.run(cc.list_connections, as_json=True).json_lines()]


@pytest.fixture
def cli(
    sim_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    import os

    for name in [n for n in os.environ if n.startswith("KEYSENTRY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KEYSENTRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KEYSENTRY_MASTER_KEY", generate_master_key())
    monkeypatch.setenv("KEYSENTRY_BYBIT_BASE_URL", sim_url)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    return Cli(monkeypatch, capsys, tmp_path / "data")


# -- add --------------------------------------------------------------------------------------------------


def test_add_checks_and_saves_then_list_shows_it_without_secrets(cli: Cli) -> None:
    added = cli.add("a1", label="spot bot")
    assert added.code == 0, added.err
    assert "CONNECTED" in added.out and "saved as connection con_" in added.out
    listed = cli.run(cc.list_connections)
    assert listed.code == 0
    for text in ("spot bot", KEYS["a1"].api_key[:4] + "…" + KEYS["a1"].api_key[-4:], "connected", "80000001"):
        assert text in listed.out
    assert KEYS["a1"].api_key not in listed.out + added.out
    rows = cli.run(cc.list_connections, as_json=True).json_lines()
    assert [(r["label"], r["status"], r["account_id"]) for r in rows] == [
        ("spot bot", "connected", "80000001")
    ]


def test_add_refuses_a_broken_key_unless_saved_anyway(cli: Cli) -> None:
    refused = cli.add("expired", label="old")
    assert refused.code == 2
    assert "EXPIRED" in refused.out  # what is wrong and how to fix it
    assert "not saved" in refused.err and "--save-anyway" in refused.err
    assert cli.ids() == []
    saved = cli.add("expired", label="old", save_anyway=True)
    assert saved.code == 2  # saved, but its status is an error
    assert len(cli.ids()) == 1
    assert "expired" in cli.run(cc.list_connections).out


def test_add_names_the_existing_connection_of_the_same_account(cli: Cli) -> None:
    assert cli.add("a1", label="main").code == 0
    [existing] = cli.ids()
    again = cli.add("a2", label="second")
    assert again.code == 2
    assert f"keysentry update {existing}" in again.err
    as_json = cli.add("a2", label="second", as_json=True)
    [line] = as_json.json_lines()
    assert line["existing_id"] == existing and line["saved"] is False
    assert line["diagnosis"]["status"] == "already_connected"


def test_add_without_a_label_or_credentials_is_a_usage_error(cli: Cli) -> None:
    no_label = cli.run(cc.add, "bybit", label=None, key="a1")
    assert no_label.code == 3 and "--label" in no_label.err
    no_creds = cli.run(cc.add, "bybit", label="bot")  # no env, and stdin is not a terminal
    assert no_creds.code == 3 and "KEYSENTRY_API_KEY" in no_creds.err
    bad_exchange = cli.run(cc.add, "nosuchex", label="bot", key="a1")
    assert bad_exchange.code == 3 and "unsupported exchange" in bad_exchange.err
    bad_profile = cli.add("a1", profile="no-such-profile")
    assert bad_profile.code == 3 and "profile" in bad_profile.err


def test_add_from_a_file_saves_each_key_and_exits_with_the_worst_status(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    entries = [
        {"api_key": KEYS[n].api_key, "secret": KEYS[n].secret, "label": f"file {n}"} for n in ("b1", "soon")
    ]
    path.write_text(json.dumps(entries))
    result = cli.run(cc.add, "bybit", label=None, from_file=path)
    assert result.code == 1  # expires_soon is a warning
    listed = cli.run(cc.list_connections)
    assert "file b1" in listed.out and "file soon" in listed.out
    assert "expires_soon" in listed.out
    assert "in 4 days" in listed.out or "in 5 days" in listed.out
    assert listed.code == 1


# -- refresh, update, history, remove ------------------------------------------------------------------


def test_refresh_one_or_all(cli: Cli) -> None:
    cli.add("a1", label="one")
    cli.add("soon", label="two")
    one, two = cli.ids()
    single = cli.run(cc.refresh, one)
    assert single.code == 0 and "CONNECTED" in single.out
    every = cli.run(cc.refresh, None, all_=True, as_json=True)
    assert every.code == 1
    assert {line["connection"]["id"] for line in every.json_lines()} == {one, two}
    table = cli.run(cc.refresh, None, all_=True)
    assert one in table.out and "expires_soon" in table.out
    assert cli.run(cc.refresh, None).code == 3
    assert cli.run(cc.refresh, one, all_=True).code == 3
    missing = cli.run(cc.refresh, "con_nothere")
    assert missing.code == 2 and "no connection 'con_nothere'" in missing.err
    history = cli.run(cc.history, one, as_json=True).json_lines()
    assert [h["trigger"] for h in history] == ["refresh", "refresh", "refresh", "add"]


def test_update_replaces_the_key_and_keeps_the_connection(cli: Cli) -> None:
    cli.add("a1", label="main")
    [cid] = cli.ids()
    updated = cli.run(cc.update, cid, key="a2")
    assert updated.code == 0, updated.err
    assert "key version 2" in updated.out
    [row] = cli.run(cc.list_connections, as_json=True).json_lines()
    assert (row["id"], row["label"], row["credential_version"]) == (cid, "main", 2)
    other_account = cli.run(cc.update, cid, key="b1")
    assert other_account.code == 2 and "belongs to bybit account 80000002" in other_account.err
    history = cli.run(cc.history, cid)
    assert history.code == 0 and "update" in history.out and "add" in history.out


def test_remove_asks_unless_yes_and_destroys_the_key(cli: Cli) -> None:
    cli.add("a1", label="main")
    [cid] = cli.ids()
    unconfirmed = cli.run(cc.remove, cid)  # stdin is not a terminal: no one to ask
    assert unconfirmed.code == 3 and "--yes" in unconfirmed.err
    assert cli.ids() == [cid]
    removed = cli.run(cc.remove, cid, yes=True)
    assert removed.code == 0 and "destroyed" in removed.out
    assert cli.ids() == []
    assert cli.run(cc.history, cid).code == 2


# -- db and vault ----------------------------------------------------------------------------------------


def test_db_upgrade_creates_then_reports_up_to_date(cli: Cli) -> None:
    first = cli.run(cc.db_upgrade)
    assert first.code == 0 and "upgraded from revision none" in first.out
    assert (cli.data_dir / "keysentry.db").exists()
    second = cli.run(cc.db_upgrade)
    assert second.code == 0 and "up to date" in second.out


def test_vault_rotate_then_rewrap_moves_stored_keys(cli: Cli) -> None:
    cli.add("a1", label="main")
    assert "key versions 1, primary 1" in cli.run(cc.vault_status).out
    rotated = cli.run(cc.vault_rotate)
    assert rotated.code == 0 and "key version 2 is now primary" in rotated.out
    assert "run `keysentry vault rewrap`" in cli.run(cc.vault_status).out
    rewrapped = cli.run(cc.vault_rewrap)
    assert rewrapped.code == 0 and "moved 2 of 2" in rewrapped.out
    assert "rewrap" not in cli.run(cc.vault_status).out.split("primary 2")[1]
    # the rewrapped key still works
    [cid] = cli.ids()
    assert cli.run(cc.refresh, cid).code == 0


def test_a_wrong_master_key_is_one_sentence_and_exit_3(cli: Cli) -> None:
    cli.add("a1", label="main")
    cli.monkeypatch.setenv("KEYSENTRY_MASTER_KEY", generate_master_key())
    [cid] = cli.ids()  # listing needs no key
    sealed = cli.run(cc.refresh, cid)
    assert sealed.code == 3
    assert "master key" in sealed.err


def test_an_unusable_database_url_is_a_usage_error(cli: Cli) -> None:
    cli.monkeypatch.setenv("KEYSENTRY_DATABASE_URL", "mysql://root:Sup3rSecretPw@db/ks")
    result = cli.run(cc.list_connections)
    assert result.code == 3
    assert "not supported" in result.err and "Sup3rSecretPw" not in result.err


def test_a_lost_keyring_is_never_silently_replaced_once_keys_are_stored(cli: Cli) -> None:
    cli.add("a1", label="main")
    [cid] = cli.ids()
    keyring = cli.data_dir / "keyring.json"
    keyring.unlink()
    for result in (cli.run(cc.refresh, cid), cli.add("b1", label="other")):
        assert result.code == 3
        assert "restore the keyring" in result.err
    assert not keyring.exists()
    assert cli.ids() == [cid]  # listing needs no keyring


def test_bad_settings_are_named_without_a_traceback(cli: Cli) -> None:
    cli.monkeypatch.setenv("KEYSENTRY_EGRESS_IPS", "not-an-ip")
    result = cli.run(cc.list_connections)
    assert result.code == 3
    assert "KEYSENTRY_EGRESS_IPS" in result.err


# -- the monitor's policy and events -----------------------------------------------------------------------


def _stored_events(cli: Cli) -> list[tuple[str, str, str]]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(cli.data_dir / "keysentry.db")) as db:
        rows = db.execute("SELECT type, data FROM webhook_events ORDER BY created_at, type").fetchall()
    return [(t, json.loads(d)["status_before"], json.loads(d)["status_after"]) for t, d in rows]


def test_keys_are_scheduled_by_the_monitors_settings_and_changes_are_announced(cli: Cli) -> None:
    cli.monkeypatch.setenv("KEYSENTRY_MONITOR_INTERVAL_HOURS", "1")  # what `keysentry monitor` reads
    assert cli.add("a1", label="main").code == 0
    [row] = cli.run(cc.list_connections, as_json=True).json_lines()
    planned = datetime.fromisoformat(row["next_check_at"]) - datetime.fromisoformat(row["updated_at"])
    # a slot of the operator's 1-hour interval, half an interval away at least (not 6 or 12 hours)
    assert timedelta(minutes=30) <= planned < timedelta(minutes=90), planned
    assert _stored_events(cli) == [("connection.status_changed", "unchecked", "connected")]
    for _ in range(2):  # nothing changed: nothing announced
        assert cli.run(cc.refresh, row["id"]).code == 0
    assert len(_stored_events(cli)) == 1


def test_a_bad_monitor_setting_is_named_without_a_traceback(cli: Cli) -> None:
    cli.monkeypatch.setenv("KEYSENTRY_MONITOR_INTERVAL_HOURS", "soon")
    result = cli.add("a1", label="main")
    assert result.code == 3
    assert "KEYSENTRY_MONITOR_INTERVAL_HOURS" in result.err and "soon" not in result.err


# -- the collector threshold of processes that run checks (keysentry.process) ---------------------------


@pytest.fixture
def threshold() -> Iterator[Callable[[], int]]:
    import gc

    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    yield lambda: gc.get_threshold()[0]
    gc.set_threshold(*before)


def test_commands_that_run_checks_set_the_collector_threshold(cli: Cli, threshold: Callable[[], int]) -> None:
    from keysentry import monitor_command
    from keysentry.api import server

    cli.monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", "12345")
    assert cli.add("a1", label="main").code == 0
    assert threshold() == 12345

    cli.monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", "23456")
    result = cli.check("b1")
    assert result.code == 0, result.err
    assert threshold() == 23456

    cli.monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", "3456")
    assert cli.run(monitor_command.monitor, once=True).code == 0
    assert threshold() == 3456

    cli.monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", "4567")
    server._prepare()  # what `keysentry serve` runs before listening
    assert threshold() == 4567


def test_a_celery_pool_process_sets_the_threshold_before_its_first_task(
    cli: Cli, threshold: Callable[[], int]
) -> None:
    from keysentry.monitor.celery_app import _Process

    async def seen(monitor: Any) -> int:
        return threshold()

    cli.monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", "5678")
    process = _Process()  # what each pool process keeps: its loop and monitor, made on the first task
    try:
        assert process.run(seen) == 5678
    finally:
        process.close()


def test_a_threshold_of_zero_leaves_the_interpreters(cli: Cli, threshold: Callable[[], int]) -> None:
    cli.monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", "0")
    assert cli.add("a1", label="main").code == 0
    assert threshold() == 700


def test_a_bad_threshold_stops_a_check_naming_the_variable(cli: Cli, threshold: Callable[[], int]) -> None:
    cli.monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", "lots")
    result = cli.check("b1")
    assert result.code == 3 and result.out == ""
    assert "KEYSENTRY_GC_THRESHOLD: Input should be a valid integer" in result.err
    assert "lots" not in result.err and "pydantic.dev" not in result.err
    assert threshold() == 700
