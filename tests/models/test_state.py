"""Membranes carried across windows: two windows run statefully equal one long window."""

from __future__ import annotations

import pytest
import torch

from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.neurons import LIFNeuron
from snn.models.state import carrying_state, reset_state


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
