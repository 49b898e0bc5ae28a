"""DSEC-Flow as it is downloaded: events, rectification map and 16-bit flow PNGs.

A DSEC data root holds, per split S (the release has ``train``; ``val`` or ``test``
folders of the same shape can hold sequences set aside)::

    <root>/S_events/<seq>/events/left/events.h5        events/{x,y,t,p}, ms_to_idx, t_offset
                                                        (Blosc-compressed: hdf5plugin reads it)
    <root>/S_events/<seq>/events/left/rectify_map.h5   rectify_map float32 [480, 640, 2]:
                                                        rectified (x, y) of raw pixel [y, x]
    <root>/S_optical_flow/<seq>/flow/forward/*.png      one flow map per window, in name order
    <root>/S_optical_flow/<seq>/flow/forward_timestamps.txt
                                                        from_us, to_us per window ('#' header)
    <root>/test_forward_flow_timestamps/<seq>.csv       the test release, without ground truth:
                                                        from_us, to_us, file_index per window

Event times are microseconds after ``t_offset``; the window timestamps are absolute,
like the times :class:`~snn.data.events.EventSlicer` works in. Events are moved to
their rectified pixel (rounded) before they are binned; flow maps live on the
rectified grid.

The flow PNG encoding, also the benchmark's upload format: 16-bit, 3 channels in RGB
order (OpenCV reads and writes BGR), ``u = (R - 2**15) / 128``, ``v = (G - 2**15) / 128``,
valid where B is non-zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import h5py
import numpy as np

from snn.data.blinksim_layouts import LayoutDecoder
from snn.data.errors import DatasetFormatError, MissingSplitError, reading, splits_note
from snn.data.events import EventSlicer, EventWindow, in_image, open_h5
from snn.data.sequence import EventFlowSequence

FLOW_OFFSET = 2**15
FLOW_SCALE = 128.0
EVENTS_FILE = "events/left/events.h5"
RECTIFY_FILE = "events/left/rectify_map.h5"
FLOW_FOLDER = "flow/forward"
TIMESTAMPS_FILE = "flow/forward_timestamps.txt"


def decode_flow_png(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uv float32 [2, H, W] in pixels, valid bool [H, W]) of a DSEC flow PNG."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetFormatError(path, "cannot read as an image (missing, truncated or not a PNG)")
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] != 3:
        raise DatasetFormatError(path, f"expected a 16-bit 3-channel flow PNG, got {image.dtype} {image.shape}")
    rgb = image[..., ::-1]  # OpenCV gives BGR
    uv = (rgb[..., :2].astype(np.float32) - FLOW_OFFSET) / FLOW_SCALE
    return np.ascontiguousarray(uv.transpose(2, 0, 1)), rgb[..., 2] > 0


def encode_flow_png(path: str | os.PathLike[str], uv: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write uv [2, H, W] (pixels) as a DSEC flow PNG; ``valid`` None marks every pixel valid.

    Flow is stored in steps of 1/128 px and clipped to the encodable +-256 px.
    """
    uv = np.asarray(uv, dtype=np.float64)
    if uv.ndim != 3 or uv.shape[0] != 2:
        raise ValueError(f"flow must be [2, H, W], got {uv.shape}")
    codes = np.clip(np.rint(uv * FLOW_SCALE + FLOW_OFFSET), 0, 2**16 - 1).astype(np.uint16)
    third = np.ones(uv.shape[1:], np.uint16) if valid is None else np.asarray(valid, bool).astype(np.uint16)
    bgr = np.stack([third, codes[1], codes[0]], axis=-1)
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"{path}: OpenCV could not write the PNG")


def read_timestamps(path: Path, columns: int = 2) -> np.ndarray:
    """[N, columns] int64 (from_us, to_us[, file_index]) of a timestamps file (CSV, '#' header)."""
    if not path.is_file():
        raise DatasetFormatError(path, "file does not exist")
    try:
        table = np.loadtxt(path, delimiter=",", comments="#", dtype=np.int64, ndmin=2)
    except ValueError as err:
        raise DatasetFormatError(path, f"expected rows of integers from_us, to_us, ... ({err})") from err
    if table.shape[0] == 0 or table.shape[1] < columns:
        raise DatasetFormatError(path, f"expected rows of {columns} integers, got a table of shape {table.shape}")
    if (table[:, 1] <= table[:, 0]).any():
        raise DatasetFormatError(path, "a window ends before it starts")
    return table[:, :columns]


def read_rectify_map(path: Path, height: int, width: int) -> np.ndarray:
    """rectify_map float32 [H, W, 2] of ``path``, checked against the flow maps' size."""
    with open_h5(path) as f, reading(path, "rectify_map"):
        dset = f.get("rectify_map")
        if not isinstance(dset, h5py.Dataset):
            raise DatasetFormatError(path, "no 'rectify_map' dataset")
        if dset.shape != (height, width, 2):
            raise DatasetFormatError(path, f"rectify_map has shape {dset.shape}, expected {(height, width, 2)}")
        return dset[:].astype(np.float32)


class DsecDecoder(LayoutDecoder):
    """One DSEC sequence: ``seq_dir`` is its optical-flow folder, ``events_path`` its events.h5."""

    layout = "DSEC"
    files = f"<split>_events/<seq>/{EVENTS_FILE}, {RECTIFY_FILE} + <split>_optical_flow/<seq>/{FLOW_FOLDER}/*.png, "
    files += TIMESTAMPS_FILE
    events_files = ()
    flow_file = FLOW_FOLDER

    def __init__(self, seq_dir: Path, events_path: Path, flow_path: Path) -> None:
        self._rectify: np.ndarray | None = None
        self.rectify_path = events_path.parent / Path(RECTIFY_FILE).name
        super().__init__(seq_dir, events_path, flow_path)
        if not self.rectify_path.is_file():
            raise DatasetFormatError(self.rectify_path, "file does not exist (DSEC events need their rectify map)")

    def _read_flow_metadata(self) -> int:
        self._pngs = sorted(self.flow_path.glob("*.png"))
        if not self._pngs:
            raise DatasetFormatError(self.flow_path, "holds no flow PNGs")
        uv, _ = decode_flow_png(self._pngs[0])
        self.height, self.width = uv.shape[1:]
        self._windows = read_timestamps(self.seq_dir / TIMESTAMPS_FILE)
        if len(self._windows) != len(self._pngs):
            raise DatasetFormatError(
                self.seq_dir / TIMESTAMPS_FILE,
                f"lists {len(self._windows)} windows but {self.flow_path} holds {len(self._pngs)} flow PNGs",
            )
        return len(self._pngs)

    def _window_times(self, num_maps: int, events: EventSlicer) -> np.ndarray:
        return self._windows

    def open(self) -> None:
        self._rectify = read_rectify_map(self.rectify_path, self.height, self.width)

    def close(self) -> None:
        self._rectify = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_rectify": None}  # each worker loads its own map

    def map_events(self, events: EventWindow) -> EventWindow:
        """The events at their rectified pixels (rounded); those that leave the image are dropped later."""
        if self._rectify is None:
            self.open()
        events = events.select(in_image(events.x, events.y, self.height, self.width))
        xy = self._rectify[events.y, events.x]
        x, y = np.rint(xy[:, 0]).astype(np.int64), np.rint(xy[:, 1]).astype(np.int64)
        return EventWindow(x, y, events.t, events.p, events.t_start, events.t_end)

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        uv, valid = decode_flow_png(self._pngs[i])
        if uv.shape[1:] != (self.height, self.width):
            raise DatasetFormatError(
                self._pngs[i], f"flow map is {uv.shape[1:]}, expected {(self.height, self.width)} like the first"
            )
        return uv, valid

    def count_valid_pixels(self) -> int:
        return sum(int(np.count_nonzero(self.read_flow(i)[1])) for i in range(len(self._pngs)))

    def window_name(self, i: int) -> str:
        return self._pngs[i].stem


class DsecTestDecoder(DsecDecoder):
    """A sequence of DSEC's test release: no ground truth, windows and their output names from
    ``test_forward_flow_timestamps/<seq>.csv`` (from_us, to_us, file_index)."""

    layout = "DSEC test"
    has_ground_truth = False

    def _read_flow_metadata(self) -> int:
        table = read_timestamps(self.flow_path, columns=3)
        self._windows, self._file_index = table[:, :2], table[:, 2]
        with open_h5(self.rectify_path) as f:
            shape = getattr(f.get("rectify_map"), "shape", None)
        if shape is None or len(shape) != 3 or shape[2] != 2:
            raise DatasetFormatError(self.rectify_path, f"rectify_map must be [H, W, 2], got {shape}")
        self.height, self.width = shape[:2]
        return len(self._windows)

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((2, self.height, self.width), np.float32), np.zeros((self.height, self.width), bool)

    def count_valid_pixels(self) -> int:
        return 0

    def window_name(self, i: int) -> str:
        return f"{int(self._file_index[i]):06d}"


def is_dsec_root(root: Path) -> bool:
    """True when ``root`` holds a ``<split>_events`` folder beside its flow or timestamps folder."""
    return any((root / f"{s}_events").is_dir() and _flow_root(root, s).is_dir() for s in SPLITS)


def _flow_root(root: Path, split: str) -> Path:
    """Where a split's ground truth lies, or, for a release without it, its window timestamps."""
    flow = root / f"{split}_optical_flow"
    timestamps = root / f"{split}_forward_flow_timestamps"
    return timestamps if not flow.is_dir() and timestamps.is_dir() else flow


SPLITS = ("train", "val", "test")


def dsec_sequences(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    """(name, events file, optical-flow folder, or for a test release the timestamps CSV) of every
    sequence of ``split``."""
    events_root, flow_root = root / f"{split}_events", _flow_root(root, split)
    for folder in (events_root, flow_root):
        if not folder.is_dir():
            available = tuple(s for s in SPLITS if (root / f"{s}_events").is_dir() and _flow_root(root, s).is_dir())
            raise MissingSplitError(
                folder,
                f"does not exist: a DSEC {split} split needs {events_root.name}/ and {split}_optical_flow/ "
                f"(or, without ground truth, {split}_forward_flow_timestamps/){splits_note(available)}",
                available,
            )
    test_release = flow_root.name.endswith("_timestamps")
    found = []
    for flow in sorted(flow_root.glob("*.csv") if test_release else (p for p in flow_root.iterdir() if p.is_dir())):
        events = events_root / flow.stem / EVENTS_FILE
        if not events.is_file():
            raise DatasetFormatError(events, f"missing: {flow} names a sequence without events")
        found.append((flow.stem, events, flow))
    if not found:
        raise DatasetFormatError(flow_root, "holds no sequence folders")
    return found


class DsecSequence(EventFlowSequence):
    """The flow windows of one DSEC sequence (samples as :class:`~snn.data.sequence.EventFlowSequence`);
    ``flow_dir`` a test release's timestamps CSV reads windows without ground truth."""

    def __init__(
        self, events_path: str | os.PathLike[str], flow_dir: str | os.PathLike[str], num_bins: int = 5,
        representation: str = "counts",
    ) -> None:  # fmt: skip
        flow_dir, events_path = Path(flow_dir), Path(events_path)
        if flow_dir.suffix == ".csv":  # the test release: timestamps, no ground truth
            decoder = DsecTestDecoder(events_path.parents[2], events_path, flow_dir)
        else:
            decoder = DsecDecoder(flow_dir, events_path, flow_dir / FLOW_FOLDER)
        super().__init__(decoder, flow_dir.stem, num_bins, representation)
