"""A tiny MVSEC recording written here: events [N, 4] in seconds, frame times, ground-truth .npz.

Grayscale frames every 50 ms, ground truth every 100 ms with constant maps: u = 2, 4, 1 px per
interval and v = 0, except pixel (row 2, col 3) of the first map, which has none (0, 0).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

H, W = 6, 10
T0 = 1000.0  # s
FRAME_TIMES = T0 + 0.05 * np.arange(7)
GT_TIMES = T0 + 0.1 * np.arange(4)
U_PER_MAP = (2.0, 4.0, 1.0, 0.0)
EVENTS = np.array(  # x, y, t (s), p
    [[1, 1, T0 + 0.01, 1], [2, 2, T0 + 0.06, -1], [9, 5, T0 + 0.12, 1], [3, 4, T0 + 0.13, -1]], np.float64
)


def write_mvsec_root(root: Path, name: str = "indoor_flying1", height: int = H, compressed: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / f"{name}_data.hdf5", "w") as f:
        f["davis/left/events"] = EVENTS
        f["davis/left/image_raw_ts"] = FRAME_TIMES
    u = np.stack([np.full((height, W), value) for value in U_PER_MAP])
    u[0, 2, 3] = 0.0
    save = np.savez_compressed if compressed else np.savez
    save(root / f"{name}_gt_flow_dist.npz", timestamps=GT_TIMES, x_flow_dist=u, y_flow_dist=np.zeros_like(u))
    return root
