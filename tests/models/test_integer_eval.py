"""A quantized model evaluates in the integer arithmetic of its export and trains in float."""

import torch

from snn.models.flownet import float_fake_quant
from snn.models.hooks import capturing_outputs
from tests.deploy.lively import lively_model


def test_the_model_evaluates_in_integers_but_trains_in_float():
    for widths in ((8, 8), (4, 4), (1, 4), (1, 1)):
        _check(*lively_model(*widths))


def _check(model, events):
    assert model.eval().integer_plan() is not None and model.train().integer_plan() is None
    model.eval()
    stem = {"stem": model.stem.neuron}
    with torch.no_grad(), capturing_outputs(stem, lambda out: out.float()) as integer:
        model(events)
    with torch.no_grad(), float_fake_quant(model), capturing_outputs(stem, lambda out: out.float()) as floating:
        model(events)
    assert model.integer_eval  # restored
    # The first layer's two arithmetics round differently only near code boundaries (the tiny
    # random models downstream amplify every such flip, trained ones do not: see QAT_GUIDE.md).
    assert (integer["stem"] == floating["stem"]).float().mean() > 0.99


def test_an_integer_evaluation_is_still_counted_by_the_activity_monitor():
    from snn.evaluation.synops import ActivityMonitor

    model, events = lively_model(4, 4)
    model.eval()
    counts = {}
    for integer in (True, False):
        model.integer_eval = integer
        with torch.no_grad(), ActivityMonitor(model) as monitor:
            model(events)
        counts[integer] = monitor.synops_per_sample()
    assert counts[True] > 0
    assert abs(counts[True] - counts[False]) < 0.05 * counts[False]  # the same spikes, near enough


def test_a_voxel_grid_model_evaluates_in_float_and_is_not_folded():
    import pytest

    from snn.deploy.fold import FoldError, fold_network
    from snn.models.flownet import EventSNNFlowNetLiteV2
    from snn.quantization import control

    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1, in_channels=1, quantize=True, bit_width=4)
    with control.calibrating(model):
        model(torch.randn(2, 3, 1, 16, 16))
    assert not model.integer_input and model.eval().integer_plan() is None
    with pytest.raises(FoldError, match="not integer event counts"):
        fold_network(model, 16, 16)
