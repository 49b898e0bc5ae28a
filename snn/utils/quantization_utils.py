"""Load, compare, size and export (quantized) models.

model_fp = load_model("checkpoints/V2/best_model.pth", quantize=False)
model_4 = load_model("checkpoints/V2_4bit/best_model.pth")
compare_model_outputs(model_fp, model_4, inputs)   # {"mae", "mse", "max_abs"}
estimate_model_size(model_4)                       # prints and returns sizes per bit width
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snn.deploy.fold import FoldError, fold_network
from snn.models.checkpoint import load_model
from snn.quantization import control
from snn.quantization.weight_quant import weight_codes_and_scale

# load_model lives with the other checkpoint code; it is re-exported here under the name the QAT guide uses.
__all__ = ["compare_model_outputs", "estimate_model_size", "export_quantized_model_info", "load_model"]

SIZE_BIT_WIDTHS = (32, 8, 4, 2, 1)
FLOAT_BYTES = 4


@torch.no_grad()
def compare_model_outputs(model_a: nn.Module, model_b: nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    """Mean absolute, mean squared and largest absolute difference of two models' flows."""
    model_a.eval()
    model_b.eval()
    a = model_a(inputs.to(next(model_a.parameters()).device)).float().cpu()
    b = model_b(inputs.to(next(model_b.parameters()).device)).float().cpu()
    diff = a - b
    return {"mae": float(diff.abs().mean()), "mse": float((diff**2).mean()), "max_abs": float(diff.abs().max())}


def _conv_layers(model: nn.Module):
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            yield name, m


def _layer_bits(model: nn.Module, name: str, bits: int) -> int:
    """Bits of a layer when the model runs at ``bits`` (pinned edge layers keep their floor)."""
    if bits >= 32:
        return 32
    return control.layer_bits(name, bits, getattr(model, "pinned", None))


def estimate_model_size(model: nn.Module, bit_widths=SIZE_BIT_WIDTHS, verbose: bool = True) -> dict[str, Any]:
    """Storage size at FP32 and at each bit width, and at the model's own bit width.

    Counted: convolution weights at their bit width (the stem and flow heads
    at no less than their pinned width), one FP32 scale per output channel,
    biases and batch-norm parameters at FP32 (they fold into a per-channel
    scale and bias), and one FP32 scale per activation quantizer.
    """
    weights = {name: m for name, m in _conv_layers(model)}
    n_weights = sum(m.weight.numel() for m in weights.values())
    n_params = sum(p.numel() for p in model.parameters())
    n_channels = sum(m.weight.shape[1 if isinstance(m, nn.ConvTranspose2d) else 0] for m in weights.values())
    weight_ids = {id(m.weight) for m in weights.values()}
    quant_ids = {id(q.step) for _, q in control.activation_quantizers(model)}
    n_other = sum(p.numel() for p in model.parameters() if id(p) not in weight_ids | quant_ids)
    n_act_scales = len(weights)  # one quantizer follows every convolution

    def size(bits: int) -> int:
        total = n_other * FLOAT_BYTES
        for name, m in weights.items():
            total += m.weight.numel() * _layer_bits(model, name, bits) / 8
        if bits < 32:
            total += (n_channels + n_act_scales) * FLOAT_BYTES
        return int(round(total))

    sizes = {b: size(b) for b in bit_widths}
    own = control.model_bit_width(model)
    result = {
        "parameters": n_params,
        "weight_parameters": n_weights,
        "bytes": sizes,
        "bit_width": own,
        "model_bytes": size(own),
    }
    if verbose:
        print(f"parameters: {n_params:,} ({n_weights:,} in convolution weights)")
        for b in bit_widths:
            label = "FP32" if b >= 32 else f"{b}-bit"
            print(f"  {label:>6}: {sizes[b] / 1e6:6.3f} MB  ({sizes[bit_widths[0]] / sizes[b]:4.1f}x smaller)")
    return result


def export_quantized_model_info(
    model: nn.Module, output_path: str | Path, include_weights: bool = False, input_size: tuple[int, int] = (64, 64)
) -> dict[str, Any]:
    """Write the scales, bit widths and (optionally) integer weight codes of every layer as JSON,
    and under ``"network"`` the folded layer description of ``tools/export.py`` (shapes for an
    ``input_size`` frame; it needs calibrated current ranges, else ``"network_error"`` says why)."""
    layers = []
    act = dict(control.activation_quantizers(model))
    for name, conv in _conv_layers(model):
        bits = getattr(conv, "weight_bits", 32)
        axis = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
        entry: dict[str, Any] = {
            "name": name,
            "type": type(conv).__name__,
            "weight_bits": bits,
            "weight_shape": list(conv.weight.shape),
            "channel_axis": axis,
        }
        if bits < 32:
            codes, scale = weight_codes_and_scale(conv.weight, bits, axis)
            entry["weight_scales"] = scale.tolist()
            if include_weights:
                entry["weight_codes"] = codes.to(torch.int8).tolist()
        parent = name.rsplit(".", 1)[0]
        if parent + ".quant_layer" in act:
            q = act[parent + ".quant_layer"]
            entry["activation"] = {
                "bits": 1 if q.is_binary else q.bit_width,
                "binary": q.is_binary,
                "scale": float(q.scale().detach()),
                "running_min": float(q.running_min),
                "running_max": float(q.running_max),
            }
        layers.append(entry)
    weights, currents = control.model_widths(model)
    info = {"bit_width": weights, "current_bits": currents, "layers": layers}
    try:
        info["network"] = fold_network(model, *input_size)[0]
    except FoldError as exc:
        info["network_error"] = str(exc)
    Path(output_path).write_text(json.dumps(info, indent=1))
    return info
