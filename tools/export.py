"""Export a quantized checkpoint for hardware: bit-packed weights, their index, the folded layer description.

    python tools/export.py --checkpoint checkpoints/V2_4bit/best_model.pth --output-dir export/V2_4bit
    python tools/export.py --checkpoint checkpoints/V2_4bit/best_model.pth --output-dir export/V2_4bit \\
        --verify --data-root data/synthetic_s12

Writes weights.bin, index.json and network.json into the output dir (QAT_GUIDE.md,
"Deploying", gives the arithmetic), and with --onnx step.onnx (W8A8 only). --verify runs the numpy integer reference on
test windows of --data-root beside the PyTorch model, prints how often their spikes
agree and how far their flows differ, and exits with 1 when the bounds are missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import checkpoint_arg, fail  # noqa: E402
from snn.utils.runtime import setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint",
        type=checkpoint_arg,
        required=True,
        help="quantized checkpoint (.pth) of a QAT run, or pretrained:W4A4 and the like",
    )
    p.add_argument("--output-dir", type=Path, required=True, help="folder for weights.bin, index.json, network.json")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="input frame size the description's shapes (and step.onnx) are given for, multiples of 8 "
        "(default: the frame size of --data-root's --split split, else that of the data the checkpoint was "
        "trained on: its data root, read from there, or its synthetic settings; an error when none is here)",
    )
    p.add_argument("--force", action="store_true", help="replace an export already in --output-dir")
    p.add_argument("--verify", action="store_true", help="compare the integer reference with PyTorch on real windows")
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="dataset whose windows --verify runs; its frame size is the export's input size",
    )
    p.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="split --verify reads (default: test)"
    )
    p.add_argument("--windows", type=int, default=32, help="windows --verify compares (default: %(default)s)")
    p.add_argument(
        "--vectors",
        type=int,
        default=0,
        metavar="N",
        help="write golden test vectors of the first N windows of --data-root's --split split into "
        "OUTPUT_DIR/vectors: input counts, every layer's currents, membranes and spikes at every step, "
        "the flow codes; .npz and one-value-a-line hex files, with a manifest",
    )
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write step.onnx, one time step of a W8A8 model with the state as inputs and outputs, and "
        "check it with onnxruntime against PyTorch over all time bins (needs: python -m pip install onnx onnxruntime)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        if (args.verify or args.vectors) and args.data_root is None:
            raise ValueError("--verify and --vectors need --data-root")
        if args.vectors < 0:
            raise ValueError("--vectors must be >= 0")
        if args.windows < 1:
            raise ValueError("--windows must be >= 1")
        from snn.deploy.pipeline import export_checkpoint, verify_export

        export, model, cfg = export_checkpoint(
            args.checkpoint, args.output_dir, args.input_size, args.force, args.data_root, args.split, args.onnx
        )
        if args.onnx:
            from snn.deploy.pipeline import export_step_onnx

            export_step_onnx(model, export, args.output_dir / "step.onnx")
        if args.vectors:
            from snn.deploy.pipeline import export_vectors

            export_vectors(model, export, cfg, args.data_root, args.split, args.vectors, args.output_dir / "vectors")
        if args.verify:
            agreement = verify_export(model, export, cfg, args.data_root, args.split, args.windows)
            print(f"verify on {args.data_root} ({args.split}), the integer reference against the PyTorch model:")
            print(f"  {agreement.summary()}")
            if not agreement.passed:
                return 1
    except (ValueError, OSError) as exc:
        return fail(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
