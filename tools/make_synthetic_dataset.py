"""Generate the built-in synthetic event-flow dataset (BlinkSim layout C).

    python tools/make_synthetic_dataset.py                       # data/synthetic, the generator's own scale
    python tools/make_synthetic_dataset.py --output data/synthetic_s12 --scene-scale 1 2   # python train.py's
    python tools/make_synthetic_dataset.py --output /tmp/s --num-train 200 --force

Training generates its dataset on first use; this tool is for other sizes, seeds, scales or
resolutions, or to regenerate one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# Let the tool run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.data.synthetic import (  # noqa: E402
    DEFAULT_ROOT,
    DEFAULT_SPLITS,
    SyntheticConfig,
    generate_dataset,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_ROOT, help="dataset root (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--num-train", type=int, default=DEFAULT_SPLITS["num_train"])
    parser.add_argument("--num-val", type=int, default=DEFAULT_SPLITS["num_val"])
    parser.add_argument("--num-test", type=int, default=DEFAULT_SPLITS["num_test"])
    parser.add_argument(
        "--num-frames",
        type=int,
        default=defaults.num_frames,
        help="frames per sequence; each gives num_frames - 1 flow windows",
    )
    parser.add_argument(
        "--scene-scale",
        type=float,
        nargs=2,
        default=list(defaults.scene_scale),
        metavar=("LOW", "HIGH"),
        help="each sequence draws a scale in [LOW, HIGH] for its texture and motion sizes in pixels "
        "(python train.py's set: 1 2; default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset at --output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output: Path = args.output
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.force:
        print(f"error: {output} already exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    try:
        config = SyntheticConfig(
            height=args.height, width=args.width, num_frames=args.num_frames, scene_scale=tuple(args.scene_scale)
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = generate_dataset(
        output,
        config,
        args.num_train,
        args.num_val,
        args.num_test,
        seed=args.seed,
        workers=args.workers,
        progress=True,
        overwrite=args.force,
    )
    print(
        f"wrote {summary.num_sequences} sequences to {summary.root} in {summary.seconds:.1f} s: "
        f"{summary.events_per_window:.0f} events per window, mean |flow| "
        f"{summary.mean_abs_flow:.2f} px, valid fraction {summary.valid_fraction:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
