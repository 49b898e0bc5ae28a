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
from snn.evaluation.metrics import compare_model_outputs
from snn.models.checkpoint import load_model
from snn.quantization import control
from snn.quantization.size import conv_layers, estimate_model_size
from snn.quantization.weight_quant import weight_codes_and_scale

# One import for the QAT guide's helpers: load_model, compare_model_outputs and estimate_model_size
# live lower down (checkpoints, metrics, quantization) and are re-exported here. This module sits
# at the top of the package (it also reaches the export), so nothing inside snn imports it.
__all__ = ["compare_model_outputs", "estimate_model_size", "export_quantized_model_info", "load_model"]


def export_quantized_model_info(
    model: nn.Module, output_path: str | Path, include_weights: bool = False, input_size: tuple[int, int] = (64, 64)
) -> dict[str, Any]:
    """Write the scales, bit widths and (optionally) integer weight codes of every layer as JSON,
    and under ``"network"`` the folded layer description of ``tools/export.py`` (shapes for an
    ``input_size`` frame; it needs calibrated current ranges, else ``"network_error"`` says why)."""
    layers = []
    act = dict(control.activation_quantizers(model))
    for name, conv in conv_layers(model):
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
