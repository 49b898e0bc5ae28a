"""Compare checkpoints of different bit widths: size, AEE, retention and output error against full precision.

    python tools/compare_bitwidths.py --data-root data/synthetic_s12 --checkpoints \\
        checkpoints/V2/best_model.pth checkpoints/V2_8bit/best_model.pth checkpoints/V2_4bit/best_model.pth

The reference is the first checkpoint whose model is not quantized (else the first
given). Writes compare.md, compare.csv and compare.png (AEE against model size)
into --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Let the tool run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import (  # noqa: E402
    add_device_flag,
    add_fwl_windows_flag,
    check_batch_size,
    check_positive,
    checkpoint_arg,
    fail,
    split_hint,
)
from snn.evaluation.evaluate import compare_checkpoints  # noqa: E402
from snn.evaluation.plots import plot_aee_vs_size  # noqa: E402
from snn.evaluation.report import comparison_markdown, write_comparison_csv  # noqa: E402
from snn.utils.runtime import resolve_device, setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoints",
        type=checkpoint_arg,
        nargs="+",
        required=True,
        metavar="CKPT",
        help="checkpoints to compare (full precision first is customary); pretrained:W4A4 names a shipped one",
    )
    p.add_argument("--data-root", type=Path, required=True, help="dataset folder (with train/val/test splits)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default: test)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path("results/compare"),
        help="where compare.md/.csv/.png go (default: %(default)s)",
    )
    p.add_argument(
        "--num-inputs",
        type=int,
        default=8,
        metavar="N",
        help="windows on which outputs are compared with the reference (default: 8)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: each checkpoint's config batch_size")
    add_fwl_windows_flag(p)
    add_device_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        check_batch_size(args.batch_size)
        check_positive("--fwl-windows", args.fwl_windows)
        rows, note = compare_checkpoints(
            args.checkpoints,
            args.data_root,
            args.split,
            args.num_inputs,
            args.batch_size,
            resolve_device(args.device),
            fwl_windows=args.fwl_windows,
        )
        args.output_dir.mkdir(parents=True, exist_ok=True)
        md = comparison_markdown(rows, note)
        (args.output_dir / "compare.md").write_text(md)
        write_comparison_csv(rows, args.output_dir / "compare.csv")
        plot_aee_vs_size(
            rows, args.output_dir / "compare.png", title=f"AEE ({args.split} split, dense) against model size"
        )
    except (ValueError, OSError) as exc:
        return fail(split_hint(exc))
    print(md, end="")
    print(f"wrote {args.output_dir / 'compare.md'}, compare.csv and compare.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
