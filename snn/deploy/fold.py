"""Fold a quantized EventSNNFlowNetLiteV2 into 32-bit integer arithmetic: the form hardware runs.

The arithmetic itself lives in ``snn.models.integer`` (the model evaluates with it too); this
module writes it out as a JSON-ready description, layer by layer in execution order, with the
width of every value. ``docs/hardware.md`` is the spec an implementation follows.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from snn.models.hooks import capturing_outputs
from snn.models.integer import INPUT_MAX, FoldedLayer, FoldError, check_range, signed_bits
from snn.quantization.control import activation_quantizers, model_widths

FORMAT = "snn-flow-int/4"  # 3: the current shortcut P; 4: the context path
MAX_INPUT_COUNT = INPUT_MAX  # events per pixel and bin; the input saturates there

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
# The context path (``global_context``): the frame rates of this layer's spikes feed that one's current.
CONTEXT = ("res2", "dec3")
# flow3 = head3; flow2 = up2(flow3) + head2; flow1 = up2(flow2) + head1 (finest last).
FLOW_HEADS = ("head3", "head2", "head1")


# Peak memory of a quantized forward pass per element of the layers' outputs (one time bin) and of
# the input, measured at 256x256 and 512x512 on CPU (44-51 bytes), with some margin.
BYTES_PER_ACTIVATION = 56


def check_ranges(model: nn.Module) -> None:
    """FoldError unless every current quantizer has its range (a forward pass would seed it from zeros)."""
    for _, q in activation_quantizers(model):
        check_range(q)


def forward_bytes(model: nn.Module, height: int, width: int) -> int:
    """About the memory one forward pass of a ``height`` x ``width`` window takes (the shape pass of
    ``fold_network``, the ONNX check), from the shapes at 8x8: they scale with height x width."""
    check_ranges(model)
    small = layer_shapes(model, 8, 8)
    elements = sum(math.prod(shape) for shape in small.values()) + model.num_bins * model.in_channels * 64
    return int(elements / 64 * height * width * BYTES_PER_ACTIVATION)


def layer_shapes(model: nn.Module, height: int, width: int) -> dict[str, list[int]]:
    """Output [C, H, W] of every layer for one input window of ``height`` x ``width``."""
    model = copy.deepcopy(model).eval()  # a forward pass in training mode would move its statistics
    model.integer_eval = False  # the shapes are the same, and float32 takes less memory
    layers = {name: getattr(model, name) for name, _, _ in WIRING}
    dtype = next(model.parameters()).dtype
    with capturing_outputs(layers, lambda out: list(out.shape[-3:])) as shapes, torch.no_grad():
        model(torch.zeros(1, model.num_bins, model.in_channels, height, width, dtype=dtype))
    return shapes


def fold_network(model: nn.Module, height: int, width: int) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, int]]]:
    """The layer description (JSON-ready) and the integer weight codes of a quantized model.

    ``height`` x ``width`` is the input size the description's shapes are given for (any
    multiple of 8 runs). Folds a copy: the caller's model is left as it is (its mode included).
    Returns ``(description, {tensor name: (codes, bits)})``; FoldError names what cannot be exact.
    """
    if not getattr(model, "quantize", False):
        raise FoldError("the model is not quantized: export a QAT checkpoint (finetune_quantized.py)")
    if getattr(model, "input_norm", False):
        raise FoldError("the model normalizes each window's input (input_norm), so its input is not integer counts")
    if getattr(model, "head_input", "spikes") != "spikes":
        raise FoldError("the flow heads read the decoder's currents (head_input), which the fold does not describe")
    if not getattr(model, "integer_input", True):
        raise FoldError("the model's input is not integer event counts (a voxel grid), so it cannot be folded")
    known = {name for name, _, _ in WIRING} | ({"context"} if getattr(model, "context", None) is not None else set())
    unknown = [name for name, m in model.named_children() if name not in known and any(True for _ in m.parameters())]
    if unknown:
        raise FoldError(f"layers the fold does not know: {', '.join(unknown)}")
    model = copy.deepcopy(model).eval()
    folded = model.fold_layers()  # checks every range before the shape pass, which would seed missing ones
    shapes = layer_shapes(model, height, width)
    shapes["events"] = [model.stem.conv.in_channels, height, width]  # what the stem reads per step
    steps = getattr(model, "time_steps", model.num_bins)
    tensors: dict[str, tuple[np.ndarray, int]] = {}
    layers = []
    for name, inputs, residual in WIRING:
        layer = getattr(model, name)
        entry, codes = _describe(name, inputs, residual, layer, folded[name], shapes, steps, float(model.flow_scale))
        tensors[entry["weight"]["tensor"]] = (codes, folded[name].current.weight_bits)
        context = folded[name].current.context
        if context is not None:
            tensors[entry["context"]["weight"]["tensor"]] = (context.codes.cpu().numpy(), context.weight_bits)
        layers.append(entry)
    weights, currents = model_widths(model)
    description = {
        "format": FORMAT,
        "model": type(model).__name__,
        "widths": {"weights": weights, "currents": currents},
        "time_bins": model.num_bins,
        "time_steps": steps,
        "input": {
            "channels": model.in_channels,
            "height": height,
            "width": width,
            "layout": "[T, C, H, W] counts",
            "max_count": MAX_INPUT_COUNT,  # counts saturate here (min(count, max_count)) before the stem
            # Step s reads bins s*g .. s*g+g-1 (g = bins_per_step, oldest first, C channels each) as
            # its own group; with input_bins k, the groups of steps s, s-1, ..., s-k+1 (newest first,
            # zeros before the first step).
            "bins_per_step": getattr(model, "bins_per_step", 1),
            "input_bins": getattr(model, "input_bins", 1),
        },
        "arithmetic": {
            "integers": "signed 32-bit; every stated width is proven for every input",
            "shift": "arithmetic right shift (rounds towards minus infinity)",
            "current_rounding": "half up: (acc * M + B + 2**(S-1)) >> S, then clamp to [-qmax, qmax]",
            "binary_current": "+1 where acc * M + B >= 0, else -1",
            "shortcut": "a layer whose current has a shortcut P adds P x its input spikes to acc * M + B "
            "before the rounding or the sign (its neuron then has no residual current)",
            "leak": "V - (V >> k)",
            "context": "a layer with a context path adds ctx * Mc to acc * M + B, once per frame and step and "
            "output channel, where ctx = sum over its input channels of weight code x rate and rate = "
            "(spike count over the frame << rate_bits) // (H * W) of that channel of the context's input",
        },
        "layers": layers,
        "flow": {
            "heads": list(FLOW_HEADS),
            "rule": "flow = head3; flow = upsample2x_bilinear(flow) + head for head2, head1",
            "head_output": "sum over time steps of current codes x step / time_steps x flow_scale, in pixels",
        },
    }
    return description, tensors


def _describe(
    name: str,
    inputs: list[str],
    residual: bool,
    layer: nn.Module,
    folded: FoldedLayer,
    shapes: dict[str, list[int]],
    steps: int,
    flow_scale: float,
) -> tuple[dict[str, Any], np.ndarray]:
    conv = layer.conv
    current = folded.current
    transposed = isinstance(conv, nn.ConvTranspose2d)
    head = folded.neuron is None
    in_ch = sum(shapes[i][0] for i in inputs)
    widths = current.widths()
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
        "dilation": list(conv.dilation),
        "output_padding": list(conv.output_padding) if transposed else [0, 0],
        "input_shape": [in_ch, *shapes[inputs[0]][1:]],
        "output_shape": shapes[name],
        "max_input": folded.max_input,
        "weight": {
            "tensor": f"{name}.weight",
            "bits": current.weight_bits,
            "layout": "OIHW" if not transposed else "IOHW",
            "scales": current.weight_scale.tolist(),  # per output channel; already folded into the multipliers
        },
        "current": {
            "bits": 1 if current.binary else signed_bits(current.qmax),
            "binary": current.binary,
            "qmax": current.qmax,
            "step": current.step,
            "multiplier": current.multiplier.tolist(),
            "offset": current.offset.tolist(),
            "shift": current.shift,
            "shortcut": current.shortcut,
        },
        "accumulator_bound": current.acc_bound.tolist(),  # per output channel: the largest |acc|
        "widths": widths,
        "accumulator_bits": widths["accumulator"],
    }
    if current.context is not None:
        context = current.context
        entry["context"] = {
            "input": CONTEXT[0],
            "in_channels": int(context.codes.shape[1]),
            "weight": {
                "tensor": "context.weight",
                "bits": context.weight_bits,
                "layout": "OIHW",
                "scales": context.weight_scale.tolist(),  # already folded into the multipliers
            },
            "rate_bits": context.rate_bits,
            "multiplier": context.multiplier.tolist(),  # Mc, per output channel
            "accumulator_bound": context.acc_bound.tolist(),  # per output channel: the largest |ctx|
        }
    if head:
        entry["flow"] = {"step": current.step, "flow_scale": flow_scale}
        entry["widths"]["code_sum"] = signed_bits(steps * current.qmax)
    else:
        neuron = folded.neuron
        entry["neuron"] = {
            "threshold": neuron.threshold,
            "fire_at": neuron.fire_at,
            "reset": neuron.reset,
            "frac_bits": neuron.frac_bits,
            "leak_shift": neuron.leak_shift,
            "tau": 2**neuron.leak_shift,
            "residual_current": neuron.residual_current,
            "threshold_float": layer.neuron.threshold,
        }
        entry["widths"].update(neuron.widths())
        entry["membrane_bits"] = entry["widths"]["membrane"]
    return entry, current.codes.cpu().numpy()
