"""The resource table of an integer export: what each layer needs in memory, widths and operations."""

from __future__ import annotations

from typing import Any


def layer_resources(layer: dict[str, Any], time_steps: int) -> dict[str, int]:
    """Weight count and bits, membrane bits (all neurons, at the description's frame size), the
    accumulator width, and synaptic operations per window if every input were active (real ones scale
    with the input's firing rate)."""
    kh, kw = layer["kernel"]
    weights = layer["in_channels"] * layer["out_channels"] * kh * kw
    out_c, out_h, out_w = layer["output_shape"]
    in_c, in_h, in_w = layer["input_shape"]
    if layer["type"] == "spiking_conv_transpose":  # every input reaches k x k outputs
        connections = in_c * in_h * in_w * out_c * kh * kw
    else:  # every output reads k x k x C inputs
        connections = out_c * out_h * out_w * in_c * kh * kw
    neurons = out_c * out_h * out_w
    is_head = layer["type"] == "flow_head"
    weight_bits = weights * layer["weight"]["bits"]
    context = layer.get("context")
    if context is not None:  # a 1x1 convolution of the frame rates, once per step
        extra = context["in_channels"] * len(context["multiplier"])
        weights += extra
        weight_bits += extra * context["weight"]["bits"]
        connections += extra
    return {
        "weights": weights,
        "weight_bits": weight_bits,
        "membrane_bits": 0 if is_head else neurons * layer["widths"]["membrane"],
        "sum_bits": neurons * layer["widths"]["code_sum"] if is_head else 0,
        "accumulator": layer["widths"]["accumulator"],
        "synops": connections * time_steps,
    }


def resource_table(description: dict[str, Any]) -> str:
    """A markdown table, a row per layer in execution order and the totals."""
    size = description["input"]
    steps = description["time_steps"]
    lines = [
        f"resources at {size['height']}x{size['width']}, {steps} time step(s) per window:",
        "| layer | weight bits | weight memory (KiB) | membranes or sums (KiB) | accumulator bits | "
        "synaptic ops per window, all inputs active (M) |",
        "|---|---|---|---|---|---|",
    ]
    totals = {"weight_bits": 0, "state": 0, "synops": 0}
    for layer in description["layers"]:
        r = layer_resources(layer, steps)
        state = r["membrane_bits"] + r["sum_bits"]
        totals["weight_bits"] += r["weight_bits"]
        totals["state"] += state
        totals["synops"] += r["synops"]
        lines.append(
            f"| {layer['name']} | {layer['weight']['bits']} | {r['weight_bits'] / 8192:.1f} | {state / 8192:.1f} | "
            f"{r['accumulator']} | {r['synops'] / 1e6:.2f} |"
        )
    widest = max(layer["widths"]["accumulator"] for layer in description["layers"])
    lines.append(
        f"| total | | {totals['weight_bits'] / 8192:.1f} | {totals['state'] / 8192:.1f} | {widest} (widest) | "
        f"{totals['synops'] / 1e6:.2f} |"
    )
    return "\n".join(lines)
