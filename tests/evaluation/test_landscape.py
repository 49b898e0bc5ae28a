"""Where the contrast loss has its minimum: spans of windows, free per-pixel minima and the tool."""

from __future__ import annotations

import shutil

import pytest
import torch

from snn.data.provider import build_dataset
from snn.evaluation.landscape import (
    free_minimum,
    span_landscape,
    span_loss,
    spans,
)
from tests.evaluation.contrast_scenes import turning_dot
from tests.tool_modules import load_tool


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


def test_the_tool_prints_a_table_and_refuses_bad_input(tiny_synthetic_root, tmp_path, capsys):
    tool = load_tool("contrast_landscape")
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
