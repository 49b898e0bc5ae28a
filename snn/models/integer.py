"""The integer arithmetic of a quantized layer: what the export writes and the hardware runs, and
what the model itself runs in evaluation, so that what is measured is what deploys.

Per spiking layer and time step, with every value a signed 32-bit integer:

    acc = sum of weight codes x inputs            (spikes 0/1, or event counts saturated at INPUT_MAX)
    q   = clamp((acc * M + B + 2**(S-1)) >> S, -Qa, Qa)   binary currents: +1 where acc * M + B >= 0, else -1
          (with ``shortcut_before_quant`` a residual block adds P x input spikes to acc * M + B first)
    V   = V - (V >> k) + (q << F)  [+ R x input spikes in a residual block]
    s   = V >= FIRE;   V -= s * TH  (reset "subtract")  or  V *= 1 - s  (reset "zero")

``>>`` is an arithmetic shift (it rounds towards minus infinity), so the rounding of ``q`` is half up.
``M``, ``B`` fold the weight scale, batch norm and the current step into one multiplier and
offset per channel (a binary current's learned threshold goes into ``B`` too), with the shift
``S`` chosen per layer as large as the 32-bit bound allows: ``|acc| * |M| + |B| + 2**(S-1)`` is
below 2**31 for every input the layer can receive. The membrane counts in steps of the current
quantizer with ``F`` fractional bits; the leak is one shift (tau = 2**k).
Flow heads sum their codes ``q`` over the time steps.

The context path (``global_context``) feeds the first decoder layer a second accumulator per frame
and step: each input channel's spike count over the whole frame, as a rate ``r = (count << R) //
(H * W)`` with ``R = RATE_BITS`` fractional bits, times the context's weight codes, ``ctx = sum of
codes x r``; the layer then rounds ``acc * M + ctx * Mc + B`` instead of ``acc * M + B``, where ``Mc``
folds the context's weight scale and ``B`` its bias, under the same bound.

In training the model runs the float fake-quant arithmetic (it needs gradients); in evaluation a
quantized model runs this arithmetic exactly, in float64 tensors that hold every integer here
exactly (``EventSNNFlowNetLiteV2.integer_plan``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from snn.models.neurons import FIRE_MARGIN, LIFNeuron
from snn.quantization.weight_quant import weight_codes_and_scale

INT32_MAX = 2**31 - 1
INPUT_MAX = 255  # events per pixel and bin: inputs saturate here, in training, evaluation and export
MAX_SHIFT = 30  # of the current fold, at most
MAX_FRAC_BITS = 16  # of the membrane, at most
# The membrane's fractional bits hold the threshold and the residual current (in current steps) to
# within this relative error; the training's float membrane is what they approximate.
MEMBRANE_TOLERANCE = 2.0**-11
# Fractional bits of the context path's frame rates: the training rounds them down there too.
RATE_BITS = 8


class FoldError(ValueError):
    """The model cannot be folded into exact 32-bit integer arithmetic; the message says why."""


def signed_bits(max_abs: float) -> int:
    """Signed bits that hold every integer in [-max_abs, max_abs]."""
    return int(math.ceil(math.log2(max(1.0, float(max_abs)) + 1))) + 1


def frame_rates(spikes: torch.Tensor, rate_bits: int = RATE_BITS) -> torch.Tensor:
    """Spikes [..., C, H, W] (0/1) -> each channel's integer rate ``(count << R) // (H * W)``, [..., C]
    (float64, exact: the quotient of two integers below 2**53 never rounds across an integer)."""
    counts = spikes.to(torch.float64).sum(dim=(-2, -1))
    return torch.floor(counts * 2.0**rate_bits / (spikes.shape[-2] * spikes.shape[-1]))


@dataclass(frozen=True)
class FoldedContext:
    """The context path's integer part: frame rates through a 1x1 convolution's weight codes."""

    codes: torch.Tensor  # int64 [O, I, 1, 1]
    weight_scale: torch.Tensor  # float64 [O] (folded into the multiplier)
    weight_bits: int
    multiplier: torch.Tensor  # int64 [O]: Mc
    acc_bound: torch.Tensor  # int64 [O]: the largest |ctx|, every rate at its most
    rate_bits: int = RATE_BITS

    def accumulate(self, spikes: torch.Tensor) -> torch.Tensor:
        """Spikes [N, I, H, W] -> the context accumulators ``ctx`` [N, O, 1, 1] (integer-valued float64)."""
        rates = frame_rates(spikes, self.rate_bits)
        ctx = rates @ self.codes.flatten(1).to(rates).T  # below 2**53: exact in float64
        return ctx[..., None, None]


@dataclass(frozen=True)
class FoldedCurrent:
    """Weight codes and the per-channel integer map from accumulator to current code."""

    codes: torch.Tensor  # int64, the convolution's weight layout
    weight_scale: torch.Tensor  # float64, per output channel (folded into the multiplier)
    weight_bits: int
    multiplier: torch.Tensor  # int64 [C]
    offset: torch.Tensor  # int64 [C]
    shift: int
    qmax: int  # 1 for binary currents
    binary: bool
    step: float  # the current quantizer's step: code x step is the float current
    acc_bound: torch.Tensor  # int64 [C]: the largest |acc| any input can give
    acc_max: int  # its largest entry, on the host
    shortcut: int = 0  # P: what one input spike adds to acc * M + B before rounding or sign (0: none)
    context: FoldedContext | None = None  # the context path into this layer (None: none)

    def codes_from_acc(
        self, acc: torch.Tensor, spikes: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Accumulators [N, C, H, W] (integer-valued float64) -> current codes (float64); ``spikes``: the
        layer's input spikes (same shape), added with weight ``shortcut`` before the sign; ``context``:
        the context accumulators [N, C, 1, 1] (``FoldedContext.accumulate``) of a layer that has one."""
        m = self.multiplier.to(acc).view(1, -1, 1, 1)
        b = self.offset.to(acc).view(1, -1, 1, 1)
        value = acc * m + b  # below 2**31: exact in float64
        if self.shortcut:
            value = value + spikes.to(acc) * self.shortcut
        if self.context is not None:
            value = value + context.to(acc) * self.context.multiplier.to(acc).view(1, -1, 1, 1)
        if self.binary:
            return torch.where(value >= 0, 1.0, -1.0).to(acc)
        return torch.floor((value + 2.0 ** (self.shift - 1)) / 2.0**self.shift).clamp(-self.qmax, self.qmax)

    def widths(self) -> dict[str, int]:
        widths = {
            "accumulator": signed_bits(self.acc_max),
            "multiplier": signed_bits(int(self.multiplier.abs().max())),
            "offset": signed_bits(int(self.offset.abs().max())),
            "product_sum": signed_bits(
                int(_fold_bound(self.acc_bound, self.multiplier, self.offset, self.shift, self.context)) + self.shortcut
            ),
            "code": signed_bits(self.qmax),
        }
        if self.context is not None:
            widths["context_accumulator"] = signed_bits(int(self.context.acc_bound.max()))
            widths["context_multiplier"] = signed_bits(int(self.context.multiplier.abs().max()))
        return widths


@dataclass(frozen=True)
class FoldedNeuron:
    """The integer LIF neuron: membrane in steps of the current with ``frac_bits`` fractional bits."""

    frac_bits: int
    threshold: int
    fire_at: int
    residual_current: int  # what one input spike adds in a residual block (0: none)
    leak_shift: int  # V -= V >> leak_shift each step (decay 1 - 2**-k)
    reset: str
    membrane_bound: int  # no membrane value leaves [-bound, bound]

    def run(self, inputs: torch.Tensor, v0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer inputs ``(q << F) [+ R x spikes]`` over [T, ...] (float64) -> spikes (0/1) and the last membrane."""
        v = torch.zeros_like(inputs[0]) if v0 is None else v0.to(inputs)
        spikes = torch.empty_like(inputs)
        leak = 2.0**self.leak_shift
        for t in range(inputs.shape[0]):
            v = v - torch.floor(v / leak) + inputs[t]
            torch.ge(v, self.fire_at, out=spikes[t])
            v = v - spikes[t] * self.threshold if self.reset == "subtract" else v * (1 - spikes[t])
        return spikes, v

    def widths(self) -> dict[str, int]:
        return {"membrane": signed_bits(self.membrane_bound), "threshold": signed_bits(self.threshold)}


@dataclass(frozen=True)
class FoldedLayer:
    current: FoldedCurrent
    neuron: FoldedNeuron | None  # None for a flow head
    max_input: int  # the largest input value: INPUT_MAX for the stem, 1 (a spike) elsewhere


def check_range(q: nn.Module) -> None:
    """FoldError unless the current quantizer ``q`` has its range (and, when learned, its step)."""
    if not bool(q.initialized) or (q.learn_scale and not bool(q.step_initialized)):
        raise FoldError("a current quantizer has no range or step yet: calibrate or train the model first")


def _fold_bound(
    acc_bound: torch.Tensor, mult: torch.Tensor, add: torch.Tensor, shift: int, context: FoldedContext | None = None
) -> int:
    """The largest |acc * M [+ ctx * Mc] + B + 2**(S-1)| over the channels (exact: int64 holds these products)."""
    total = acc_bound * mult.abs() + add.abs()
    if context is not None:
        total = total + context.acc_bound * context.multiplier.abs()
    return int(total.max()) + 2 ** (shift - 1)


def _float_affine(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weight codes, scales, and the per-channel (gain, offset) with current = acc * gain + offset (float64)."""
    conv = layer.conv
    # The codes of the float32 weights, with the arithmetic of the fake-quant forward that trained them.
    codes, w_scale = weight_codes_and_scale(conv.weight.detach().float(), conv.weight_bits, conv.channel_axis)
    w_scale = w_scale.double()
    gain = w_scale
    offset = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(gain)
    norm = getattr(layer, "norm", nn.Identity())
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):  # BatchNorm2d, and SyncBatchNorm after DDP on CUDA
        inv = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        offset = (offset - norm.running_mean.double()) * inv + norm.bias.detach().double()
        gain = gain * inv
    elif not isinstance(norm, nn.Identity):
        raise FoldError(f"a normalization the fold does not know: {type(norm).__name__}")
    return codes.to(torch.int64), w_scale, gain, offset


def _context_weights(context: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The context convolution's weight codes, scales, bound on |ctx| and bias (float64)."""
    if not hasattr(context, "weight_bits") or tuple(context.kernel_size) != (1, 1):
        raise FoldError("the context path must be a weight-quantized 1x1 convolution")
    codes, scale = weight_codes_and_scale(context.weight.detach().float(), context.weight_bits, context.channel_axis)
    codes = codes.to(torch.int64)
    bound = codes.abs().flatten(1).sum(dim=1) * 2**RATE_BITS  # every rate at its most, 2**R
    bias = context.bias.detach().double() if context.bias is not None else torch.zeros(codes.shape[0]).double()
    return codes, scale.double(), bound, bias


def fold_current(
    layer: nn.Module, max_input: int, shortcut: bool = False, context: nn.Module | None = None
) -> FoldedCurrent:
    """The integer current of a conv (+ batch norm) + current quantizer layer; ``shortcut``: the layer's
    input spikes join the current before its quantizer (``SpikingConvBlock.shortcut_before_quant``);
    ``context``: the model's context convolution, whose output joins this layer's current before its
    quantizer (after the batch norm)."""
    conv = layer.conv
    if not hasattr(conv, "weight_bits"):
        raise FoldError(f"a convolution without weight quantization: {type(conv).__name__}")
    if getattr(conv, "groups", 1) != 1:
        raise FoldError("grouped convolutions are not folded")
    q = layer.quant_layer
    check_range(q)
    codes, w_scale, gain, offset = _float_affine(layer)
    step = float(q.scale().detach())
    binary = q.is_binary
    qmax = 1 if binary else q.qmax
    if binary and getattr(q, "binary_threshold", None) is not None:  # the sign reads current - threshold
        offset = offset - q.binary_threshold.detach().double()
    axis = conv.channel_axis
    acc_bound = codes.abs().sum(dim=[d for d in range(codes.dim()) if d != axis]) * max_input
    g = gain / step
    gc = ctx_bound = ctx = None
    if context is not None:
        ctx_codes, ctx_scale, ctx_bound, ctx_bias = _context_weights(context)
        offset = offset + ctx_bias
        gc = ctx_scale / 2**RATE_BITS / step  # one unit of ctx, in steps
    # An offset beyond what any accumulator can reach saturates the code whatever comes in: clipping it
    # there changes no code and bounds B.
    spike = 1 / step if shortcut else 0.0  # one input spike, in steps
    inputs_reach = acc_bound.double() * g.abs() + (0.0 if gc is None else ctx_bound.double() * gc.abs())
    reach = inputs_reach + spike + qmax + 1
    o = torch.maximum(torch.minimum(offset / step, reach), -reach)
    # The largest shift the bound allows, give or take the rounding of M and B: start there, go down.
    reach_sum = float((inputs_reach + o.abs()).max()) + spike + 1
    start = min(MAX_SHIFT, max(1, math.floor(math.log2(INT32_MAX / reach_sum))))
    for shift in range(start, 0, -1):
        mult = torch.round(g * 2.0**shift).to(torch.int64)
        add = torch.round(o * 2.0**shift).to(torch.int64)
        per_spike = round(spike * 2.0**shift)  # P
        if gc is not None:
            ctx_mult = torch.round(gc * 2.0**shift).to(torch.int64)
            ctx = FoldedContext(ctx_codes, ctx_scale, context.weight_bits, ctx_mult, ctx_bound)
        if _fold_bound(acc_bound, mult, add, shift, ctx) + per_spike <= INT32_MAX:
            break
    else:
        raise FoldError(
            f"its currents need more than 32 bits: a current step of {step:.3g} against accumulators up to "
            f"{int(acc_bound.max())} (a layer that never fired in calibration?)"
        )
    return FoldedCurrent(
        codes,
        w_scale,
        conv.weight_bits,
        mult,
        add,
        shift,
        qmax,
        binary,
        step,
        acc_bound,
        int(acc_bound.max()),
        per_spike,
        ctx,
    )


def leak_shift(neuron: LIFNeuron) -> int:
    """k with decay = 1 - 2**-k exactly; FoldError for any other leak."""
    decay = neuron.decay
    k = round(-math.log2(1 - decay)) if 0 < decay < 1 else 0
    if k < 1 or 1 - 2.0**-k != decay:
        raise FoldError(
            f"a leak of tau = {1 / (1 - decay):g} steps, which one shift cannot reproduce exactly "
            "(tau must be 2, 4, 8, ...)"
        )
    return k


def fold_neuron(neuron: LIFNeuron, current: FoldedCurrent, residual: bool) -> FoldedNeuron:
    """The integer LIF behind ``current``: the fewest fractional bits ``F`` that hold the threshold (and
    the residual current) to within ``MEMBRANE_TOLERANCE`` of their value in steps (exactly, for a step
    aligned to the threshold: theta / step = k + 1/2 needs F = 1), within the 32-bit bound."""
    k = leak_shift(neuron)
    in_steps = {"threshold": neuron.threshold / current.step}
    if residual:
        in_steps["residual"] = 1 / current.step
    for frac in range(MAX_FRAC_BITS + 1):
        scaled = {key: v * 2.0**frac for key, v in in_steps.items()}
        if all(abs(v - round(v)) <= MEMBRANE_TOLERANCE * v for v in scaled.values()) or frac == MAX_FRAC_BITS:
            break
    threshold = round(scaled["threshold"])
    fire_at = round(neuron.threshold * (1 - FIRE_MARGIN) / current.step * 2.0**frac)
    residual_current = round(scaled.get("residual", 0))
    per_step = (current.qmax << frac) + residual_current
    bound = (per_step + 1) * 2**k + threshold
    if bound > INT32_MAX or threshold < 1:
        raise FoldError(
            f"its membrane needs more than 32 bits (current step {current.step:g}, threshold {neuron.threshold})"
        )
    return FoldedNeuron(frac, threshold, fire_at, residual_current, k, neuron.reset, bound)


def fold_layer(
    layer: nn.Module, max_input: int, residual: bool, spiking: bool, context: nn.Module | None = None
) -> FoldedLayer:
    shortcut = residual and bool(getattr(layer, "shortcut_before_quant", False))
    current = fold_current(layer, max_input, shortcut, context)
    # A shortcut taken before the quantizer leaves the neuron no residual current to add.
    neuron = fold_neuron(layer.neuron, current, residual and not shortcut) if spiking else None
    return FoldedLayer(current, neuron, max_input)


def integer_conv(conv: nn.Module, current: FoldedCurrent, x: torch.Tensor) -> torch.Tensor:
    """The accumulator: ``conv``'s geometry with the integer weight codes on integer ``x`` (float64).

    Exact: on the CPU in float32 when no partial sum can reach 2**24 (``acc_bound``; PyTorch's CPU
    convolutions multiply and add directly, so every partial sum of these integers is exact), else,
    and on CUDA (whose convolution algorithms may transform the operands), in float64, which holds
    every integer below 2**53 whatever order the sum is taken in.
    """
    small = x.device.type == "cpu" and current.acc_max < 2**24
    dtype = torch.float32 if small else torch.float64
    w = current.codes.to(device=x.device, dtype=dtype)
    x = x.to(dtype)
    if isinstance(conv, nn.ConvTranspose2d):
        out = F.conv_transpose2d(x, w, None, conv.stride, conv.padding, conv.output_padding, 1, conv.dilation)
    else:
        out = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation)
    return out.to(torch.float64)
