"""An exponential moving average of the weights, the copy that is validated and saved.

Every parameter and buffer is averaged (BN statistics and quantizer ranges too); the
decay warms up as ``min(decay, (1 + n) / (10 + n))`` so the first, poor weights fade
out quickly instead of lingering for ~1/(1-decay) steps.

The same update as ``torch.optim.swa_utils.AveragedModel`` with that decay, written out
because AveragedModel keeps its step counter as a device tensor and reads it on the host
twice per update (a GPU sync every training step); here the counter is a Python int.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from snn.quantization.control import copy_quantizer_state
from snn.quantization.torch_ops import lerp_all_


def warmup_ema_fn(decay: float):
    """The update of one group of tensors after ``num_averaged`` earlier ones: lerp floating
    tensors, copy the rest (counters, flags)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: int) -> None:
        if torch.is_floating_point(averaged[0]):
            d = min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))
            lerp_all_(averaged, current, 1.0 - d)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


class WeightEMA:
    """``module``: the averaged copy of the model; ``update_parameters(model)`` after each step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.n_averaged = 0  # updates so far; the first one copies the model
        self._update = warmup_ema_fn(decay)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        ours = [*self.module.parameters(), *self.module.buffers()]
        theirs = [*model.parameters(), *model.buffers()]
        if len(ours) != len(theirs):
            raise ValueError(f"the averaged model has {len(ours)} tensors, the model {len(theirs)}")
        if self.n_averaged == 0:
            for a, c in zip(ours, theirs, strict=True):
                a.copy_(c)
        else:
            groups: dict[tuple, tuple[list, list]] = {}
            for a, c in zip(ours, theirs, strict=True):
                averaged, current = groups.setdefault((a.device, a.dtype), ([], []))
                averaged.append(a)
                current.append(c.detach())
            for averaged, current in groups.values():
                self._update(averaged, current, self.n_averaged)
        self.n_averaged += 1

    def adopt_quantizer_state(self, model: nn.Module) -> None:
        """At a bit-width switch: take the model's quantizer state as it is (averaging a step of
        the old grid into one of the new grid would give neither)."""
        copy_quantizer_state(model, self.module)


def make_weight_ema(model: nn.Module, decay: float) -> WeightEMA:
    return WeightEMA(model, decay)
