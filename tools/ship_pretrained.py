"""Pack a full-precision model and its quantization ladder into checkpoints/pretrained/ with a model card.

    python tools/ship_pretrained.py --fp-checkpoint checkpoints/V2/best_model.pth \\
        --ladder-dir results/ladder/seed_0 --data-root data/synthetic_s12

Each checkpoint is packed (quantized weights as int8 codes and per-channel scales), the packed
file is evaluated on the test split of --data-root, and card.json and MODEL_CARD.md record the
figures with the commands that made the checkpoints. The folder's previous files stay in place
until every new one is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Let the tool run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import add_device_flag, fail, split_hint  # noqa: E402
from snn.evaluation.model_card import ladder_checkpoints, ship_pretrained  # noqa: E402
from snn.models.zoo import PRETRAINED_DIR  # noqa: E402
from snn.utils.runtime import resolve_device, setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fp-checkpoint", type=Path, required=True, help="the full-precision model (.pth)")
    p.add_argument(
        "--ladder-dir",
        type=Path,
        required=True,
        help="one seed's folder of tools/qat_ladder.py (holding V2_W8A8 ... V2_W2A2, V2_W1A4, V2_W1A1)",
    )
    p.add_argument("--data-root", type=Path, required=True, help="dataset whose test split the card reports")
    p.add_argument("--output-dir", type=Path, default=PRETRAINED_DIR, help="default: %(default)s")
    p.add_argument("--fp-command", default="python train.py", help="how the FP model was made, for the card")
    p.add_argument(
        "--ladder-command",
        default="python tools/qat_ladder.py --fp-checkpoint checkpoints/V2/best_model.pth --no-progressive",
        help="how the ladder was made, for the card",
    )
    add_device_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        sources = ladder_checkpoints(args.fp_checkpoint, args.ladder_dir)
        commands = {"FP32": args.fp_command, "W8A8 ... W1A1": args.ladder_command}
        card = ship_pretrained(sources, args.output_dir, args.data_root, commands, resolve_device(args.device))
    except (ValueError, OSError) as exc:
        return fail(split_hint(exc))
    print((args.output_dir / "MODEL_CARD.md").read_text(), end="")
    print(f"wrote {len(card['models'])} models ({card['total_mb']:.1f} MB) and their card to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
