"""The collector threshold the processes that run checks set (keysentry.process), and how a bad
setting is named."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from keysentry.process import DEFAULT_GC_THRESHOLD, tune_collector
from keysentry.settings import Settings, settings_problem


@pytest.fixture(autouse=True)
def _kept_threshold() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_tune_sets_the_young_generation_only_and_returns_what_was() -> None:
    gc.set_threshold(700, 11, 12)
    assert tune_collector(5000) == (700, 11, 12)
    assert gc.get_threshold() == (5000, 11, 12)


def test_zero_keeps_the_interpreters_setting() -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0 \(keep Python's\) or positive"):
        tune_collector(-1)


def test_the_setting_defaults_to_the_measured_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYSENTRY_GC_THRESHOLD", raising=False)
    assert Settings().gc_threshold == DEFAULT_GC_THRESHOLD == 7000
    monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", "0")
    assert Settings().gc_threshold == 0


@pytest.mark.parametrize("value", ["-5", "lots", "2000000"])
def test_a_bad_threshold_is_named_by_variable_without_its_value(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("KEYSENTRY_GC_THRESHOLD", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = settings_problem(caught.value)
    assert message.startswith("KEYSENTRY_GC_THRESHOLD: "), message
    assert value not in message


def test_monitor_settings_are_named_with_their_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from keysentry.monitor.service import MonitorConfig

    monkeypatch.setenv("KEYSENTRY_MONITOR_INTERVAL_HOURS", "soon")
    with pytest.raises(ValidationError) as caught:
        MonitorConfig()
    message = settings_problem(caught.value)
    assert message.startswith("KEYSENTRY_MONITOR_INTERVAL_HOURS: "), message
    assert "soon" not in message


def test_a_validators_own_sentence_is_not_prefixed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSENTRY_EGRESS_IPS", "127.0.0.2,nowhere")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = settings_problem(caught.value)
    assert message.startswith("KEYSENTRY_EGRESS_IPS: 'nowhere' is not an IP address"), message
    assert message.count("KEYSENTRY_EGRESS_IPS") == 1 and "Value error" not in message
