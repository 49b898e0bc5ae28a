"""Interleaved timing: every contender once per round, so slow spells hit them all alike.

On a shared machine the speed drifts by 2-3x within a minute. Timing one contender's repeats
and then the next's lets that drift into their ratio; taking each round's ratio to the
reference and the median over rounds cancels most of it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any


def interleaved_seconds(runs: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of every call: ``rounds`` rounds, each calling every run once in order, after
    ``warmup`` untimed rounds."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if i >= warmup:
                seconds[name].append(time.perf_counter() - t0)
    return seconds


def median_ratios(seconds: dict[str, list[float]], reference: str) -> dict[str, float]:
    """Each run's median over rounds of its time over the reference's time in the same round."""
    base = seconds[reference]
    return {name: statistics.median(t / b for t, b in zip(times, base, strict=True)) for name, times in seconds.items()}


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a newly spawned process. Each measure starts from the same allocator state:
    after the training-step measures, glibc's heap made the plain LIF loop 1.5x faster and left ours
    as it was. ``fn`` must be importable and its result picklable."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()
