"""Event-to-tensor representations (docs/formats.md, section 4).

The numerical cores, :func:`polarity_counts` and :func:`voxel_grid`, take the
events of one window as 1-D arrays ``x, y, t, p`` (``p > 0`` is ON; both 0/1 and
-1/+1 encodings work) and return a float32 array with the time bins first,
because each bin is one SNN time step.

A reader uses them through one small class per representation, each with a
``name``, its ``channels`` per time bin and one method, ``convert``, from an
:class:`~snn.data.events.EventWindow` to a float32 tensor [num_bins, C, H, W]::

    rep = make_representation("counts", num_bins=5, height=320, width=320)
    tensor = rep.convert(window)
"""

from __future__ import annotations

import logging
import math
import numbers
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from snn.data import event_kernels
from snn.data.events import EventWindow

logger = logging.getLogger(__name__)


def _check_num_bins(num_bins: int) -> None:
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")


def _kernel_inputs(
    x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays as the compiled kernels take them: x and y int64 (float64 when
    fractional), t int64 or float64, and ``p > 0`` as bool. Few dtypes, so few compilations.

    ValueError unless they are 1-D arrays of one length with finite times.
    """
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    shapes = [a.shape for a in (x, y, t, p)]
    if any(len(shape) != 1 for shape in shapes) or len(set(shapes)) != 1:
        raise ValueError(f"x, y, t, p must be 1-D arrays of one length, got shapes {shapes}")
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        raise ValueError("event times must be finite, got NaN or infinity")
    # A uint64 beyond int64 wraps negative: outside the image either way.
    x, y = (a.astype(np.float64 if a.dtype.kind == "f" else np.int64, copy=False) for a in (x, y))
    # int64 times (DSEC, BlinkSim) go in as they are: the kernel converts each one, which spares a
    # full-size float64 copy; every other dtype becomes float64.
    t = t if t.dtype == np.int64 else t.astype(np.float64, copy=False)
    return x, y, t, p > 0


def _window_bounds(t_start: float, t_end: float) -> tuple[float, float, float]:
    """(start, end, end - start) as floats; ValueError unless both are finite and t_end > t_start."""
    try:
        start, end = float(t_start), float(t_end)
    except OverflowError:  # a Python int beyond float64
        start = end = math.inf
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"time window bounds must be finite: t_start={t_start}, t_end={t_end}")
    if isinstance(t_start, numbers.Integral) and isinstance(t_end, numbers.Integral):
        # Exact: two large integers a microsecond apart may round to the same float.
        span = int(t_end) - int(t_start)
    else:
        span = end - start
    if not span > 0:
        raise ValueError(f"empty time window: t_start={t_start}, t_end={t_end}")
    return start, end, float(span)


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

    Channel 0 counts ON events (p > 0), channel 1 OFF events (every other p, NaN
    included). The window [t_start, t_end) is cut into ``num_bins`` equal bins;
    events at or past t_end land in the last bin and events before t_start in
    the first. Events outside the image are ignored.

    ValueError when num_bins < 1, when t_start or t_end is not finite or t_end <=
    t_start, or when x, y, t, p are not 1-D arrays of one length with finite t.
    """
    _check_num_bins(num_bins)
    start, end, span = _window_bounds(t_start, t_end)
    x, y, t, on = _kernel_inputs(x, y, t, p)
    return event_kernels.count_polarities(x, y, t, on, num_bins, height, width, start, end, span)


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

    ValueError when num_bins < 1 or when x, y, t, p are not 1-D arrays of one
    length with finite t.
    """
    _check_num_bins(num_bins)
    x, y, t, on = _kernel_inputs(x, y, t, p)
    grid = event_kernels.accumulate_voxels(x, y, t, on, num_bins, height, width)
    if normalize:
        nonzero = grid != 0
        if nonzero.any():
            values = grid[nonzero]
            std = values.std()
            grid[nonzero] = (values - values.mean()) / std if std > 0 else values - values.mean()
    return grid.astype(np.float32)


class Representation(ABC):
    """One event representation at a fixed size.

    Subclasses set the class attributes ``name`` (what configs call it) and
    ``channels`` (C, per time bin) and implement :meth:`convert`.

    Args:
        num_bins: time bins per window, one per SNN time step (>= 1).
        height, width: the image size; events outside it are ignored.
    """

    name: ClassVar[str]
    channels: ClassVar[int]

    def __init__(self, num_bins: int, height: int, width: int) -> None:
        _check_num_bins(num_bins)
        self.num_bins = num_bins
        self.height = height
        self.width = width

    @abstractmethod
    def convert(self, events: EventWindow) -> torch.Tensor:
        """The window's events as a float32 tensor [num_bins, channels, height, width]."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_bins={self.num_bins}, height={self.height}, width={self.width})"


class PolarityCounts(Representation):
    """ON and OFF counts per time bin (C=2); the bins cut [t_start, t_end) of the window."""

    name = "counts"
    channels = 2

    def convert(self, events: EventWindow) -> torch.Tensor:
        x, y, t, p = events.x, events.y, events.t, events.p
        counts = polarity_counts(x, y, t, p, self.num_bins, self.height, self.width, events.t_start, events.t_end)
        return torch.from_numpy(counts)


class VoxelGrid(Representation):
    """Normalised voxel grid (C=1); the bins span the events' own time range, not the window's."""

    name = "voxel"
    channels = 1

    def convert(self, events: EventWindow) -> torch.Tensor:
        grid = voxel_grid(events.x, events.y, events.t, events.p, self.num_bins, self.height, self.width)
        return torch.from_numpy(grid[:, None])


# Read-only: nothing registers at runtime.
_CLASSES: dict[str, type[Representation]] = {cls.name: cls for cls in (PolarityCounts, VoxelGrid)}
REPRESENTATIONS: tuple[str, ...] = tuple(_CLASSES)


def representation_class(name: str) -> type[Representation]:
    """The class of representation ``name``; ValueError naming the accepted ones otherwise."""
    try:
        return _CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown event representation {name!r}; accepted: {', '.join(REPRESENTATIONS)}") from None


def num_input_channels(representation: str) -> int:
    """Channels per time bin of a representation (2 for "counts", 1 for "voxel")."""
    return representation_class(representation).channels


def make_representation(name: str, num_bins: int, height: int, width: int) -> Representation:
    """Representation ``name`` ("counts" or "voxel") for num_bins x height x width tensors."""
    return representation_class(name)(num_bins, height, width)
