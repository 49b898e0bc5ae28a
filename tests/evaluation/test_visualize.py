"""Flow colouring, the annotated panels and frame-range parsing."""

import numpy as np
import pytest
import torch

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
from snn.evaluation.visualize import parse_frames


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
