"""Writers for tiny event/flow files in every on-disk layout the readers accept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

HEIGHT, WIDTH = 6, 8
FPS = 10  # frame k at k * 100 ms
WINDOW_US = 1_000_000 // FPS


def write_events_h5(
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    ms_to_idx: bool = True,
    t_offset: int | None = None,
) -> None:
    """events/{x,y,t,p} with the dtypes of docs/formats.md (section 1), plus optional ms_to_idx / t_offset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.asarray(t, dtype=np.int64)
    with h5py.File(path, "w") as f:
        f["events/x"] = np.asarray(x, dtype=np.uint16)
        f["events/y"] = np.asarray(y, dtype=np.uint16)
        f["events/t"] = t
        f["events/p"] = np.asarray(p, dtype=np.uint8)
        if ms_to_idx:
            last_ms = int(t[-1]) // 1000 + 1 if len(t) else 0
            marks = np.arange(last_ms + 1, dtype=np.int64) * 1000
            f["events/ms_to_idx"] = np.searchsorted(t, marks, side="left").astype(np.uint64)
        if t_offset is not None:
            f["t_offset"] = np.int64(t_offset)


def make_events(num_windows: int, per_window: int, seed: int) -> dict[str, np.ndarray]:
    """Sorted random events inside the image covering ``num_windows`` frame intervals."""
    rng = np.random.default_rng(seed)
    n = num_windows * per_window
    return {
        "x": rng.integers(0, WIDTH, n),
        "y": rng.integers(0, HEIGHT, n),
        "t": np.sort(rng.integers(0, num_windows * WINDOW_US, n)),
        "p": rng.integers(0, 2, n),
    }


def write_sequence_files(
    root: Path,
    name: str,
    layout: str,
    num_windows: int = 3,
    per_window: int = 20,
    config: bool = True,
    frame_indices: bool = True,
    events: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write sequence ``root/name`` in layout 'A', 'B' or 'C'; return what was written.

    The returned dict holds ``dir``, ``events`` (x, y, t, p), ``flow`` [N,H,W,2]
    as written (one NaN included), ``valid`` [N,H,W] bool as written,
    ``windows`` [N, 2] (start, end) microseconds, ``height`` and ``width``.
    """
    rng = np.random.default_rng(seed + 1)
    seq = root / name
    seq.mkdir(parents=True, exist_ok=True)
    events = make_events(num_windows, per_window, seed) if events is None else events
    flow = rng.normal(0.0, 3.0, (num_windows, HEIGHT, WIDTH, 2)).astype(np.float32)
    flow[min(1, num_windows - 1), 2, 3, 0] = np.nan
    valid = rng.random((num_windows, HEIGHT, WIDTH)) > 0.3
    edges = np.arange(num_windows + 1, dtype=np.int64) * WINDOW_US
    windows = np.stack([edges[:-1], edges[1:]], axis=1)

    if layout == "C":
        write_events_h5(seq / "events.h5", **events)
        t = events["t"]
        with h5py.File(seq / "flow.h5", "w") as f:
            f["flow/forward"] = flow
            f["flow/valid"] = valid[..., None].astype(np.uint8)
            f["flow/event_start"] = windows[:, 0]
            f["flow/event_end"] = windows[:, 1]
            if frame_indices:
                f["flow/frame_event_start"] = np.searchsorted(t, windows[:, 0]).astype(np.int64)
                f["flow/frame_event_end"] = np.searchsorted(t, windows[:, 1]).astype(np.int64) - 1
    elif layout == "B":
        write_events_h5(seq / "events_left" / "events.h5", **events)
        (seq / "forward_flow").mkdir()
        with h5py.File(seq / "forward_flow" / "flow_gt.h5", "w") as f:
            f["flow"] = np.concatenate([flow, valid[..., None].astype(np.float32)], axis=-1)
    elif layout == "A":
        write_events_h5(seq / "events_left" / "events.h5", ms_to_idx=False, **events)
        (seq / "forward_flow").mkdir()
        for i in range(num_windows):
            uvv = np.concatenate([flow[i], valid[i, ..., None].astype(np.float32)], axis=-1)
            np.save(seq / "forward_flow" / f"{i:06d}.npy", uvv)
    else:
        raise ValueError(layout)
    if config and layout in "AB":
        (seq / "config.yaml").write_text(yaml.safe_dump({"fps": FPS, "duration": num_windows / FPS}))
    return {
        "dir": seq,
        "events": events,
        "flow": flow,
        "valid": valid,
        "windows": windows,
        "height": HEIGHT,
        "width": WIDTH,
    }


@pytest.fixture
def write_sequence() -> Callable[..., dict[str, Any]]:
    """The sequence writer, as a fixture so tests ask for it by name."""
    return write_sequence_files


@pytest.fixture
def write_events() -> Callable[..., None]:
    """The events.h5 writer."""
    return write_events_h5
