"""Writing a generated sequence in BlinkSim layout C (see docs/formats.md, section 2.3).

::

    <seq>/events.h5    events/x uint16, y uint16, t int64 (us), p uint8 (1 = ON),
                       events/ms_to_idx uint64
    <seq>/flow.h5      flow/forward float32 [N,H,W,2], flow/valid uint8 [N,H,W,1],
                       flow/event_start, flow/event_end int64 (us, window i = [t_i, t_i+1]),
                       flow/frame_event_start, flow/frame_event_end int64 (indices into
                       events/t, end inclusive; an empty window has start = end + 1)
    <seq>/config.yaml  fps, duration (s), height, width, seed
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import yaml

from snn.data.synthetic_events import ms_to_idx


def window_event_indices(t: np.ndarray, start_us: np.ndarray, end_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last (inclusive) index of the events with ``start <= t <= end``, per window.

    An empty window comes out as ``start == end + 1``.
    """
    first = np.searchsorted(t, start_us, side="left").astype(np.int64)
    last = np.searchsorted(t, end_us, side="right").astype(np.int64) - 1
    return first, last


def _put(group: h5py.Group, name: str, data: np.ndarray) -> None:
    # gzip (not lzf) so any HDF5 reader can open the files; level 1 is nearly as small as 9
    # and much faster. track_times=False keeps the files byte-identical across runs.
    compress = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if data.size else {}
    group.create_dataset(name, data=data, track_times=False, **compress)


def write_flow_h5(
    path: Path,
    flow: np.ndarray,
    valid: np.ndarray,
    start_us: np.ndarray,
    end_us: np.ndarray,
    event_indices: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Layout C's flow.h5: ``flow`` [N,H,W,2], ``valid`` [N,H,W], the windows' times (us) and, where
    given, each window's first and last event index (they are optional in the layout)."""
    with h5py.File(path, "w") as f:
        group = f.create_group("flow", track_order=False)
        _put(group, "forward", np.asarray(flow, np.float32))
        _put(group, "valid", np.asarray(valid, np.uint8)[..., None])
        _put(group, "event_start", np.asarray(start_us, np.int64))
        _put(group, "event_end", np.asarray(end_us, np.int64))
        if event_indices is not None:
            _put(group, "frame_event_start", event_indices[0])
            _put(group, "frame_event_end", event_indices[1])


def write_sequence_layout_c(seq_dir: str | Path, seq: dict[str, np.ndarray]) -> None:
    """Write ``seq`` (as ``generate_sequence`` returns it) to ``seq_dir`` in layout C."""
    seq_dir = Path(seq_dir)
    seq_dir.mkdir(parents=True, exist_ok=True)
    t = np.asarray(seq["t"], np.int64)
    frame_times = np.asarray(seq["frame_times_us"], np.int64)
    duration_us = int(frame_times[-1] - frame_times[0])
    flow = np.asarray(seq["flow"], np.float32)
    if flow.ndim != 4 or flow.shape[0] != frame_times.size - 1 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be [N,H,W,2] with N = frames - 1, got {flow.shape}")

    with h5py.File(seq_dir / "events.h5", "w") as f:
        events = f.create_group("events", track_order=False)
        _put(events, "x", np.asarray(seq["x"], np.uint16))
        _put(events, "y", np.asarray(seq["y"], np.uint16))
        _put(events, "t", t)
        _put(events, "p", np.asarray(seq["p"], np.uint8))
        _put(events, "ms_to_idx", ms_to_idx(t, duration_us))

    start_us, end_us = frame_times[:-1], frame_times[1:]
    write_flow_h5(seq_dir / "flow.h5", flow, seq["valid"], start_us, end_us, window_event_indices(t, start_us, end_us))

    height, width = flow.shape[1:3]
    info = {
        "fps": float(seq["fps"]),
        "duration": round(duration_us * 1e-6, 6),  # seconds
        "height": int(height),
        "width": int(width),
        "seed": int(seq["seed"]),
        "num_frames": int(frame_times.size),
        "source": "snn.data.synthetic",
    }
    with open(seq_dir / "config.yaml", "w") as f:
        yaml.safe_dump(info, f, sort_keys=False)
