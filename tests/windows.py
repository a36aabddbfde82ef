"""Fixed rate-limit windows in tests: start a burst where no window boundary can split it.

Simulators count weight in windows aligned to their clock (Binance's minute, Bybit's 5 s); a test
that expects its n-th request to be refused fails if a boundary falls between its requests.
"""

from __future__ import annotations

import asyncio
import time


async def fresh_window(window_s: float, room_s: float = 5, clock_offset_ms: int = 0) -> None:
    """Wait, if need be, so the next `room_s` seconds fall in one window of a simulator's clock."""
    now = time.time() + clock_offset_ms / 1000
    left = window_s - now % window_s
    if left < room_s:
        await asyncio.sleep(left + 0.05)
