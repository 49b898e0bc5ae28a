"""The integer-only reference: runs an exported network with numpy, without torch.

It reads nothing but the description and the weight codes of an export (see
``snn.deploy.export``) and follows the arithmetic of ``snn.deploy.fold`` to the letter:
integer accumulators, integer current codes, an integer membrane with integer
threshold, leak and reset. Only the flow heads' time-integrated codes are turned into
pixels at the end (x step / T x flow_scale, then x2 bilinear upsampling and the sum).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def conv2d_int(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """x: [N, C, H, W] int64, w: [O, C, kh, kw] int64 -> [N, O, H', W'] int64."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, ho, wo), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
            out += np.einsum("oc,nchw->nohw", w[:, :, i, j], patch, optimize=True)
    return out


def conv_transpose2d_int(x: np.ndarray, w: np.ndarray, stride: int, padding: int, output_padding: int) -> np.ndarray:
    """x: [N, C, H, W] int64, w: [C, O, kh, kw] int64 -> [N, O, H', W'] int64 (PyTorch's definition)."""
    n, _, h, wd = x.shape
    _, o, kh, kw = w.shape
    full = np.zeros((n, o, (h - 1) * stride + kh + output_padding, (wd - 1) * stride + kw + output_padding), np.int64)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i : i + stride * h : stride, j : j + stride * wd : stride] += np.einsum(
                "co,nchw->nohw", w[:, :, i, j], x, optimize=True
            )
    ho = (h - 1) * stride - 2 * padding + kh + output_padding
    wo = (wd - 1) * stride - 2 * padding + kw + output_padding
    return full[:, :, padding : padding + ho, padding : padding + wo]


def current_codes(acc: np.ndarray, current: dict[str, Any]) -> np.ndarray:
    """Accumulator [N, O, H, W] -> current codes, per the folded multiplier, offset and shift."""
    mult = np.asarray(current["multiplier"], dtype=np.int64)[None, :, None, None]
    add = np.asarray(current["offset"], dtype=np.int64)[None, :, None, None]
    value = acc * mult + add
    if current["binary"]:
        return np.where(value >= 0, 1, -1).astype(np.int64)
    shift = current["shift"]
    rounded = (value + (1 << (shift - 1))) >> shift  # round half up
    return np.clip(rounded, -current["qmax"], current["qmax"])


def upsample2x_bilinear(flow: np.ndarray) -> np.ndarray:
    """x2 bilinear upsampling with half-pixel centres (``align_corners=False``), edges clamped."""

    def along(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        prev = np.take(a, np.clip(np.arange(n) - 1, 0, n - 1), axis=axis)
        nxt = np.take(a, np.clip(np.arange(n) + 1, 0, n - 1), axis=axis)
        even = 0.25 * prev + 0.75 * a  # output 2i sits at input i - 1/4
        odd = 0.75 * a + 0.25 * nxt  # output 2i+1 at input i + 1/4
        out = np.stack([even, odd], axis=axis + 1)
        shape = list(a.shape)
        shape[axis] = 2 * n
        return out.reshape(shape)

    return along(along(flow, 2), 3)


def step_inputs(x: np.ndarray, bins_per_step: int = 1, input_bins: int = 1) -> np.ndarray:
    """[T, N, C, H, W] -> [T / g, N, k*g*C, H, W]: what the stem reads at each step, the g =
    ``bins_per_step`` bins of the step (oldest first) and with k = ``input_bins`` those of the
    k - 1 steps before it."""
    t, n, c, h, w = x.shape
    grouped = x.reshape(t // bins_per_step, bins_per_step, n, c, h, w).transpose(0, 2, 1, 3, 4, 5)
    return stack_recent_bins(grouped.reshape(t // bins_per_step, n, bins_per_step * c, h, w), input_bins)


def stack_recent_bins(x: np.ndarray, k: int) -> np.ndarray:
    """[T, N, C, H, W] -> [T, N, k*C, H, W]: step t reads bins t, t-1, ..., t-k+1, newest first,
    zeros before the first bin (the stem input of a model with ``input_bins`` k)."""
    if k == 1:
        return x
    padded = np.concatenate([np.zeros((k - 1, *x.shape[1:]), dtype=x.dtype), x])
    t = x.shape[0]
    return np.concatenate([padded[k - 1 - j : k - 1 - j + t] for j in range(k)], axis=2)


def run(
    description: dict[str, Any],
    weights: dict[str, np.ndarray],
    events: np.ndarray,
    membranes: dict[str, np.ndarray] | None = None,
):
    """events [N, T, C, H, W] (integer counts) -> (flow [N, 2, H, W] float64, spikes {layer: [T, N, C, H, W] uint8}).

    ``weights`` maps each layer's weight tensor name to its integer codes, in the layout
    the description gives (OIHW, or IOHW for transposed convolutions).

    ``membranes``: a dict to stream consecutive windows of a sequence: each spiking layer starts
    from the integer membrane stored there under its name (at rest when absent, as for the
    first window) and leaves its last membrane there for the next window.
    """
    events = np.asarray(events)
    if not np.all(events == np.round(events)):
        raise ValueError("the integer reference takes integer event counts")
    x = np.moveaxis(events.astype(np.int64), 1, 0)  # [T, N, C, H, W]
    t_bins, n = x.shape[:2]
    if t_bins != description["time_bins"]:
        raise ValueError(f"the export runs {description['time_bins']} time bins, the input has {t_bins}")
    inputs = description["input"]
    stem_input = step_inputs(x, inputs.get("bins_per_step", 1), inputs.get("input_bins", 1))
    steps = stem_input.shape[0]  # SNN time steps (num_bins / bins_per_step)
    outputs: dict[str, np.ndarray] = {"events": stem_input}
    heads: dict[str, np.ndarray] = {}
    for layer in description["layers"]:
        inp = np.concatenate([outputs[i] for i in layer["inputs"]], axis=2)
        flat = inp.reshape(steps * n, *inp.shape[2:])
        w = weights[layer["weight"]["tensor"]]
        if layer["type"] == "spiking_conv_transpose":
            acc = conv_transpose2d_int(flat, w, layer["stride"][0], layer["padding"][0], layer["output_padding"][0])
        else:
            acc = conv2d_int(flat, w, layer["stride"][0], layer["padding"][0])
        codes = current_codes(acc, layer["current"])
        codes = codes.reshape(steps, n, *codes.shape[1:])
        if layer["type"] == "flow_head":
            flow = layer["flow"]
            heads[layer["name"]] = codes.sum(axis=0) * (flow["step"] * flow["flow_scale"] / steps)
            continue
        v0 = None if membranes is None else membranes.get(layer["name"])
        outputs[layer["name"]], v = _neuron(codes, inp if layer["residual"] else None, layer["neuron"], v0)
        if membranes is not None:
            membranes[layer["name"]] = v
    flow = None
    for name in description["flow"]["heads"]:
        flow = heads[name] if flow is None else upsample2x_bilinear(flow) + heads[name]
    spikes = {k: v.astype(np.uint8) for k, v in outputs.items() if k != "events"}
    return flow, spikes


def _neuron(
    codes: np.ndarray, residual_spikes: np.ndarray | None, neuron: dict[str, Any], v0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Integer LIF over [T, ...] current codes from membrane ``v0`` (None: at rest); returns the
    spikes (0/1, int64) and the last membrane."""
    frac = neuron["frac_bits"]
    threshold = neuron["threshold"]
    decay, shift = neuron["decay"]["multiplier"], neuron["decay"]["shift"]
    v = v0
    out = np.zeros_like(codes)
    for t in range(codes.shape[0]):
        current = codes[t] << frac
        if residual_spikes is not None:
            current = current + residual_spikes[t] * neuron["residual_current"]
        v = current if v is None else ((v * decay) >> shift) + current
        s = (v >= neuron["fire_at"]).astype(np.int64)
        v = v - s * threshold if neuron["reset"] == "subtract" else v * (1 - s)
        out[t] = s
    return out, v
