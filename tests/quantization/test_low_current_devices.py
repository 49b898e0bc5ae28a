"""The devices that keep 2- and 1-bit currents alive: a learned threshold per channel before the sign
(``binary_threshold``) and the residual shortcut taken before the current quantizer
(``shortcut_before_quant``)."""

import pytest
import torch

from snn.config import Config
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.layers import SpikingConvBlock
from snn.quantization import control
from snn.quantization.quantization_aware import QuantizationAwareLayer
from snn.training.optim import param_groups


def _binary(channels=3, **kwargs):
    q = QuantizationAwareLayer(1, binarize=True, channels=channels, binary_threshold=True, **kwargs)
    q.train()
    return q


def test_a_binary_threshold_needs_the_number_of_channels():
    with pytest.raises(ValueError, match="number of channels"):
        QuantizationAwareLayer(1, binarize=True, binary_threshold=True)


def test_a_binary_current_takes_its_sign_against_its_channels_threshold():
    q = _binary()
    q.init_binary_threshold(0.5)
    with torch.no_grad():
        q.binary_threshold[2] = -0.25
    x = torch.tensor([0.5, 0.49, -0.25]).view(1, 3, 1, 1).repeat(1, 1, 2, 2)
    x[..., 1, :] -= 0.02  # the second row sits just below each channel's threshold
    out = q(x)
    assert torch.equal(out[0, 0, 0] > 0, torch.tensor([True, True]))  # 0.5 reaches 0.5
    assert torch.equal(out[0, 1, 0] > 0, torch.tensor([False, False]))  # 0.49 does not
    assert torch.equal(out[0, 2, 0] > 0, torch.tensor([True, True]))  # -0.25 reaches -0.25
    assert not (out[0, :, 1] > 0).any()  # 0.02 below: -1 everywhere
    assert torch.equal(out.abs(), torch.full_like(out, float(q.scale())))  # still +-one step


def test_the_threshold_learns_and_multi_bit_currents_ignore_it():
    q = _binary()
    q.init_binary_threshold(0.3)
    x = torch.randn(4, 3, 5, 5)
    q(x).sum().backward()
    assert q.binary_threshold.grad is not None and (q.binary_threshold.grad < 0).all()  # raising t lowers the sum

    plain = QuantizationAwareLayer(4, channels=3)
    with_threshold = QuantizationAwareLayer(4, channels=3, binary_threshold=True)
    with_threshold.init_binary_threshold(0.7)
    assert torch.equal(plain.train()(x), with_threshold.train()(x))


def _pair(**devices):
    """A W1A1 model and the same weights with unquantized currents in every layer but the 8-bit stem
    and heads, in the float fake-quant arithmetic, both with one SNN step per window."""
    torch.manual_seed(0)
    kwargs = {"base_ch": 4, "num_bins": 5, "bins_per_step": 5, "quantize": True, "align_current_steps": True}
    binary = EventSNNFlowNetLiteV2(binarize=True, learn_scale=True, current_range="positive", **kwargs, **devices)
    for m in binary.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # currents on both sides of the threshold
            m.bias.data.uniform_(0.2, 1.2)
    for head in (binary.head1, binary.head2, binary.head3):
        torch.nn.init.normal_(head.conv.weight, std=0.2)
    events = torch.poisson(torch.full((2, 5, 2, 16, 16), 1.5))
    with control.calibrating(binary):
        binary(events)
    binary.eval().integer_eval = False
    # The same layers at W8A8 ...
    unquantized = EventSNNFlowNetLiteV2(learn_scale=True, current_range="positive", **kwargs, **devices)
    unquantized.load_state_dict(binary.state_dict())
    unquantized.set_bit_width(1, 8)  # ... with binary weights,
    for name, layer in unquantized.spiking_layers().items():
        if name != "stem":
            layer.quant_layer.enable_quantization(False)  # and the inner currents left as they are
    unquantized.eval().integer_eval = False
    return binary, unquantized, events


def _spikes(model, events):
    with torch.no_grad():
        flow = model(events)
    return flow, model.spike_rates()


def test_with_both_devices_a_binary_current_fires_where_the_unquantized_one_would():
    binary, unquantized, events = _pair(binary_threshold=True, shortcut_before_quant=True)
    flow, rates = _spikes(binary, events)
    flow_u, rates_u = _spikes(unquantized, events)
    assert rates == rates_u
    assert 0 < rates["res1"] < 1 and 0 < rates["enc1"] < 1
    assert torch.allclose(flow, flow_u, atol=1e-5)


@pytest.mark.parametrize(
    "devices, differs",
    [({}, "enc1"), ({"binary_threshold": True}, "res1")],
    ids=["plain sign", "threshold without the shortcut"],
)
def test_without_them_the_binary_network_fires_elsewhere(devices, differs):
    binary, unquantized, events = _pair(**devices)
    _, rates = _spikes(binary, events)
    _, rates_u = _spikes(unquantized, events)
    assert rates[differs] != rates_u[differs]


def test_the_shortcut_enters_the_quantizer_only_in_residual_blocks():
    block = SpikingConvBlock(4, 4, residual=True, quantize=True, shortcut_before_quant=True)
    assert block.shortcut_before_quant
    assert not SpikingConvBlock(4, 8, stride=2, quantize=True, shortcut_before_quant=True).shortcut_before_quant
    model = EventSNNFlowNetLiteV2(base_ch=4, quantize=True, shortcut_before_quant=True)
    assert [n for n, m in model.named_modules() if getattr(m, "shortcut_before_quant", False)] == ["res1", "res2"]


def test_a_ternary_current_with_the_shortcut_fires_where_the_unquantized_one_would():
    """W2A2 with thresholds aligned: code 0 spans the threshold's width around zero, so a spike on the
    shortcut alone would fire it after the quantizer; before it, the rounding sees current + spike."""
    torch.manual_seed(0)
    kwargs = {"base_ch": 4, "num_bins": 5, "bins_per_step": 5, "quantize": True, "align_current_steps": True}
    for shortcut, expected_equal in ((True, True), (False, False)):
        torch.manual_seed(0)
        ternary = EventSNNFlowNetLiteV2(bit_width=2, shortcut_before_quant=shortcut, **kwargs)
        for m in ternary.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.data.uniform_(-0.5, 1.2)
        events = torch.poisson(torch.full((2, 5, 2, 16, 16), 1.5))
        with control.calibrating(ternary):
            ternary(events)
        ternary.eval().integer_eval = False
        rates = _spikes(ternary, events)[1]
        for name, layer in ternary.spiking_layers().items():
            layer.quant_layer.enable_quantization(name == "stem")
        rates_u = _spikes(ternary, events)[1]
        assert (rates["res2"] == rates_u["res2"]) is expected_equal


def test_a_checkpoint_without_thresholds_starts_them_where_the_neuron_fires():
    """The W1A1 step starts from a W1A4 checkpoint, which has no thresholds: they keep their start."""
    w1a4 = EventSNNFlowNetLiteV2(base_ch=4, quantize=True, bit_width=1, current_bits=4)
    w1a1 = EventSNNFlowNetLiteV2(base_ch=4, quantize=True, binarize=True, binary_threshold=True)
    missing = w1a1.load_state_dict(w1a4.state_dict(), strict=False).missing_keys
    assert missing and all(k.endswith("quant_layer.binary_threshold") for k in missing)
    assert w1a1.stem.quant_layer.binary_threshold is None  # the 8-bit stem never goes binary
    for name, layer in w1a1.spiking_layers().items():
        if name != "stem":
            start = layer.neuron.least_firing_input(w1a1.time_steps)
            assert torch.all(layer.quant_layer.binary_threshold == start)
    three_steps = EventSNNFlowNetLiteV2(base_ch=4, quantize=True, binarize=True, binary_threshold=True, bins_per_step=1)
    assert float(three_steps.enc1.quant_layer.binary_threshold.detach()[0]) < 1.0  # five steps: less than theta
    assert three_steps.head1.quant_layer.binary_threshold is None  # flow heads read signed flow, no threshold


def test_thresholds_train_without_weight_decay_and_the_config_carries_the_keys():
    cfg = Config(quantization_enabled=True, binarize=True, binary_threshold=True, shortcut_before_quant=True)
    args = cfg.model_args()
    assert args["binary_threshold"] and args["shortcut_before_quant"]
    model = EventSNNFlowNetLiteV2(**{**args, "base_ch": 4})
    groups = param_groups(model, cfg)
    thresholds = [g for g in groups if any(p.dim() == 1 and p is q.binary_threshold for p in g["params"]
                                           for _, q in control.activation_quantizers(model)
                                           if q.binary_threshold is not None)]  # fmt: skip
    assert len(thresholds) == 1 and thresholds[0]["weight_decay"] == 0.0
    assert len(thresholds[0]["params"]) == len(model.spiking_layers()) - 1  # all but the 8-bit stem
