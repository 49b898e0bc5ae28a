"""Check on data with ground truth whether the contrast loss has its minimum at the true flow.

    python tools/contrast_landscape.py --data-root data/synthetic --split val --windows 3 --smoothness 1.0

For spans of --windows consecutive windows of every sequence, the per-pixel flow of each window is
optimized directly (no network) for the chained contrast loss plus --smoothness times its smoothness
term, once from the true flow and once from zero flow. A table gives, per span and on average, the loss
at the truth, at zero flow and at each minimum, and how far (px) each minimum lies from the truth.
A minimum from zero that scores below the truth and lies far from it is one that training finds too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

# Let the tool run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import add_format_flags, fail, format_overrides, split_hint  # noqa: E402
from snn.data.loaders import sequences_of  # noqa: E402
from snn.data.provider import build_dataset  # noqa: E402
from snn.evaluation.landscape import SpanLandscape, span_landscape, spans  # noqa: E402
from snn.utils.runtime import setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True, help="dataset folder with flow ground truth")
    add_format_flags(p)
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="split (default: val)")
    p.add_argument("--windows", type=int, default=3, help="consecutive windows per span (default: 3)")
    p.add_argument("--num-bins", type=int, default=5, help="time bins per window (default: 5)")
    p.add_argument("--smoothness", type=float, default=1.0, help="weight of the smoothness term (default: 1.0)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps per minimum (default: 300)")
    p.add_argument("--spans", type=int, default=1, help="spans per sequence (default: 1)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        for flag, value in (("--windows", args.windows), ("--num-bins", args.num_bins), ("--spans", args.spans)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if args.smoothness < 0:
            raise ValueError(f"--smoothness must be >= 0, got {args.smoothness}")
        formats = format_overrides(args)
        data = build_dataset(args.data_root, args.split, num_bins=args.num_bins, **formats)
        todo = []
        for seq in sequences_of(data):
            if not seq.has_ground_truth:
                raise ValueError(f"{seq.seq_dir}: no flow ground truth to compare the minima with")
            found = list(spans(seq, args.windows))[: args.spans]
            todo += [(f"{seq.name}[{i}]", events, flows) for i, (events, flows) in enumerate(found)]
        if not todo:
            raise ValueError(f"{args.data_root} ({args.split}): no sequence has {args.windows} windows")
        rows = []
        for name, events, flows in tqdm(todo, desc="spans", dynamic_ncols=True):
            rows.append((name, span_landscape(events, flows, args.num_bins, args.smoothness, args.steps)))
    except (ValueError, OSError) as exc:
        return fail(split_hint(exc))
    mean = SpanLandscape.mean([row for _, row in rows])
    print(
        f"Chained contrast loss + {args.smoothness} x smoothness over {args.windows} windows "
        f"({args.data_root}, {args.split}; lower is better)\n"
    )
    print(SpanLandscape.header())
    for name, row in rows:
        print(row.row(name))
    print(mean.row(f"mean of {len(rows)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
