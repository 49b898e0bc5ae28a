"""metrics.csv: one row per epoch for people who grep, kept consistent with the checkpoints across resumes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

CSV_FIELDS = [
    "epoch",
    "train_loss",
    "val_aee",
    "val_outliers",
    "val_1pe",
    "val_3pe",
    "val_zero_flow_aee",
    "lr",
    "epoch_time_s",
    "val_fwl",  # the flow warp loss (snn.evaluation.contrast), with or without ground truth
]


def append_epoch_row(path: Path, row: list) -> None:
    """Add one epoch's row (the header first, in a new file)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        out = csv.writer(f)
        if new:
            out.writerow(CSV_FIELDS)
        out.writerow(row)


def truncate_epoch_rows(path: Path, epochs_done: int) -> None:
    """Drop rows of epochs after ``epochs_done`` (counted from 1): a resumed run writes them again."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= epochs_done]
    if len(kept) < len(rows):
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows(kept)
        os.replace(tmp, path)
