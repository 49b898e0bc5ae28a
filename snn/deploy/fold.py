"""Fold a quantized EventSNNFlowNetLiteV2 into integer arithmetic: the form hardware runs.

Per layer and time step (see QAT_GUIDE.md, "Deploying", for the whole spec):

    acc[c]  = sum of weight codes x input spikes (or event counts)      exact integer
    q[c]    = clamp(round((acc[c] * M[c] + B[c]) / 2**S), -Qa, Qa)      the current code
              (binary currents: q = +1 where acc * M + B >= 0, else -1)
    V       = (V * D) >> K  +  q << F  (+ R x input spikes in a residual block)
    spike   = V >= FIRE;  reset: V -= spike * TH    (FIRE = TH x (1 - 1e-5), see neurons.FIRE_MARGIN)

``M``/``B`` fold the weight scale, batch norm (or the bias) and the current quantizer's
step into one per-channel fixed-point multiplier and offset; the membrane ``V`` counts
in steps of the current quantizer with ``F`` fractional bits, so the threshold ``TH``,
the residual spike current ``R`` and the leak ``D / 2**K`` (a plain shift for tau = 2)
are integers too. Flow heads integrate their current codes over the time bins; only
the final flow (codes x step / T, x2 bilinear upsampling) leaves the integer domain.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from snn.models.hooks import capturing_outputs
from snn.models.neurons import FIRE_MARGIN
from snn.quantization.control import activation_quantizers, model_widths
from snn.quantization.weight_quant import weight_codes_and_scale

FORMAT = "snn-flow-int/1"
MAX_MULT_SHIFT = 40  # fractional bits of the folded multipliers and offsets, at most
ARITH_BITS = 62  # what acc * M + B may use of int64
MEMBRANE_FRAC = 16  # fractional bits of the membrane, in steps of the current quantizer
DECAY_SHIFT = 16  # fractional bits of the leak multiplier
MAX_INPUT_COUNT = 255  # events per pixel and bin the stem's accumulator is sized for

# The network's wiring, in execution order: (layer, inputs concatenated along channels, residual).
WIRING = (
    ("stem", ["events"], False),
    ("enc1", ["stem"], False),
    ("enc2", ["enc1"], False),
    ("enc3", ["enc2"], False),
    ("res1", ["enc3"], True),
    ("res2", ["res1"], True),
    ("dec3", ["res2"], False),
    ("head3", ["dec3", "enc2"], False),
    ("dec2", ["dec3", "enc2"], False),
    ("head2", ["dec2", "enc1"], False),
    ("dec1", ["dec2", "enc1"], False),
    ("head1", ["dec1", "stem"], False),
)
# flow3 = head3; flow2 = up2(flow3) + head2; flow1 = up2(flow2) + head1 (finest last).
FLOW_HEADS = ("head3", "head2", "head1")


class FoldError(ValueError):
    """The model cannot be folded (not quantized, an unknown layer, a value out of range)."""


def _bits_for(max_abs: float) -> int:
    """Signed bits that hold every integer in [-max_abs, max_abs]."""
    return int(math.ceil(math.log2(max(1.0, max_abs) + 1))) + 1


def _folded_affine(layer: nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Weight codes and scales, and the float per-channel (gain, offset) that map the integer
    accumulator to the pre-quantizer current: current = acc * gain + offset.
    Returns (codes, weight scales, gain, offset, bits)."""
    conv = layer.conv
    axis = conv.channel_axis
    # The codes from the float32 weights, with the arithmetic of the fake-quant forward that trained them.
    codes, w_scale = weight_codes_and_scale(conv.weight.detach().float(), conv.weight_bits, axis)
    w_scale = w_scale.double()
    gain = w_scale
    offset = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(gain)
    norm = getattr(layer, "norm", nn.Identity())
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):  # BatchNorm2d, and SyncBatchNorm after DDP on CUDA
        inv = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        offset = (offset - norm.running_mean.double()) * inv + norm.bias.detach().double()
        gain = gain * inv
    return codes.to(torch.int64).numpy(), w_scale.numpy(), gain.numpy(), offset.numpy(), conv.weight_bits


def _current_step(q: nn.Module) -> float:
    if not bool(q.initialized):
        raise FoldError("a current quantizer has no range yet: calibrate or train the model before exporting")
    return float(q.scale().detach())


# Peak memory of a quantized forward pass per element of the layers' outputs (one time bin) and of
# the input, measured at 256x256 and 512x512 on CPU (44-51 bytes), with some margin.
BYTES_PER_ACTIVATION = 56


def check_ranges(model: nn.Module) -> None:
    """FoldError unless every current quantizer has its range (a forward pass would seed it from zeros)."""
    for _, q in activation_quantizers(model):
        _current_step(q)


def forward_bytes(model: nn.Module, height: int, width: int) -> int:
    """About the memory one forward pass of a ``height`` x ``width`` window takes (the shape pass of
    ``fold_network``, the ONNX check), from the shapes at 8x8: they scale with height x width."""
    check_ranges(model)
    small = layer_shapes(model, 8, 8)
    elements = sum(math.prod(shape) for shape in small.values()) + model.num_bins * model.in_channels * 64
    return int(elements / 64 * height * width * BYTES_PER_ACTIVATION)


def layer_shapes(model: nn.Module, height: int, width: int) -> dict[str, list[int]]:
    """Output [C, H, W] of every layer for one input window of ``height`` x ``width``."""
    layers = {name: getattr(model, name) for name, _, _ in WIRING}
    dtype = next(model.parameters()).dtype
    with capturing_outputs(layers, lambda out: list(out.shape[-3:])) as shapes, torch.no_grad():
        model(torch.zeros(1, model.num_bins, model.in_channels, height, width, dtype=dtype))
    return shapes


def fold_network(model: nn.Module, height: int, width: int) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, int]]]:
    """The layer description (JSON-ready) and the integer weight codes of a quantized model.

    ``height`` x ``width`` is the input size the description's shapes are given for (any
    multiple of 8 runs). Returns ``(description, {tensor name: (codes, bits)})``.
    """
    if not getattr(model, "quantize", False):
        raise FoldError("the model is not quantized: export a QAT checkpoint (finetune_quantized.py)")
    if getattr(model, "input_norm", False):
        raise FoldError("the model normalizes each window's input (input_norm), so its input is not integer counts")
    model = model.eval()
    check_ranges(model)  # before the shape pass, which would otherwise seed missing ranges from zeros
    shapes = layer_shapes(model, height, width)
    shapes["events"] = [model.stem.conv.in_channels, height, width]  # what the stem reads per step
    tensors: dict[str, tuple[np.ndarray, int]] = {}
    layers = []
    for name, inputs, residual in WIRING:
        layer = getattr(model, name)
        codes, w_scales, gain, offset, w_bits = _folded_affine(layer)
        q = layer.quant_layer
        step = _current_step(q)
        binary = q.is_binary
        conv = layer.conv
        transposed = isinstance(conv, nn.ConvTranspose2d)
        head = name in FLOW_HEADS
        in_ch = sum(shapes[i][0] for i in inputs)
        fan_in = int(np.abs(codes).sum(axis=tuple(d for d in range(4) if d != conv.channel_axis)).max())
        max_in = MAX_INPUT_COUNT if inputs == ["events"] else 1
        acc_bits = _bits_for(fan_in * max_in)
        # As many fractional bits as int64 leaves room for: |acc * M + B| < 2**ARITH_BITS.
        ratio = max(float(np.abs(gain).max()) * fan_in * max_in + float(np.abs(offset).max()), 1e-30) / step
        shift = min(MAX_MULT_SHIFT, ARITH_BITS - 1 - int(math.ceil(math.log2(ratio + 1))))
        if shift < 8:
            raise FoldError(f"{name}: its folded multiplier leaves under 8 fractional bits in 64-bit arithmetic")
        mult = np.round(gain / step * 2.0**shift).astype(np.int64)
        add = np.round(offset / step * 2.0**shift).astype(np.int64)
        tensors[f"{name}.weight"] = (codes, w_bits)
        entry: dict[str, Any] = {
            "name": name,
            "type": "flow_head" if head else ("spiking_conv_transpose" if transposed else "spiking_conv"),
            "inputs": inputs,
            "residual": residual,
            "in_channels": in_ch,
            "out_channels": int(conv.out_channels),
            "kernel": list(conv.kernel_size),
            "stride": list(conv.stride),
            "padding": list(conv.padding),
            "output_padding": list(conv.output_padding) if transposed else [0, 0],
            "input_shape": [in_ch, *shapes[inputs[0]][1:]],
            "output_shape": shapes[name],
            "weight": {
                "tensor": f"{name}.weight",
                "bits": w_bits,
                "layout": "OIHW" if not transposed else "IOHW",
                "scales": w_scales.tolist(),  # per output channel; already folded into the multipliers
            },
            "current": {
                "bits": q.bit_width if not binary else 1,
                "binary": binary,
                "qmax": 1 if binary else q.qmax,
                "step": step,
                "multiplier": mult.tolist(),
                "offset": add.tolist(),
                "shift": shift,
            },
            "accumulator_bits": acc_bits,
        }
        if head:
            entry["flow"] = {"step": step, "flow_scale": float(model.flow_scale)}
        else:
            neuron = layer.neuron
            one = 2**MEMBRANE_FRAC / step  # one unit of float current, in membrane counts
            threshold = int(round(neuron.threshold * one))
            fire_at = int(round(neuron.threshold * (1 - FIRE_MARGIN) * one))
            residual_current = int(round(one)) if residual else 0
            decay = int(round(neuron.decay * 2**DECAY_SHIFT))
            per_step = (entry["current"]["qmax"] << MEMBRANE_FRAC) + residual_current
            peak = per_step / (1 - neuron.decay) + threshold
            entry["neuron"] = {
                "threshold": threshold,
                "fire_at": fire_at,
                "reset": neuron.reset,
                "frac_bits": MEMBRANE_FRAC,
                "decay": {"multiplier": decay, "shift": DECAY_SHIFT, "tau": 1 / (1 - neuron.decay)},  # learned or set
                "residual_current": residual_current,
                "threshold_float": neuron.threshold,
            }
            entry["membrane_bits"] = _bits_for(peak)
        layers.append(entry)
    weights, currents = model_widths(model)
    description = {
        "format": FORMAT,
        "model": type(model).__name__,
        "widths": {"weights": weights, "currents": currents},
        "time_bins": model.num_bins,
        "time_steps": getattr(model, "time_steps", model.num_bins),
        "input": {
            "channels": model.in_channels,
            "height": height,
            "width": width,
            "layout": "[T, C, H, W] counts",
            # Step s reads bins s*g .. s*g+g-1 (g = bins_per_step, oldest first, C channels each) as
            # its own group; with input_bins k, the groups of steps s, s-1, ..., s-k+1 (newest first,
            # zeros before the first step).
            "bins_per_step": getattr(model, "bins_per_step", 1),
            "input_bins": getattr(model, "input_bins", 1),
        },
        "layers": layers,
        "flow": {
            "heads": list(FLOW_HEADS),
            "rule": "flow = head3; flow = upsample2x_bilinear(flow) + head for head2, head1",
            "head_output": "sum over time steps of current codes x step / time_steps x flow_scale, in pixels",
        },
    }
    return description, tensors
