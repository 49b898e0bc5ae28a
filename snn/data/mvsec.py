"""MVSEC as it is downloaded: ``<name>_data.hdf5`` beside ``<name>_gt_flow_dist.npz``.

::

    <root>/indoor_flying1_data.hdf5          davis/left/events    float64 [N, 4] = (x, y, t in s, p +-1)
                                             davis/left/image_raw_ts float64 [F]: grayscale frame times, s
    <root>/indoor_flying1_gt_flow_dist.npz   timestamps [M] (s), x_flow_dist, y_flow_dist [M, 260, 346]:
                                             pixel displacement from timestamps[i] to timestamps[i + 1]

(or the same pairs in ``<root>/<split>/``). The papers' two protocols cut windows
between grayscale frames: ``dt=1`` from frame k to k + 1, ``dt=4`` from frame k to k + 4.
The ground truth comes at its own rate, so a window's flow is carried along the
ground-truth maps it spans: each pixel moves by the map it stands on, scaled by the
share of that map's interval inside the window, map after map. A pixel is valid
where every map it crossed had flow there (MVSEC leaves pixels without depth at
zero) and it stayed in the frame; in ``outdoor_*`` sequences the car's hood, rows
190 and below, is never valid. With ``--mask sparse`` (pixels that also saw an
event) the metrics are the ones EV-FlowNet and Spike-FlowNet report.

Streaming: events are read a window at a time, and an uncompressed .npz (as
MVSEC ships it) is memory-mapped, so a ground-truth map is read only when a
window needs it.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np

from snn.data.blinksim_layouts import LayoutDecoder
from snn.data.errors import DatasetFormatError, reading
from snn.data.events import EventSlicer, bisect_left, open_h5
from snn.data.sequence import EventFlowSequence

EVENTS = "davis/left/events"
FRAME_TIMES = "davis/left/image_raw_ts"
HOOD_FIRST_ROW = 190
DATA_SUFFIX, GT_SUFFIX = "_data.hdf5", "_gt_flow_dist.npz"
PROTOCOLS = (1, 4)


def _microseconds(seconds: np.ndarray) -> np.ndarray:
    return np.rint(seconds * 1e6).astype(np.int64)


class _TimesUs:
    """The event times of ``davis/left/events`` in integer microseconds, read when indexed (so that
    ``snn.data.events.bisect_left`` can search the file's seconds as it searches BlinkSim's times)."""

    def __init__(self, dset: h5py.Dataset) -> None:
        self._dset = dset

    def __getitem__(self, index: int | slice) -> np.ndarray:
        return _microseconds(self._dset[index, 2])


class MvsecEvents:
    """Reads time windows of ``davis/left/events`` like :class:`~snn.data.events.EventSlicer`
    (times in integer microseconds, ``p`` 1 for ON and 0 for OFF)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._file = open_h5(path)
        dset = self._file.get(EVENTS)
        if not isinstance(dset, h5py.Dataset) or dset.ndim != 2 or dset.shape[1] != 4 or dset.dtype.kind != "f":
            shape = getattr(dset, "shape", None)
            self.close()
            raise DatasetFormatError(path, f"expected {EVENTS} float [N, 4] = (x, y, t s, p +-1), got {shape}")
        self._dset = dset
        self._times = _TimesUs(dset)
        self.num_events = dset.shape[0]
        self.t_offset = 0

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> MvsecEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _bisect(self, value: int, lo: int, hi: int) -> int:
        with reading(self.path, f"{EVENTS} times"):
            return bisect_left(self._times, value, lo, hi)

    def time_range(self) -> tuple[int, int]:
        if self.num_events == 0:
            raise DatasetFormatError(self.path, "holds no events")
        with reading(self.path, f"{EVENTS} times"):
            return int(self._times[0]), int(self._times[self.num_events - 1])

    def index_range(self, t_start_us: int, t_end_us: int) -> tuple[int, int]:
        """Half-open index range [i0, i1) of the events with t_start_us <= t < t_end_us."""
        i0 = self._bisect(int(t_start_us), 0, self.num_events)
        return i0, max(i0, self._bisect(int(t_end_us), i0, self.num_events))

    def get_events(self, t_start_us: int, t_end_us: int) -> dict[str, np.ndarray]:
        return self._read(*self.index_range(t_start_us, t_end_us))

    def get_events_by_index(self, i0: int, i1_inclusive: int) -> dict[str, np.ndarray]:
        if i0 < 0 or i1_inclusive >= self.num_events:
            raise IndexError(f"{self.path}: event indices [{i0}, {i1_inclusive}] outside [0, {self.num_events})")
        return self._read(i0, max(i1_inclusive + 1, i0))

    def _read(self, i0: int, i1: int) -> dict[str, np.ndarray]:
        with reading(self.path, f"events {i0} to {i1 - 1}"):
            block = self._dset[i0:i1]
        return {
            "x": block[:, 0].astype(np.int64),
            "y": block[:, 1].astype(np.int64),
            "t": _microseconds(block[:, 2]),
            "p": (block[:, 3] > 0).astype(np.uint8),
        }


def npz_member(path: Path, name: str) -> np.ndarray:
    """Array ``name`` of an .npz, memory-mapped when stored uncompressed, else read whole."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{name}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    return np.lib.format.read_array(member, allow_pickle=False)
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            name_length, extra_length = struct.unpack("<HH", f.read(30)[26:30])
            f.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
            offset = f.tell()
    except KeyError:
        raise DatasetFormatError(path, f"holds no array '{name}'") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DatasetFormatError(path, f"cannot read as .npz ({err})") from err
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def carried_flow(t0: float, t1: float, times: np.ndarray, u_maps, v_maps) -> tuple[np.ndarray, np.ndarray]:
    """(uv float32 [2, H, W], valid bool [H, W]) from time t0 to t1 (seconds): each pixel moved by the
    ground-truth map under it, scaled by the share of that map's interval inside [t0, t1], map after map."""
    height, width = u_maps.shape[1:]
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float64)
    px, py = gx.copy(), gy.copy()
    valid = np.ones((height, width), bool)
    i = int(np.searchsorted(times, t0, side="right")) - 1
    t = t0
    while t < t1:
        end = min(float(times[i + 1]), t1)
        share = (end - t) / (float(times[i + 1]) - float(times[i]))
        col, row = np.rint(px).astype(np.int64), np.rint(py).astype(np.int64)
        valid &= (col >= 0) & (col < width) & (row >= 0) & (row < height)
        col, row = np.clip(col, 0, width - 1), np.clip(row, 0, height - 1)
        du, dv = np.asarray(u_maps[i])[row, col], np.asarray(v_maps[i])[row, col]
        valid &= (du != 0) | (dv != 0)
        px, py = px + du * share, py + dv * share
        t, i = end, i + 1
    return np.stack([px - gx, py - gy]).astype(np.float32), valid


class MvsecDecoder(LayoutDecoder):
    """One MVSEC recording: ``events_path`` its ``_data.hdf5``, ``flow_path`` its ``_gt_flow_dist.npz``."""

    layout = "MVSEC"
    files = f"<name>{DATA_SUFFIX} ({EVENTS}, {FRAME_TIMES}) + <name>{GT_SUFFIX}"

    def __init__(self, seq_dir: Path, events_path: Path, flow_path: Path, dt: int = 1) -> None:
        if dt not in PROTOCOLS:
            raise ValueError(f"MVSEC dt must be one of {PROTOCOLS} (grayscale frames per window), got {dt!r}")
        self.dt = dt
        self.name = events_path.name[: -len(DATA_SUFFIX)]
        super().__init__(seq_dir, events_path, flow_path)

    def event_reader(self) -> EventSlicer:
        return MvsecEvents(self.events_path)  # type: ignore[return-value]  # EventSlicer's methods, MVSEC's file

    def _read_flow_metadata(self) -> int:
        self.open()
        self.height, self.width = self._u.shape[1:]
        with open_h5(self.events_path) as f, reading(self.events_path, FRAME_TIMES):
            frames = f.get(FRAME_TIMES)
            if not isinstance(frames, h5py.Dataset) or frames.ndim != 1:
                raise DatasetFormatError(self.events_path, f"no {FRAME_TIMES} (grayscale frame times)")
            frame_times = frames[:].astype(np.float64)
        starts, ends = frame_times[: -self.dt], frame_times[self.dt :]
        inside = (starts >= self._times[0]) & (ends <= self._times[-1])
        self._seconds = np.stack([starts[inside], ends[inside]], axis=1)
        if not len(self._seconds):
            raise DatasetFormatError(self.flow_path, "its timestamps cover no window of grayscale frames")
        return len(self._seconds)

    def _window_times(self, num_maps: int, events) -> np.ndarray:
        return np.rint(self._seconds * 1e6).astype(np.int64)

    def open(self) -> None:
        self._times = np.asarray(npz_member(self.flow_path, "timestamps"), dtype=np.float64)
        self._u = npz_member(self.flow_path, "x_flow_dist")
        self._v = npz_member(self.flow_path, "y_flow_dist")
        if self._u.ndim != 3 or self._u.shape != self._v.shape or self._u.shape[0] != len(self._times):
            raise DatasetFormatError(
                self.flow_path,
                f"x_flow_dist {self._u.shape} and y_flow_dist {self._v.shape} must both be [M, H, W] for "
                f"{len(self._times)} timestamps",
            )
        if (np.diff(self._times) <= 0).any():
            raise DatasetFormatError(self.flow_path, "timestamps must increase")

    def close(self) -> None:
        self._u = self._v = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_u": None, "_v": None}  # each worker maps the file itself

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._u is None:
            self.open()
        uv, valid = carried_flow(*self._seconds[i], self._times, self._u, self._v)
        if self.name.startswith("outdoor"):
            valid[HOOD_FIRST_ROW:] = False
        return uv, valid

    def count_valid_pixels(self) -> int:
        return sum(int(np.count_nonzero(self.read_flow(i)[1])) for i in range(len(self._seconds)))


def is_mvsec_root(root: Path) -> bool:
    """True when ``root`` (or a split folder in it) holds a ``<name>_data.hdf5`` with its ground truth."""
    folders = [root, *(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    return any(data.with_name(data.name[: -len(DATA_SUFFIX)] + GT_SUFFIX).is_file()
               for folder in folders for data in folder.glob(f"*{DATA_SUFFIX}"))  # fmt: skip


def mvsec_sequences(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    """(name, data file, ground-truth file) of the recordings in ``root/split``, else in ``root``."""
    folder = root / split if (root / split).is_dir() else root
    found = []
    for data in sorted(folder.glob(f"*{DATA_SUFFIX}")):
        name = data.name[: -len(DATA_SUFFIX)]
        gt = folder / f"{name}{GT_SUFFIX}"
        if not gt.is_file():
            raise DatasetFormatError(gt, f"missing: {data.name} has no ground truth beside it")
        found.append((name, data, gt))
    if not found:
        raise DatasetFormatError(folder, f"holds no MVSEC recording (<name>{DATA_SUFFIX} + <name>{GT_SUFFIX})")
    return found


class MvsecSequence(EventFlowSequence):
    """The windows of one MVSEC recording under protocol ``dt`` (samples as ``EventFlowSequence``)."""

    def __init__(
        self, data_path: str | os.PathLike[str], gt_path: str | os.PathLike[str], dt: int = 1, num_bins: int = 5,
        representation: str = "counts",
    ) -> None:  # fmt: skip
        data_path, gt_path = Path(data_path), Path(gt_path)
        decoder = MvsecDecoder(data_path.parent, data_path, gt_path, dt)
        super().__init__(decoder, decoder.name, num_bins, representation)
