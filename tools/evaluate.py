"""Evaluate a checkpoint on a data split: AEE, outliers, NPE, zero-flow AEE, firing rates and SynOps.

    python tools/evaluate.py --checkpoint checkpoints/V2/best_model.pth --data-root data/synthetic_s12
    python tools/evaluate.py --checkpoint checkpoints/V2_4bit/best_model.pth --data-root data/synthetic_s12 \\
        --mask both --output results/V2_4bit_test.json

The model is rebuilt from the checkpoint alone; the data settings (num_bins,
representation) come from the config stored in it unless --config is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Let the tool run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import (  # noqa: E402
    add_device_flag,
    add_format_flags,
    add_fwl_windows_flag,
    check_batch_size,
    check_positive,
    checkpoint_arg,
    fail,
    format_overrides,
    split_hint,
)
from snn.evaluation.distance import ErrorByDistance  # noqa: E402
from snn.evaluation.evaluate import evaluate_checkpoint  # noqa: E402
from snn.evaluation.metrics import MASKS  # noqa: E402
from snn.evaluation.report import check_writable, evaluation_json, evaluation_report, write_json  # noqa: E402
from snn.models import VARIANTS  # noqa: E402
from snn.utils.runtime import resolve_device, setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint",
        type=checkpoint_arg,
        required=True,
        help=f"checkpoint to evaluate (.pth), or pretrained:<{'|'.join(VARIANTS)}> for a shipped model",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config whose data keys (num_bins, representation) to use "
        "(default: the config stored in the checkpoint)",
    )
    p.add_argument(
        "--data-root", type=Path, required=True, help="dataset folder: BlinkSim (with or without splits), DSEC or MVSEC"
    )
    add_format_flags(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default: test)")
    p.add_argument(
        "--sequence",
        nargs="+",
        default=None,
        metavar="NAME",
        help="evaluate only these sequences (default: all of the split)",
    )
    p.add_argument(
        "--mask",
        default="dense",
        choices=(*MASKS, "both"),
        help="dense: valid ground truth; sparse: also an event at the pixel; both (default: dense)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write everything printed (model, activity, throughput, metrics) as JSON to this file",
    )
    p.add_argument(
        "--predictions",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write every window's predicted flow as a 16-bit PNG in DSEC's upload format, "
        "DIR/<sequence>/<window>.png (a DSEC window is named by its file index); for DSEC's test release, "
        "which has no ground truth, this is the evaluation",
    )
    state = p.add_mutually_exclusive_group()
    state.add_argument(
        "--stateful",
        action="store_true",
        default=None,
        help="run each sequence's windows in order, the membranes carried from one window to the next "
        "(reset at the start of every sequence and after a gap in time), as a streaming camera and hardware do "
        "(default: as the model was trained, stateful when its config's state_windows > 1)",
    )
    state.add_argument(
        "--stateless", dest="stateful", action="store_false", help="start every window at rest, whatever the training"
    )
    p.add_argument(
        "--by-distance",
        action="store_true",
        help="also print the errors by distance to the nearest event (bands of 0-1, 1-3, 3-6, 6-12, 12-24 "
        "and 24+ px): how well the flow is filled in away from edges",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's batch_size")
    add_fwl_windows_flag(p)
    add_device_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    masks = MASKS if args.mask == "both" else (args.mask,)
    try:
        check_batch_size(args.batch_size)
        check_positive("--fwl-windows", args.fwl_windows)
        if args.output is not None:
            check_writable(args.output)
        device = resolve_device(args.device)
        res = evaluate_checkpoint(
            args.checkpoint,
            args.data_root,
            args.split,
            args.config,
            masks,
            args.sequence,
            args.batch_size,
            device,
            data_overrides=format_overrides(args),
            predictions_dir=args.predictions,
            stateful=args.stateful,
            by_distance=args.by_distance,
            fwl_windows=args.fwl_windows,
        )
        print(evaluation_report(res, masks, str(args.data_root), args.split, str(device)))
        if res.by_distance is not None:
            print("\nDense errors by distance to the nearest event:\n" + ErrorByDistance.format(res.by_distance))
        if args.output is not None:
            write_json(evaluation_json(res, masks, str(args.data_root), args.split, str(device)), args.output)
            print(f"wrote {args.output}")
        if args.predictions is not None:
            print(f"wrote {res.num_windows} flow PNGs (DSEC upload format) under {args.predictions}")
    except (ValueError, OSError) as exc:
        return fail(split_hint(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
