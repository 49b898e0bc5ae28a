"""Peak memory of reading event windows from a large events file: bounded by a window, not the file.

    python benchmarks/event_reader_memory.py                      # 50 M events, written to /tmp
    python benchmarks/event_reader_memory.py --events 5000000 --blosc

Writes an events.h5 of ``--events`` events (layout C: events/x, y, t, p and ms_to_idx; in chunks,
so writing is bounded too), then, in a fresh process that imports only the reader, slices
``--windows`` windows spread over the recording and reports the process's peak resident memory
against the target. A benchmark, not a test: the figure depends on the machine.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_MB = 300
CHUNK = 5_000_000
RATE = 1_000_000  # events per second of the written recording


def write_events(path: Path, count: int, blosc: bool) -> None:
    import h5py
    import hdf5plugin
    import numpy as np

    rng = np.random.default_rng(0)
    options = dict(hdf5plugin.Blosc(cname="zstd", clevel=3)) if blosc else {}
    with h5py.File(path, "w") as f:
        dsets = {
            name: f.create_dataset(f"events/{name}", (count,), dtype, chunks=(1 << 16,), **options)
            for name, dtype in (("x", "u2"), ("y", "u2"), ("t", "i8"), ("p", "u1"))
        }
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            dsets["x"][start : start + n] = rng.integers(0, 640, n, dtype=np.uint16)
            dsets["y"][start : start + n] = rng.integers(0, 480, n, dtype=np.uint16)
            dsets["t"][start : start + n] = (np.arange(start, start + n) * 1_000_000) // RATE
            dsets["p"][start : start + n] = rng.integers(0, 2, n, dtype=np.uint8)
        duration_ms = count * 1000 // RATE + 1
        per_ms = RATE // 1000  # event i falls at i * 1e6 / RATE us
        f["events/ms_to_idx"] = np.minimum(np.arange(duration_ms, dtype=np.int64) * per_ms, count).astype(np.uint64)


def read_windows(path: str, windows: int, window_ms: int) -> None:
    """Run in a fresh process: slice the windows and print the peak resident memory (MB)."""
    from snn.data.events import EventSlicer

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    total = 0
    with EventSlicer(path) as events:
        first, last = events.time_range()
        for k in range(windows):
            start = first + (last - first - window_ms * 1000) * k // max(windows - 1, 1)
            total += len(events.get_events(start, start + window_ms * 1000)["t"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{baseline:.1f} {peak:.1f} {total} {time.perf_counter() - t0:.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50_000_000, help="events in the file (default: %(default)s)")
    p.add_argument("--file", type=Path, default=Path("/tmp/bench_events.h5"), help="where to write it")
    p.add_argument("--blosc", action="store_true", help="compress it with Blosc, as DSEC does")
    p.add_argument("--windows", type=int, default=200, help="windows to read (default: %(default)s)")
    p.add_argument("--window-ms", type=int, default=100, help="window length (default: %(default)s ms)")
    p.add_argument("--read-only", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.read_only:
        read_windows(args.read_only, args.windows, args.window_ms)
        return 0
    t0 = time.perf_counter()
    write_events(args.file, args.events, args.blosc)
    size_mb = args.file.stat().st_size / 1e6
    print(f"wrote {args.events:,} events ({size_mb:.0f} MB{', Blosc' if args.blosc else ''}) in "
          f"{time.perf_counter() - t0:.0f} s to {args.file}")  # fmt: skip
    cmd = [sys.executable, __file__, "--read-only", str(args.file), "--windows", str(args.windows),
           "--window-ms", str(args.window_ms)]  # fmt: skip
    baseline, peak, total, seconds = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    print(f"read {args.windows} windows of {args.window_ms} ms ({int(total):,} events) in {float(seconds):.2f} s")
    print(f"peak resident memory of the reading process: {float(peak):.0f} MB (after imports {float(baseline):.0f} MB);"
          f" target < {TARGET_MB} MB: {'met' if float(peak) < TARGET_MB else 'MISSED'}")  # fmt: skip
    print(f"ratio to the file: {float(peak) / size_mb:.3f} of its size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
