"""Errors by distance to the nearest event."""

from __future__ import annotations

import math

import pytest
import torch

from snn.evaluation.distance import ErrorByDistance, distance_to_events


def test_distance_is_euclidean_and_zero_on_events():
    mask = torch.zeros(2, 1, 9, 9)
    mask[0, 0, 4, 4] = 1
    dist = distance_to_events(mask)
    assert dist[0, 4, 4] == 0 and dist[0, 4, 7] == pytest.approx(3) and dist[0, 0, 0] == pytest.approx(4 * math.sqrt(2))
    assert torch.isinf(dist[1]).all()  # no event in the window


def test_bands_pool_error_and_tell_a_fading_flow():
    # one event column at x = 0; the true flow is (2, 0) everywhere; the prediction fades with x
    h, w = 4, 16
    mask = torch.zeros(1, 1, h, w)
    mask[..., 0] = 1
    gt = torch.zeros(1, 2, h, w)
    gt[:, 0] = 2.0
    pred = torch.zeros(1, 2, h, w)
    pred[:, 0, :, :3] = 2.0  # right up to 2 px away, zero beyond
    batch = {"flow": gt, "valid": torch.ones(1, 1, h, w), "event_mask": mask}
    bands = ErrorByDistance((0, 1, 3))
    bands(batch, pred)
    rows = {r["band"]: r for r in bands.rows()}
    assert set(rows) == {"0-1", "1-3", "3-"}
    assert rows["0-1"]["share"] == pytest.approx(1 / 16) and rows["1-3"]["share"] == pytest.approx(2 / 16)
    assert rows["0-1"]["ratio"] == 0 and rows["1-3"]["length_ratio"] == pytest.approx(1)
    assert rows["3-"]["ratio"] == pytest.approx(1) and rows["3-"]["length_ratio"] == 0  # zero flow there
    assert "| 3- | 0.812 |" in bands.table()
    with pytest.raises(ValueError, match="rise from 0"):
        ErrorByDistance((1, 3))
