"""Membranes carried across windows: two windows run statefully equal one long window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snn.data.sequence import window_segments
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.neurons import LIFNeuron
from snn.models.state import carrying_state, follows, reset_state, set_stateful, stream_windows, window_keys


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_a_stateful_neuron_continues_where_the_last_window_ended(reset):
    torch.manual_seed(0)
    x = torch.rand(10, 3, 4, 5) * 1.5
    neuron = LIFNeuron(tau=3.0, reset=reset)
    whole = neuron(x)
    with carrying_state(neuron):
        parts = torch.cat([neuron(x[:4]), neuron(x[4:])])
    assert torch.equal(parts, whole)
    fresh = torch.cat([neuron(x[:4]), neuron(x[4:])])  # stateless again: the second half starts at rest
    assert not torch.equal(fresh, whole)
    assert neuron.state is None and not neuron.stateful


def test_reset_state_starts_the_next_window_at_rest():
    x = torch.rand(4, 2, 3) * 2
    neuron = LIFNeuron()
    with carrying_state(neuron):
        first = neuron(x)
        neuron(x)
        reset_state(neuron)
        assert torch.equal(neuron(x), first)


def test_gradients_flow_within_a_window_but_not_into_the_previous_one():
    neuron = LIFNeuron()
    a = (torch.rand(3, 2, 4) * 2).requires_grad_()
    b = (torch.rand(3, 2, 4) * 2).requires_grad_()
    with carrying_state(neuron):
        neuron(a)
        neuron(b).sum().backward()
    assert a.grad is None and b.grad is not None and b.grad.abs().sum() > 0


def test_a_state_of_another_shape_is_an_error_that_says_to_reset():
    neuron = LIFNeuron()
    with carrying_state(neuron):
        neuron(torch.rand(2, 3, 4))
        with pytest.raises(ValueError, match="reset the state"):
            neuron(torch.rand(2, 5, 4))


def test_the_network_carries_state_across_windows_and_stateless_mode_is_unchanged():
    torch.manual_seed(0)
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1).eval()
    for head in (model.head1, model.head2, model.head3):  # heads start at zero flow
        torch.nn.init.normal_(head.conv.weight, std=0.3)
    x = torch.poisson(torch.full((1, 6, 2, 16, 16), 0.5))
    with torch.no_grad():
        alone = model(x[:, 3:])
        with carrying_state(model):
            model(x[:, :3])
            after = model(x[:, 3:])
        again = model(x[:, 3:])
    assert not torch.allclose(after, alone)  # the first window's membranes change the second's flow
    assert torch.equal(again, alone)


def test_window_segments_start_again_after_a_gap_or_an_overlap_in_time():
    times = np.array([[0, 10], [10, 20], [21, 30], [40, 50], [45, 55], [55, 60]])  # us
    # 21 after 20 is back to back (a file closing windows at end - 1); 40 after 30 is a gap; 45 an overlap
    assert window_segments(times).tolist() == [0, 0, 0, 1, 2, 2]
    assert window_segments(times[:1]).tolist() == [0] and window_segments(times[:0]).tolist() == []


def test_streaming_starts_at_rest_after_a_gap_in_time_as_at_a_new_sequence():
    torch.manual_seed(0)
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1).eval()
    for head in (model.head1, model.head2, model.head3):
        torch.nn.init.normal_(head.conv.weight, std=0.3)
    x = torch.poisson(torch.full((2, 3, 2, 16, 16), 0.5))
    batch = {"sequence": ["s", "s"], "index": torch.tensor([0, 1])}
    set_stateful(model, True)
    try:
        with torch.no_grad():
            alone = model(x[1:])
            reset_state(model)
            keys = window_keys({**batch, "segment": torch.tensor([0, 0])})
            carried, last = stream_windows(model, x, keys, None)
            gap = window_keys({**batch, "segment": torch.tensor([0, 1])})
            restarted, _ = stream_windows(model, x, gap, None)
    finally:
        set_stateful(model, False)
    assert last == ("s", 0, 1) and follows(keys[1], keys[0]) and not follows(gap[1], gap[0])
    assert not torch.allclose(carried[1:], alone)
    assert torch.equal(restarted[1:], alone)
    assert window_keys(batch) == [("s", 0, 0), ("s", 0, 1)]  # data that does not say: one segment
