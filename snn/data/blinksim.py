"""Reader for one BlinkSim sequence in any of its three on-disk layouts (FORMATS.md 1).

The layout is detected per sequence, newest first::

    <seq>/                          layout C (newest)
      events.h5                     events/{x,y,t,p}, optional events/ms_to_idx
      flow.h5                       flow/forward          float32 [N,H,W,2]  (u, v) pixels
                                    flow/valid            bool|uint8 [N,H,W,1]
                                    flow/event_start      int64 [N]  window start, us
                                    flow/event_end        int64 [N]  window end, us
                                    flow/frame_event_start, flow/frame_event_end
                                                          int64 [N]  event indices, end
                                                          inclusive (optional)
    <seq>/                          layout B
      events.h5                     (or events_left/events.h5)
      forward_flow/flow_gt.h5       flow [N,H,W,2|3], channel 2 = valid
      config.yaml                   fps, duration (optional)
    <seq>/                          layout A (oldest, BlinkFlow v1)
      events_left/events.h5
      forward_flow/000000.npy ...   float [H,W,3] = (u, v, valid), one per window
      config.yaml                   fps, duration (optional)

Window i covers frame i to i+1. In layouts A and B frame k sits at k / fps
seconds; without an fps the N windows are spread evenly over the events' span.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from snn.data.augment import augment_sample, check_crop_fits
from snn.data.errors import DatasetFormatError
from snn.data.events import EventSlicer, open_h5
from snn.data.representations import events_to_tensor, num_input_channels

logger = logging.getLogger(__name__)

LAYOUT_FILES = {
    "C": "events.h5 + flow.h5",
    "B": "events.h5 (or events_left/events.h5) + forward_flow/flow_gt.h5",
    "A": "events_left/events.h5 + forward_flow/000000.npy, 000001.npy, ...",
}
# A larger share of events outside the flow's image means the events were
# recorded at another resolution; a smaller one is stray events, dropped.
MAX_OUTSIDE_SHARE = 0.05
_EXTENT_SAMPLE = 65536


def _layout_files(seq_dir: Path) -> tuple[str, Path, Path] | None:
    """(layout, events file, flow file or folder) for the newest layout that matches."""
    if (seq_dir / "events.h5").is_file() and (seq_dir / "flow.h5").is_file():
        return "C", seq_dir / "events.h5", seq_dir / "flow.h5"
    flow_gt = seq_dir / "forward_flow" / "flow_gt.h5"
    if flow_gt.is_file():
        for events in (seq_dir / "events.h5", seq_dir / "events_left" / "events.h5"):
            if events.is_file():
                return "B", events, flow_gt
    events_left = seq_dir / "events_left" / "events.h5"
    if events_left.is_file() and any((seq_dir / "forward_flow").glob("*.npy")):
        return "A", events_left, seq_dir / "forward_flow"
    return None


def detect_layout(seq_dir: str | os.PathLike[str]) -> str:
    """'C', 'B' or 'A'; DatasetFormatError listing each layout's files when none matches."""
    found = _layout_files(Path(seq_dir))
    if found is None:
        expected = "; ".join(f"layout {k}: {v}" for k, v in LAYOUT_FILES.items())
        raise DatasetFormatError(seq_dir, f"matches no BlinkSim layout (expected {expected})")
    return found[0]


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


class BlinkSimSequence(Dataset):
    """The flow windows of one BlinkSim sequence.

    Sample ``i`` is a dict: ``events`` float32 [num_bins, C, H, W] (C from the
    representation), ``flow`` float32 [2, H, W] (u, v pixels), ``valid`` and
    ``event_mask`` float32 [1, H, W] of 0/1, ``sequence`` (name), ``index`` (i).
    HDF5 files are opened on the first ``__getitem__`` of each process.
    """

    def __init__(
        self,
        seq_dir: str | os.PathLike[str],
        num_bins: int = 5,
        representation: str = "counts",
        crop_size: int | tuple[int, int] | None = None,
        augment: bool = False,
    ) -> None:
        self.seq_dir = Path(seq_dir)
        self.name = self.seq_dir.name
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        num_input_channels(representation)  # unknown names fail here, not in a worker
        self.num_bins = num_bins
        self.representation = representation
        self.augment = augment
        self.layout = detect_layout(self.seq_dir)
        _, self.events_path, self.flow_path = _layout_files(self.seq_dir)
        self._npy_files: list[Path] = []
        self._index_windows: np.ndarray | None = None  # [N, 2] inclusive event indices
        if self.layout == "A":
            num_windows = self._init_npy_flow()
        else:
            num_windows = self._init_h5_flow()
        self._init_events(num_windows)
        self.crop_size = None if crop_size is None else check_crop_fits(crop_size, self.height, self.width)
        self._slicer: EventSlicer | None = None
        self._flow_h5: h5py.File | None = None
        self._pid: int | None = None
        logger.debug("%s: layout %s, %d windows, %dx%d", self.name, self.layout, len(self), self.height, self.width)

    # -- metadata, read once in __init__ --------------------------------------------------

    def _init_npy_flow(self) -> int:
        self._npy_files = sorted(self.flow_path.glob("*.npy"))
        expected = [f"{k:06d}.npy" for k in range(len(self._npy_files))]
        for file, name in zip(self._npy_files, expected, strict=True):
            if file.name != name:
                raise DatasetFormatError(
                    self.flow_path,
                    f"flow maps not numbered 000000.npy onwards without gaps: expected {name}, found {file.name}",
                )
        shape = self._npy_shape(self._npy_files[0])
        self.height, self.width = shape[:2]
        self._flow_shape = (len(self._npy_files), *shape)
        return len(self._npy_files)

    def _npy_shape(self, path: Path) -> tuple[int, ...]:
        try:
            shape = np.load(path, mmap_mode="r").shape  # reads the header only
        except (OSError, ValueError) as err:
            raise DatasetFormatError(path, f"cannot read as .npy ({err})") from err
        if len(shape) != 3 or shape[-1] not in (2, 3):
            raise DatasetFormatError(path, f"flow map has shape {shape}, expected [H,W,3] (u,v,valid)")
        return shape

    def _init_h5_flow(self) -> int:
        path = self.flow_path
        with open_h5(path) as f:
            flow = _dataset(f, "flow/forward" if self.layout == "C" else "flow", path)
            _check_flow_shape(flow.shape, path, flow.name)
            num, self.height, self.width = flow.shape[:3]
            self._flow_shape = flow.shape
            if self.layout == "B":
                return num
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
        self._time_windows = np.stack([windows["event_start"], windows["event_end"]], axis=1)
        has_index = ["frame_event_start" in windows, "frame_event_end" in windows]
        if all(has_index):
            self._index_windows = np.stack([windows["frame_event_start"], windows["frame_event_end"]], axis=1)
        elif any(has_index):
            raise DatasetFormatError(path, "has only one of flow/frame_event_start and flow/frame_event_end")
        return num

    def _init_events(self, num_windows: int) -> None:
        with EventSlicer(self.events_path) as slicer:
            n = slicer.num_events
            if self._index_windows is not None and len(self._index_windows):
                starts, ends = self._index_windows.T
                # An empty window may end one before it starts (end is inclusive).
                if starts.min() < 0 or ends.max() >= n or (ends < starts - 1).any():
                    raise DatasetFormatError(
                        self.flow_path,
                        f"frame event indices span [{starts.min()}, "
                        f"{ends.max()}] (or end before they start) but {self.events_path} "
                        f"holds {n} events",
                    )
            head = slicer.get_events_by_index(0, min(n, _EXTENT_SAMPLE) - 1)
            tail = slicer.get_events_by_index(max(n - _EXTENT_SAMPLE, 0), n - 1)
            self._check_extent(np.concatenate([head["x"], tail["x"]]), np.concatenate([head["y"], tail["y"]]))
            if self.layout == "C":
                return
            self._time_windows = self._frame_windows(num_windows, slicer)

    def _check_extent(self, x: np.ndarray, y: np.ndarray) -> None:
        outside = (x < 0) | (x >= self.width) | (y < 0) | (y >= self.height)
        if len(x) and outside.mean() > MAX_OUTSIDE_SHARE:
            raise DatasetFormatError(
                self.events_path,
                f"{outside.mean():.0%} of events lie outside the {self.height}x{self.width} flow "
                f"maps (x up to {x.max()}, y up to {y.max()}): events and flow come from "
                f"different sensor sizes",
            )

    def _frame_windows(self, num_windows: int, slicer: EventSlicer) -> np.ndarray:
        """[N, 2] window times for layouts A/B: from config.yaml, else the event span."""
        config_path = self.seq_dir / "config.yaml"
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
            if slicer.num_events == 0:
                raise DatasetFormatError(
                    self.events_path,
                    "holds no events and no config.yaml gives fps, so the flow windows cannot be timed",
                )
            t_first, t_last = slicer.time_range()
            edges = np.linspace(t_first, t_last, num_windows + 1).round().astype(np.int64)
            edges[-1] = t_last + 1  # windows are half-open; keep the last event
        return np.stack([edges[:-1], edges[1:]], axis=1)

    # -- per-process file handles ---------------------------------------------------------

    def _open(self) -> None:
        # A handle inherited through fork is not safe to use: reopen in each process.
        if self._pid == os.getpid():
            return
        self._slicer = EventSlicer(self.events_path)
        if self.layout != "A":
            self._flow_h5 = open_h5(self.flow_path)
        self._pid = os.getpid()

    def close(self) -> None:
        """Close this process's file handles (they reopen on the next access)."""
        if self._pid == os.getpid():
            self._slicer.close()
            if self._flow_h5 is not None:
                self._flow_h5.close()
        self._slicer, self._flow_h5, self._pid = None, None, None

    def __getstate__(self) -> dict[str, Any]:
        # h5py handles cannot be pickled (spawned DataLoader workers pickle the dataset).
        state = dict(self.__dict__)
        state.update(_slicer=None, _flow_h5=None, _pid=None)
        return state

    # -- samples --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._time_windows)

    def _read_flow(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.layout == "A":
            path = self._npy_files[i]
            raw = np.load(path)
            if raw.shape != self._flow_shape[1:]:
                raise DatasetFormatError(
                    path, f"flow map has shape {raw.shape}, expected {self._flow_shape[1:]} like 000000.npy"
                )
            return _split_flow(raw, None)
        if self.layout == "B":
            return _split_flow(self._flow_h5["flow"][i], None)
        valid = self._flow_h5.get("flow/valid")
        return _split_flow(self._flow_h5["flow/forward"][i], None if valid is None else valid[i])

    def _read_events(self, i: int) -> dict[str, np.ndarray]:
        if self._index_windows is not None:
            return self._slicer.get_events_by_index(*(int(v) for v in self._index_windows[i]))
        return self._slicer.get_events(*(int(v) for v in self._time_windows[i]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: window {index} out of range [0, {len(self)})")
        i = index % len(self)
        self._open()
        try:
            events = self._read_events(i)
            flow, valid = self._read_flow(i)
        except OSError as err:
            raise DatasetFormatError(self.seq_dir, f"cannot read window {i} ({err})") from err

        x, y = events["x"], events["y"]
        inside = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
        if not inside.all():
            logger.debug("%s[%d]: dropped %d events outside the image", self.name, i, int((~inside).sum()))
            events = {k: v[inside] for k, v in events.items()}
        hw = self.height * self.width
        hits = np.bincount(events["y"] * self.width + events["x"], minlength=hw) > 0
        t_start, t_end = (int(v) for v in self._time_windows[i])
        tensor = events_to_tensor(
            self.representation,
            events["x"],
            events["y"],
            events["t"],
            events["p"],
            self.num_bins,
            self.height,
            self.width,
            t_start,
            max(t_end, t_start + 1),
        )
        sample = {
            "events": tensor,
            "flow": torch.from_numpy(flow),
            "valid": torch.from_numpy(valid[None].astype(np.float32)),
            "event_mask": torch.from_numpy(hits.reshape(1, *valid.shape).astype(np.float32)),
            "sequence": self.name,
            "index": i,
        }
        if self.crop_size is not None or self.augment:
            sample = augment_sample(sample, self.crop_size, flip=self.augment)
        return sample
