"""Mixed precision for training and validation through ``torch.amp``.

``amp: bf16`` runs the convolutions under ``torch.autocast`` in bfloat16 (CPU or GPU);
``amp: fp16`` in float16 with a ``GradScaler`` (CUDA only). The neurons' membranes and the
quantizers always compute in float32 (``LIFNeuron`` and ``QuantizationAwareLayer`` turn autocast
off and upcast their input): a threshold crossing or a rounding step decided in 8 mantissa bits
would differ from the one the exported integer network makes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from snn.config import AMP_MODES

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def grad_scaler(device: torch.device):
    """``torch.amp.GradScaler`` (torch >= 2.3), or the CUDA one it replaced on older torch."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type)
    return torch.cuda.amp.GradScaler()


class Precision:
    """Autocast for the forward passes and, with fp16, loss scaling for the backward pass."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
        if mode == "fp16" and device.type != "cuda":
            raise ValueError(f"amp fp16 needs a CUDA device (its GradScaler); on {device.type} use amp bf16")
        self.mode, self.device = mode, device
        self.scaler = grad_scaler(device) if mode == "fp16" else None

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=_DTYPES[self.mode]) if self.enabled else nullcontext()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, model: nn.Module, grad_clip: float) -> None:
        """Backward, optional gradient clipping (on unscaled gradients) and the optimizer step."""
        if self.scaler is None:
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if grad_clip > 0:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
