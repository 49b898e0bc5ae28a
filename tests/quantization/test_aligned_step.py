"""Current steps aligned to the threshold: a quantized current fires exactly where the float one does."""

import pytest
import torch

from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.neurons import FIRE_MARGIN
from snn.quantization.quantization_aware import QuantizationAwareLayer

THETA = 1.0


def _quantizer(step: float, align: bool) -> QuantizationAwareLayer:
    q = QuantizationAwareLayer(bit_width=4, learn_scale=True, range_mode="positive")
    q.train()
    q(torch.linspace(0, 4, 100))  # a range and a seeded step
    with torch.no_grad():
        q.step.fill_(step)
    q.align_to = THETA if align else None
    return q.eval()


def _fires(q, x):
    with torch.no_grad():
        return q(x) >= THETA * (1 - FIRE_MARGIN)


@pytest.mark.parametrize("step", [0.07, 0.3, 0.558, 0.707, 0.846, 1.3, 2.5])
def test_an_aligned_grid_fires_exactly_where_the_unquantized_current_does(step):
    x = torch.linspace(-1, 3, 40001)
    x = x[(x - THETA).abs() > 1e-4]  # a current exactly at the threshold may round either way
    assert torch.equal(_fires(_quantizer(step, align=True), x), x >= THETA)


def test_a_grid_off_the_threshold_moves_it():
    x = torch.linspace(-1, 3, 40001)
    for step, moved_to in [(0.846, 1.5 * 0.846), (0.558, 1.5 * 0.558)]:  # codes >= 2 fire: x >= 1.5 steps
        fires = _fires(_quantizer(step, align=False), x)
        assert not torch.equal(fires, x >= THETA)
        assert torch.equal(fires[(x - moved_to).abs() > 1e-4], (x >= moved_to)[(x - moved_to).abs() > 1e-4])


def test_the_aligned_step_passes_its_gradient_straight_through():
    q = _quantizer(0.707, align=True).train()
    q.freeze_observer()
    q(torch.linspace(0, 3, 50)).square().sum().backward()
    assert q.step.grad is not None and float(q.step.grad) != 0.0
    assert float(q.scale()) == pytest.approx(THETA / 1.5)  # floor(1 / 0.707) = 1


def test_the_model_aligns_its_spiking_layers_only():
    model = EventSNNFlowNetLiteV2(base_ch=4, quantize=True, bit_width=4, learn_scale=True, align_current_steps=True)
    assert all(layer.quant_layer.align_to == THETA for layer in model.spiking_layers().values())
    assert all(head.quant_layer.align_to is None for head in (model.head1, model.head2, model.head3))
    plain = EventSNNFlowNetLiteV2(base_ch=4, quantize=True, bit_width=4, learn_scale=True)
    assert all(layer.quant_layer.align_to is None for layer in plain.spiking_layers().values())


def test_binary_currents_keep_their_step():
    q = QuantizationAwareLayer(bit_width=1, learn_scale=True)
    q.train()
    q(torch.linspace(-2, 2, 100))
    with torch.no_grad():
        q.step.fill_(0.7)
    before = float(q.scale())
    q.align_to = THETA
    assert float(q.scale()) == before
