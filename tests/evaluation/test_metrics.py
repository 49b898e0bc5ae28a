import math

import pytest
import torch

from snn.evaluation.metrics import FlowMetrics, evaluation_mask


def _flow(values):
    """[(u, v), ...] -> [1, 2, 1, N] flow tensor."""
    t = torch.tensor(values, dtype=torch.float64).T
    return t.view(1, 2, 1, -1)


def test_aee_npe_and_zero_flow_by_hand():
    gt = _flow([(3.0, 4.0), (0.0, 0.0), (1.0, 0.0), (0.0, 2.0)])
    pred = _flow([(3.0, 4.0), (0.0, 1.5), (1.0, 2.5), (0.0, 2.0)])
    m = FlowMetrics()
    m.update(pred, gt, torch.ones(1, 1, 4, dtype=torch.bool))
    r = m.compute()
    # EPEs: 0, 1.5, 2.5, 0 -> AEE 1.0; >1: 2 of 4; >2: 1; >3: 0.
    assert r["aee"] == pytest.approx(1.0)
    assert (r["1pe"], r["2pe"], r["3pe"]) == pytest.approx((50.0, 25.0, 0.0))
    # |gt|: 5, 0, 1, 2 -> zero-flow AEE 2.0
    assert r["zero_flow_aee"] == pytest.approx(2.0)
    assert r["num_pixels"] == 4


def test_outlier_boundaries_are_strict():
    # EPE exactly 3 px on a zero gt: not an outlier (needs > 3).
    # EPE 5 on |gt| = 100 is exactly 5 %: not an outlier (needs > 5 %).
    # EPE 5.01 on |gt| = 100: both rules hold -> outlier.
    # EPE 4 on |gt| = 100: > 3 px but only 4 % -> not an outlier.
    gt = _flow([(0.0, 0.0), (100.0, 0.0), (100.0, 0.0), (100.0, 0.0)])
    pred = _flow([(3.0, 0.0), (105.0, 0.0), (105.01, 0.0), (104.0, 0.0)])
    m = FlowMetrics()
    m.update(pred, gt, torch.ones(1, 1, 4, dtype=torch.bool))
    assert m.compute()["outliers"] == pytest.approx(25.0)


def test_masks_dense_sparse_and_large_flow():
    gt = _flow([(1.0, 0.0), (1.0, 0.0), (500.0, 0.0), (1.0, 0.0)]).float()
    valid = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 4)
    events = torch.tensor([1.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 4)
    dense = evaluation_mask(gt, valid, events, "dense")
    sparse = evaluation_mask(gt, valid, events, "sparse")
    assert dense.flatten().tolist() == [True, True, False, False]  # |gt| >= 400 dropped
    assert sparse.flatten().tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="mask"):
        evaluation_mask(gt, valid, events, "everything")


def test_pooling_over_sequences_is_by_pixel_not_by_sequence():
    a, b = FlowMetrics(), FlowMetrics()
    a.update(_flow([(1.0, 0.0)]), _flow([(0.0, 0.0)]), torch.ones(1, 1, 1, dtype=torch.bool))
    b.update(_flow([(0.0, 0.0)] * 3), _flow([(0.0, 0.0)] * 3), torch.ones(1, 1, 3, dtype=torch.bool))
    a.merge(b)
    assert a.compute()["aee"] == pytest.approx(0.25)  # not (1 + 0) / 2


def test_empty_mask_gives_nan_not_an_error():
    m = FlowMetrics()
    m.update(_flow([(1.0, 0.0)]), _flow([(0.0, 0.0)]), torch.zeros(1, 1, 1, dtype=torch.bool))
    r = m.compute()
    assert math.isnan(r["aee"]) and r["num_pixels"] == 0
