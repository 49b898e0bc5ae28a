"""Train EventSNNFlowNetLiteV2 (full precision, or with a quantization schedule).

    python train.py                                  # synthetic data, default config
    python train.py --config snn/configs/event_snn_lite_progressive.yaml \
        --resume checkpoints/V2/best_model.pth --checkpoint-dir checkpoints/V2_progressive
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from snn.cli import add_common_flags, config_from_args, fail
from snn.training.run import build_trainer, evaluate_checkpoint_on_split
from snn.utils.runtime import resolve_device, seed_everything, setup_logging

logger = logging.getLogger("train")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--resume", type=Path, default=None,
                        help="checkpoint to continue (this run's own last.pth) or to start from "
                             "(another run's checkpoint: weights only, epoch 0)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(args)
        device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        trainer = build_trainer(cfg, device, resume=args.resume)
        logger.info("training on %s, checkpoints in %s, logs in %s", device, cfg.checkpoint_dir,
                    cfg.log_dir)
        best = trainer.fit()
        best_path = trainer.checkpoint_dir / "best_model.pth"
        test = evaluate_checkpoint_on_split(trainer.cfg, best_path, device, "test")
    except (ValueError, OSError) as exc:
        return fail(exc)
    print(f"best validation AEE {best:.3f}")
    print(f"test AEE {test['aee']:.3f} px (zero-flow AEE {test['zero_flow_aee']:.3f} px, "
          f"ratio {test['aee'] / test['zero_flow_aee']:.2f}) from {best_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
