"""A tiny DSEC-Flow release written file by file: Blosc events, a rectify map, flow PNGs by hand."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import hdf5plugin
import numpy as np

H, W = 8, 12
T_OFFSET = 5_000_000  # us: the stored times are relative to it
WINDOWS = np.array([[T_OFFSET + 0, T_OFFSET + 1000], [T_OFFSET + 1000, T_OFFSET + 2000]], np.int64)


def _write_events(path: Path, x, y, t, p) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blosc = hdf5plugin.Blosc(cname="zstd", clevel=5)
    with h5py.File(path, "w") as f:
        for name, values, dtype in (("x", x, np.uint16), ("y", y, np.uint16), ("t", t, np.int64), ("p", p, np.uint8)):
            f.create_dataset(f"events/{name}", data=np.asarray(values, dtype), chunks=True, **blosc)
        f["t_offset"] = np.int64(T_OFFSET)
        ms = np.searchsorted(np.asarray(t), np.arange(0, 3) * 1000)
        f["ms_to_idx"] = ms.astype(np.uint64)  # at the root, as DSEC keeps it


def _write_flow_png(path: Path, u: float, v: float, valid: np.ndarray) -> None:
    """By hand, in OpenCV's BGR order: blue = valid, green = v, red = u."""
    bgr = np.zeros((H, W, 3), np.uint16)
    bgr[..., 0] = valid.astype(np.uint16)
    bgr[..., 1] = np.uint16(v * 128 + 2**15)
    bgr[..., 2] = np.uint16(u * 128 + 2**15)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr)


def write_dsec_root(root: Path) -> Path:
    """A one-sequence DSEC training release under ``root``: two windows of 8x12 frames."""
    seq_events = root / "train_events" / "zurich_city_01_a" / "events" / "left"
    # Window 0: two events at raw (2, 3) and one at (11, 7); window 1: one at (0, 0).
    _write_events(seq_events / "events.h5", [2, 2, 11, 0], [3, 3, 7, 0], [100, 200, 900, 1500], [1, 0, 1, 1])
    # Rectification moves every pixel one column right and keeps its row.
    rect = np.stack(np.meshgrid(np.arange(W, dtype=np.float32) + 1, np.arange(H, dtype=np.float32)), axis=-1)
    with h5py.File(seq_events / "rectify_map.h5", "w") as f:
        f["rectify_map"] = rect
    flow = root / "train_optical_flow" / "zurich_city_01_a" / "flow"
    valid = np.zeros((H, W), bool)
    valid[:4] = True
    _write_flow_png(flow / "forward" / "000002.png", 1.5, -2.25, valid)
    _write_flow_png(flow / "forward" / "000004.png", -0.5, 3.0, ~valid)
    header = "# from_timestamp_us, to_timestamp_us\n"
    (flow / "forward_timestamps.txt").write_text(header + "".join(f"{a}, {b}\n" for a, b in WINDOWS))
    return root


def write_dsec_test_release(root: Path) -> Path:
    """The test release's shape: events and rectify map, window timestamps with file indices, no flow."""
    train = write_dsec_root(root / "train_copy")
    seq = "zurich_city_01_a"
    events = root / "test_events" / seq / "events" / "left"
    events.mkdir(parents=True)
    for name in ("events.h5", "rectify_map.h5"):
        (events / name).write_bytes((train / "train_events" / seq / "events" / "left" / name).read_bytes())
    table = root / "test_forward_flow_timestamps" / f"{seq}.csv"
    table.parent.mkdir(parents=True)
    rows = "".join(f"{a}, {b}, {index}\n" for (a, b), index in zip(WINDOWS, (820, 840), strict=True))
    table.write_text("# from_timestamp_us, to_timestamp_us, file_index\n" + rows)
    return root
