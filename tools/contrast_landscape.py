"""Check on data with ground truth whether the contrast loss has its minimum at the true flow.

    python tools/contrast_landscape.py --data-root data/synthetic --split val --windows 3 --smoothness 1.0

For spans of --windows consecutive windows of every sequence, the per-pixel flow of each window is
optimized directly (no network) for the chained contrast loss plus --smoothness times its smoothness
term, once from the true flow and once from zero flow. A table gives, per span and on average, the loss
at the truth, at zero flow and at each minimum, and how far (px) each minimum lies from the truth.
A minimum from zero that scores below the truth and lies far from it is one that training finds too.

    python tools/contrast_landscape.py --data-root data/synthetic --split val --windows 3 --tiles 16

With --tiles, a second table asks the same of flows that cannot pile the events up: one constant flow
per tile, the candidate on a grid (--tile-limit, --tile-step) that sharpens the tile's own events most,
found by trying every one. It gives each span's mean distance from the truth (px) of zero flow, of that
search and of the tiles' mean true flows (the best a constant flow per tile could do).
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
from snn.evaluation.landscape import (  # noqa: E402
    SpanLandscape,
    TableRow,
    TileSpan,
    span_landscape,
    spans,
    tile_span,
)
from snn.evaluation.tile_search import flow_grid  # noqa: E402
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
    p.add_argument("--tiles", type=int, default=0, help="also search a constant flow per tile of this size (px)")
    p.add_argument("--tile-limit", type=float, default=4.0, help="largest candidate flow component, px (default: 4)")
    p.add_argument("--tile-step", type=float, default=0.5, help="candidate grid step, px (default: 0.5)")
    return p.parse_args(argv)


def print_table(row_type: type[TableRow], rows: list[tuple[str, TableRow]]) -> None:
    """A markdown table of named rows of ``row_type`` and their mean."""
    print(row_type.header())
    for name, row in rows:
        print(row.row(name))
    print(row_type.mean([row for _, row in rows]).row(f"mean of {len(rows)}"))


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        for flag, value in (("--windows", args.windows), ("--num-bins", args.num_bins), ("--spans", args.spans)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if args.tiles < 0:
            raise ValueError(f"--tiles must be >= 0, got {args.tiles}")
        candidates = flow_grid(args.tile_limit, args.tile_step) if args.tiles else None
        if args.smoothness < 0:
            raise ValueError(f"--smoothness must be >= 0, got {args.smoothness}")
        formats = format_overrides(args)
        data = build_dataset(args.data_root, args.split, num_bins=args.num_bins, **formats)
        todo = []
        for seq in sequences_of(data):
            if not seq.has_ground_truth:
                raise ValueError(f"{seq.seq_dir}: no flow ground truth to compare the minima with")
            if args.tiles and (seq.height % args.tiles or seq.width % args.tiles):
                raise ValueError(
                    f"{seq.seq_dir}: tiles of {args.tiles} px do not divide its {seq.height}x{seq.width} frame"
                )
            found = list(spans(seq, args.windows))[: args.spans]
            todo += [(f"{seq.name}[{i}]", events, flows) for i, (events, flows) in enumerate(found)]
        if not todo:
            raise ValueError(f"{args.data_root} ({args.split}): no sequence has {args.windows} windows")
        rows = []
        for name, events, flows in tqdm(todo, desc="spans", dynamic_ncols=True):
            rows.append((name, span_landscape(events, flows, args.num_bins, args.smoothness, args.steps)))
        tile_rows = []
        if args.tiles:
            for name, events, flows in tqdm(todo, desc="tile search", dynamic_ncols=True):
                tile_rows.append((name, tile_span(events, flows, args.num_bins, args.tiles, candidates)))
    except (ValueError, OSError) as exc:
        return fail(split_hint(exc))
    print(
        f"Chained contrast loss + {args.smoothness} x smoothness over {args.windows} windows "
        f"({args.data_root}, {args.split}; lower is better)\n"
    )
    print_table(SpanLandscape, rows)
    if tile_rows:
        print(
            f"\nA constant flow per {args.tiles}x{args.tiles} tile over the span, the best of "
            f"{len(candidates)} candidates (-{args.tile_limit:g} to {args.tile_limit:g} px in steps of "
            f"{args.tile_step:g}): distance from the last window's truth (px) and its ratio to zero flow's\n"
        )
        print_table(TileSpan, tile_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
