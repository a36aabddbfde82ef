"""Request-weight accounting as the exchanges publish it: fixed windows aligned to the clock."""

from __future__ import annotations

import math
from collections.abc import Hashable


class FixedWindowCounter:
    """Weight used per key in the current window (Binance's X-MBX-USED-WEIGHT-1M works this way)."""

    __slots__ = ("_counts", "interval_s")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._counts: dict[Hashable, tuple[float, float]] = {}

    def window_start(self, now_s: float) -> float:
        return math.floor(now_s / self.interval_s) * self.interval_s

    def add(self, key: Hashable, weight: float, now_s: float) -> float:
        """Add `weight` to key's window and return the total used in this window."""
        start = self.window_start(now_s)
        used, seen_start = self._counts.get(key, (0.0, start))
        if seen_start != start:
            used = 0.0
        used += weight
        self._counts[key] = (used, start)
        return used

    def used(self, key: Hashable, now_s: float) -> float:
        used, seen_start = self._counts.get(key, (0.0, 0.0))
        return used if seen_start == self.window_start(now_s) else 0.0

    def seconds_to_reset(self, now_s: float) -> float:
        return self.window_start(now_s) + self.interval_s - now_s

    def reset(self) -> None:
        self._counts.clear()
