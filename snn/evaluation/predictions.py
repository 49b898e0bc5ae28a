"""Predicted flow written as files: one 16-bit PNG per window in DSEC's upload format.

``<out>/<sequence>/<window>.png``, where a DSEC window is named by its file index
(what the benchmark's upload expects) and any other by its number, 000000 onwards.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from snn.data.dsec import encode_flow_png
from snn.data.loaders import sequences_of


class FlowPngWriter:
    """Called with each evaluated batch and its prediction; writes one PNG per window."""

    def __init__(self, dataset: Dataset, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and any(self.out_dir.iterdir()):
            raise FileExistsError(f"{self.out_dir}: already holds files; give an empty or new folder for predictions")
        self._sequences = {seq.name: seq for seq in sequences_of(dataset)}

    def __call__(self, batch: dict, pred: torch.Tensor) -> None:
        for i, name in enumerate(batch["sequence"]):
            seq = self._sequences[name]
            folder = self.out_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            encode_flow_png(folder / f"{seq.window_name(int(batch['index'][i]))}.png", pred[i].numpy())
