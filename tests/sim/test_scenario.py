"""Scenario files: times, includes, the JSON schema, and the message for every kind of bad file."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from keysentry.sim.runner import DEMO_SCENARIO, print_schema
from keysentry.sim.scenario import EXCHANGES, Scenario, ScenarioError, load_scenario, parse_scenario

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BINANCE_KEY = {"api_key": "A" * 64, "secret": "S" * 64}


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def binance(**spec: Any) -> dict[str, Any]:
    return {"binance": {"accounts": [{"id": "1", "keys": [dict(BINANCE_KEY)]}], **spec}}


def error_of(path_or_data: Path | dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as info:
        if isinstance(path_or_data, Path):
            load_scenario(path_or_data, now=NOW)
        else:
            parse_scenario(path_or_data, now=NOW)
    return str(info.value)


# -- times --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("now", NOW),
        ("+5d", NOW + timedelta(days=5)),
        ("-40d", NOW - timedelta(days=40)),
        ("+3h", NOW + timedelta(hours=3)),
        ("-90s", NOW - timedelta(seconds=90)),
        ("+1.5w", NOW + timedelta(weeks=1.5)),
        ("2026-01-31T00:00:00Z", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T02:00:00+02:00", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T00:00:00", datetime(2026, 1, 31, tzinfo=UTC)),  # no zone: UTC
        (1_700_000_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)
def test_times_are_absolute_epoch_or_relative_to_load(given: Any, expected: datetime) -> None:
    key = {**BINANCE_KEY, "expires_at": given, "created_at": given}
    scenario = parse_scenario({"exchanges": {"binance": {"accounts": [{"id": "1", "keys": [key]}]}}}, now=NOW)
    loaded = scenario.exchanges["binance"].accounts[0].keys[0]
    assert loaded.expires_at == expected
    assert loaded.created_at == expected


def test_relative_times_in_every_file_share_one_now(tmp_path: Path) -> None:
    write(tmp_path / "okx.yaml", {"exchanges": {"okx": {"maintenance": [{"start": "-1h", "end": "+2h"}]}}})
    main = write(
        tmp_path / "main.yaml",
        {"include": ["okx.yaml"], "exchanges": {"binance": {"maintenance": [{"start": "-1h"}]}}},
    )
    scenario = load_scenario(main, now=NOW)
    assert scenario.exchanges["okx"].maintenance[0].end == NOW + timedelta(hours=2)
    assert (
        scenario.exchanges["okx"].maintenance[0].start == scenario.exchanges["binance"].maintenance[0].start
    )


def test_a_bad_time_names_the_field() -> None:
    key = {**BINANCE_KEY, "expires_at": "tomorrow"}
    message = error_of({"exchanges": {"binance": {"accounts": [{"id": "1", "keys": [key]}]}}})
    assert "exchanges.binance.accounts[0].keys[0].expires_at" in message
    assert "'tomorrow' is not a time" in message and "+5d" in message


# -- includes ---------------------------------------------------------------------------------


def test_includes_merge_exchanges_and_the_including_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"seed": 1, "admin_token": "from-a", "exchanges": binance()})
    write(tmp_path / "sub" / "b.yaml", {"seed": 2, "include": ["c.yaml"], "exchanges": {"okx": {}}})
    write(tmp_path / "sub" / "c.yaml", {"exchanges": {"bybit": {"clock_offset_ms": 5}}})
    main = write(tmp_path / "main.yaml", {"seed": 9, "include": ["a.yaml", "sub/b.yaml"]})
    scenario = load_scenario(main, now=NOW)
    assert sorted(scenario.exchanges) == ["binance", "bybit", "okx"]
    assert scenario.exchanges["bybit"].clock_offset_ms == 5  # c.yaml found relative to sub/b.yaml
    assert scenario.seed == 9
    assert scenario.admin_token == "from-a"  # the including file does not set it: the first include does


def test_an_unset_seed_comes_from_the_first_include_that_sets_one(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"exchanges": {"okx": {}}})
    write(tmp_path / "b.yaml", {"seed": 4, "exchanges": {"bybit": {}}})
    main = write(tmp_path / "main.yaml", {"include": ["a.yaml", "b.yaml"], "admin_token": "mine"})
    scenario = load_scenario(main, now=NOW)
    assert (scenario.seed, scenario.admin_token) == (4, "mine")


def test_the_same_exchange_in_two_files_is_an_error_naming_both(tmp_path: Path) -> None:
    write(tmp_path / "one.yaml", {"exchanges": binance()})
    write(tmp_path / "two.yaml", {"exchanges": {"binance": {}}})
    main = write(tmp_path / "main.yaml", {"include": ["one.yaml", "two.yaml"]})
    message = error_of(main)
    assert "'binance'" in message
    assert str(tmp_path / "one.yaml") in message and str(tmp_path / "two.yaml") in message
    assert "include[1]" in message


def test_an_exchange_declared_by_the_including_file_and_an_include_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "okx.yaml", {"exchanges": {"okx": {}}})
    main = write(tmp_path / "main.yaml", {"include": ["okx.yaml"], "exchanges": {"okx": {}}})
    message = error_of(main)
    assert str(main) in message and str(tmp_path / "okx.yaml") in message


def test_a_missing_include_names_the_including_file_and_the_entry(tmp_path: Path) -> None:
    main = write(tmp_path / "main.yaml", {"include": ["demo-okx.yaml", "nope.yaml"]})
    write(tmp_path / "demo-okx.yaml", {"exchanges": {"okx": {}}})
    message = error_of(main)
    assert message.startswith(f"{main}: include[1]")
    assert "'nope.yaml'" in message and str(tmp_path / "nope.yaml") in message
    assert "relative to the folder" in message


def test_include_loops_are_reported_with_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"include": ["b.yaml"]})
    write(tmp_path / "b.yaml", {"include": ["a.yaml"]})
    message = error_of(tmp_path / "a.yaml")
    assert "include loop (a.yaml -> b.yaml -> a.yaml)" in message
    assert str(tmp_path / "b.yaml") in message  # the file holding the include that closes the loop
    assert "loop (self.yaml -> self.yaml)" in error_of(
        write(tmp_path / "self.yaml", {"include": ["self.yaml"]})
    )


def test_including_the_same_file_twice_from_different_branches_is_not_a_loop(tmp_path: Path) -> None:
    write(tmp_path / "common.yaml", {"seed": 3})
    write(tmp_path / "x.yaml", {"include": ["common.yaml"], "exchanges": {"okx": {}}})
    write(tmp_path / "y.yaml", {"include": ["common.yaml"], "exchanges": {"bybit": {}}})
    scenario = load_scenario(write(tmp_path / "main.yaml", {"include": ["x.yaml", "y.yaml"]}), now=NOW)
    assert sorted(scenario.exchanges) == ["bybit", "okx"] and scenario.seed == 3


def test_a_schema_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "frag" / "bad.yaml", {"exchanges": binance(faults={"error_rate": 1.5})})
    message = error_of(write(tmp_path / "main.yaml", {"include": ["frag/bad.yaml"]}))
    assert message.startswith(f"{bad}:")
    assert "exchanges.binance.faults.error_rate: Input should be less than or equal to 1 (got 1.5)" in message


def test_include_must_be_a_list_of_paths(tmp_path: Path) -> None:
    message = error_of(write(tmp_path / "main.yaml", {"include": "demo-okx.yaml"}))
    assert "include" in message and "valid list" in message


# -- bad files ----------------------------------------------------------------------------------


def test_a_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "absent.yaml")
    assert message == f"cannot read scenario file {tmp_path / 'absent.yaml'}: No such file or directory"


def test_bad_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "seed: 1\nexchanges:\n  binance: {accounts: [\n")
    message = error_of(path)
    assert message.startswith(f"{path}: not valid YAML")
    assert "line 4" in message


def test_bad_json_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", '{"seed": 1,\n "exchanges": {,}}')
    message = error_of(path)
    assert message.startswith(f"{path}: not valid JSON") and "line 2" in message


def test_json_scenarios_load(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.json", json.dumps({"seed": 5, "exchanges": binance()}))
    assert load_scenario(path, now=NOW).seed == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "the file is empty"), ("- a\n- b\n", "the top level must be a mapping"), ("\xff", "not UTF-8")],
)
def test_files_that_are_not_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(text.encode("latin-1"))
    message = error_of(path)
    assert message.startswith(str(path)) and expected in message


def test_schema_errors_list_every_problem_with_its_path(tmp_path: Path) -> None:
    data = {
        "sed": 1,
        "exchanges": {
            "ftx": {},
            "binance": {
                "accounts": [{"keys": [{**BINANCE_KEY, "ip_whitelist": ["10.0.0.300"], "perms": []}]}],
                "faults": {"latency": {"distribution": "uniform", "min_ms": 9, "max_ms": 1}},
            },
        },
    }
    message = error_of(write(tmp_path / "bad.yaml", data))
    lines = message.splitlines()
    assert (
        lines[0]
        == f"{tmp_path / 'bad.yaml'}: 6 problem(s) in the scenario (docs/simulators.md describes every field):"
    )
    body = "\n".join(lines[1:])
    assert "  sed: unknown field; allowed here: seed, admin_token, include, exchanges" in body
    assert "  exchanges.ftx: unknown exchange; use one of: binance, okx, bybit, kucoin" in body
    assert "  exchanges.binance.accounts[0].id: required field is missing" in body
    assert "exchanges.binance.accounts[0].keys[0].ip_whitelist: '10.0.0.300' is not an IP address" in body
    assert (
        "exchanges.binance.accounts[0].keys[0].perms: unknown field; allowed here: api_key, secret," in body
    )
    assert "exchanges.binance.faults.latency: uniform latency needs max_ms >= min_ms" in body


def test_a_long_list_of_problems_fits_on_one_screen() -> None:
    keys = [{"api_key": "k", "secret": "s", "nope": i} for i in range(30)]
    message = error_of({"exchanges": {"binance": {"accounts": [{"id": "1", "keys": keys}]}}})
    assert len(message.splitlines()) <= 14
    assert "... and 18 more" in message


def test_errors_never_echo_a_secret() -> None:
    key = {"api_key": "A" * 64, "secret": 918273645546372819, "passphrase": ["hunter2-pass"]}
    message = error_of(
        {"admin_token": 5550123, "exchanges": {"okx": {"accounts": [{"id": "1", "keys": [key]}]}}}
    )
    assert "keys[0].secret: Input should be a valid string" in message
    assert "918273645546372819" not in message and "hunter2" not in message and "5550123" not in message


def test_duplicate_keys_and_unserved_environments(tmp_path: Path) -> None:
    twice = {
        "exchanges": {
            "binance": {"accounts": [{"id": "1", "keys": [BINANCE_KEY]}, {"id": "2", "keys": [BINANCE_KEY]}]}
        }
    }
    assert "is declared twice" in error_of(twice)
    elsewhere = {
        "exchanges": {
            "binance": {"accounts": [{"id": "1", "keys": [{**BINANCE_KEY, "environment": "testnet"}]}]}
        }
    }
    assert "add it to exchanges.binance.environments" in error_of(elsewhere)


# -- the JSON schema and the shipped demo ---------------------------------------------------------


def test_the_json_schema_exports_and_describes_the_format() -> None:
    out = io.StringIO()
    print_schema(out)
    schema = json.loads(out.getvalue())
    assert schema == {**schema, **Scenario.model_json_schema()}
    assert set(schema["properties"]) == {"seed", "admin_token", "include", "exchanges"}
    assert set(schema["properties"]["exchanges"]["propertyNames"]["enum"]) == set(EXCHANGES)
    key = schema["$defs"]["KeySpec"]["properties"]
    times = key["created_at"]["anyOf"]
    assert {"type": "integer", "description": "epoch milliseconds"} in times
    assert "client_secret" in key and "clock_offset_ms" in key


def test_the_demo_scenario_includes_all_four_exchanges() -> None:
    scenario = load_scenario(DEMO_SCENARIO)
    assert set(scenario.exchanges) == set(EXCHANGES)
    assert scenario.seed == yaml.safe_load(DEMO_SCENARIO.read_text())["seed"]
    for name, spec in scenario.exchanges.items():
        keys = [k for a in spec.accounts for k in a.keys]
        assert keys, f"{name} has no demo keys"
        assert all(k.intent for k in keys), f"every {name} demo key says what it demonstrates"
