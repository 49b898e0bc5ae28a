"""Checkpoints: save, load safely, move weights into a model, rebuild the model alone.

A checkpoint is a dict of tensors and plain Python values only, so it loads
with ``torch.load(..., weights_only=True)``:

    {"format_version": 1, "model_name": str, "model_args": dict, "config": dict,
     "state_dict": {...}, "epoch": int, "best_val_aee": float, "val_metrics": dict,
     "optimizer": dict | None, "scheduler": dict | None, "rng": dict | None,
     "train_state_dict": {...}  # only with weight_ema: the raw weights; state_dict is the EMA}

Writes go to a temporary file that is then renamed, so a crash never leaves
a half-written checkpoint behind. This module sits below training and
evaluation: both load through it, and whether a load continues a run or
starts a new one is decided once, where a training run is assembled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snn.models.factory import build_model

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model_name", "model_args", "config", "state_dict")
QUANT_KEY_MARK = "quant_layer."


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit; the message names the file."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load safely (``weights_only=True``) and check the keys every tool relies on."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code in it, not a torch file, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint ({reason[:200]})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this project (top level is not a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    return ckpt


def load_weights(
    model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path, strict: bool = False
) -> list[str]:
    """Load weights; return the quantizer keys the checkpoint lacked.

    Missing ``quant_layer.*`` entries are expected when a full-precision (or
    older) checkpoint is loaded into a quantized model: calibration fills them.
    Anything else that does not fit, or with ``strict`` any missing or
    unexpected key, is a CheckpointError naming the keys.
    """
    own = model.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(
            f"{path}: another architecture: {len(mismatched)} tensor(s) differ in shape, e.g. {k} "
            f"{list(state_dict[k].shape)} in the file vs {list(own[k].shape)} in the model "
            f"({_few(mismatched)})"
        )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    quant_missing = [k for k in missing if QUANT_KEY_MARK in k]
    other_missing = [k for k in missing if QUANT_KEY_MARK not in k]
    if unexpected or other_missing or (strict and missing):
        raise CheckpointError(
            f"{path}: does not fit this model{' (--strict-load)' if strict else ''}: "
            f"missing {_few(missing if strict else other_missing)}; unexpected {_few(unexpected)}"
        )
    model.load_state_dict(state_dict, strict=False)
    return quant_missing


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_model(
    path: str | Path,
    quantize: bool | None = None,
    bit_width: int | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a model from a checkpoint alone, in eval mode.

    ``quantize=False`` gives the full-precision network (a quantized checkpoint's
    latent FP32 weights); ``bit_width`` quantizes at that width (ranges missing
    from the checkpoint are taken from the first batch the model sees).
    """
    ckpt = load_checkpoint(path, map_location=device)
    args = dict(ckpt["model_args"])
    if bit_width is not None:
        args["quantize"], args["bit_width"], args["binarize"] = True, bit_width, False
    elif quantize is not None:
        args["quantize"] = quantize
    model = build_model(ckpt["model_name"], args)
    state = ckpt["state_dict"]
    if not args.get("quantize"):
        state = {k: v for k, v in state.items() if QUANT_KEY_MARK not in k}
    missing = load_weights(model, state, path)
    if missing:
        logger.warning("%s: no quantizer ranges stored; they will be set by the first batch", path)
    return model.to(device).eval()
