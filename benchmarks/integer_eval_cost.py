"""What evaluating in the exported integer arithmetic costs against the float fake-quant arithmetic
of training: the same checkpoints of a ladder (``tools/qat_ladder.py --seeds ...``), scored both ways.

    python benchmarks/integer_eval_cost.py --ladder-dir results/ladder_aligned \
        --fp-checkpoint checkpoints/pretrained/FP32.pth --data-root data/synthetic

Prints, per ladder step, the test AEE and retention (FP AEE / step AEE) in each arithmetic, mean ±
standard deviation over the seed folders found, and the seconds each evaluation took.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.evaluation.evaluate import evaluate_checkpoint  # noqa: E402
from snn.evaluation.model_card import VARIANTS  # noqa: E402
from snn.models.checkpoint import load_model  # noqa: E402


def _score(path: Path, data_root: Path, integer: bool) -> tuple[float, float]:
    model = load_model(path)
    model.integer_eval = integer
    start = time.perf_counter()
    result = evaluate_checkpoint(path, data_root, "test", model=model, progress=False)
    return result.metrics["dense"]["overall"]["aee"], time.perf_counter() - start


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ladder-dir", type=Path, required=True, help="a qat_ladder output folder (seed_*/V2_*)")
    p.add_argument("--fp-checkpoint", type=Path, required=True, help="the ladder's full-precision model")
    p.add_argument("--data-root", type=Path, required=True)
    args = p.parse_args(argv)
    seeds = sorted(args.ladder_dir.glob("seed_*")) or [args.ladder_dir]
    fp_aee, _ = _score(args.fp_checkpoint, args.data_root, True)
    print(f"FP32 test AEE {fp_aee:.4f} px; seeds: {', '.join(s.name for s in seeds)}")
    print("| step | float AEE | integer AEE | float retention | integer retention | max |diff| | s float | s int |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in VARIANTS[1:]:
        rows = []
        for seed in seeds:
            path = seed / f"V2_{variant}" / "checkpoints" / "best_model.pth"
            if not path.is_file():
                continue
            rows.append((*_score(path, args.data_root, False), *_score(path, args.data_root, True)))
        if not rows:
            continue
        fl, tf, it, ti = (list(col) for col in zip(*rows, strict=True))
        diff = max(abs(a - b) for a, b in zip(fl, it, strict=True))
        print(
            f"| {variant} | {_mean_std(fl)} | {_mean_std(it)} | {_mean_std([fp_aee / a for a in fl])} | "
            f"{_mean_std([fp_aee / a for a in it])} | {diff:.4f} | "
            f"{statistics.mean(tf):.1f} | {statistics.mean(ti):.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
