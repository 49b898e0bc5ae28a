"""Train EventSNNFlowNetLiteV2 (full precision, or with a quantization schedule).

    python train.py                                  # synthetic data, default config
    python train.py --resume checkpoints/V2/last.pth # continue an interrupted run exactly
    python train.py --set learning_rate=3e-3 --set crop_size=null   # any config key, no YAML file
    python train.py --config snn/configs/event_snn_lite_progressive.yaml \
        --resume checkpoints/V2/best_model.pth --checkpoint-dir checkpoints/V2_progressive

Ctrl-C (or SIGTERM) saves last.pth and prints the command that resumes the run.
"""

from __future__ import annotations

import argparse
import sys

from snn.cli import add_common_flags, config_from_args, fail, interrupted
from snn.training.interrupt import TrainingInterrupted
from snn.training.run import train_and_test
from snn.utils.runtime import setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        summary = train_and_test(
            config_from_args(args), resume=args.resume, allow_config_change=args.allow_config_change
        )
    except TrainingInterrupted as stop:
        return interrupted(stop, "train.py", argv)
    except (ValueError, OSError) as exc:
        return fail(exc)
    if summary:  # under torchrun only rank 0 reports
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
