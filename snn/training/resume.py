"""Continuing a run exactly, or starting a new one from another run's weights.

The one decision (``continues_run``) is made once, in ``build_trainer``; the
trainer then either restores the whole training state or takes the weights only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snn.models.checkpoint import CheckpointError, checkpoint_widths
from snn.quantization.control import is_quantized, widths_tag


def continues_run(path: str | Path, ckpt: dict[str, Any], checkpoint_dir: str | Path, warm_start: bool | None) -> bool:
    """Whether starting from ``ckpt`` (read from ``path``) continues the run that writes to ``checkpoint_dir``.

    True for the run's own checkpoint that carries optimizer state; False (a warm
    start: weights only, new schedule) for any other checkpoint. ``warm_start``
    forces the answer when it is not None.
    """
    if warm_start is not None:
        return not warm_start
    own = Path(path).resolve().parent == Path(checkpoint_dir).resolve()
    return own and ckpt.get("optimizer") is not None


def check_precision_fits(model: nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """A quantized checkpoint does not go into a full-precision model. Its quantizer entries would be
    reported as 'unexpected quant_layer keys'; say instead what the checkpoint is and what to run."""
    widths = checkpoint_widths(ckpt)
    if widths[0] >= 32 or is_quantized(model):
        return
    path = Path(path)
    own = path.parent / "config.yaml"
    config = f"--config {own}" if own.is_file() else "the config it was trained with"
    raise CheckpointError(
        f"{path}: this is a {widths_tag(*widths)} checkpoint (quantized), but this config trains in full "
        f"precision (quantization_enabled: false); resume it with its own config ({config}), or start from "
        f"its weights with finetune_quantized.py --pretrained {path} and a quantized --config"
    )


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain values."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
