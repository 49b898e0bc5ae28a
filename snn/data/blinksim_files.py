"""File-level helpers of the BlinkSim layout decoders: flow files, .npy maps, config.yaml, window times.

Each checks what it reads and fails with a ``DatasetFormatError`` naming the file
(docs/formats.md, section 2); ``snn.data.blinksim_layouts`` composes them per layout.
"""

from __future__ import annotations

import logging
import math
import tokenize
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from snn.data.errors import DatasetFormatError
from snn.data.events import EventSlicer

logger = logging.getLogger(__name__)

# Bytes of flow maps read at once when counting valid pixels: bounds the memory
# the count takes whatever the number and size of the maps.
COUNT_CHUNK_BYTES = 32 << 20
# Window times of layouts A and B must stay within this many us (as event times do).
MAX_WINDOW_END_US = 2**62


def frame_windows(seq_dir: Path, num_windows: int, events_path: Path, events: EventSlicer) -> np.ndarray:
    """[N, 2] window times of layouts A and B: frame k at k / fps, else the event span cut evenly.

    The fps comes from ``seq_dir/config.yaml`` when it gives one; ``events`` is
    the open ``events_path``.
    """
    config_path = seq_dir / "config.yaml"
    config = read_config(config_path)
    fps = config.get("fps")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < as_float(fps) < math.inf:
            raise DatasetFormatError(config_path, f"fps must be a positive finite number, got {fps!r}")
        rate = float(fps)
        if num_windows * 1e6 / rate > MAX_WINDOW_END_US:
            raise DatasetFormatError(config_path, f"fps {fps!r} is too low: {num_windows} windows outlast 2^62 us")
        duration = config.get("duration")
        if isinstance(duration, (int, float)) and num_windows / rate > duration + 0.5 / rate:
            logger.warning(
                "%s: %d flow maps at %s fps outlast the configured duration %s s",
                config_path,
                num_windows,
                fps,
                duration,
            )
        edges = np.round(np.arange(num_windows + 1) * 1e6 / rate).astype(np.int64)
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


def as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float64
        return math.inf


def check_flow_shape(flow: h5py.Dataset, path: Path) -> None:
    shape = flow.shape
    if shape is None or len(shape) != 4 or shape[-1] not in (2, 3):
        raise DatasetFormatError(path, f"{flow.name} has shape {shape}, expected [N,H,W,2] or [N,H,W,3]")
    if 0 in shape[1:3]:
        raise DatasetFormatError(path, f"{flow.name} has shape {shape}: its maps hold no pixel")
    check_dtype(flow, path, "biuf", "numbers")


def check_dtype(dset: h5py.Dataset, path: Path, kinds: str, expected: str) -> None:
    if dset.dtype.kind not in kinds:
        raise DatasetFormatError(path, f"{dset.name} has dtype {dset.dtype}, expected {expected}")


def window_chunks(flow: h5py.Dataset, max_bytes: int | None = None) -> list[slice]:
    """Slices of whole windows covering ``flow`` [N, ...], each at most ``max_bytes`` of it (one window at least).

    Aligned to the dataset's HDF5 chunks along N, so no compressed chunk is decoded twice.
    """
    max_bytes = COUNT_CHUNK_BYTES if max_bytes is None else max_bytes
    num = flow.shape[0]
    window_bytes = max(int(np.prod(flow.shape[1:], dtype=np.int64)) * flow.dtype.itemsize, 1)
    step = max(max_bytes // window_bytes, 1)
    if flow.chunks is not None and step > flow.chunks[0]:
        step -= step % flow.chunks[0]
    return [slice(i, min(i + step, num)) for i in range(0, num, step)]


@contextmanager
def open_npy(path: Path) -> Iterator[np.ndarray]:
    """A .npy flow map memory-mapped (read on access; copy what you keep), or DatasetFormatError naming it.

    Mapping reads the header only and checks the file holds the data it announces,
    so a damaged header never makes numpy allocate what it claims.
    """
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as err:
        # numpy parses the header with Python's tokenizer, whose errors it does not wrap.
        raise DatasetFormatError(path, f"cannot read as .npy ({' '.join(str(err).split())})") from err
    if not isinstance(mapped, np.ndarray):  # np.load gave a zip archive (.npz) back
        mapped.close()
        raise DatasetFormatError(path, "is an .npz archive, not a single .npy array")
    yield mapped  # the mapping closes when the last reference to it goes


def h5_dataset(f: h5py.File, name: str, path: Path, required: bool = True) -> h5py.Dataset | None:
    dset = f.get(name)
    if dset is None and not required:
        return None
    if not isinstance(dset, h5py.Dataset):
        raise DatasetFormatError(path, f"missing dataset '{name}'")
    return dset


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"is not valid YAML ({' '.join(str(err).split())})") from err
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise DatasetFormatError(path, f"expected a mapping, got {type(config).__name__}")
    return config


def flow_validity(raw: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uv float32 [..., 2], finite [...], valid [...] bool) of flow maps [..., H, W, 2|3] (docs/formats.md, section 3).

    ``valid`` is layout C's flow/valid for the same maps ([..., H, W] or [..., H, W, 1])
    or None. The one definition of a valid pixel, shared by ``read_flow`` and
    ``count_valid_pixels``: u and v finite as float32, the third channel > 0 when
    there is one (NaN is not), flow/valid non-zero when given.
    """
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, hence invalid
        uv = np.asarray(raw[..., :2], dtype=np.float32)
    finite = np.isfinite(uv[..., 0]) & np.isfinite(uv[..., 1])  # 15x faster than .all(axis=-1)
    ok = finite
    if raw.shape[-1] == 3:
        ok = ok & (raw[..., 2] > 0)  # NaN compares False: invalid
    if valid is not None:
        ok = ok & (valid.reshape(ok.shape) != 0)
    return uv, finite, ok


def split_flow(raw: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """[H,W,2|3] flow (+ optional validity) -> (uv [2,H,W] float32, valid [H,W] bool)."""
    uv, finite, ok = flow_validity(raw, valid)
    uv = np.where(finite[..., None], uv, np.float32(0.0))
    return np.ascontiguousarray(uv.transpose(2, 0, 1)), ok
