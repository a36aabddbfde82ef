"""Process-wide tuning for the processes that run checks: the CLI, the service and the monitor.

A check allocates thousands of short-lived objects, and a process runs many at once; at
Python's default threshold (a young-generation collection every 700 allocations) the collector
then runs every few checks and scans every object still in flight. bench/check_cpu.py measures
the difference (docs/benchmarks.md). The library never changes this on its own: a host process
that embeds keysentry keeps its own setting unless it calls `tune_collector` itself.
"""

from __future__ import annotations

import gc

__all__ = ["DEFAULT_GC_THRESHOLD", "tune_collector"]

DEFAULT_GC_THRESHOLD = 7000


def tune_collector(threshold: int) -> tuple[int, ...]:
    """Collect the young generation every `threshold` allocations; 0 keeps the interpreter's setting.

    Returns the thresholds in force before, for `gc.set_threshold(*before)`.
    """
    before = gc.get_threshold()
    if threshold < 0:
        raise ValueError(f"the collector threshold must be 0 (keep Python's) or positive, not {threshold}")
    if threshold:
        gc.set_threshold(threshold, *before[1:])
    return before
