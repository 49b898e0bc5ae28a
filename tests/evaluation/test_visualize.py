"""Flow colouring, the annotated panels, frame-range parsing, the video codec and the AEE plot's labels."""

import logging
from itertools import combinations

import cv2
import numpy as np
import pytest
import torch

from snn.evaluation import visualize
from snn.evaluation.flow_viz import (
    OFF_COLOUR,
    ON_COLOUR,
    auto_scale,
    colorbar,
    error_heatmap,
    event_image,
    flow_to_color,
    render_panels,
)
from snn.evaluation.plots import _aee_figure, plot_aee_vs_size
from snn.evaluation.visualize import H264, MP4V, VideoSink, parse_frames


def _uniform(u, v, h=8, w=8):
    return torch.stack([torch.full((h, w), float(u)), torch.full((h, w), float(v))])


def test_zero_flow_is_white_and_rightward_flow_is_red_at_the_rim():
    assert (flow_to_color(_uniform(0, 0), max_flow=1.0) == 255).all()
    right = flow_to_color(_uniform(2, 0), max_flow=2.0)[0, 0].astype(int)
    assert right[0] > 200 and right[1] < 60 and right[2] < 60
    # Half the rim radius: same hue, paler (closer to white).
    half = flow_to_color(_uniform(1, 0), max_flow=2.0)[0, 0].astype(int)
    assert half[0] >= right[0] and half[1] > right[1]


def test_event_image_colours_the_dominant_polarity():
    e = torch.zeros(2, 2, 1, 3)
    e[0, 0, 0, 0] = 1  # ON only
    e[:, 1, 0, 1] = 1  # OFF only
    e[0, 0, 0, 2], e[:, 1, 0, 2] = 1, 1  # 1 ON, 2 OFF: OFF wins
    img = event_image(e)
    assert tuple(img[0, 0]) == ON_COLOUR and tuple(img[0, 1]) == OFF_COLOUR and tuple(img[0, 2]) == OFF_COLOUR


def test_error_heatmap_scale_and_invalid_pixels():
    gt = torch.zeros(2, 4, 4)
    pred = torch.zeros(2, 4, 4)
    pred[0, 0, 0] = 3.0
    valid = torch.ones(1, 4, 4)
    valid[0, 3, 3] = 0
    img, scale = error_heatmap(pred, gt, valid, max_error=3.0)
    assert scale == 3.0
    assert tuple(img[3, 3]) == (128, 128, 128)
    assert img[0, 0].sum() > img[1, 1].sum()  # the wrong pixel is the bright one


def test_colorbar_is_bright_at_the_top_and_dark_at_the_bottom():
    bar = colorbar(200, 5.0)
    column = bar[40:190, 12].astype(int).sum(1)
    assert column[0] > column[-1] + 300


def test_render_panels_share_one_normalisation_and_upscale():
    gt = _uniform(1.5, -0.5, 16, 16)
    valid = torch.ones(1, 16, 16)
    img = render_panels(torch.zeros(3, 2, 16, 16), gt, gt.clone(), valid, scale=4)
    assert img.dtype == np.uint8 and img.shape[0] % 2 == 0 and img.shape[1] % 2 == 0
    assert img.shape[0] >= 16 * 4 and img.shape[1] > 4 * 16 * 4
    # Identical flows in GT and prediction give identical colours in both panels: find the panel colour twice.
    colour = flow_to_color(gt, max_flow=float(torch.linalg.vector_norm(gt, dim=0).max()))[0, 0]
    hits = (img == colour).all(-1)
    assert hits.sum() >= 2 * (16 * 4) ** 2


@pytest.mark.parametrize("valid_gt", [True, False])
def test_arrows_are_drawn_on_valid_ground_truth_only(valid_gt):
    gt = _uniform(3, 1, 16, 16)
    valid = torch.full((1, 16, 16), float(valid_gt))  # all invalid: no GT colour normalisation either
    plain = render_panels(torch.zeros(3, 2, 16, 16), gt, gt * 0, valid, scale=4)
    drawn = render_panels(torch.zeros(3, 2, 16, 16), gt, gt * 0, valid, scale=4, arrows=True)
    assert drawn.shape == plain.shape
    changed = (drawn != plain).any(-1).any(0)
    # Left to right: events, ground truth, prediction panels (64 px + a 1 px frame each side, 6 px
    # gaps), then the legend, which shows the arrow scale in both cases.
    width, gap = 16 * 4 + 2, 6
    events, gt_panel = changed[:width], changed[width + gap : 2 * width + gap]
    assert not events.any()
    assert gt_panel.any() == valid_gt
    assert changed[3 * (width + gap) :].any()


def test_render_panels_default_scale_upscales_small_inputs():
    img = render_panels(torch.zeros(3, 2, 8, 8), _uniform(1, 1), _uniform(0, 1), torch.ones(1, 8, 8))
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert auto_scale(8, 8) > 1
    assert img.shape[1] >= 4 * 8 * auto_scale(8, 8)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, range(10)), ("2:5", range(2, 5)), ("3", range(3, 4)), (":2", range(0, 2)), ("7:", range(7, 10))],
)
def test_parse_frames(text, expected):
    assert parse_frames(text, 10) == expected


@pytest.mark.parametrize("text", ["5:2", "0:11", "a:b", "-1:3", "4:4"])
def test_parse_frames_rejects_bad_ranges(text):
    with pytest.raises(ValueError, match="--frames"):
        parse_frames(text, 10)


# ---------------------------------------------------------------- video codec


def _frames(n=3, h=48, w=64):
    return [np.full((h, w, 3), 40 * i, np.uint8) for i in range(n)]


def _write_video(path):
    sink = VideoSink(path, fps=5)
    for frame in _frames():
        sink.add(frame)
    sink.close()
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return sink.codec, count


def _h264_available(tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "probe.mp4"), cv2.VideoWriter_fourcc(*H264), 5, (64, 48))
    ok = writer.isOpened()
    writer.release()
    return ok


def test_video_is_h264_where_opencv_has_it_else_mp4v_with_a_warning(tmp_path, caplog):
    path = tmp_path / "v.mp4"
    with caplog.at_level(logging.WARNING, logger=visualize.__name__):
        codec, count = _write_video(path)
    assert count == 3
    if _h264_available(tmp_path):
        assert codec == H264 and not caplog.records
    else:  # e.g. the pip opencv-python-headless wheel
        assert codec == MP4V and len(caplog.records) == 1


def test_video_falls_back_to_mp4v_with_one_warning_when_h264_fails(tmp_path, caplog, monkeypatch):
    tried = []

    def open_writer(path, codec, fps, size):
        tried.append(codec)
        if codec == H264:
            return cv2.VideoWriter()  # not opened, as where OpenCV has no H.264 encoder
        return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)

    monkeypatch.setattr(visualize, "_open_writer", open_writer)
    path = tmp_path / "v.mp4"
    with caplog.at_level(logging.WARNING, logger=visualize.__name__):
        codec, count = _write_video(path)
    assert tried == [H264, MP4V] and codec == MP4V and count == 3
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING and "\n" not in message
    assert str(path) in message and "browsers will not play" in message and "--gif" in message


def test_video_without_any_codec_is_a_one_line_oserror(tmp_path, monkeypatch):
    monkeypatch.setattr(visualize, "_open_writer", lambda *a: cv2.VideoWriter())
    with pytest.raises(OSError, match="cannot open an MP4 video writer") as info:
        _write_video(tmp_path / "v.mp4")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- AEE against size plot


def _ladder_rows():
    """A QAT ladder with two coincident points: 2 bit and 2 bit (progressive) at 0.3 MB."""
    main = [
        ("FP32", 4.8, 1.210),
        ("8 bit", 1.2, 1.215),
        ("4 bit", 0.6, 1.262),
        ("2 bit", 0.3, 1.320),
        ("1 bit", 0.15, 2.10),
    ]
    progressive = [("4 bit", 0.6, 1.255), ("2 bit", 0.3, 1.341), ("1 bit", 0.15, 1.95)]
    rows = [
        {"label": label, "size_mb": size, "aee": aee, "series": None, "reference": label == "FP32"}
        for label, size, aee in main
    ]
    rows += [
        {"label": f"{label} (progressive)", "size_mb": size, "aee": aee, "series": "progressive"}
        for label, size, aee in progressive
    ]
    for r in rows:
        r["zero_flow_aee"] = 2.95
    return rows


@pytest.mark.parametrize("zero_flow", [2.95, None])
def test_aee_plot_labels_overlap_neither_each_other_nor_the_title_nor_leave_the_axes(zero_flow, tmp_path):
    import matplotlib.pyplot as plt

    rows = _ladder_rows()
    for r in rows:
        r["zero_flow_aee"] = zero_flow
    fig, ax, labels = _aee_figure(rows, "EventSNNFlowNetLiteV2: test AEE against size")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert [t.get_text() for t in labels] == [r["label"] for r in rows]
        boxes = [t.get_window_extent(renderer) for t in labels]
        for (a, ta), (b, tb) in combinations(zip(boxes, labels, strict=True), 2):
            assert not a.overlaps(b), f"{ta.get_text()!r} overlaps {tb.get_text()!r}"
        axes = ax.get_window_extent(renderer)
        title = ax.title.get_window_extent(renderer)
        for box, text in zip(boxes, labels, strict=True):
            assert axes.x0 <= box.x0 and box.x1 <= axes.x1, f"{text.get_text()!r} leaves the axes sideways"
            assert axes.y0 <= box.y0 and box.y1 <= axes.y1, f"{text.get_text()!r} leaves the axes"
            assert box.y1 < title.y0, f"{text.get_text()!r} reaches the title"
        top = max([r["aee"] for r in rows] + [zero_flow or 0])
        assert ax.get_ylim() == pytest.approx((0, 1.15 * top))
    finally:
        plt.close(fig)
    plot_aee_vs_size(rows, tmp_path / "ladder.png")
    assert cv2.imread(str(tmp_path / "ladder.png")) is not None
