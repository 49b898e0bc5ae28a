"""Render a model's predictions on one sequence: one PNG per flow window, optionally an MP4.

Each picture is events | ground truth | prediction | colour-wheel legend | EPE |
EPE colour bar (see ``snn.evaluation.flow_viz.render_panels``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from snn.evaluation.flow_viz import render_panels

logger = logging.getLogger(__name__)


def parse_frames(text: str | None, num_windows: int) -> range:
    """``"a:b"`` (windows a..b-1), ``"a:"``, ``":b"`` or ``"a"`` -> the window indices to draw."""
    if text is None:
        return range(num_windows)
    start_s, sep, stop_s = text.partition(":")
    try:
        start = int(start_s) if start_s.strip() else 0
        stop = (int(stop_s) if stop_s.strip() else num_windows) if sep else start + 1
    except ValueError:
        raise ValueError(f"--frames {text!r}: expected a:b with integers, e.g. 0:10") from None
    if not 0 <= start < stop <= num_windows:
        raise ValueError(
            f"--frames {text!r}: the sequence has windows 0..{num_windows - 1}, "
            f"so a:b must satisfy 0 <= a < b <= {num_windows}"
        )
    return range(start, stop)


class VideoSink:
    """MP4 writer (mp4v) that opens on the first frame, when the frame size is known."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.writer = path, fps, None

    def add(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            h, w = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: cannot open an mp4v video writer (OpenCV without that codec?)")
        self.writer.write(np.ascontiguousarray(rgb[..., ::-1]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


@torch.no_grad()
def visualize_sequence(
    model: nn.Module,
    dataset: Dataset,
    name: str,
    output_dir: Path,
    frames: range,
    device: torch.device,
    arrows: bool = False,
    video: bool = False,
    fps: float = 5.0,
    max_flow: float | None = None,
) -> list[Path]:
    """Write ``<name>_<window>.png`` for each window of ``frames`` (and ``<name>.mp4``); returns the paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    sink = VideoSink(output_dir / f"{name}.mp4", fps) if video else None
    written = []
    try:
        for i in tqdm(frames, desc=f"render {name}", leave=False, dynamic_ncols=True):
            sample = dataset[i]
            pred = model(sample["events"][None].to(device))[0].float().cpu()
            img = render_panels(
                sample["events"],
                sample["flow"],
                pred,
                sample["valid"],
                arrows=arrows,
                max_flow=max_flow,
                caption=f"{name}  window {i}",
            )
            path = output_dir / f"{name}_{i:05d}.png"
            if not cv2.imwrite(str(path), img[..., ::-1]):
                raise OSError(f"{path}: could not write the image")
            written.append(path)
            if sink is not None:
                sink.add(img)
    finally:
        if sink is not None:
            sink.close()
    if sink is not None:
        written.append(sink.path)
    logger.info("wrote %d pictures%s to %s", len(frames), " and a video" if video else "", output_dir)
    return written
