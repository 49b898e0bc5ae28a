"""Train EventSNNFlowNetLiteV2 (full precision, or with a quantization schedule).

    python train.py                                  # synthetic data, default config
    python train.py --config snn/configs/event_snn_lite_progressive.yaml \
        --resume checkpoints/V2/best_model.pth --checkpoint-dir checkpoints/V2_progressive
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snn.cli import add_common_flags, config_from_args, fail
from snn.training.run import train_and_test
from snn.utils.runtime import setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="checkpoint to continue (this run's own last.pth) or to start from "
        "(another run's checkpoint: weights only, epoch 0)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        summary = train_and_test(config_from_args(args), resume=args.resume)
    except (ValueError, OSError) as exc:
        return fail(exc)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
