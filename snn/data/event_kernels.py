"""Compiled loops behind :mod:`snn.data.representations`.

Each kernel makes one pass over the events (the voxel grid two: its bins span
the events' own times) and accumulates straight into the output, so no
per-event index or weight array is ever built; that is what made the NumPy
version (a ``bincount`` over a flat index) 3-4x slower. Numba compiles them
on first use and caches the machine code beside this file (or in
``NUMBA_CACHE_DIR``), so later processes load it in milliseconds.

The callers validate and normalise the inputs: ``x`` and ``y`` are int64 or
float64, ``t`` int64 or finite float64 (converted to float64 one
event at a time), ``on`` bool. An event is in the image when
0 <= x < width and 0 <= y < height; a fractional coordinate is truncated.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _flat_index(row, width, col):  # pragma: no cover - compiled
    """row * width + col as an unsigned index: no negative-index wraparound code in the hot loop
    (a quarter of the voxel grid's time at 2 M events)."""
    return np.uint64(row * width + col)


@njit(cache=True, inline="always")
def _in_image(xi, yi, height, width):  # pragma: no cover - compiled
    return xi >= 0 and xi < width and yi >= 0 and yi < height  # False for NaN


@njit(cache=True, inline="always")
def _share(ti, start, end, span, halve):  # pragma: no cover - compiled
    """(t - start) / span; from halved values where span overflows float64."""
    if halve:
        return (np.float64(ti) * 0.5 - start * 0.5) / (end * 0.5 - start * 0.5)
    return (np.float64(ti) - start) / span


@njit(cache=True, nogil=True)
def count_polarities(x, y, t, on, num_bins, height, width, start, end, span):  # pragma: no cover - compiled
    """float32 [num_bins, 2, height, width]: ON (channel 0) and OFF counts per bin of [start, end).

    The bin is floor((t - start) / span * num_bins), clipped to the bins. ``span`` is end - start
    exactly (two integers a microsecond apart may round to one float); where it overflows float64
    the fraction comes from halved values.
    """
    plane = height * width
    counts = np.zeros(num_bins * 2 * plane, np.float32)
    halve = np.isinf(span)
    for i in range(x.shape[0]):
        xi = x[i]
        yi = y[i]
        if not _in_image(xi, yi, height, width):
            continue
        b = np.floor(_share(t[i], start, end, span, halve) * num_bins)
        if not b >= 0:  # before the window
            b = 0.0
        elif b > num_bins - 1:  # at or past its end
            b = num_bins - 1.0
        channel = 0 if on[i] else 1
        counts[_flat_index((int(b) * 2 + channel) * height + int(yi), width, int(xi))] += 1.0
    return counts.reshape(num_bins, 2, height, width)


@njit(cache=True, nogil=True)
def accumulate_voxels(x, y, t, on, num_bins, height, width):  # pragma: no cover - compiled
    """float64 [num_bins, height, width]: the unnormalised voxel grid of the events in the image.

    Times are rescaled so the first event sits at 0 and the last at num_bins - 1; each event adds
    its polarity (+1 ON, -1 OFF) to the two neighbouring bins, with weights linear in time.
    """
    t_min = np.inf
    t_max = -np.inf
    for i in range(x.shape[0]):
        if _in_image(x[i], y[i], height, width):
            t_min = min(t_min, np.float64(t[i]))
            t_max = max(t_max, np.float64(t[i]))
    span = t_max - t_min
    scale = num_bins - 1.0
    # Times near the float64 limits: (num_bins - 1) * span overflows, so rescale halved values.
    halve = span > 0 and not np.isfinite(scale * span)
    # One bin more than asked: an event at the last instant adds its zero right-hand weight there.
    plane = height * width
    grid = np.zeros((num_bins + 1) * plane, np.float64)
    for i in range(x.shape[0]):
        xi = x[i]
        yi = y[i]
        if not _in_image(xi, yi, height, width):
            continue
        # All events at one instant: bin 0.
        position = scale * _share(t[i], t_min, t_max, span, halve) if span > 0 else 0.0
        left = np.floor(position)
        polarity = 1.0 if on[i] else -1.0
        right_weight = polarity * (position - left)
        j = _flat_index(int(left) * height + int(yi), width, int(xi))
        grid[j] += polarity - right_weight
        grid[j + np.uint64(plane)] += right_weight
    return grid[: num_bins * plane].reshape(num_bins, height, width)
