"""Fine-tune a trained EventSNNFlowNetLiteV2 with quantization-aware training.

    python finetune_quantized.py --config snn/configs/event_snn_lite_8bit.yaml \
        --pretrained checkpoints/V2/best_model.pth \
        --checkpoint-dir checkpoints/V2_8bit --log-dir logs/V2_8bit
    python finetune_quantized.py --resume checkpoints/V2_8bit/last.pth   # continue it exactly

Ctrl-C (or SIGTERM) saves last.pth and prints the command that resumes the run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from snn.cli import add_common_flags, checkpoint_arg, config_from_args, fail, interrupted
from snn.training.interrupt import TrainingInterrupted
from snn.training.run import train_and_test
from snn.utils.runtime import setup_logging

logger = logging.getLogger("finetune_quantized")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, default_config=None)
    parser.add_argument(
        "--pretrained",
        type=checkpoint_arg,
        default=None,
        help="full-precision or higher-bit checkpoint to start from (required unless --resume); "
        "pretrained:FP32, pretrained:W8A8, ... start from a shipped model",
    )
    parser.add_argument(
        "--strict-load",
        action="store_true",
        help="any missing or unexpected key in --pretrained is an error "
        "(by default missing quant_layer.* entries are expected)",
    )
    args = parser.parse_args(argv)
    if args.pretrained is None and args.resume is None:
        parser.error("--pretrained is required (or --resume to continue a fine-tune)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(args, default_config=None)
        if not cfg.quantization_enabled:
            logger.warning("%s has quantization_enabled: false; fine-tuning in full precision", args.config)
        if args.resume is not None:  # the same semantics as train.py --resume
            start, warm = args.resume, None
        else:
            start, warm = args.pretrained, True
        summary = train_and_test(
            cfg,
            resume=start,
            strict_load=args.strict_load,
            warm_start=warm,
            allow_config_change=args.allow_config_change,
        )
    except TrainingInterrupted as stop:
        return interrupted(stop, "finetune_quantized.py", argv)
    except (ValueError, OSError) as exc:
        return fail(exc)
    if summary:  # under torchrun only rank 0 reports
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
