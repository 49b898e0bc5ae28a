"""SynOps and firing rates against counts done by hand."""

import pytest
import torch
from torch import nn

from snn.evaluation.synops import ActivityMonitor, connection_count, dense_macs
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.neurons import LIFNeuron
from snn.quantization.weight_quant import QuantConv2d


def _spikes(shape, points):
    x = torch.zeros(shape)
    for p in points:
        x[p] = 1.0
    return x


def test_conv_stride1_interior_fan_out_is_out_channels_times_kernel():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    # Two spikes away from the borders, in different input channels: each reaches 3 x 3 x 3 synapses.
    x = _spikes((1, 2, 8, 8), [(0, 0, 3, 3), (0, 1, 5, 4)])
    assert connection_count(conv, x) == 2 * 3 * 9


def test_conv_corner_spike_reaches_only_the_outputs_that_exist():
    conv = nn.Conv2d(1, 3, 3, padding=1)
    # A corner input is inside the 3x3 windows of a 2x2 block of outputs: 3 channels x 4 positions.
    assert connection_count(conv, _spikes((1, 1, 8, 8), [(0, 0, 0, 0)])) == 3 * 4


def test_strided_conv_fan_out_depends_on_position_and_averages_k2_over_s2():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    # Output o covers inputs 2o-1..2o+1: an even input row is covered by one output row, an odd by two.
    assert connection_count(conv, _spikes((1, 1, 8, 8), [(0, 0, 4, 4)])) == 1 * 1
    assert connection_count(conv, _spikes((1, 1, 8, 8), [(0, 0, 3, 3)])) == 2 * 2
    assert connection_count(conv, _spikes((1, 1, 8, 8), [(0, 0, 3, 4)])) == 2 * 1
    # Over a 2x2 block of interior positions the mean is kh*kw/(sh*sw) = 9/4.
    block = _spikes((1, 1, 8, 8), [(0, 0, 3, 3), (0, 0, 3, 4), (0, 0, 4, 3), (0, 0, 4, 4)])
    assert connection_count(conv, block) / 4 == pytest.approx(9 / 4)


def test_transposed_conv_interior_spike_scatters_a_full_kernel():
    conv = nn.ConvTranspose2d(1, 5, 4, stride=2, padding=1)
    assert connection_count(conv, _spikes((1, 1, 8, 8), [(0, 0, 4, 4)])) == 5 * 16
    # At the corner, padding 1 crops one row and one column of the 4x4 footprint: 3 x 3 remain.
    assert connection_count(conv, _spikes((1, 1, 8, 8), [(0, 0, 0, 0)])) == 5 * 9


def test_grouped_conv_reaches_only_its_group():
    conv = nn.Conv2d(4, 6, 1, groups=2)  # each input channel drives the 3 output channels of its group
    assert connection_count(conv, _spikes((1, 4, 4, 4), [(0, 0, 1, 1)])) == 3


def test_non_binary_inputs_count_once_and_negative_ones_count_too():
    conv = nn.Conv2d(1, 2, 1)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0], x[0, 0, 1, 1], x[0, 0, 2, 2] = 3.0, -0.5, 1.0  # an event count, a voxel value, a spike
    assert connection_count(conv, x) == 3 * 2


def test_dense_macs_of_a_conv():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.zeros(1, 2, 8, 8)
    assert dense_macs(conv, x, conv(x)) == 8 * 8 * 3 * 2 * 9


class _OneLayer(nn.Module):
    """[B, T, C, H, W] -> conv over [T*B, ...] (as the real model runs it) -> LIF."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv
        self.neuron = LIFNeuron(tau=2.0, threshold=1.0)

    def forward(self, x):
        b, t = x.shape[:2]
        y = self.conv(x.transpose(0, 1).flatten(0, 1))
        return self.neuron(y.view(t, b, *y.shape[1:]))


@pytest.mark.parametrize("conv_cls", [nn.Conv2d, QuantConv2d])
def test_monitor_counts_per_sample_over_time_and_pools_firing_rates(conv_cls):
    conv = conv_cls(1, 2, 3, padding=1, bias=False)
    nn.init.zeros_(conv.weight)
    with torch.no_grad():
        conv.weight[:, 0, 1, 1] = 2.0  # the centre tap alone: a spike in gives current 2 > threshold
    model = _OneLayer(conv)
    x = torch.zeros(2, 3, 1, 8, 8)  # batch 2, 3 time steps
    x[0, 0, 0, 4, 4] = 1  # sample 0: one spike at t=0
    x[1, :, 0, 2, 2] = 1  # sample 1: one spike at each of the 3 steps
    with torch.no_grad(), ActivityMonitor(model) as mon:
        out = model(x)
    # 4 input spikes, each to 2 channels x 9 positions, over 2 samples.
    assert mon.samples == 2
    assert mon.synops_per_sample() == pytest.approx(4 * 2 * 9 / 2)
    assert mon.synops_per_layer() == {"conv": pytest.approx(36.0)}
    # Each input spike makes both output channels fire at its pixel, in that step: 8 spikes.
    assert float(out.sum()) == 8
    (rate,) = mon.firing_rates().values()
    assert rate == pytest.approx(8 / (3 * 2 * 2 * 8 * 8))
    # Hooks are gone after the with-block: more forward passes change nothing.
    with torch.no_grad():
        model(x)
    assert mon.samples == 2


def test_monitor_on_the_flow_net_matches_its_own_spike_rates():
    torch.manual_seed(0)
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1).eval()
    x = (torch.rand(2, 3, 2, 16, 16) < 0.3).float()
    with torch.no_grad(), ActivityMonitor(model) as mon:
        model(x)
    assert mon.firing_rates() == pytest.approx(model.spike_rates())
    layers = mon.synops_per_layer()
    # The context path's 1x1 convolution reads the frame rates: a synapse per non-zero rate and output.
    assert set(layers) == {*model.spiking_layers(), "head1", "head2", "head3", "context"}
    assert layers["context"] <= 16 * 16 * 3  # 16 rates x 16 outputs per step, 3 steps
    assert (layers["context"] > 0) == (model.spike_rates()["res2"] > 0)  # rates of res2's spikes
    # The stem sees the events: each non-zero (bin, polarity, pixel) drives at most 4 x 9 synapses.
    assert 0 < layers["stem"] <= float((x != 0).sum()) / 2 * 4 * 9
    assert mon.synops_per_sample() < mon.macs_per_sample()
