"""Pretrained models shipped in ``checkpoints/pretrained/``: load one by name, or pack a checkpoint as one.

    from snn.models import pretrained
    model = pretrained("W4A4")          # FP32, W8A8, W4A4, W2A4, W2A2, W1A4 or W1A1, in eval mode

Command-line tools take ``pretrained:W4A4`` wherever they take a checkpoint path (``snn.cli.checkpoint_arg``).

A shipped file is an ordinary checkpoint of this project (it loads with ``load_checkpoint``)
without optimizer or training state, in which every weight-quantized convolution keeps only its
integer codes (int8) and per-channel scales: about a quarter of the FP32 size. Loading multiplies
them back into exactly the weights the fake-quant forward used, so the codes are the same and the
model gives the same flow (see ``tests/models/test_zoo.py``, which checks every shipped model
against the figures of its model card).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from snn.models.checkpoint import CheckpointError, load_model
from snn.models.factory import build_model
from snn.quantization.control import weight_quantized_convs
from snn.quantization.weight_quant import channel_view, weight_codes_and_scale

PRETRAINED_DIR = Path(__file__).resolve().parents[2] / "checkpoints" / "pretrained"
VARIANTS = ("FP32", "W8A8", "W4A4", "W2A4", "W2A2", "W1A4", "W1A1")
PREFIX = "pretrained:"
# What a shipped file keeps of a training checkpoint (the rest is optimizer and resume state).
KEPT_KEYS = ("model_name", "model_args", "config", "epoch", "best_val_aee", "val_metrics")


def variant_name(name: str) -> str:
    """The canonical spelling of a variant ('w4a4' -> 'W4A4'); a ValueError lists the known ones."""
    for variant in VARIANTS:
        if name.strip().upper() == variant:
            return variant
    raise ValueError(f"no pretrained model {name!r}; shipped: {', '.join(VARIANTS)}")


def pretrained_path(name: str, folder: Path = PRETRAINED_DIR) -> Path:
    """``folder/<variant>.pth``; a CheckpointError when this checkout does not hold it."""
    path = folder / f"{variant_name(name)}.pth"
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained model not found (a checkout without checkpoints/pretrained?)")
    return path


def pretrained(name: str = "W4A4", device: str | torch.device = "cpu") -> nn.Module:
    """A shipped model by name (``VARIANTS``), rebuilt from its file, in eval mode."""
    return load_model(pretrained_path(name), device=device)


def compact_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint as a shipped one: the evaluated weights only, quantized convolutions as codes.

    The codes are taken from the weights the forward pass uses (the fake-quant kernel's own
    rounding), so ``codes * scale`` reproduces them bit for bit.
    """
    packed = {k: ckpt[k] for k in KEPT_KEYS if k in ckpt}
    state = dict(ckpt["state_dict"])
    codes = {}
    if ckpt["model_args"].get("quantize"):
        model = build_model(ckpt["model_name"], ckpt["model_args"])
        model.load_state_dict(state)
        for name, conv in weight_quantized_convs(model):
            key = f"{name}.weight"
            with torch.no_grad():
                used = conv.quantized_weight().detach()
                _, scale = weight_codes_and_scale(conv.weight, conv.weight_bits, conv.channel_axis)
                view = channel_view(scale, conv.channel_axis, used.dim())
                code = torch.round(used / view)
            if not torch.equal(code * view, used) or code.abs().max() > 127:
                raise CheckpointError(f"{key}: the quantized weights are not integer codes times the scale")
            codes[key] = {"codes": code.to(torch.int8), "scale": scale.float(), "axis": conv.channel_axis}
            del state[key]
    packed["state_dict"] = state
    if codes:
        packed["weight_codes"] = codes
    return packed
