"""Process set-up shared by the scripts: logging, seeds, devices."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr. Under torchrun or srun each line names its rank, and only rank 0 logs below
    warnings: N copies of every line would bury the one that matters."""
    from snn.utils.distributed import launched_ranks

    ranks = launched_ranks()
    where = "" if ranks is None else f"rank {ranks[0]} "
    if ranks is not None and ranks[0] != 0:
        level = max(level, logging.WARNING)
    logging.basicConfig(
        level=level, format=f"%(asctime)s {where}%(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an unavailable device is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when autocast gave it a 16-bit float type; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@contextmanager
def ieee_float32_convolutions(device_type: str) -> Iterator[None]:
    """cuDNN convolutions in full float32 inside the block, on CUDA.

    cuDNN's default on Ampere and newer GPUs is TF32, which rounds both operands to 10 mantissa
    bits: a current that feeds a quantizer would then round to other codes than the exported
    integer network computes. The legacy flag is the one every torch from 2.1 on reads.
    """
    if device_type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    before = cudnn.allow_tf32
    cudnn.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32 = before


def available_memory() -> int | None:
    """Bytes of memory a new allocation can take now (Linux's MemAvailable, else free pages); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
