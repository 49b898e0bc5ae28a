"""Time-window slicing of events stored in HDF5 (docs/formats.md, section 1).

Expected layout inside the file::

    events/x          uint16 [E]
    events/y          uint16 [E]
    events/t          int64 or uint64 [E], microseconds, sorted ascending
    events/p          uint8  [E], 1 = ON, 0 = OFF
    events/ms_to_idx  uint64 [M]  (optional) first index with t >= m * 1000 (or ms_to_idx, at the root)
    t_offset          scalar int  (optional, DSEC) absolute time = t + t_offset

x, y and t may be of any integer dtype, p of any number type. Anything else, a
decreasing or out-of-range ms_to_idx, or bytes h5py cannot read raise
DatasetFormatError naming the file.

All times given to and returned by :class:`EventSlicer` are absolute, i.e. the
stored ``t`` plus ``t_offset`` (0 when the file has none). BlinkSim files have
no ``t_offset``, so for them absolute time is the stored time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  registers the Blosc filter that DSEC's events files are compressed with
import numpy as np

from snn.data.errors import DatasetFormatError, reading

logger = logging.getLogger(__name__)

EVENT_FIELDS = ("x", "y", "t", "p")

# Below this many candidates a window is read whole and searched in memory;
# above it the bisection reads single elements from the file.
_READ_WHOLE = 4096
# Absolute event times must lie within +-2^62 us, far inside int64, so that adding
# t_offset or 1 us to a time never overflows.
_MAX_TIME = 2**62


def in_image(x: np.ndarray, y: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean mask of the events at a pixel of the height x width image (0 <= x < width, 0 <= y < height)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind == "i" and y.dtype.kind == "i":
        # Seen as unsigned, a negative coordinate is huge: one comparison per axis instead of two.
        return (x.view(x.dtype.str.replace("i", "u")) < width) & (y.view(y.dtype.str.replace("i", "u")) < height)
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)


@dataclass(frozen=True, eq=False)
class EventWindow:
    """The events of one time window: 1-D arrays ``x``, ``y``, ``t`` (microseconds)
    and ``p`` (``p > 0`` is ON), plus the window [t_start, t_end) they were cut for.

    The arrays are not copied. ``eq=False``: windows compare by identity, since
    ``==`` on arrays is elementwise.
    """

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    t_start: int
    t_end: int

    def __len__(self) -> int:
        return len(self.t)

    def select(self, keep: np.ndarray) -> EventWindow:
        """The events where ``keep`` (a boolean mask or an index array) selects, same bounds."""
        return EventWindow(self.x[keep], self.y[keep], self.t[keep], self.p[keep], self.t_start, self.t_end)


def open_h5(path: str | os.PathLike[str]) -> h5py.File:
    """Open an HDF5 file read-only, turning h5py's OSError into a DatasetFormatError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(path, "file does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DatasetFormatError(path, f"cannot open as HDF5, the file may be truncated or corrupt ({err})") from err


def bisect_left(dset: h5py.Dataset, value: int, lo: int, hi: int) -> int:
    """First index in ``dset[lo:hi]`` (sorted) whose value is >= ``value``. ``dset`` is anything
    that gives a number for an index and an array for a slice, read only where needed."""
    while hi - lo > _READ_WHOLE:
        mid = (lo + hi) // 2
        if int(dset[mid]) < value:
            lo = mid + 1
        else:
            hi = mid
    return lo + int(np.searchsorted(dset[lo:hi].astype(np.int64), value, side="left"))


class EventSlicer:
    """Read the events of a time window or an index range from an events HDF5 file.

    Args:
        h5_file: an open ``h5py.File`` (left open by :meth:`close`) or a path
            (opened here and closed by :meth:`close`).
    """

    def __init__(self, h5_file: h5py.File | str | os.PathLike[str]) -> None:
        if isinstance(h5_file, h5py.File):
            self._file = h5_file
            self._owns_file = False
        else:
            self._file = open_h5(h5_file)
            self._owns_file = True
        self.path = str(self._file.filename)
        try:
            self._validate()
        except Exception:
            self.close()
            raise

    def _validate(self) -> None:
        with reading(self.path, "the events"):
            self._validate_layout()

    def _validate_layout(self) -> None:
        group = self._file.get("events")
        if not isinstance(group, h5py.Group) and all(isinstance(self._file.get(n), h5py.Dataset) for n in EVENT_FIELDS):
            group = self._file  # a plain file of events: x, y, t, p at its root
        if not isinstance(group, h5py.Group):
            raise DatasetFormatError(self.path, "no 'events' group (expected events/x, y, t, p, or x, y, t, p)")
        missing = [name for name in EVENT_FIELDS if not isinstance(group.get(name), h5py.Dataset)]
        if missing:
            raise DatasetFormatError(self.path, f"events group lacks dataset(s) {', '.join(missing)}")
        self._dsets = {name: group[name] for name in EVENT_FIELDS}
        shapes = {name: dset.shape for name, dset in self._dsets.items()}
        if any(shape is None or len(shape) != 1 for shape in shapes.values()):
            raise DatasetFormatError(self.path, f"events datasets must be 1-D, got {shapes}")
        lengths = {shape[0] for shape in shapes.values()}
        if len(lengths) != 1:
            raise DatasetFormatError(self.path, f"events datasets differ in length: {shapes}")
        for name, dset in self._dsets.items():
            kinds = "biuf" if name == "p" else "iu"  # p only needs "> 0"; x, y, t are integers
            if dset.dtype.kind not in kinds:
                expected = "numbers" if name == "p" else "integers"
                raise DatasetFormatError(self.path, f"events/{name} has dtype {dset.dtype}, expected {expected}")
        self.num_events = lengths.pop()

        ms_to_idx = group.get("ms_to_idx")
        if ms_to_idx is None:  # DSEC keeps it beside the group, at the file's root
            ms_to_idx = self._file.get("ms_to_idx")
        if ms_to_idx is not None and (
            not isinstance(ms_to_idx, h5py.Dataset)
            or ms_to_idx.ndim != 1
            or len(ms_to_idx) == 0
            or ms_to_idx.dtype.kind not in "iu"
        ):
            raise DatasetFormatError(self.path, "ms_to_idx must be a non-empty 1-D dataset of integers")
        self.ms_to_idx = None
        if ms_to_idx is not None:
            # One entry per millisecond: small enough to hold in memory. A wrong one would
            # bracket the wrong events, so check what can be checked without reading t.
            marks = ms_to_idx[:]
            if marks.min() < 0 or marks.max() > self.num_events or (np.diff(marks.astype(np.int64)) < 0).any():
                raise DatasetFormatError(
                    self.path, f"events/ms_to_idx must be non-decreasing event indices in [0, {self.num_events}]"
                )
            self.ms_to_idx = marks.astype(np.int64)

        t_offset = self._file.get("t_offset")
        if t_offset is not None and (
            not isinstance(t_offset, h5py.Dataset) or t_offset.size != 1 or t_offset.dtype.kind not in "iu"
        ):
            raise DatasetFormatError(self.path, "t_offset must be a single integer")
        self.t_offset = 0 if t_offset is None else int(np.asarray(t_offset[()]).reshape(()))
        if abs(self.t_offset) > _MAX_TIME:
            raise DatasetFormatError(self.path, f"t_offset {self.t_offset} lies beyond +-2^62 us")
        if self.num_events:
            t = self._dsets["t"]
            first, last = int(t[0]) + self.t_offset, int(t[self.num_events - 1]) + self.t_offset
            if abs(first) > _MAX_TIME or abs(last) > _MAX_TIME:
                raise DatasetFormatError(self.path, f"event times {first} to {last} us lie beyond +-2^62 us")

    def close(self) -> None:
        """Close the file if this slicer opened it."""
        if self._owns_file and self._file.id.valid:
            self._file.close()

    def __enter__(self) -> EventSlicer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def time_range(self) -> tuple[int, int]:
        """Absolute times of the first and last event; DatasetFormatError when there are none."""
        if self.num_events == 0:
            raise DatasetFormatError(self.path, "holds no events")
        t = self._dsets["t"]
        with reading(self.path, "events/t"):
            return int(t[0]) + self.t_offset, int(t[self.num_events - 1]) + self.t_offset

    def _index_bounds(self, t_start: int, t_end: int) -> tuple[int, int]:
        """Index range that certainly holds every event with t_start <= t < t_end (file time)."""
        if self.ms_to_idx is None:
            return 0, self.num_events
        last = len(self.ms_to_idx) - 1
        ms_lo = t_start // 1000
        ms_hi = -(-t_end // 1000)  # ceil: the first millisecond mark at or after t_end
        lo = 0 if ms_lo < 0 else int(self.ms_to_idx[min(ms_lo, last)])
        hi = self.num_events if ms_hi > last else int(self.ms_to_idx[max(ms_hi, 0)])
        return lo, max(hi, lo)  # _validate keeps ms_to_idx non-decreasing inside [0, num_events]

    def index_range(self, t_start_us: int, t_end_us: int) -> tuple[int, int]:
        """Half-open index range [i0, i1) of the events with t_start_us <= t < t_end_us."""
        t_start = int(t_start_us) - self.t_offset
        t_end = int(t_end_us) - self.t_offset
        if t_end <= t_start:
            return 0, 0
        lo, hi = self._index_bounds(t_start, t_end)
        t = self._dsets["t"]
        with reading(self.path, "events/t"):
            i0 = bisect_left(t, t_start, lo, hi)
            i1 = bisect_left(t, t_end, i0, hi)
        return i0, i1

    def get_events(self, t_start_us: int, t_end_us: int) -> dict[str, np.ndarray]:
        """Events with t_start_us <= t < t_end_us (absolute microseconds).

        Returns a dict of 1-D arrays: ``x``, ``y``, ``t`` (int64, absolute) and
        ``p`` (uint8, as stored).
        """
        i0, i1 = self.index_range(t_start_us, t_end_us)
        return self._read(i0, i1)

    def get_events_by_index(self, i0: int, i1_inclusive: int) -> dict[str, np.ndarray]:
        """Events ``i0`` to ``i1_inclusive``, both included; empty when i1 < i0.

        IndexError when ``i0 < 0`` or ``i1_inclusive >= num_events``.
        """
        if i0 < 0 or i1_inclusive >= self.num_events:
            raise IndexError(f"{self.path}: event indices [{i0}, {i1_inclusive}] outside [0, {self.num_events})")
        return self._read(i0, max(i1_inclusive + 1, i0))

    def _read(self, i0: int, i1: int) -> dict[str, np.ndarray]:
        d = self._dsets
        with reading(self.path, f"events {i0} to {i1 - 1}"):
            return {
                "x": d["x"][i0:i1].astype(np.int64),
                "y": d["y"][i0:i1].astype(np.int64),
                "t": d["t"][i0:i1].astype(np.int64) + self.t_offset,
                "p": d["p"][i0:i1],
            }
