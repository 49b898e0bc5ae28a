"""Spiking convolution layers.

Every layer is ``op -> [norm] -> quant_layer -> neuron``. The convolution and
batch norm are stateless, so they run over all time steps at once on a
[T*B, C, H, W] view; only the neuron loops over T. ``quant_layer`` sits on
the current that enters the neuron (batch norm folds into the convolution for
deployment); it is an identity unless the layer is built with
``quantize=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from snn.models.integer import FoldedLayer
from snn.models.neurons import LIFNeuron
from snn.quantization.quantization_aware import QuantizationAwareLayer
from snn.quantization.weight_quant import QuantConv2d, QuantConvTranspose2d
from snn.utils.runtime import at_least_float32, ieee_float32_convolutions


@dataclass(frozen=True)
class QuantSpec:
    """How a layer built with ``quantize=True`` quantizes its weights and output current."""

    bit_width: int = 8  # the weights'
    binarize: bool = False
    ema_decay: float = 0.99
    learn_scale: bool = False
    current_bits: int | None = None  # the current quantizer's (None: bit_width)
    current_range: str = "maxabs"  # see QuantizationAwareLayer's range_mode
    binary_threshold: bool = False  # a learned threshold per channel before the sign of a binary current

    def activation_quantizer(self, channels: int | None = None) -> QuantizationAwareLayer:
        bits = self.bit_width if self.current_bits is None else self.current_bits
        return QuantizationAwareLayer(
            bits, self.binarize, self.ema_decay, self.learn_scale, self.current_range, channels, self.binary_threshold
        )


def make_quant_layer(quantize: bool, spec: QuantSpec | None, channels: int | None = None) -> nn.Module:
    """The module placed right after the convolution (``channels`` outputs): a quantizer, or an identity."""
    return (spec or QuantSpec()).activation_quantizer(channels) if quantize else nn.Identity()


def make_conv(quantize: bool, spec: QuantSpec | None, transposed: bool = False, **kwargs) -> nn.Module:
    if not quantize:
        return nn.ConvTranspose2d(**kwargs) if transposed else nn.Conv2d(**kwargs)
    spec = spec or QuantSpec()
    bits = 1 if spec.binarize else spec.bit_width
    cls = QuantConvTranspose2d if transposed else QuantConv2d
    return cls(bit_width=bits, **kwargs)


def into_quantizer(quant_layer: nn.Module, op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``quant_layer(op(x))``, with ``op`` in float32 when ``quant_layer`` quantizes, autocast or not:
    a bfloat16 current (8 mantissa bits) would put 8-bit codes 64-127 on a grid of 0.5, so the
    rounding would not be the one the exported integer network makes. For the same reason a CUDA
    convolution runs in IEEE float32 here, not in cuDNN's default TF32."""
    if getattr(quant_layer, "enabled", False):
        with torch.autocast(x.device.type, enabled=False), ieee_float32_convolutions(x.device.type):
            return quant_layer(op(at_least_float32(x)))
    return quant_layer(op(x))


def seq_apply(fn: Callable[[torch.Tensor], torch.Tensor], x_seq: torch.Tensor) -> torch.Tensor:
    """Apply a stateless function to a [T, B, ...] sequence in one call."""
    t, b = x_seq.shape[:2]
    y = fn(x_seq.flatten(0, 1))
    return y.view(t, b, *y.shape[1:])


class _SpikingLayer(nn.Module):
    def __init__(
        self,
        op: nn.Module,
        out_channels: int,
        norm: bool,
        quantize: bool,
        quant: QuantSpec | None,
        neuron: dict | None,
    ) -> None:
        super().__init__()
        self.conv = op
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.quant_layer = make_quant_layer(quantize, quant, out_channels)
        self.neuron = LIFNeuron(**(neuron or {}))
        # The layer's integer arithmetic during an integer evaluation pass (set by the model), else None.
        self.folded: FoldedLayer | None = None

    def current(
        self, x_seq: torch.Tensor, plus_input: bool = False, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The input current of the neurons, [T, B, C, H, W]; ``plus_input``: the input itself (a residual
        block's shortcut) is added before the quantizer; so is ``context`` ([T, B, C, 1, 1], the context path)."""
        context_flat = None if context is None else context.flatten(0, 1)

        def op(y: torch.Tensor) -> torch.Tensor:
            out = self.norm(self.conv(y))
            if context_flat is not None:
                out = out + context_flat.to(out.dtype)
            return out + y if plus_input else out

        return seq_apply(lambda x: into_quantizer(self.quant_layer, op, x), x_seq)

    def integer_input(
        self, x_seq: torch.Tensor, residual: bool = False, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the integer neuron adds to its membrane per step: ``(q << F) [+ R x input spikes]`` (float64);
        ``context``: the context accumulators [T, B, C, 1, 1] of a layer the context path feeds."""
        folded = self.folded
        ctx = None if context is None else context.flatten(0, 1)
        # conv: integer_conv; the input spikes count only where the current has a shortcut
        codes = seq_apply(lambda x: folded.current.codes_from_acc(self.conv(x), x, ctx), x_seq)
        inputs = codes * 2.0**folded.neuron.frac_bits
        return inputs + x_seq.to(inputs) * folded.neuron.residual_current if residual else inputs

    def forward(self, x_seq: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Spikes for ``x_seq``; ``context``: what the context path adds to the current (see ``current``),
        or in an integer pass its accumulators (see ``integer_input``)."""
        if self.folded is not None:
            return self.neuron(self.integer_input(x_seq, context=context)).to(x_seq.dtype)
        return self.neuron(self.current(x_seq, context=context))


class SpikingConv2d(_SpikingLayer):
    """Convolution (with bias, no norm by default) feeding LIF neurons."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        norm: bool = False,
        quantize: bool = False,
        quant: QuantSpec | None = None,
        neuron: dict | None = None,
        dilation: int = 1,
    ) -> None:
        padding = dilation * (kernel_size // 2) if padding is None else padding
        conv = make_conv(
            quantize,
            quant,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=not norm,
        )
        super().__init__(conv, out_channels, norm, quantize, quant, neuron)


class SpikingConvTranspose2d(_SpikingLayer):
    """Transposed convolution (x2 upsampling by default) feeding LIF neurons."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 4,
        stride: int = 2,
        padding: int = 1,
        norm: bool = True,
        quantize: bool = False,
        quant: QuantSpec | None = None,
        neuron: dict | None = None,
    ) -> None:
        conv = make_conv(
            quantize,
            quant,
            transposed=True,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            bias=not norm,
        )
        super().__init__(conv, out_channels, norm, quantize, quant, neuron)


class SpikingConvBlock(SpikingConv2d):
    """The main building block: conv -> batch norm -> LIF, optionally residual.

    With ``residual=True`` (same shape in and out) the block adds its input
    spikes to its output current, so information can skip the block. With
    ``shortcut_before_quant`` as well, the input spikes join the current before its
    quantizer rather than after: a coarse current (a binary +-step, or a ternary one
    whose zero spans the threshold's width) would otherwise drown them or fire on them alone.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        residual: bool = False,
        quantize: bool = False,
        quant: QuantSpec | None = None,
        neuron: dict | None = None,
        dilation: int = 1,
        shortcut_before_quant: bool = False,
    ) -> None:
        if residual and (in_channels != out_channels or stride != 1):
            raise ValueError("a residual SpikingConvBlock needs in_channels == out_channels, stride 1")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            norm=True,
            quantize=quantize,
            quant=quant,
            neuron=neuron,
            dilation=dilation,
        )
        self.residual = residual
        self.shortcut_before_quant = shortcut_before_quant and residual

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.folded is not None:
            return self.neuron(self.integer_input(x_seq, self.residual)).to(x_seq.dtype)
        current = self.current(x_seq, plus_input=self.shortcut_before_quant)
        if self.residual and not self.shortcut_before_quant:
            current = current + x_seq
        return self.neuron(current)
