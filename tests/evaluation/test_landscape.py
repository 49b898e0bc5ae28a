"""Where the contrast loss has its minimum: spans of windows, free per-pixel minima and the tool."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from snn.data.provider import build_dataset
from snn.evaluation.landscape import (
    flow_grid,
    free_minimum,
    span_landscape,
    span_loss,
    spans,
    tile_search,
    tile_span,
)
from tests.evaluation.contrast_scenes import turning_dot

REPO = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("contrast_landscape", REPO / "tools" / "contrast_landscape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spans_are_consecutive_windows_of_one_sequence(tiny_synthetic_root):
    seq = build_dataset(tiny_synthetic_root, "train", num_bins=3).datasets[0]
    found = list(spans(seq, 2))
    assert len(found) == len(seq) // 2
    events, flows = found[1]
    assert events.shape == (1, 6, 2, 32, 32) and flows.shape == (1, 2, 2, 32, 32)
    assert torch.equal(events[0, :3], seq[2]["events"]) and torch.equal(flows[0, 1], seq[3]["flow"])
    assert len(list(spans(seq, 2, stride=1))) == len(seq) - 1


def test_the_truth_of_a_turning_dot_is_a_minimum_the_free_flow_keeps():
    events, truth = turning_dot()
    at_truth = span_loss(events, truth, num_bins=2, smoothness_weight=0.0)
    assert at_truth < 0.3  # all four events on one pixel at every reference time
    kept = free_minimum(events, truth, num_bins=2, smoothness_weight=0.0, steps=30)
    assert span_loss(events, kept, 2, 0.0) <= at_truth + 1e-4
    landscape = span_landscape(events, truth, num_bins=2, smoothness_weight=0.0, steps=30)
    assert landscape.zero == pytest.approx(1.0, abs=1e-3)
    assert landscape.truth == pytest.approx(float(at_truth))
    assert landscape.from_truth <= landscape.truth + 1e-4 and landscape.from_truth_px < 0.5
    assert landscape.true_length_px == pytest.approx(4.0)


def _two_textures(flows: list[tuple[float, float]], num_bins: int = 2, windows: int = 2):
    """Random dots in each 8x8 half (left, right) of a 8x16 frame, each half moving at its own constant
    flow (px a window) over ``windows`` windows; dots are placed at their exact (whole-pixel) positions."""
    gen = torch.Generator().manual_seed(0)
    times = (torch.arange(windows * num_bins) + 0.5) / num_bins - (windows - 1)
    events = torch.zeros(1, windows * num_bins, 2, 8, 16)
    for half, (u, v) in enumerate(flows):
        dots = torch.randint(2, 6, (6, 2), generator=gen)  # (x, y) at time 0, inside the half
        for k, t in enumerate(times.tolist()):
            x, y = dots[:, 0] + round(u * t) + 8 * half, dots[:, 1] + round(v * t)
            events[0, k, 0, y.clamp(0, 7), x.clamp(8 * half, 8 * half + 7)] = 1.0
    return events


def test_flow_grid_spans_its_limits_and_refuses_a_bad_step():
    grid = flow_grid(1.0, 0.5)
    assert grid.shape == (25, 2) and grid.min() == -1.0 and grid.max() == 1.0
    assert (grid == 0).all(dim=1).sum() == 1  # zero flow is a candidate
    with pytest.raises(ValueError, match="positive"):
        flow_grid(1.0, 0.0)


def test_tile_search_finds_each_tiles_own_constant_flow():
    # Two halves moving apart at a whole pixel a bin: each tile's own events pick its own flow,
    # not zero flow and not the neighbour's.
    events = _two_textures([(2.0, 0.0), (0.0, -2.0)])
    found = tile_search(events, num_bins=2, tile=8, candidates=flow_grid(3.0, 1.0))
    assert found.shape == (2, 1, 2)
    assert found[:, 0, 0].tolist() == [2.0, 0.0] and found[:, 0, 1].tolist() == [0.0, -2.0]
    truth = torch.zeros(1, 2, 2, 8, 16)
    truth[0, :, 0, :, :8], truth[0, :, 1, :, 8:] = 2.0, -2.0
    scored = tile_span(events, truth, num_bins=2, tile=8, candidates=flow_grid(3.0, 1.0))
    assert scored.zero_px == pytest.approx(2.0)
    assert scored.search_px == pytest.approx(0.0) and scored.tile_truth_px == pytest.approx(0.0)
    with pytest.raises(ValueError, match="do not divide"):
        tile_search(events, num_bins=2, tile=5, candidates=flow_grid(1.0, 1.0))


def test_the_tool_prints_a_table_and_refuses_bad_input(tiny_synthetic_root, tmp_path, capsys):
    tool = _tool()
    args = ["--data-root", str(tiny_synthetic_root), "--split", "train", "--windows", "2", "--steps", "2"]
    assert tool.main(args) == 0
    out = capsys.readouterr().out
    assert "| minimum from zero (px off)" in out and "| mean of 3 |" in out
    assert "tile search" not in out  # only with --tiles
    assert tool.main([*args, "--steps", "0", "--tiles", "16", "--tile-limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "best of 25 candidates" in out and "| tiles' mean truth (px) |" in out
    assert tool.main([*args, "--tiles", "7"]) != 0
    assert "tiles of 7 px do not divide its 32x32 frame" in capsys.readouterr().err
    assert tool.main(["--data-root", str(tiny_synthetic_root), "--windows", "0"]) != 0
    assert "--windows must be >= 1" in capsys.readouterr().err
    unlabeled = tmp_path / "unlabeled" / "val" / "seq_0000"
    unlabeled.mkdir(parents=True)
    shutil.copy(tiny_synthetic_root / "val" / "seq_0000" / "events.h5", unlabeled / "events.h5")
    assert tool.main(["--data-root", str(tmp_path / "unlabeled"), "--windows", "2"]) != 0
    assert "no flow ground truth" in capsys.readouterr().err
