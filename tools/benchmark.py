"""Benchmark the training step of every QAT width against full precision (samples/s and ratios).

    python tools/benchmark.py                 # batch 8 of 48x48 crops, 10 timed steps each
    python tools/benchmark.py --quick --json results/benchmark.json

Prints a table of seconds per step, samples/s and each step's time over the FP step's. Timings
depend on the machine and its load: run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from snn.benchmarks.training_step import training_step_times  # noqa: E402
from snn.evaluation.report import markdown_table  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=48, help="square crop side (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measure (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="3 timed steps after 1 warm-up")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    steps, warmup = (3, 1) if args.quick else (args.steps, 2)
    rows = training_step_times(args.batch, args.size, steps, warmup)
    fp = rows[0].seconds
    cells = [[r.label, f"{1000 * r.seconds:.0f}", f"{r.samples_per_s:.1f}", f"{r.seconds / fp:.2f}"] for r in rows]
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"training step, batch {args.batch} of {args.size}x{args.size}, median of {steps} steps ({machine})\n")
    print(markdown_table(["step", "ms/step", "samples/s", "time / FP time"], cells))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"machine": machine, "batch": args.batch, "size": args.size, "steps": steps,
               "training_step": [vars(r) | {"ratio_to_fp": r.seconds / fp} for r in rows]}  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
