"""Draw a checkpoint's flow predictions on one sequence: events, ground truth, prediction, EPE.

    python tools/visualize_predictions.py --checkpoint checkpoints/V2/best_model.pth \\
        --data-root data/synthetic_s12 --sequence seq_0000 --frames 0:4 --arrows --gif

Writes one PNG per flow window into --output-dir, with --video also <sequence>.mp4 and
with --gif <sequence>.gif (both, if both are given) of the same pictures at --fps. The MP4
is H.264 where this OpenCV can encode it; the pip opencv-python(-headless) wheels usually
cannot, and then it is mp4v, which browsers do not play (a warning says so). The animated
GIF plays in every browser.
Ground truth and prediction share one colour normalisation (the colour wheel's
rim, in px, is printed beside it); the EPE map has its own colour bar in px.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Let the tool run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import add_device_flag, add_format_flags, checkpoint_arg, fail, format_overrides, split_hint  # noqa: E402
from snn.data.loaders import make_dataset  # noqa: E402
from snn.evaluation.evaluate import load_for_evaluation  # noqa: E402
from snn.evaluation.visualize import parse_frames, visualize_sequence  # noqa: E402
from snn.utils.runtime import resolve_device, setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint", type=checkpoint_arg, required=True, help="checkpoint to draw (.pth), or pretrained:W4A4 etc."
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config whose data keys to use (default: the config stored in the checkpoint)",
    )
    p.add_argument(
        "--data-root", type=Path, required=True, help="dataset folder: BlinkSim (with or without splits), DSEC or MVSEC"
    )
    add_format_flags(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default: test)")
    p.add_argument("--sequence", required=True, metavar="NAME", help="sequence folder name, e.g. seq_0000")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path("results/visualize"),
        help="where the pictures go (default: %(default)s)",
    )
    p.add_argument(
        "--frames", default=None, metavar="A:B", help="flow windows A..B-1 to draw, e.g. 0:10 (default: all)"
    )
    p.add_argument(
        "--video",
        action="store_true",
        help="also write <sequence>.mp4 of the pictures (H.264 where OpenCV has it, else mp4v, "
        "which browsers do not play)",
    )
    p.add_argument(
        "--gif",
        action="store_true",
        help="also write <sequence>.gif, an animated GIF of the pictures every browser plays",
    )
    p.add_argument("--fps", type=float, default=5.0, help="frame rate of --video and --gif (default: 5)")
    p.add_argument("--arrows", action="store_true", help="draw sparse flow arrows on the flow panels")
    p.add_argument(
        "--max-flow",
        type=float,
        default=None,
        metavar="PX",
        help="colour-wheel rim in px (default: the largest valid |gt| of each window; "
        "fix it for videos so colours mean the same in every frame)",
    )
    add_device_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        if args.max_flow is not None and args.max_flow <= 0:
            raise ValueError(f"--max-flow must be > 0 (got {args.max_flow})")
        if args.fps <= 0:
            raise ValueError(f"--fps must be > 0 (got {args.fps})")
        device = resolve_device(args.device)
        model, cfg = load_for_evaluation(args.checkpoint, args.config, device, format_overrides(args))
        dataset = make_dataset(cfg, args.data_root, args.split, sequences=[args.sequence])
        frames = parse_frames(args.frames, len(dataset))
        paths = visualize_sequence(
            model,
            dataset,
            args.sequence,
            args.output_dir,
            frames,
            device,
            arrows=args.arrows,
            video=args.video,
            fps=args.fps,
            max_flow=args.max_flow,
            gif=args.gif,
        )
    except (ValueError, OSError) as exc:
        return fail(split_hint(exc))
    pngs = [p for p in paths if p.suffix == ".png"]
    names = pngs[0].name if len(pngs) == 1 else f"{pngs[0].name} .. {pngs[-1].name}"
    print(f"wrote {len(pngs)} pictures to {args.output_dir} ({names})")
    for path in paths[len(pngs) :]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
