"""Golden test vectors for an RTL testbench: every value the integer network computes, window by window.

For each window the integer reference runs on, ``write_vectors`` stores the saturated input counts,
every spiking layer's current codes, membranes (after the reset) and spikes at every time step, and
every flow head's codes summed over the steps, as one ``vectors.npz`` and as plain hex text files,
one value a line in two's complement at the value's stated width (what Verilog's ``$readmemh``
reads), with ``manifest.json`` giving each file's shape, element order and width.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from snn.deploy import reference
from snn.deploy.export import Export

MANIFEST = "manifest.json"


def to_hex_lines(values: np.ndarray, bits: int) -> str:
    """One value a line, two's complement in ``bits`` bits, ceil(bits / 4) hex digits."""
    digits = max(1, math.ceil(bits / 4))
    masked = np.asarray(values, np.int64).ravel() & ((1 << bits) - 1)
    nibbles = (masked[:, None] >> (4 * np.arange(digits - 1, -1, -1))) & 0xF
    lines = np.empty((masked.size, digits + 1), np.uint8)
    lines[:, :digits] = np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles]
    lines[:, digits] = ord("\n")
    return lines.tobytes().decode("ascii")


def _arrays(description: dict[str, Any], trace: dict[str, dict[str, np.ndarray]]):
    """(name, array [N, ...] with the window first, bits, signed, what it is) for every traced value."""
    yield "input", trace["events"]["counts"], 8, False, "event counts per bin, saturated: [T, C, H, W]"
    for layer in description["layers"]:
        name, widths = layer["name"], layer["widths"]
        record = trace[name]
        if "context" in layer:
            rates, rate_bits = np.moveaxis(record["context_rate"], 0, 1), layer["context"]["rate_bits"]
            yield f"{name}.context_rate", rates, rate_bits + 1, False, "frame rates of the context's input: [steps, C]"
            context = np.moveaxis(record["context"], 0, 1)
            bits = widths["context_accumulator"]
            yield f"{name}.context", context, bits, True, "context accumulators per time step: [steps, C]"
        codes = np.moveaxis(record["current"], 0, 1)  # [N, steps, C, H, W]
        yield f"{name}.current", codes, widths["code"], True, "current codes per time step: [steps, C, H, W]"
        if layer["type"] == "flow_head":
            yield f"{name}.code_sum", record["code_sum"], widths["code_sum"], True, "codes summed over steps: [2, H, W]"
            continue
        membrane = np.moveaxis(record["membrane"], 0, 1)
        yield f"{name}.membrane", membrane, widths["membrane"], True, "membrane after reset: [steps, C, H, W]"
        spikes = np.moveaxis(record["spikes"], 0, 1)
        yield f"{name}.spikes", spikes, 1, False, "spikes per time step: [steps, C, H, W]"


def write_vectors(export: Export, windows, out_dir: str | Path) -> dict[str, Any]:
    """Run the reference on each window of ``windows`` (an iterable of [T, C, H, W] event counts) and
    write its vectors to ``out_dir/window_<i>/``; returns the manifest (also written)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    count = 0
    for i, events in enumerate(windows):
        trace: dict[str, dict[str, np.ndarray]] = {}
        flow, _ = reference.run(export.description, export.weights, np.asarray(events)[None], trace=trace)
        folder = out_dir / f"window_{i:03d}"
        folder.mkdir(exist_ok=True)
        arrays = {}
        for name, values, bits, signed, what in _arrays(export.description, trace):
            arrays[name] = values[0]
            (folder / f"{name}.hex").write_text(to_hex_lines(values[0], bits))
            entries.setdefault(
                name,
                {
                    "name": name,
                    "what": what,
                    "shape": list(values.shape[1:]),
                    "bits": bits,
                    "signed": signed,
                    "hex_digits": max(1, math.ceil(bits / 4)),
                    "file": f"window_<i>/{name}.hex",
                },
            )
        np.savez_compressed(folder / "vectors.npz", flow=flow[0], **arrays)
        count += 1
    manifest = {
        "windows": count,
        "folders": "window_000, window_001, ...: one per window, in the order of the split",
        "order": "row-major (C order): the last index varies fastest, one value a line",
        "encoding": "two's complement in 'bits' bits, written as 'hex_digits' lowercase hex digits",
        "npz": "window_<i>/vectors.npz holds the same arrays, plus 'flow' [2, H, W] in pixels (float64)",
        "time_steps": export.description["time_steps"],
        "arrays": list(entries.values()),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest
