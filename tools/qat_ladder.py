"""Run the whole QAT ladder (FP -> W8A8 -> W4A4 -> W2A4 -> W2A2, W1A4 -> W1A1, plus the progressive run) and report it.

    python tools/qat_ladder.py --output-dir results/ladder
    python tools/qat_ladder.py --output-dir results/ladder --fp-checkpoint checkpoints/V2/best_model.pth

Writes ladder.md, ladder.csv and ladder.png (test AEE against model size) into
the output dir. A step that finished there with the same settings is reused, an
interrupted one continues from its last.pth, and one trained with other settings
stops the ladder with an error naming what differs (--reuse reports it as it is).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import (  # noqa: E402
    add_device_flag,
    add_format_flags,
    add_set_flag,
    checkpoint_arg,
    fail,
    format_overrides,
    parse_overrides,
)
from snn.data.loaders import prepare_unseen_test_set  # noqa: E402
from snn.training.ladder import run_ladder, run_ladder_seeds  # noqa: E402
from snn.utils.runtime import resolve_device, setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-root", default=None, help="dataset with train/val/test splits (default: the built-in synthetic set)"
    )
    p.add_argument("--output-dir", type=Path, default=Path("results/ladder"))
    p.add_argument(
        "--epochs-per-step",
        type=int,
        default=8,
        help="epochs of each QAT step; the progressive run gets three times this",
    )
    p.add_argument(
        "--fp-epochs",
        type=int,
        default=None,
        help="epochs of the full-precision step (default: num_epochs of event_snn_lite.yaml)",
    )
    p.add_argument("--no-progressive", action="store_true", help="skip the progressive run")
    p.add_argument(
        "--fp-checkpoint",
        type=checkpoint_arg,
        default=None,
        help="use this full-precision checkpoint (e.g. checkpoints/V2/best_model.pth of python train.py) "
        "instead of training the FP step",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="report finished steps in --output-dir as they are, even where they were trained with other "
        "settings than this command's (the report lists the settings each was trained with)",
    )
    add_device_flag(p)
    add_format_flags(p)
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="training seed of every step (default: each config's own seed, 0 in the shipped configs)",
    )
    p.add_argument(
        "--unseen-root",
        type=Path,
        default=Path("data/synthetic_unseen"),
        help="a second test set no step trains on, evaluated for every step; the default one (new scenes, "
        "128x128 frames, so twice the motion in pixels) is generated there on first use (default: %(default)s)",
    )
    p.add_argument("--no-unseen", action="store_true", help="skip the unseen test set")
    p.add_argument(
        "--low-current-bits",
        type=int,
        default=4,
        metavar="A",
        help="current (accumulator) bits of the 2-bit and 1-bit weight steps, W2A<A> and W1A<A>; the guide's "
        "W1A1 runs after them (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="run the ladder once per seed (into OUTPUT/seed_S/) and report mean and spread in "
        "ladder_seeds.md/.csv/.png; differences of 1-2%% are inside one seed's spread",
    )
    add_set_flag(
        p,
        "override a config key of every quantized step (a YAML value; repeatable), e.g. "
        "--set distill_weight=1.0 or --set learn_scale=true; printed and recorded with each step",
    )
    p.add_argument(
        "--low-set",
        dest="low_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of the 2- and 1-bit current steps only (W2A2, W1A1), after --set: trials "
        "of their devices, e.g. --low-set binary_threshold=false or --low-set shortcut_before_quant=false",
    )
    p.add_argument(
        "--last-step",
        default=None,
        metavar="STEP",
        help="end the ladder after this step, e.g. V2_W4A4 (default: run every step)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        if args.epochs_per_step < 1 or (args.fp_epochs is not None and args.fp_epochs < 1):
            raise ValueError("--epochs-per-step and --fp-epochs must be >= 1")
        if args.seeds is not None and args.seed is not None:
            raise ValueError("give --seed or --seeds, not both")
        common = {
            "data_root": args.data_root,
            "epochs_per_step": args.epochs_per_step,
            "fp_epochs": args.fp_epochs,
            "device": resolve_device(args.device),
            "progressive": not args.no_progressive,
            "fp_checkpoint": args.fp_checkpoint,
            "reuse": args.reuse,
            "unseen_root": None if args.no_unseen else args.unseen_root,
            "low_current_bits": args.low_current_bits,
            "qat_overrides": parse_overrides(args.settings),
            "low_overrides": parse_overrides(args.low_settings, "--low-set"),
            "last_step": args.last_step,
            "data_overrides": format_overrides(args),
        }
        if not args.no_unseen and args.unseen_root == Path("data/synthetic_unseen"):
            prepare_unseen_test_set(args.unseen_root)
        if args.seeds is not None:
            rows = run_ladder_seeds(args.output_dir, args.seeds, **common)
            report = args.output_dir / "ladder_seeds.md"
        else:
            rows = run_ladder(args.output_dir, seed=args.seed, **common)
            report = args.output_dir / "ladder.md"
    except (ValueError, OSError) as exc:
        return fail(exc)
    print(report.read_text())
    print(f"wrote {report}, {report.with_suffix('.csv')} and {report.with_suffix('.png')}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
