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

from snn.data.blinksim_files import (
    as_float,
    check_dtype,
    check_flow_shape,
    flow_validity,
    frame_windows,
    h5_dataset,
    open_npy,
    read_config,
    split_flow,
    window_chunks,
)
from snn.data.errors import DatasetFormatError, reading
from snn.data.events import EventSlicer, EventWindow, in_image, open_h5

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
            (int64 [N, 2], absolute microseconds, half-open),
            ``index_windows`` (int64 [N, 2] first and last event index, end
            inclusive, or None to slice the events by time) and the event counts
            of ``_count_window_events`` are set.
        ``open()``: opens this process's file handles. Call it once per process
            (after a fork too): handles inherited from another process are
            replaced, not closed.
        ``read_flow(i)``: window i's flow as (uv float32 [2, H, W] in pixels,
            valid bool [H, W]); call :meth:`open` first.
        ``count_valid_pixels()``: how many pixels, over all windows, ``read_flow``
            marks valid; opens and closes the flow file(s) itself and reads a
            bounded chunk of windows at a time.
        ``close()``: closes the handles :meth:`open` opened.
    A decoder pickles without its handles.

    A subclass sets ``layout`` (its name, e.g. "C"), ``files`` (what it expects,
    as error messages list it), ``events_files`` and ``flow_file`` (what the
    default :meth:`find` looks for; override :meth:`_has_flow` or :meth:`find`
    for other tests), and implements ``_read_flow_metadata``, ``_window_times``,
    ``open``, ``read_flow``, ``count_valid_pixels`` and ``close``.
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
        with self.event_reader() as events:
            self._check_events(events)
            self.time_windows: np.ndarray = self._window_times(num_maps, events)
            self._count_window_events(events)

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
    def count_valid_pixels(self) -> int:
        """Pixels valid in ``read_flow``'s sense, summed over all N windows."""

    @abstractmethod
    def open(self) -> None:
        """Open this process's handles, replacing (not closing) any it holds."""

    @abstractmethod
    def close(self) -> None:
        """Close the handles :meth:`open` opened."""

    has_ground_truth: ClassVar[bool] = True  # False: a test release, whose flow maps are all invalid

    def window_name(self, i: int) -> str:
        """The name window i's prediction is written under (DSEC's file index, else the index)."""
        return f"{i:06d}"

    def event_reader(self) -> EventSlicer:
        """A reader of ``events_path`` (anything with EventSlicer's methods; MVSEC has its own)."""
        return EventSlicer(self.events_path)

    def map_events(self, events: EventWindow) -> EventWindow:
        """The window's events on the flow maps' pixel grid (as stored, unless overridden)."""
        return events

    @property
    def num_windows(self) -> int:
        """N, the number of flow maps and of windows."""
        return len(self.time_windows)

    def _count_window_events(self, events: EventSlicer) -> None:
        """Set ``num_events`` (in the file), ``event_span`` (their first and last absolute time, None
        without events) and ``num_window_events``: the events the windows take, by index the sum of
        their ranges, by time those from the first window's start to the last one's end (two searches).
        0 with events in the file means the windows miss them all: a wrong time unit or t_offset."""
        self.num_events = int(events.num_events)
        self.event_span = events.time_range() if self.num_events else None
        if self.index_windows is not None:
            starts, ends = self.index_windows.T
            self.num_window_events = int(np.clip(ends - starts + 1, 0, None).sum())
        elif not len(self.time_windows) or not self.num_events:
            self.num_window_events = 0
        else:
            i0, i1 = events.index_range(int(self.time_windows[:, 0].min()), int(self.time_windows[:, 1].max()))
            self.num_window_events = i1 - i0

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
        with open_h5(path) as f, reading(path, "the flow metadata"):
            flow = h5_dataset(f, "flow/forward", path)
            check_flow_shape(flow, path)
            num, self.height, self.width = flow.shape[:3]
            valid = h5_dataset(f, "flow/valid", path, required=False)
            if valid is not None:
                if not valid.shape or valid.shape[0] != num:
                    raise DatasetFormatError(
                        path, f"flow/valid holds {(valid.shape or (0,))[0]} maps but flow/forward holds {num}"
                    )
                if valid.shape not in ((num, self.height, self.width, 1), (num, self.height, self.width)):
                    raise DatasetFormatError(
                        path, f"flow/valid has shape {valid.shape}, expected {(num, self.height, self.width, 1)}"
                    )
                check_dtype(valid, path, "biuf", "bool or numbers")
            windows = {}
            for name in ("event_start", "event_end", "frame_event_start", "frame_event_end"):
                dset = h5_dataset(f, f"flow/{name}", path, required=not name.startswith("frame"))
                if dset is not None:
                    if dset.shape != (num,):
                        raise DatasetFormatError(
                            path, f"flow/{name} has shape {dset.shape}, expected ({num},) like flow/forward"
                        )
                    check_dtype(dset, path, "iu", "integers")
                    values = dset[:]
                    if values.dtype == np.uint64 and num and values.max() > np.iinfo(np.int64).max:
                        raise DatasetFormatError(path, f"flow/{name} holds values beyond int64")
                    windows[name] = values.astype(np.int64)
        self._stored_windows = np.stack([windows["event_start"], windows["event_end"]], axis=1)
        inverted = np.flatnonzero(windows["event_end"] < windows["event_start"])
        if len(inverted):
            i = int(inverted[0])
            raise DatasetFormatError(
                path,
                f"window {i} ends before it starts (flow/event_start {windows['event_start'][i]}, "
                f"flow/event_end {windows['event_end'][i]}); {len(inverted)} window(s) so",
            )
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
        with reading(self.flow_path, f"flow map {i}"):
            return split_flow(self._flow_h5["flow/forward"][i], None if valid is None else valid[i])

    def count_valid_pixels(self) -> int:
        count = 0
        with open_h5(self.flow_path) as f, reading(self.flow_path, "the flow maps"):
            flow, valid = f["flow/forward"], f.get("flow/valid")
            for part in window_chunks(flow):
                flags = None if valid is None else valid[part]
                if flags is not None and not np.any(flags != 0):
                    continue  # no pixel flagged valid: no need to read the flow
                count += int(np.count_nonzero(flow_validity(flow[part], flags)[2]))
        return count


class LayoutB(_FlowFileDecoder):
    """Layout B: events.h5 (or events_left/events.h5) + forward_flow/flow_gt.h5 [N,H,W,2|3]."""

    layout = "B"
    files = "events.h5 (or events_left/events.h5) + forward_flow/flow_gt.h5"
    events_files = ("events.h5", "events_left/events.h5")
    flow_file = "forward_flow/flow_gt.h5"

    def _read_flow_metadata(self) -> int:
        with open_h5(self.flow_path) as f, reading(self.flow_path, "the flow metadata"):
            flow = h5_dataset(f, "flow", self.flow_path)
            check_flow_shape(flow, self.flow_path)
            num, self.height, self.width = flow.shape[:3]
        return num

    def _window_times(self, num_maps: int, events: EventSlicer) -> np.ndarray:
        return frame_windows(self.seq_dir, num_maps, self.events_path, events)

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        with reading(self.flow_path, f"flow map {i}"):
            return split_flow(self._flow_h5["flow"][i], None)

    def count_valid_pixels(self) -> int:
        count = 0
        with open_h5(self.flow_path) as f, reading(self.flow_path, "the flow maps"):
            flow = f["flow"]
            for part in window_chunks(flow):
                count += int(np.count_nonzero(flow_validity(flow[part], None)[2]))
        return count


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
        with open_npy(path) as first:
            shape = first.shape
            if len(shape) != 3 or shape[-1] not in (2, 3) or 0 in shape:
                raise DatasetFormatError(path, f"flow map has shape {shape}, expected [H,W,3] (u,v,valid)")
            if first.dtype.kind not in "biuf":
                raise DatasetFormatError(path, f"flow map has dtype {first.dtype}, expected numbers")
        self.height, self.width = shape[:2]
        self._map_shape = shape
        return len(self._npy_files)

    def _window_times(self, num_maps: int, events: EventSlicer) -> np.ndarray:
        return frame_windows(self.seq_dir, num_maps, self.events_path, events)

    def open(self) -> None:
        pass  # nothing held: read_flow loads one .npy file per call

    def close(self) -> None:
        pass

    def _load_map(self, i: int) -> np.ndarray:
        """Flow map i, checked to have the first map's shape and a numeric dtype."""
        path = self._npy_files[i]
        with open_npy(path) as mapped:
            if mapped.shape != self._map_shape:
                raise DatasetFormatError(
                    path, f"flow map has shape {mapped.shape}, expected {self._map_shape} like 000000.npy"
                )
            if mapped.dtype.kind not in "biuf":
                raise DatasetFormatError(path, f"flow map has dtype {mapped.dtype}, expected numbers")
            try:
                return np.array(mapped)
            except OSError as err:
                raise DatasetFormatError(path, f"cannot read as .npy ({err})") from err

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return split_flow(self._load_map(i), None)

    def count_valid_pixels(self) -> int:
        return sum(int(np.count_nonzero(flow_validity(self._load_map(i), None)[2])) for i in range(self.num_windows))


class EventsOnly(LayoutDecoder):
    """A sequence of events without flow labels: events.h5 (events/x, y, t, p, or x, y, t, p at the file's
    root) and, optionally, config.yaml with ``fps`` (windows of 1/fps s; default ``DEFAULT_FPS``) and
    ``height``, ``width`` (default: the largest event coordinates). Such a sequence trains and is scored
    without ground truth (``loss: contrast``, the flow warp loss); every flow map reads as invalid.

    Taken only where no flow file or folder of the layouts above is there at all: a labelled sequence
    whose flow is broken stays an error.
    """

    layout = "events only"
    files = "events.h5 (or events_left/events.h5) without flow, optionally config.yaml (fps, height, width)"
    events_files = ("events.h5", "events_left/events.h5")
    flow_file = "config.yaml"  # what flow_path names: where the window length comes from
    has_ground_truth = False
    DEFAULT_FPS = 30.0  # the synthetic set's frame rate, so windows as long as those a default model saw

    @classmethod
    def find(cls, seq_dir: Path) -> tuple[Path, Path] | None:
        # The top entry of every labelled layout's flow (flow.h5, forward_flow/), and a flow/ folder of any kind.
        labelled = {Path(decoder.flow_file).parts[0] for decoder in DECODERS} | {"flow"}
        if any((seq_dir / name).exists() for name in labelled):
            return None
        for name in cls.events_files:
            if (seq_dir / name).is_file():
                return seq_dir / name, seq_dir / cls.flow_file
        return None

    def _read_flow_metadata(self) -> int:
        config = read_config(self.flow_path)
        fps = config.get("fps", self.DEFAULT_FPS)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < as_float(fps) < 1e6:
            raise DatasetFormatError(self.flow_path, f"fps must be a positive number below 1e6, got {fps!r}")
        self.window_us = 1e6 / float(fps)
        size = [config.get("height"), config.get("width")]
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1) for v in size):
            raise DatasetFormatError(self.flow_path, f"height and width must be positive integers, got {size}")
        with self.event_reader() as events:
            if events.num_events == 0:
                raise DatasetFormatError(self.events_path, "holds no events, and no flow to say otherwise")
            if None in size:
                size = [v if v is not None else extent + 1 for v, extent in zip(size, _largest_yx(events), strict=True)]
                logger.info("%s: no height/width in config.yaml, so %dx%d from its events", self.seq_dir, *size)
            t_first, t_last = events.time_range()
        self.height, self.width = size
        # Windows on the 1/fps grid from time 0, as frame-based layouts time theirs, from the one holding the
        # first event on; the last may be cut short by the end of the recording (by up to half a window).
        self._t0 = int(t_first // self.window_us * self.window_us)
        return max(1, round((t_last - self._t0) / self.window_us))

    def _window_times(self, num_maps: int, events: EventSlicer) -> np.ndarray:
        edges = self._t0 + np.round(np.arange(num_maps + 1) * self.window_us).astype(np.int64)
        return np.stack([edges[:-1], edges[1:]], axis=1)

    def read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((2, self.height, self.width), np.float32), np.zeros((self.height, self.width), bool)

    def count_valid_pixels(self) -> int:
        return 0

    def open(self) -> None:
        pass  # the events are read by the sequence; there is no flow file

    def close(self) -> None:
        pass


def _largest_yx(events: EventSlicer, chunk: int = 1 << 22) -> tuple[int, int]:
    """The largest y and x of all events, read a chunk at a time."""
    y_max = x_max = 0
    for i0 in range(0, events.num_events, chunk):
        part = events.get_events_by_index(i0, min(i0 + chunk, events.num_events) - 1)
        y_max, x_max = max(y_max, int(part["y"].max())), max(x_max, int(part["x"].max()))
    return y_max, x_max


DECODERS: tuple[type[LayoutDecoder], ...] = (LayoutC, LayoutB, LayoutA)  # newest first
LAYOUT_FILES = {cls.layout: cls.files for cls in DECODERS}


def find_layout(seq_dir: Path) -> tuple[type[LayoutDecoder], Path, Path]:
    """(decoder class, events file, flow file or folder) of the newest layout ``seq_dir`` matches; a folder with
    events and no flow at all reads as ``EventsOnly``.

    DatasetFormatError listing each layout's files when none matches.
    """
    for cls in (*DECODERS, EventsOnly):
        found = cls.find(seq_dir)
        if found is not None:
            return cls, *found
    expected = "; ".join(f"layout {k}: {v}" for k, v in LAYOUT_FILES.items())
    raise DatasetFormatError(seq_dir, f"matches no BlinkSim layout (expected {expected})")
