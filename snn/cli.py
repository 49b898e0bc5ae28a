"""Flags shared by the training scripts, and the one-line error exit."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from snn.config import DEFAULT_CONFIG, Config, data_root_overrides, load_config

logger = logging.getLogger(__name__)


def add_common_flags(parser: argparse.ArgumentParser, default_config: Path | None = DEFAULT_CONFIG):
    """--config plus the flags that override config keys (None = keep the YAML value)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=default_config,
        required=default_config is None,
        help=f"YAML config (default: {default_config})",
    )
    parser.add_argument("--checkpoint-dir", help="where checkpoints go (config: checkpoint_dir)")
    parser.add_argument("--log-dir", help="TensorBoard and CSV logs (config: log_dir)")
    parser.add_argument("--data-root", help="dataset folder (config: data_root)")
    parser.add_argument("--epochs", type=int, help="number of epochs (config: num_epochs)")
    parser.add_argument("--batch-size", type=int, help="batch size (config: batch_size)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (config: device)")
    parser.add_argument("--seed", type=int, help="random seed (config: seed)")


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """--device for the tools that take no config: auto picks CUDA when present."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def check_batch_size(batch_size: int | None) -> None:
    """A --batch-size override (None: the config's) must be at least 1."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {batch_size})")


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {
        "checkpoint_dir": args.checkpoint_dir,
        "log_dir": args.log_dir,
        "data_root": args.data_root,
        "num_epochs": args.epochs,
        "batch_size": args.batch_size,
        "device": args.device,
        "seed": args.seed,
    }
    overrides.update(data_root_overrides(args.data_root))
    return load_config(args.config, overrides)


def fail(exc: BaseException) -> int:
    """Print a one-line error and return the exit status for it."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"error: {msg}", file=sys.stderr)
    return 2
