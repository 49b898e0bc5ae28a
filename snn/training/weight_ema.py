"""An exponential moving average of the weights, the copy that is validated and saved.

Built on ``torch.optim.swa_utils.AveragedModel`` with its buffers averaged too (BN
statistics, quantizer ranges). The decay warms up as ``min(decay, (1 + n) / (10 + n))``
so the first, poor weights fade out quickly instead of lingering for ~1/(1-decay) steps.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from snn.quantization.torch_ops import lerp_all_


def warmup_ema_fn(decay: float):
    """``multi_avg_fn`` for AveragedModel: lerp floating tensors, copy the rest (counters, flags)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if torch.is_floating_point(averaged[0]):
            n = float(num_averaged)  # the integer buffers' group needs no decay (nor this device sync)
            d = min(decay, (1.0 + n) / (10.0 + n))
            lerp_all_(averaged, current, 1.0 - d)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


def make_weight_ema(model: nn.Module, decay: float) -> AveragedModel:
    ema = AveragedModel(model, multi_avg_fn=warmup_ema_fn(decay), use_buffers=True)
    ema.eval()
    return ema
