"""Event-to-tensor representations (FORMATS.md section 4).

Every representation takes the events of one window as 1-D arrays ``x, y, t, p``
(``p > 0`` is ON; both 0/1 and -1/+1 encodings work) and returns a float32 array
with the time bins first, because each bin is one SNN time step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _inside(x: np.ndarray, y: np.ndarray, height: int, width: int) -> np.ndarray:
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def polarity_counts(
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    num_bins: int,
    height: int,
    width: int,
    t_start: float,
    t_end: float,
) -> np.ndarray:
    """ON/OFF event counts per time bin, float32 [num_bins, 2, height, width].

    Channel 0 counts ON events (p > 0), channel 1 OFF events. The window
    [t_start, t_end) is cut into ``num_bins`` equal bins; events at or past
    t_end land in the last bin and events before t_start in the first.
    Events outside the image are ignored.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if t_end <= t_start:
        raise ValueError(f"empty time window: t_start={t_start}, t_end={t_end}")
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    keep = _inside(x, y, height, width)
    x, y, t, p = x[keep], y[keep], t[keep], p[keep]

    rel = (t.astype(np.float64) - t_start) / (t_end - t_start)
    bins = np.clip(np.floor(rel * num_bins).astype(np.int64), 0, num_bins - 1)
    channel = (p <= 0).astype(np.int64)  # 0 = ON, 1 = OFF
    flat = ((bins * 2 + channel) * height + y.astype(np.int64)) * width + x.astype(np.int64)
    counts = np.bincount(flat, minlength=num_bins * 2 * height * width)
    return counts.reshape(num_bins, 2, height, width).astype(np.float32)


def voxel_grid(
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    num_bins: int,
    height: int,
    width: int,
    normalize: bool = True,
) -> np.ndarray:
    """Voxel grid of Zhu et al. (as in E-RAFT), float32 [num_bins, height, width].

    Event times are rescaled so the window's first event sits at 0 and its last
    at ``num_bins - 1``; each event adds its polarity (+1 ON, -1 OFF) to the two
    neighbouring bins with weights linear in time. With ``normalize`` the
    non-zero voxels are shifted and scaled to mean 0 and standard deviation 1.
    The population standard deviation is used, so the result has std exactly 1
    under ``np.std``; E-RAFT uses the unbiased one, a factor sqrt((n-1)/n) that
    vanishes for real windows. Events outside the image are ignored.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    keep = _inside(x, y, height, width)
    x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    grid = np.zeros(num_bins * height * width, dtype=np.float64)
    if len(t):
        t = t.astype(np.float64)
        span = t.max() - t.min()
        # All events at one instant: they all belong to bin 0.
        t_norm = (num_bins - 1) * (t - t.min()) / span if span > 0 else np.zeros_like(t)
        polarity = np.where(p > 0, 1.0, -1.0)
        left = np.floor(t_norm).astype(np.int64)
        pixel = y.astype(np.int64) * width + x.astype(np.int64)
        for bin_index, weight in ((left, 1.0 - (t_norm - left)), (left + 1, t_norm - left)):
            ok = bin_index < num_bins
            grid += np.bincount(
                bin_index[ok] * height * width + pixel[ok],
                weights=polarity[ok] * weight[ok],
                minlength=grid.size,
            )
    grid = grid.reshape(num_bins, height, width)
    if normalize:
        nonzero = grid != 0
        if nonzero.any():
            values = grid[nonzero]
            std = values.std()
            grid[nonzero] = (values - values.mean()) / std if std > 0 else values - values.mean()
    return grid.astype(np.float32)


def _counts(x, y, t, p, num_bins, height, width, t_start, t_end) -> np.ndarray:
    return polarity_counts(x, y, t, p, num_bins, height, width, t_start, t_end)


def _voxel(x, y, t, p, num_bins, height, width, t_start, t_end) -> np.ndarray:
    # The voxel grid spans the events' own time range, not the window's.
    return voxel_grid(x, y, t, p, num_bins, height, width)[:, None]


# name -> (function returning [B, C, H, W], C). Read-only: nothing registers at runtime.
_REPRESENTATIONS: dict[str, tuple[Callable[..., np.ndarray], int]] = {
    "counts": (_counts, 2),
    "voxel": (_voxel, 1),
}
REPRESENTATIONS: tuple[str, ...] = tuple(_REPRESENTATIONS)


def _lookup(representation: str) -> tuple[Callable[..., np.ndarray], int]:
    try:
        return _REPRESENTATIONS[representation]
    except KeyError:
        raise ValueError(
            f"unknown event representation {representation!r}; accepted: {', '.join(REPRESENTATIONS)}"
        ) from None


def num_input_channels(representation: str) -> int:
    """Channels per time bin of a representation (2 for "counts", 1 for "voxel")."""
    return _lookup(representation)[1]


def events_to_tensor(
    representation: str,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    num_bins: int,
    height: int,
    width: int,
    t_start: float,
    t_end: float,
) -> torch.Tensor:
    """Events of one window as a float32 tensor [num_bins, C, height, width].

    ``representation`` is "counts" (C=2, bins over [t_start, t_end)) or "voxel"
    (C=1, bins over the events' own time span; t_start/t_end are unused).
    """
    convert, _ = _lookup(representation)
    return torch.from_numpy(convert(x, y, t, p, num_bins, height, width, t_start, t_end))
