"""Fine-tune a trained EventSNNFlowNetLiteV2 with quantization-aware training.

    python finetune_quantized.py --config snn/configs/event_snn_lite_8bit.yaml \
        --pretrained checkpoints/V2/best_model.pth \
        --checkpoint-dir checkpoints/V2_8bit --log-dir logs/V2_8bit
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from snn.cli import add_common_flags, config_from_args, fail
from snn.training.run import train_and_test
from snn.utils.runtime import setup_logging

logger = logging.getLogger("finetune_quantized")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, default_config=None)
    parser.add_argument(
        "--pretrained", type=Path, required=True, help="full-precision or higher-bit checkpoint to start from"
    )
    parser.add_argument(
        "--strict-load",
        action="store_true",
        help="any missing or unexpected key in --pretrained is an error "
        "(by default missing quant_layer.* entries are expected)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(args)
        if not cfg.quantization_enabled:
            logger.warning("%s has quantization_enabled: false; fine-tuning in full precision", args.config)
        summary = train_and_test(cfg, resume=args.pretrained, strict_load=args.strict_load, warm_start=True)
    except (ValueError, OSError) as exc:
        return fail(exc)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
