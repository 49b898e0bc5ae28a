"""Per-output-channel weight fake-quantization for (transposed) convolutions.

The optimizer keeps FP32 weights; the forward pass uses integer codes times a
per-channel scale, which integer hardware reproduces exactly (and batch norm
folds into that per-channel scale and a bias):

- b >= 3 bits: codes in [-qmax, qmax], ``scale_c = max|W_c| / qmax`` (the arithmetic of
  PyTorch's per-channel fake-quant kernel, straight-through gradient inside the range);
- 2 bits (ternary, TWN): codes in {-1, 0, 1}, zero below ``0.7 * mean|W_c|``,
  ``scale_c`` = mean |W_c| above that threshold (max-abs would zero most weights);
- 1 bit (XNOR-Net): codes in {-1, 1}, ``scale_c = mean|W_c|``; the
  straight-through gradient is clipped to |W| <= 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from snn.quantization.quantization_aware import check_bit_width, qmax_for
from snn.quantization.torch_ops import ClippedRounding

TWN_THRESHOLD = 0.7


def channel_view(t: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast along ``axis`` of an ``ndim``-d tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return t.view(shape)


def _reduce_dims(w: torch.Tensor, axis: int) -> list[int]:
    return [d for d in range(w.dim()) if d != axis]


def _maxabs_scale(w: torch.Tensor, qmax: int, axis: int) -> torch.Tensor:
    """Per-channel ``max|W_c| / qmax``: the scale of 3..16-bit weights, in training and in the export alike."""
    return (w.detach().abs().amax(dim=_reduce_dims(w, axis)) / qmax).clamp_min(1e-12)


def weight_codes_and_scale(w: torch.Tensor, bit_width: int, axis: int = 0):
    """Integer codes (same shape as w) and per-channel scales, without gradients."""
    with torch.no_grad():
        dims = _reduce_dims(w, axis)
        absw = w.abs()
        if bit_width == 1:
            scale = absw.mean(dim=dims)
            codes = torch.where(w >= 0, 1.0, -1.0)
        elif bit_width == 2:
            delta = TWN_THRESHOLD * absw.mean(dim=dims, keepdim=True)
            keep = absw > delta
            scale = (absw * keep).sum(dim=dims) / keep.sum(dim=dims).clamp_min(1)
            codes = torch.sign(w) * keep
        else:
            qmax = qmax_for(bit_width)
            scale = _maxabs_scale(w, qmax, axis)
            # x * (1 / scale), as the fake-quant forward computes it: w / scale rounds a code the
            # other way now and then (2 of 1.1 M 8-bit codes in one checkpoint), so the export differed.
            codes = torch.clamp(torch.round(w * channel_view(scale.reciprocal(), axis, w.dim())), -qmax, qmax)
        return codes, scale.clamp_min(1e-12)


def fake_quantize_weight(w: torch.Tensor, bit_width: int, axis: int = 0) -> torch.Tensor:
    """Quantized weights with a straight-through gradient to the FP32 ones."""
    if bit_width >= 3:
        # The arithmetic of PyTorch's fake_quantize_per_channel_affine, bit for bit (a test checks),
        # without its check of the zero points, which on CUDA waits for the GPU once per layer and step.
        qmax = qmax_for(bit_width)
        return ClippedRounding.apply(w, channel_view(_maxabs_scale(w, qmax, axis).float(), axis, w.dim()), qmax)
    codes, scale = weight_codes_and_scale(w, bit_width, axis)
    w_q = codes * channel_view(scale, axis, w.dim())
    if bit_width == 1:
        # Clipped STE: no gradient for latent weights beyond |W| = 1.
        return w_q + (w - w.detach()) * (w.detach().abs() <= 1)
    # w_q + (w - w) is exactly w_q in the forward pass (bit-exact codes x scales).
    return w_q + (w - w.detach())


class _WeightQuantMixin:
    """Adds a bit width; ``quantized_weight()`` is what the forward uses."""

    channel_axis = 0

    def _init_quant(self, bit_width: int) -> None:
        self.weight_bits = check_bit_width(bit_width)
        # During an integer evaluation pass the model sets this to the exact integer accumulation of
        # the layer's weight codes (x -> acc); calling the module keeps its hooks (SynOps counts) working.
        self.integer_forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def set_bit_width(self, bit_width: int) -> None:
        self.weight_bits = check_bit_width(bit_width)

    def quantized_weight(self) -> torch.Tensor:
        return fake_quantize_weight(self.weight, self.weight_bits, self.channel_axis)

    def weight_quant_error(self) -> torch.Tensor:
        """Relative squared error of the quantized weights; its gradient pulls W to the grid."""
        codes, scale = weight_codes_and_scale(self.weight, self.weight_bits, self.channel_axis)
        target = codes * channel_view(scale, self.channel_axis, self.weight.dim())
        return ((self.weight - target) ** 2).mean() / (self.weight.detach() ** 2).mean().clamp_min(1e-12)


class QuantConv2d(_WeightQuantMixin, nn.Conv2d):
    """nn.Conv2d whose weights are fake-quantized per output channel (same state_dict keys)."""

    def __init__(self, *args, bit_width: int = 8, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_quant(bit_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.integer_forward is not None:
            return self.integer_forward(x)
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantConvTranspose2d(_WeightQuantMixin, nn.ConvTranspose2d):
    """nn.ConvTranspose2d with per-output-channel weight fake-quantization."""

    channel_axis = 1  # weights are [in, out, kh, kw]

    def __init__(self, *args, bit_width: int = 8, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_quant(bit_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.integer_forward is not None:
            return self.integer_forward(x)
        return F.conv_transpose2d(
            x,
            self.quantized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )
