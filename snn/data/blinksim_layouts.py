"""One decoder per BlinkSim on-disk layout (docs/formats.md, section 2).

The folder trees are drawn in :mod:`snn.data.blinksim`. A decoder turns one
sequence folder of its layout into the same few things, so that
:class:`~snn.data.blinksim.BlinkSimSequence` never asks which layout it reads:
the image size, the time (and maybe event-index) window of each flow map, and
the flow map of window i. The events themselves are read by the sequence with an
:class:`~snn.data.events.EventSlicer`, the same for every layout.

Readers of other datasets (DSEC, MVSEC) are meant to subclass
:class:`LayoutDecoder` the same way.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import yaml

from snn.data.errors import DatasetFormatError
from snn.data.events import EventSlicer, in_image, open_h5

logger = logging.getLogger(__name__)

# A larger share of events outside the flow's image means the events were
# recorded at another resolution; a smaller one is stray events, dropped.
MAX_OUTSIDE_SHARE = 0.05
_EXTENT_SAMPLE = 65536


class LayoutDecoder(ABC):
    """Reads the flow side of one sequence folder in one on-disk layout.

    Used through:
        ``find(seq_dir)`` (classmethod): (events file, flow file or folder)
            when ``seq_dir`` holds this layout's files, else None.
        ``cls(seq_dir, events_path, flow_path)``: reads the metadata once and
            checks it against the events file; DatasetFormatError on any mismatch.
            Afterwards ``height``, ``width``, ``num_windows``, ``time_windows``
            (int64 [N, 2], absolute microseconds, half-open) and
            ``index_windows`` (int64 [N, 2] first and last event index, end
            inclusive, or None to slice the events by time) are set.
        ``open()``: opens this process's file handles. Call it once per process
            (after a fork too): handles inherited from another process are
            replaced, not closed.
        ``read_flow(i)``: window i's flow as (uv float32 [2, H, W] in pixels,
            valid bool [H, W]); call :meth:`open` first.
        ``close()``: closes the handles :meth:`open` opened.
    A decoder pickles without its handles.

    A subclass sets ``layout`` (its name, e.g. "C"), ``files`` (what it expects,
    as error messages list it), ``events_files`` and ``flow_file`` (what the
    default :meth:`find` looks for; override :meth:`_has_flow` or :meth:`find`
    for other tests), and implements ``_read_flow_metadata``, ``_window_times``,
    ``open``, ``read_flow`` and ``close``.
    """

    layout: ClassVar[str]
    files: ClassVar[str]
    # What the default find() looks for, relative to the sequence folder:
    events_files: ClassVar[tuple[str, ...]]  # candidates, the first present is used
    flow_file: ClassVar[str]  # the flow file (or folder, see _has_flow)

    def __init__(self, seq_dir: Path, events_path: Path, flow_path: Path) -> None:
        self.seq_dir = seq_dir
        self.events_path = events_path
        self.flow_path = flow_path
        self.index_windows: np.ndarray | None = None
        num_maps = self._read_flow_metadata()  # sets height and width
        with EventSlicer(events_path) as events:
            self._check_events(events)
            self.time_windows: np.ndarray = self._window_times(num_maps, events)

    @classmethod
    def find(cls, seq_dir: Path) -> tuple[Path, Path] | None:
        """(events file, flow file or folder) when ``seq_dir`` holds this layout, else None."""
        flow = seq_dir / cls.flow_file
        if not cls._has_flow(flow):
            return None
        for name in cls.events_files:
            if (seq_dir / name).is_file():
                return seq_dir / name, flow
        return None

    @classmethod
    def _has_flow(cls, flow: Path) -> bool:
        """Whether ``flow`` (sequence folder / ``flow_file``) holds this layout's flow."""
        return flow.is_file()

    @abstractmethod
    def _read_flow_metadata(self) -> int:
        """Set ``height``, ``width`` (and any window data the flow file holds); return N."""

    @abstractmethod
    def _window_times(self, num_maps: int, events: EventSlicer) -> np.ndarray:
        """[N, 2] start and end (absolute microseconds) of each flow map's window."""

    @abstractmethod
    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(uv float32 [2, H, W], valid bool [H, W]) of window i."""

    @abstractmethod
    def open(self) -> None:
        """Open this process's handles, replacing (not closing) any it holds."""

    @abstractmethod
    def close(self) -> None:
        """Close the handles :meth:`open` opened."""

    @property
    def num_windows(self) -> int:
        """N, the number of flow maps and of windows."""
        return len(self.time_windows)

    def _check_events(self, events: EventSlicer) -> None:
        """Index windows inside the events file; events and flow from one sensor size."""
        n = events.num_events
        if self.index_windows is not None and len(self.index_windows):
            starts, ends = self.index_windows.T
            # An empty window may end one before it starts (end is inclusive).
            if starts.min() < 0 or ends.max() >= n or (ends < starts - 1).any():
                raise DatasetFormatError(
                    self.flow_path,
                    f"frame event indices span [{starts.min()}, "
                    f"{ends.max()}] (or end before they start) but {self.events_path} "
                    f"holds {n} events",
                )
        head = events.get_events_by_index(0, min(n, _EXTENT_SAMPLE) - 1)
        tail = events.get_events_by_index(max(n - _EXTENT_SAMPLE, 0), n - 1)
        x = np.concatenate([head["x"], tail["x"]])
        y = np.concatenate([head["y"], tail["y"]])
        outside = ~in_image(x, y, self.height, self.width)
        if len(x) and outside.mean() > MAX_OUTSIDE_SHARE:
            raise DatasetFormatError(
                self.events_path,
                f"{outside.mean():.0%} of events lie outside the {self.height}x{self.width} flow "
                f"maps (x up to {x.max()}, y up to {y.max()}): events and flow come from "
                f"different sensor sizes",
            )


class _FlowFileDecoder(LayoutDecoder):
    """A layout whose flow maps sit in one HDF5 file, held open per process."""

    _flow_h5: h5py.File | None = None

    def open(self) -> None:
        self._flow_h5 = open_h5(self.flow_path)

    def close(self) -> None:
        if self._flow_h5 is not None:
            self._flow_h5.close()
        self._flow_h5 = None

    def __getstate__(self) -> dict[str, Any]:
        # h5py handles cannot be pickled (spawned DataLoader workers pickle the dataset).
        state = dict(self.__dict__)
        state.pop("_flow_h5", None)
        return state


class LayoutC(_FlowFileDecoder):
    """Layout C: events.h5 + flow.h5 holding flow/forward, valid and the window times."""

    layout = "C"
    files = "events.h5 + flow.h5"
    events_files = ("events.h5",)
    flow_file = "flow.h5"

    def _read_flow_metadata(self) -> int:
        path = self.flow_path
        with open_h5(path) as f:
            flow = _dataset(f, "flow/forward", path)
            _check_flow_shape(flow.shape, path, flow.name)
            num, self.height, self.width = flow.shape[:3]
            valid = _dataset(f, "flow/valid", path, required=False)
            if valid is not None:
                if valid.shape[0] != num:
                    raise DatasetFormatError(
                        path, f"flow/valid holds {valid.shape[0]} maps but flow/forward holds {num}"
                    )
                if valid.shape not in ((num, self.height, self.width, 1), (num, self.height, self.width)):
                    raise DatasetFormatError(
                        path, f"flow/valid has shape {valid.shape}, expected {(num, self.height, self.width, 1)}"
                    )
            windows = {}
            for name in ("event_start", "event_end", "frame_event_start", "frame_event_end"):
                dset = _dataset(f, f"flow/{name}", path, required=not name.startswith("frame"))
                if dset is not None:
                    if dset.shape != (num,):
                        raise DatasetFormatError(
                            path, f"flow/{name} has shape {dset.shape}, expected ({num},) like flow/forward"
                        )
                    windows[name] = dset[:].astype(np.int64)
        self._stored_windows = np.stack([windows["event_start"], windows["event_end"]], axis=1)
        has_index = ["frame_event_start" in windows, "frame_event_end" in windows]
        if all(has_index):
            self.index_windows = np.stack([windows["frame_event_start"], windows["frame_event_end"]], axis=1)
        elif any(has_index):
            raise DatasetFormatError(path, "has only one of flow/frame_event_start and flow/frame_event_end")
        return num

    def _window_times(self, num_maps: int, events: EventSlicer) -> np.ndarray:
        return self._stored_windows  # flow/event_start, flow/event_end

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        valid = self._flow_h5.get("flow/valid")
        return _split_flow(self._flow_h5["flow/forward"][i], None if valid is None else valid[i])


class LayoutB(_FlowFileDecoder):
    """Layout B: events.h5 (or events_left/events.h5) + forward_flow/flow_gt.h5 [N,H,W,2|3]."""

    layout = "B"
    files = "events.h5 (or events_left/events.h5) + forward_flow/flow_gt.h5"
    events_files = ("events.h5", "events_left/events.h5")
    flow_file = "forward_flow/flow_gt.h5"

    def _read_flow_metadata(self) -> int:
        with open_h5(self.flow_path) as f:
            flow = _dataset(f, "flow", self.flow_path)
            _check_flow_shape(flow.shape, self.flow_path, flow.name)
            num, self.height, self.width = flow.shape[:3]
        return num

    def _window_times(self, num_maps: int, events: EventSlicer) -> np.ndarray:
        return frame_windows(self.seq_dir, num_maps, self.events_path, events)

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return _split_flow(self._flow_h5["flow"][i], None)


class LayoutA(LayoutDecoder):
    """Layout A: events_left/events.h5 + forward_flow/000000.npy, ... [H,W,3], one file per window."""

    layout = "A"
    files = "events_left/events.h5 + forward_flow/000000.npy, 000001.npy, ..."
    events_files = ("events_left/events.h5",)
    flow_file = "forward_flow"

    @classmethod
    def _has_flow(cls, flow: Path) -> bool:
        return any(flow.glob("*.npy"))  # a folder of .npy maps

    def _read_flow_metadata(self) -> int:
        self._npy_files = sorted(self.flow_path.glob("*.npy"))
        expected = [f"{k:06d}.npy" for k in range(len(self._npy_files))]
        for file, name in zip(self._npy_files, expected, strict=True):
            if file.name != name:
                raise DatasetFormatError(
                    self.flow_path,
                    f"flow maps not numbered 000000.npy onwards without gaps: expected {name}, found {file.name}",
                )
        path = self._npy_files[0]
        try:
            shape = np.load(path, mmap_mode="r").shape  # reads the header only
        except (OSError, ValueError) as err:
            raise DatasetFormatError(path, f"cannot read as .npy ({err})") from err
        if len(shape) != 3 or shape[-1] not in (2, 3):
            raise DatasetFormatError(path, f"flow map has shape {shape}, expected [H,W,3] (u,v,valid)")
        self.height, self.width = shape[:2]
        self._map_shape = shape
        return len(self._npy_files)

    def _window_times(self, num_maps: int, events: EventSlicer) -> np.ndarray:
        return frame_windows(self.seq_dir, num_maps, self.events_path, events)

    def open(self) -> None:
        pass  # nothing held: read_flow loads one .npy file per call

    def close(self) -> None:
        pass

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        path = self._npy_files[i]
        raw = np.load(path)
        if raw.shape != self._map_shape:
            raise DatasetFormatError(
                path, f"flow map has shape {raw.shape}, expected {self._map_shape} like 000000.npy"
            )
        return _split_flow(raw, None)


DECODERS: tuple[type[LayoutDecoder], ...] = (LayoutC, LayoutB, LayoutA)  # newest first
LAYOUT_FILES = {cls.layout: cls.files for cls in DECODERS}


def find_layout(seq_dir: Path) -> tuple[type[LayoutDecoder], Path, Path]:
    """(decoder class, events file, flow file or folder) of the newest layout ``seq_dir`` matches.

    DatasetFormatError listing each layout's files when none matches.
    """
    for cls in DECODERS:
        found = cls.find(seq_dir)
        if found is not None:
            return cls, *found
    expected = "; ".join(f"layout {k}: {v}" for k, v in LAYOUT_FILES.items())
    raise DatasetFormatError(seq_dir, f"matches no BlinkSim layout (expected {expected})")


def frame_windows(seq_dir: Path, num_windows: int, events_path: Path, events: EventSlicer) -> np.ndarray:
    """[N, 2] window times of layouts A and B: frame k at k / fps, else the event span cut evenly.

    The fps comes from ``seq_dir/config.yaml`` when it gives one; ``events`` is
    the open ``events_path``.
    """
    config_path = seq_dir / "config.yaml"
    config = _read_config(config_path)
    fps = config.get("fps")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
            raise DatasetFormatError(config_path, f"fps must be a positive number, got {fps!r}")
        duration = config.get("duration")
        if isinstance(duration, (int, float)) and num_windows / fps > duration + 0.5 / fps:
            logger.warning(
                "%s: %d flow maps at %s fps outlast the configured duration %s s",
                config_path,
                num_windows,
                fps,
                duration,
            )
        edges = np.round(np.arange(num_windows + 1) * 1e6 / fps).astype(np.int64)
    else:
        if events.num_events == 0:
            raise DatasetFormatError(
                events_path,
                "holds no events and no config.yaml gives fps, so the flow windows cannot be timed",
            )
        t_first, t_last = events.time_range()
        edges = np.linspace(t_first, t_last, num_windows + 1).round().astype(np.int64)
        edges[-1] = t_last + 1  # windows are half-open; keep the last event
    return np.stack([edges[:-1], edges[1:]], axis=1)


def _check_flow_shape(shape: tuple[int, ...], path: Path, name: str) -> None:
    if len(shape) != 4 or shape[-1] not in (2, 3):
        raise DatasetFormatError(path, f"{name} has shape {shape}, expected [N,H,W,2] or [N,H,W,3]")


def _dataset(f: h5py.File, name: str, path: Path, required: bool = True) -> h5py.Dataset | None:
    dset = f.get(name)
    if dset is None and not required:
        return None
    if not isinstance(dset, h5py.Dataset):
        raise DatasetFormatError(path, f"missing dataset '{name}'")
    return dset


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DatasetFormatError(path, f"is not valid YAML ({' '.join(str(err).split())})") from err
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise DatasetFormatError(path, f"expected a mapping, got {type(config).__name__}")
    return config


def _split_flow(raw: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """[H,W,2|3] flow (+ optional validity) -> (uv [2,H,W] float32, valid [H,W] bool)."""
    uv = np.asarray(raw[..., :2], dtype=np.float32)
    ok = np.ones(uv.shape[:2], dtype=bool)
    if raw.shape[-1] == 3:
        ok &= raw[..., 2] > 0  # NaN compares False: invalid
    if valid is not None:
        ok &= valid.reshape(ok.shape) != 0
    finite = np.isfinite(uv).all(axis=-1)
    ok &= finite
    uv = np.where(finite[..., None], uv, np.float32(0.0))
    return np.ascontiguousarray(uv.transpose(2, 0, 1)), ok
