"""Contrast maximization: the warp, the self-supervised loss and the flow warp loss (FWL)."""

from __future__ import annotations

import math

import pytest
import torch

from snn.data.provider import build_dataset
from snn.data.synthetic import generate_dataset
from snn.data.synthetic_config import SyntheticConfig
from snn.evaluation.contrast import (
    FlowWarpLoss,
    WindowSpans,
    bin_times,
    contrast_loss,
    divergence_loss,
    flow_warp_loss,
    multiscale_contrast_loss,
    reference_times,
    smoothness_loss,
    span_flow_warp_loss,
    warp_events,
    warp_events_chained,
)
from snn.evaluation.report import fwl_aee_agreement, spearman
from tests.evaluation.contrast_scenes import turning_dot


def blob_window(flow_uv: tuple[float, float], num_bins: int = 5, size: int = 48, seed: int = 0) -> torch.Tensor:
    """[1, K, 2, H, W]: Gaussian blobs moving by ``flow_uv`` pixels over the window, each bin drawn at its centre
    time; ON blobs in channel 0, OFF in 1. Smooth, so the contrast changes smoothly with the flow."""
    g = torch.Generator().manual_seed(seed)
    n = 12
    centres = 10 + torch.rand(n, 2, generator=g) * (size - 20)
    polarity = torch.rand(n, generator=g) < 0.5
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    events = torch.zeros(1, num_bins, 2, size, size)
    for k in range(num_bins):
        t = (k + 0.5) / num_bins
        for (cx, cy), on in zip(centres, polarity, strict=True):
            x, y = cx + t * flow_uv[0], cy + t * flow_uv[1]
            events[0, k, 0 if on else 1] += torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.2**2))
    return events


def test_zero_flow_stacks_the_bins_and_scores_one():
    events = torch.rand(2, 5, 2, 16, 24) * (torch.rand(2, 5, 2, 16, 24) < 0.2)
    flow = torch.zeros(2, 2, 16, 24)
    assert torch.allclose(warp_events(events, flow, 0.0), events.sum(dim=1), atol=1e-6)
    assert torch.allclose(flow_warp_loss(events, flow), torch.ones(2))
    assert contrast_loss(events, flow).item() == pytest.approx(1.0, rel=1e-4)


def test_an_event_moves_by_the_flow_times_its_distance_to_the_reference_time():
    events = torch.zeros(1, 5, 2, 20, 20)
    events[0, 4, 1, 10, 8] = 3.0  # the last bin, centred at t = 0.9 of the window
    flow = torch.zeros(1, 2, 20, 20)
    flow[0, :, 10, 8] = torch.tensor([10.0, -5.0])
    iwe = warp_events(events, flow, t_ref=0.4)  # 0.5 of the window back: (-5, +2.5) px
    assert iwe[0, 1, 12, 3] == pytest.approx(1.5) and iwe[0, 1, 13, 3] == pytest.approx(1.5)
    assert iwe.sum() == pytest.approx(3.0) and iwe[0, 0].abs().sum() == 0
    # Warped out of the frame, it is lost.
    assert warp_events(events, flow * 10, t_ref=0.0).sum() == 0


def test_the_windows_before_the_flows_own_lie_at_negative_times_and_move_along_the_same_flow():
    assert torch.allclose(bin_times(5, windows=2), torch.arange(-0.9, 1.0, 0.2), atol=1e-6)
    assert reference_times(1) == (0.0, 0.5, 1.0) and reference_times(3) == (-2.0, -0.5, 1.0)
    events = torch.zeros(1, 10, 2, 20, 20)
    events[0, 2, 0, 10, 4] = 1.0  # bin 2 of the earlier window: t = -0.5
    flow = torch.zeros(1, 2, 20, 20)
    flow[0, :, 10, 4] = torch.tensor([4.0, 2.0])
    iwe = warp_events(events, flow, t_ref=1.0, num_bins=5)  # 1.5 windows forward: (+6, +3) px
    assert iwe[0, 0, 13, 10] == pytest.approx(1.0)
    # Read as one window of ten bins, the same event sits at t = 0.25 instead: (+3, +1.5) px.
    one = warp_events(events, flow, t_ref=1.0)[0, 0]
    assert one[11, 7] == pytest.approx(0.5) and one[12, 7] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not whole windows of 3 bins"):
        warp_events(events, flow, 1.0, num_bins=3)


def test_chained_warping_follows_a_flow_that_turns_between_windows():
    events, flows = turning_dot()
    forward = warp_events_chained(events, flows, t_ref=1.0, num_bins=2)[0, 0]
    assert forward[14, 10] == pytest.approx(4.0)  # every event on the dot's place at the end
    backward = warp_events_chained(events, flows, t_ref=-1.0, num_bins=2)[0, 0]
    assert backward[10, 6] == pytest.approx(4.0)  # ... and at the start
    # The last window's flow taken as constant leaves the first window's events elsewhere.
    constant = warp_events(events, flows[:, -1], t_ref=1.0, num_bins=2)[0, 0]
    assert constant[14, 10] == pytest.approx(2.0)
    assert contrast_loss(events, flows, num_bins=2) < contrast_loss(events, flows[:, -1], num_bins=2) - 0.1


def test_chained_warping_along_one_uniform_flow_is_the_constant_warp():
    events = torch.cat([blob_window((3.0, -2.0), seed=0), blob_window((3.0, -2.0), seed=1)], dim=1)
    flow = torch.tensor([3.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 48, 48)
    for t_ref in (-1.0, 0.0, 0.3, 1.0):
        chained = warp_events_chained(events, torch.stack([flow, flow], dim=1), t_ref, num_bins=5)
        assert torch.allclose(chained, warp_events(events, flow, t_ref, num_bins=5), atol=1e-4)


def test_the_chained_loss_reaches_every_windows_flow_and_checks_shapes():
    events, flows = turning_dot()
    flows = (flows * 0.8).requires_grad_()
    contrast_loss(events, flows, num_bins=2).backward()
    assert flows.grad[0, 0].abs().sum() > 0 and flows.grad[0, 1].abs().sum() > 0
    with pytest.raises(ValueError, match="needs num_bins"):
        contrast_loss(events, flows.detach())
    with pytest.raises(ValueError, match="do not match 2 windows"):
        warp_events_chained(events, flows.detach()[:, :1], 1.0, num_bins=2)
    preds = [flows.detach(), flows.detach()[..., ::2, ::2] * 1.0]
    assert multiscale_contrast_loss(preds, events, [1.0, 0.5], 0.1, num_bins=2) > 0


def test_a_window_without_events_has_no_fwl_and_adds_nothing_to_the_loss():
    events = torch.zeros(2, 5, 2, 16, 16)
    events[1, 2, 0, 5, 5] = 1.0
    events[1, 3, 0, 5, 7] = 1.0
    flow = torch.zeros(2, 2, 16, 16, requires_grad=True)
    fwl = flow_warp_loss(events, flow.detach())
    assert math.isnan(fwl[0]) and fwl[1].item() == pytest.approx(1.0)
    metric = FlowWarpLoss()
    metric.update(events, flow.detach())
    assert metric.count == 1 and metric.compute() == pytest.approx(1.0)
    assert math.isnan(FlowWarpLoss().compute())
    contrast_loss(events[:1], flow[:1]).backward()
    assert flow.grad is not None and not flow.grad.any()


@pytest.fixture(scope="module")
def synthetic_windows(tmp_path_factory):
    """Windows of the default 64x64 scenes: motions of a few pixels a window (at 32x32 they move about one
    pixel, which leaves the events as sharp unwarped as warped, and contrast nothing to find)."""
    root = tmp_path_factory.mktemp("contrast") / "synthetic"
    generate_dataset(root, SyntheticConfig(num_frames=6), 2, 1, 1, seed=0, workers=1, progress=False)
    data = build_dataset(root, "train")
    samples = [data[i] for i in range(len(data))]
    events = torch.stack([s["events"] for s in samples])
    flow = torch.stack([s["flow"] for s in samples])
    keep = flow.flatten(1).abs().amax(dim=1) > 0.5  # windows that move
    assert keep.sum() >= 4
    return events[keep], flow[keep]


@pytest.mark.parametrize("scale", [0.0, 0.5, 2.0])
def test_the_loss_is_lowest_at_the_true_flow_of_synthetic_windows(synthetic_windows, scale):
    events, flow = synthetic_windows
    at_truth = contrast_loss(events, flow)
    assert at_truth < 0.97  # sharper than the events as they are
    assert at_truth < contrast_loss(events, flow * scale) - 0.02
    assert flow_warp_loss(events, flow).nanmean() > flow_warp_loss(events, flow * scale).nanmean()


@pytest.fixture(scope="module")
def synthetic_spans(tmp_path_factory):
    """Spans of three consecutive windows of the default 64x64 scenes [N, 3 * K, 2, H, W] with each
    window's own true flow [N, 3, 2, H, W]."""
    root = tmp_path_factory.mktemp("contrast_spans") / "synthetic"
    generate_dataset(root, SyntheticConfig(num_frames=8), 2, 1, 1, seed=0, workers=1, progress=False)
    data = build_dataset(root, "train")
    spans, flows = [], []
    for i in range(len(data)):
        if data[i]["index"] >= 2:
            spans.append(torch.cat([data[j]["events"] for j in (i - 2, i - 1, i)]))
            flows.append(torch.stack([data[j]["flow"] for j in (i - 2, i - 1, i)]))
    return torch.stack(spans), torch.stack(flows)


def test_a_span_of_three_windows_sharpens_along_the_true_flow_more_than_one_window_does(synthetic_spans):
    events, flow = synthetic_spans[0], synthetic_spans[1][:, -1]  # the last window's flow over the span
    last = events[:, -5:]
    over_three, over_one = contrast_loss(events, flow, num_bins=5), contrast_loss(last, flow, num_bins=5)
    assert over_three < over_one - 0.05
    for scale in (0.0, 0.8, 1.2):
        assert over_three < contrast_loss(events, flow * scale, num_bins=5) - 0.02


def test_the_fwl_of_a_span_of_one_window_is_the_fwl_and_zero_flow_scores_one(synthetic_spans):
    events, flows = synthetic_spans
    last, flow = events[:, -5:], flows[:, -1]
    assert torch.allclose(span_flow_warp_loss(last, flow[:, None], 5), flow_warp_loss(last, flow))
    assert torch.allclose(span_flow_warp_loss(events, torch.zeros_like(flows), 5), torch.ones(len(events)))


def test_a_span_of_three_windows_tells_the_true_flow_from_wrong_ones_better_than_one_window(synthetic_spans):
    events, flows = synthetic_spans
    last, flow = events[:, -5:], flows[:, -1]

    def margins(score):  # how far the truth scores above each wrong flow
        return torch.stack([score(1.0) - score(scale) for scale in (0.5, 0.8, 1.25, 2.0)])

    over_three = margins(lambda scale: span_flow_warp_loss(events, flows * scale, 5).mean())
    over_one = margins(lambda scale: flow_warp_loss(last, flow * scale).mean())
    assert (over_three > 0.02).all()
    assert (over_three > 2 * over_one).all()


def test_window_spans_join_consecutive_windows_of_one_sequence_only():
    g = torch.Generator().manual_seed(0)
    # (sequence, segment, index): "a" skips window 4; "c" has a gap in time between windows 1 and 2
    keys = [("a", 0, 0), ("a", 0, 1), ("a", 0, 2), ("a", 0, 3), ("b", 0, 0), ("b", 0, 1), ("a", 0, 5), ("a", 0, 6)]
    keys += [("a", 0, 7), ("c", 0, 0), ("c", 0, 1), ("c", 1, 2), ("c", 1, 3), ("c", 1, 4)]
    events = (torch.rand(len(keys), 5, 2, 12, 12, generator=g) < 0.2).float()
    flows = torch.randn(len(keys), 2, 12, 12, generator=g)
    spans = WindowSpans(3)
    # batches of three cut across sequences
    scores = torch.cat([spans.fwl(events[i : i + 3], flows[i : i + 3], keys[i : i + 3]) for i in range(0, 14, 3)])
    scored = [i for i in range(len(keys)) if torch.isfinite(scores[i])]
    assert scored == [2, 3, 8, 13]  # "b" has two windows; "a" starts again after 4, "c" after its gap
    for i in scored:
        span = events[i - 2 : i + 1].flatten(0, 1)[None]
        assert scores[i] == pytest.approx(float(span_flow_warp_loss(span, flows[i - 2 : i + 1][None], 5)))
    alone = WindowSpans(1).fwl(events, flows, keys)
    assert torch.allclose(alone, flow_warp_loss(events, flows))
    with pytest.raises(ValueError, match="at least one window"):
        WindowSpans(0)


def test_the_gradient_moves_a_constant_flow_toward_the_truth():
    truth = torch.tensor([6.0, -4.0])
    events = blob_window(tuple(truth.tolist()))
    uv = (0.6 * truth).clone().requires_grad_()
    optimizer = torch.optim.Adam([uv], lr=0.1)
    for _ in range(60):
        optimizer.zero_grad()
        contrast_loss(events, uv.view(1, 2, 1, 1).expand(1, 2, 48, 48)).backward()
        optimizer.step()
    assert (uv.detach() - truth).norm() < 0.25 * (0.4 * truth).norm()


def test_collapse_onto_one_point_is_not_a_minimum():
    """A flow that piles every event onto one pixel at the window's end scores worse than the true one."""
    truth = (6.0, -4.0)
    events = blob_window(truth)
    ys, xs = torch.meshgrid(torch.arange(48).float(), torch.arange(48).float(), indexing="ij")
    toward_centre = torch.stack([24 - xs, 24 - ys]).unsqueeze(0) / 0.9  # the last bin lands on (24, 24)
    true_flow = torch.tensor(truth).view(1, 2, 1, 1).expand(1, 2, 48, 48)
    assert contrast_loss(events, true_flow) < contrast_loss(events, toward_centre)


def test_smoothness_is_zero_for_a_constant_flow_and_grows_with_its_differences():
    flat = torch.ones(1, 2, 8, 8) * 3
    ramp = flat + torch.arange(8).float()
    assert smoothness_loss(flat) < 2e-3 < smoothness_loss(ramp)


def test_the_multiscale_loss_resamples_coarse_flows_and_checks_its_weights():
    events = blob_window((4.0, 0.0))
    flows = [torch.zeros(1, 2, 48, 48), torch.zeros(1, 2, 24, 24)]
    loss = multiscale_contrast_loss(flows, events, [1.0, 0.5], smoothness_weight=0.1)
    assert loss.item() == pytest.approx(1.5 * (1.0 + 0.1 * 2e-3), rel=1e-3)
    with pytest.raises(ValueError, match="scale weights"):
        multiscale_contrast_loss(flows, events, [1.0], smoothness_weight=0.1)


def test_spearman_and_the_agreement_of_fwl_with_aee():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)  # ties share their mean rank
    rows = [{"aee": a, "fwl": f} for a, f in [(0.7, 1.3), (0.8, 1.2), (0.9, 1.25), (1.5, 1.0)]]
    assert fwl_aee_agreement(rows) == pytest.approx(0.8)  # lower AEE with higher FWL counts as agreeing
    assert math.isnan(fwl_aee_agreement(rows[:2]))
    assert math.isnan(fwl_aee_agreement([*rows[:2], {"aee": 1.0, "fwl": float("nan")}]))


def test_divergence_is_zero_for_rigid_motion_and_a_rotation_and_counts_a_contraction():
    ys, xs = torch.meshgrid(torch.arange(16).float(), torch.arange(16).float(), indexing="ij")
    shift = torch.stack([torch.full_like(xs, 2.0), torch.full_like(ys, -1.0)]).unsqueeze(0)
    rotation = torch.stack([-(ys - 8), xs - 8]).unsqueeze(0) * 0.1
    contraction = torch.stack([8 - xs, 8 - ys]).unsqueeze(0) * 0.1
    assert divergence_loss(shift) == 0 and divergence_loss(rotation) < 1e-6
    assert divergence_loss(contraction).item() == pytest.approx(0.2)
