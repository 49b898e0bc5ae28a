"""The integer-only reference: runs an exported network with numpy, without torch.

It reads nothing but the description and the weight codes of an export (see
``snn.deploy.export``) and follows the arithmetic of ``snn.models.integer`` to the letter:
integer accumulators, integer current codes, an integer membrane with integer threshold, a
leak by one shift, and reset. Every value is checked against signed 32 bits and against the width
the description states for it: an overflow raises ``IntegerOverflowError``. Only the flow heads'
time-summed codes are turned into pixels at the end (x step / T x flow_scale, then x2 bilinear
upsampling and the sum).

The convolutions run through BLAS, in float32 where no partial sum can reach 2**24 and in float64
(exact below 2**53) otherwise, so every sum of these integers is exact whatever order BLAS takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class IntegerOverflowError(ArithmeticError):
    """A value left signed 32 bits, or the width its description states."""


def check_width(values: np.ndarray, bits: int, what: str) -> np.ndarray:
    """``values`` (int64) unchanged, or IntegerOverflowError when one needs more than ``bits`` signed bits
    (at most 32)."""
    bits = min(int(bits), 32)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if values.size and (int(values.max()) > hi or int(values.min()) < lo):
        raise IntegerOverflowError(
            f"{what}: values in [{int(values.min())}, {int(values.max())}] leave the {bits}-bit signed range"
        )
    return values


def _exact(out: np.ndarray) -> np.ndarray:
    return out.astype(np.int64)  # the sums are exact integers already: no rounding to do


def _blas_dtype(x: np.ndarray, w: np.ndarray, taps_axes: tuple[int, ...], max_input: int | None = None):
    """float32 when no partial sum can reach 2**24 (then every sum of these integers is exact in
    float32, whatever order BLAS adds them in), else float64 (exact below 2**53). ``max_input``: the
    largest |input| when known (1 for spikes), else read from ``x``."""
    largest = float(np.abs(x).max(initial=0)) if max_input is None else float(max_input)
    bound = float(np.abs(w).sum(axis=taps_axes).max()) * largest
    if bound >= 2.0**53:
        raise IntegerOverflowError("an accumulator may reach 2**53, beyond exact float64")
    return np.float32 if bound < 2.0**24 else np.float64


def conv2d_int(
    x: np.ndarray, w: np.ndarray, stride: int, padding: int, dilation: int = 1, max_input: int | None = None
) -> np.ndarray:
    """x: [N, C, H, W] integers, w: [O, C, kh, kw] integers -> [N, O, H', W'] int64 (exact)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    dtype = _blas_dtype(x, w, (1, 2, 3), max_input)
    if stride == 1 and o < c:  # fewer outputs than inputs (the heads): multiply first, then shift and add
        return _conv2d_by_taps(x, w, padding, dilation, dtype)
    xp = np.zeros((c, n, h + 2 * padding, wd + 2 * padding), dtype)
    xp[:, :, padding : padding + h, padding : padding + wd] = x.transpose(1, 0, 2, 3)
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    cols = np.empty((kh, kw, c, n, ho, wo), dtype)  # im2col, then one BLAS matmul
    for i in range(kh):
        for j in range(kw):
            r, q = i * dilation, j * dilation
            cols[i, j] = xp[:, :, r : r + stride * ho : stride, q : q + stride * wo : stride]
    wf = w.transpose(0, 2, 3, 1).reshape(o, -1).astype(dtype)
    out = wf @ cols.reshape(kh * kw * c, -1)
    return _exact(out).reshape(o, n, ho, wo).transpose(1, 0, 2, 3)


def _conv2d_by_taps(x: np.ndarray, w: np.ndarray, padding: int, dilation: int, dtype) -> np.ndarray:
    """Stride-1 conv2d as one BLAS matmul of every tap's weights with the unshifted input, then each
    tap's product shifted into place and summed: cheaper than im2col when the output has few channels."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xf = x.transpose(1, 0, 2, 3).reshape(c, -1).astype(dtype)
    taps = (w.transpose(2, 3, 0, 1).reshape(kh * kw * o, c).astype(dtype) @ xf).reshape(kh, kw, o, n, h, wd)
    ho, wo = h + 2 * padding - dilation * (kh - 1), wd + 2 * padding - dilation * (kw - 1)
    full = np.zeros((o, n, h + 2 * padding, wd + 2 * padding), dtype)  # the products on the padded grid
    out = np.zeros((o, n, ho, wo), dtype)
    for i in range(kh):
        for j in range(kw):
            full[:, :, padding : padding + h, padding : padding + wd] = taps[i, j]
            out += full[:, :, i * dilation : i * dilation + ho, j * dilation : j * dilation + wo]
    return _exact(out).transpose(1, 0, 2, 3)


def conv_transpose2d_int(
    x: np.ndarray, w: np.ndarray, stride: int, padding: int, output_padding: int, max_input: int | None = None
) -> np.ndarray:
    """x: [N, C, H, W] integers, w: [C, O, kh, kw] integers -> [N, O, H', W'] int64 (PyTorch's definition)."""
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    dtype = _blas_dtype(x, w, (0, 2, 3), max_input)
    xf = x.transpose(1, 0, 2, 3).reshape(c, -1).astype(dtype)
    taps = w.transpose(2, 3, 1, 0).reshape(kh * kw * o, c).astype(dtype) @ xf  # one BLAS matmul for all taps
    taps = taps.reshape(kh, kw, o, n, h, wd)
    full = np.zeros((o, n, (h - 1) * stride + kh + output_padding, (wd - 1) * stride + kw + output_padding), dtype)
    # Tap (i, j) lands on rows i, i + stride, ...: gather the taps of one phase (i % stride, j % stride)
    # with contiguous adds, then write each phase into its strided place once.
    ph, pw = -(-kh // stride), -(-kw // stride)
    for a in range(min(stride, kh)):
        for b in range(min(stride, kw)):
            phase = np.zeros((o, n, h + ph - 1, wd + pw - 1), dtype)
            for i in range(a, kh, stride):
                for j in range(b, kw, stride):
                    phase[:, :, i // stride : i // stride + h, j // stride : j // stride + wd] += taps[i, j]
            rows, cols = phase.shape[2], phase.shape[3]
            full[:, :, a : a + stride * rows : stride, b : b + stride * cols : stride] += phase[
                :, :, : len(range(a, full.shape[2], stride)), : len(range(b, full.shape[3], stride))
            ]
    ho = (h - 1) * stride - 2 * padding + kh + output_padding
    wo = (wd - 1) * stride - 2 * padding + kw + output_padding
    return _exact(full[:, :, padding : padding + ho, padding : padding + wo]).transpose(1, 0, 2, 3)


def current_codes(
    acc: np.ndarray,
    current: dict[str, Any],
    product_bits: int = 32,
    what: str = "layer",
    spikes: np.ndarray | None = None,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """Accumulator [N, O, H, W] -> current codes, per the folded multiplier, offset and shift; a layer
    with a ``shortcut`` P adds P x its input ``spikes`` (same shape) before the rounding or the sign,
    one with a context path its ``context`` term ctx x Mc ([N, O, 1, 1])."""
    mult = np.asarray(current["multiplier"], dtype=np.int64)[None, :, None, None]
    add = np.asarray(current["offset"], dtype=np.int64)[None, :, None, None]
    shift = current["shift"]
    value = acc * mult + add + (0 if current["binary"] else 1 << (shift - 1))
    if current.get("shortcut", 0):
        value = value + spikes.astype(np.int64) * current["shortcut"]
    if context is not None:
        value = value + context
    value = check_width(value, product_bits, f"{what} acc*M+B")
    if current["binary"]:
        return np.where(value >= 0, 1, -1).astype(np.int64)
    return np.clip(value >> shift, -current["qmax"], current["qmax"])  # the rounding term is in value: half up


def context_term(
    layer: dict[str, Any], spikes: np.ndarray, weights: dict[str, np.ndarray], record: dict | None = None
) -> np.ndarray:
    """A layer's context path: its input's ``spikes`` [T, N, C, H, W] -> ctx x Mc per step, [T*N, O, 1, 1],
    with ctx = codes x rates and rate = (count << R) // (H * W); ``record`` receives the rates and ctx."""
    context = layer["context"]
    widths = layer.get("widths", {})
    name = layer["name"]
    steps, n, c, h, w = spikes.shape
    counts = spikes.reshape(steps * n, c, h * w).astype(np.int64).sum(axis=2)
    rates = (counts << context["rate_bits"]) // (h * w)  # in [0, 2**R]
    codes = np.asarray(weights[context["weight"]["tensor"]], np.int64).reshape(len(context["multiplier"]), c)
    ctx = rates @ codes.T  # int64 products and sums: exact
    if np.any(np.abs(ctx).max(axis=0, initial=0) > np.asarray(context["accumulator_bound"])):
        raise IntegerOverflowError(f"{name}: a context accumulator exceeds its stated bound")
    check_width(ctx, widths.get("context_accumulator", 32), f"{name} context accumulator")
    if record is not None:
        record["context_rate"] = rates.reshape(steps, n, c)
        record["context"] = ctx.reshape(steps, n, -1)
    return (ctx * np.asarray(context["multiplier"], np.int64))[:, :, None, None]


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


def saturate(events: np.ndarray, max_count: int) -> np.ndarray:
    """Integer event counts, saturated at ``max_count`` as the model's input is (ValueError for anything else)."""
    events = np.asarray(events)
    if not np.all(events == np.round(events)):
        raise ValueError("the integer reference takes integer event counts")
    if events.size and events.min() < 0:
        raise ValueError("the integer reference takes event counts (>= 0), got a negative value")
    return np.minimum(events.astype(np.int64), max_count)


def run(
    description: dict[str, Any],
    weights: dict[str, np.ndarray],
    events: np.ndarray,
    membranes: dict[str, np.ndarray] | None = None,
    trace: dict[str, dict[str, np.ndarray]] | None = None,
):
    """events [N, T, C, H, W] (integer counts) -> (flow [N, 2, H, W] float64, spikes {layer: [T, N, C, H, W] uint8}).

    ``weights`` maps each layer's weight tensor name to its integer codes, in the layout
    the description gives (OIHW, or IOHW for transposed convolutions).

    ``membranes``: a dict to stream consecutive windows of a sequence: each spiking layer starts
    from the integer membrane stored there under its name (at rest when absent, as for the
    first window) and leaves its last membrane there for the next window.

    ``trace``: a dict that receives, per layer, every time step's current codes (``current``),
    membranes after the reset (``membrane``) and spikes, [T, N, C, H, W]; per flow head its codes
    summed over the steps (``code_sum``, [N, 2, H, W]); and the saturated input (``events``).
    """
    inputs = description["input"]
    x = np.moveaxis(saturate(events, inputs.get("max_count", 255)), 1, 0)  # [T, N, C, H, W]
    t_bins, n = x.shape[:2]
    if t_bins != description["time_bins"]:
        raise ValueError(f"the export runs {description['time_bins']} time bins, the input has {t_bins}")
    if trace is not None:
        trace["events"] = {"counts": np.moveaxis(x, 0, 1)}
    stem_input = step_inputs(x, inputs.get("bins_per_step", 1), inputs.get("input_bins", 1))
    steps = stem_input.shape[0]  # SNN time steps (num_bins / bins_per_step)
    outputs: dict[str, np.ndarray] = {"events": stem_input}
    heads: dict[str, np.ndarray] = {}
    for layer in description["layers"]:
        name = layer["name"]
        widths = layer.get("widths", {})
        inp = np.concatenate([outputs[i] for i in layer["inputs"]], axis=2)
        flat = inp.reshape(steps * n, *inp.shape[2:])
        w = weights[layer["weight"]["tensor"]]
        largest = layer.get("max_input")  # 1 for spikes, the saturation count for the stem
        if layer["type"] == "spiking_conv_transpose":
            acc = conv_transpose2d_int(
                flat, w, layer["stride"][0], layer["padding"][0], layer["output_padding"][0], largest
            )
        else:
            acc = conv2d_int(flat, w, layer["stride"][0], layer["padding"][0], layer.get("dilation", [1])[0], largest)
        bound = layer.get("accumulator_bound")
        if bound is not None and np.any(np.abs(acc).max(axis=(0, 2, 3)) > np.asarray(bound)):
            raise IntegerOverflowError(f"{name}: an accumulator exceeds its stated bound")
        check_width(acc, widths.get("accumulator", 32), f"{name} accumulator")
        record = {} if trace is not None else None
        context = None
        if "context" in layer:
            context = context_term(layer, outputs[layer["context"]["input"]], weights, record)
        codes = current_codes(acc, layer["current"], widths.get("product_sum", 32), name, flat, context)
        codes = codes.reshape(steps, n, *codes.shape[1:])
        if layer["type"] == "flow_head":
            code_sum = check_width(codes.sum(axis=0), widths.get("code_sum", 32), f"{name} code sum")
            if trace is not None:
                trace[name] = {**record, "current": codes, "code_sum": code_sum}
            flow = layer["flow"]
            heads[name] = code_sum * (flow["step"] * flow["flow_scale"] / steps)
            continue
        v0 = None if membranes is None else membranes.get(name)
        outputs[name], v = _neuron(codes, inp if layer["residual"] else None, layer["neuron"], v0, widths, name, record)
        if trace is not None:
            trace[name] = {"current": codes, **record, "spikes": outputs[name]}
        if membranes is not None:
            membranes[name] = v
    flow = None
    for name in description["flow"]["heads"]:
        flow = heads[name] if flow is None else upsample2x_bilinear(flow) + heads[name]
    spikes = {k: v for k, v in outputs.items() if k != "events"}
    return flow, spikes


def _neuron(
    codes: np.ndarray,
    residual_spikes: np.ndarray | None,
    neuron: dict[str, Any],
    v0: np.ndarray | None = None,
    widths: dict[str, int] | None = None,
    name: str = "layer",
    record: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Integer LIF over [T, ...] current codes from membrane ``v0`` (None: at rest); returns the
    spikes (0/1, uint8) and the last membrane. ``record`` receives every step's membrane after the reset."""
    frac = neuron["frac_bits"]
    threshold, fire_at = neuron["threshold"], neuron["fire_at"]
    k = neuron["leak_shift"]
    bits = (widths or {}).get("membrane", 32)
    v = None if v0 is None else np.asarray(v0, np.int64)  # None: at rest, V = 0
    out = np.zeros(codes.shape, np.uint8)  # spikes: one byte each, cheap to read again
    after = np.zeros_like(codes) if record is not None else None
    for t in range(codes.shape[0]):
        current = codes[t] << frac
        if residual_spikes is not None:
            current += residual_spikes[t].astype(np.int64) * neuron["residual_current"]
        v = check_width(current if v is None else v - (v >> k) + current, bits, f"{name} membrane")
        fired = v >= fire_at
        if neuron["reset"] == "subtract":
            v[fired] -= threshold
        else:
            v[fired] = 0
        out[t] = fired
        if after is not None:
            after[t] = v
    if record is not None:
        record["membrane"] = after
    return out, v
