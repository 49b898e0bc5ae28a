"""Render a model's predictions on one sequence: one PNG per flow window, optionally an MP4 and a GIF.

Each picture is events | ground truth | prediction | colour-wheel legend | EPE |
EPE colour bar (see ``snn.evaluation.flow_viz.render_panels``). The MP4 is H.264 where this
OpenCV can encode it, else mp4v, which browsers do not play; the animated GIF plays everywhere.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
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


H264, MP4V = "avc1", "mp4v"


@contextmanager
def _quiet_stderr():
    """Silence OpenCV's and FFmpeg's own stderr lines (file descriptor 2) for a moment.

    A failed H.264 attempt makes FFmpeg print several "[ERROR] ... Failed to initialize
    VideoWriter" lines straight to the file descriptor, which read like a crash; the fallback
    says what happened in one warning instead.
    """
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to silence
        saved = None
    try:
        if saved is not None:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        cv2.utils.logging.setLogLevel(level)


def _open_writer(path: Path, codec: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """An MP4 writer for frames of ``size`` (w, h) and the codec it uses: H.264 ('avc1'), which
    browsers play, where this OpenCV can encode it, else mp4v (MPEG-4 Part 2) with a warning.

    The opencv-python(-headless) wheels usually have no H.264 encoder.
    """
    with _quiet_stderr():
        writer = _open_writer(path, H264, fps, size)
    if writer.isOpened():
        return writer, H264
    writer.release()
    writer = _open_writer(path, MP4V, fps, size)
    if not writer.isOpened():
        raise OSError(f"{path}: cannot open an MP4 video writer (this OpenCV encodes neither H.264 nor mp4v)")
    logger.warning(
        "%s: this OpenCV has no H.264 encoder, so the video is mp4v, which browsers will not play "
        "(use --gif for an animated GIF that they do)",
        path,
    )
    return writer, MP4V


class VideoSink:
    """MP4 writer that opens on the first frame, when the frame size is known (codec: see
    ``open_video_writer``; ``codec`` is set once it is open)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.writer, self.codec = path, fps, None, None

    def add(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            h, w = rgb.shape[:2]
            self.writer, self.codec = open_video_writer(self.path, self.fps, (w, h))
        self.writer.write(np.ascontiguousarray(rgb[..., ::-1]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class GifSink:
    """Animated GIF (looping, ``fps`` frames a second) written by Pillow when closed.

    Frames are kept until then as 256-colour palette images (one byte a pixel). GIF delays are
    whole hundredths of a second, and browsers stretch delays under 20 ms to 100 ms.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.frames = path, fps, []
        if fps > 50:
            logger.warning("%s: --fps above 50 gives GIF frames under 20 ms, which browsers show for 100 ms", path)

    def add(self, rgb: np.ndarray) -> None:
        self.frames.append(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256))

    def close(self) -> None:
        if not self.frames:
            return
        first, *rest = self.frames
        duration = max(10, round(1000 / self.fps / 10) * 10)
        first.save(self.path, save_all=True, append_images=rest, duration=duration, loop=0)


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
    gif: bool = False,
) -> list[Path]:
    """Write ``<name>_<window>.png`` for each window of ``frames``, with ``video`` ``<name>.mp4``
    and with ``gif`` ``<name>.gif`` of the same pictures at ``fps``; returns the paths written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    video_sink = VideoSink(output_dir / f"{name}.mp4", fps) if video else None
    gif_sink = GifSink(output_dir / f"{name}.gif", fps) if gif else None
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
            for sink in (video_sink, gif_sink):
                if sink is not None:
                    sink.add(img)
    finally:
        if video_sink is not None:
            video_sink.close()
    if video_sink is not None:
        written.append(video_sink.path)
    if gif_sink is not None:
        gif_sink.close()
        written.append(gif_sink.path)
    logger.info("wrote %d pictures and %d animations to %s", len(frames), len(written) - len(frames), output_dir)
    return written
