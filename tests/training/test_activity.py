"""Keeping spiking layers alive: the firing-rate band penalty, its gradient, its wiring into training."""

import pytest
import torch

from snn.config import ConfigError, load_config
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.layers import QuantSpec, SpikingConvBlock
from snn.training.activity import firing_rate_penalty, recording_firing_rates
from snn.training.optim import param_groups


def test_penalty_is_zero_inside_the_band_and_one_for_a_silent_layer():
    inside = {"a": torch.tensor(0.05), "b": torch.tensor(0.3)}
    assert float(firing_rate_penalty(inside, 0.01, 0.5)) == 0.0
    assert float(firing_rate_penalty({"a": torch.tensor(0.0)}, 0.01, 0.5)) == pytest.approx(1.0)
    assert float(firing_rate_penalty({"a": torch.tensor(0.005)}, 0.01, 0.5)) == pytest.approx(0.5)
    assert float(firing_rate_penalty({"a": torch.tensor(0.75)}, 0.01, 0.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="0 < low < high"):
        firing_rate_penalty(inside, 0.5, 0.1)


@pytest.mark.parametrize("widths", [(1, 4), (1, 1)])
def test_a_w1_layer_with_silent_inputs_gets_a_gradient_from_the_penalty(widths):
    torch.manual_seed(0)
    weights, currents = widths
    spec = QuantSpec(bit_width=weights, current_bits=currents if currents != weights else None, learn_scale=True)
    layer = SpikingConvBlock(4, 4, quantize=True, quant=spec).train()
    with torch.no_grad():  # below threshold, as a layer that fell silent
        layer.norm.bias.copy_(torch.tensor([-0.9, -0.5, -0.3, -0.2]))
    silent_input = torch.zeros(3, 2, 4, 8, 8)  # [T, B, C, H, W]: no spikes come in
    layer(silent_input)  # the first pass seeds the quantizer's range and step
    with recording_firing_rates(layer) as rates:
        layer(silent_input)
    assert float(rates["neuron"].detach()) == 0.0  # the layer is silent
    layer.zero_grad()
    firing_rate_penalty(rates, 0.01, 0.5).backward()
    assert float(layer.conv.weight.grad.abs().sum()) == 0.0  # no input spikes: nothing reaches the weights
    assert float(layer.norm.bias.grad.abs().sum()) > 0  # ... but the folded threshold moves
    assert float(layer.quant_layer.step.grad.abs()) > 0  # ... and so does the current's step


def test_recording_gives_every_spiking_layer_a_differentiable_rate_and_removes_its_hooks():
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=2, bins_per_step=1)
    x = (torch.rand(1, 2, 2, 16, 16) < 0.3).float() * 5
    with recording_firing_rates(model) as rates:
        model(x)
    assert set(rates) == set(model.spiking_layers())
    assert all(r.requires_grad for r in rates.values())
    assert all(not m.neuron._forward_hooks for m in model.spiking_layers().values())


def test_norm_parameters_get_their_own_group_only_with_a_multiplier():
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=2, bins_per_step=1, quantize=True, learn_scale=True)
    plain = load_config(overrides={"learning_rate": 1e-3})
    assert len(param_groups(model, plain)) == 2  # weights, learned steps
    boosted = load_config(overrides={"learning_rate": 1e-3, "norm_lr_multiplier": 50})
    groups = param_groups(model, boosted)
    assert len(groups) == 3 and groups[2]["lr"] == pytest.approx(0.05)
    assert any(p is model.enc1.norm.bias for p in groups[2]["params"])
    assert not any(p is model.enc1.norm.bias for p in groups[0]["params"])


@pytest.mark.parametrize("band", [[0.2, 0.1], [0.0, 0.5], [0.1], ["a", 0.5]])
def test_a_bad_band_is_a_config_error(band):
    with pytest.raises(ConfigError, match="firing_rate_band"):
        load_config(overrides={"firing_rate_band": band})


def test_a_binary_current_step_never_drops_below_the_least_firing_input():
    from snn.models.flownet import BINARY_FLOOR_MARGIN
    from snn.quantization import control

    model = EventSNNFlowNetLiteV2(
        base_ch=4, num_bins=5, bins_per_step=1, quantize=True, bit_width=1, binarize=True, learn_scale=True
    )
    least = model.enc2.neuron.least_firing_input(5)
    assert least == pytest.approx(0.5 / (1 - 0.5**5))  # tau 2, threshold 1: 1.9375 x step must reach 1
    with control.calibrating(model):
        model(torch.zeros(1, 5, 2, 16, 16))  # silent input: every observed |current| is tiny
    model.eval()(torch.zeros(1, 5, 2, 16, 16))
    for name, q in control.activation_quantizers(model):
        if q.is_binary:
            assert float(q.scale().detach()) >= least * BINARY_FLOOR_MARGIN * (1 - 1e-6), name
    # At the floor, a current that stays positive over the five bins fires at the last one.
    layer = model.enc2
    with torch.no_grad():
        layer.norm.bias.fill_(0.1)  # every current positive
        layer.quant_layer.step.fill_(0.01)  # a learned step pushed far below the floor
    spikes = layer(torch.zeros(5, 1, 8, 8, 8))
    assert spikes[:4].sum() == 0 and spikes[4].min() == 1


def test_a_positive_current_range_spends_the_grid_where_the_thresholds_are():
    from snn.quantization import control
    from snn.quantization.quantization_aware import QuantizationAwareLayer

    q = QuantizationAwareLayer(4, range_mode="positive").train()
    x = torch.tensor([-19.0, -1.0, 0.5, 7.0])
    out = q(x)
    assert float(q.scale()) == pytest.approx(7.0 / 7)  # the positive side over qmax, not 19 / 7
    assert out.tolist() == [-7.0, -1.0, 0.0, 7.0]  # -19 clips at -qmax steps; 0.5 rounds to even 0
    with pytest.raises(ValueError, match="range_mode"):
        QuantizationAwareLayer(4, range_mode="percentile")
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=2, bins_per_step=1, quantize=True, current_range="positive")
    modes = {name: q.range_mode for name, q in control.activation_quantizers(model)}
    assert modes["stem.quant_layer"] == modes["enc1.quant_layer"] == "positive"
    assert modes["head1.quant_layer"] == "maxabs"  # flow is signed
    assert load_config(overrides={"current_range": "positive"}).model_args()["current_range"] == "positive"
    with pytest.raises(ConfigError, match="current_range"):
        load_config(overrides={"current_range": "percentile"})
