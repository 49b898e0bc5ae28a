import pytest
import torch

from snn.quantization.quantization_aware import QuantizationAwareLayer, qmax_for


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_quantized_values_lie_on_the_grid(bits):
    torch.manual_seed(0)
    q = QuantizationAwareLayer(bit_width=bits)
    q.train()
    x = torch.linspace(-3, 3, 20001)[torch.randperm(20001)]
    y = q(x)
    codes = y / q.scale()
    torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)
    levels = codes.round().unique()
    assert len(levels) <= 2**bits - 1
    assert levels.abs().max() == qmax_for(bits)  # the largest input reaches the top code
    assert len(levels) == 2**bits - 1  # and a uniform input uses every level


def test_binary_output_has_two_levels_sign_times_scale():
    q = QuantizationAwareLayer(bit_width=8, binarize=True)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 3.0])
    y = q(x)
    s = x.abs().mean()
    assert torch.allclose(y, torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]) * s)
    assert len(QuantizationAwareLayer(bit_width=1)(torch.randn(100)).unique()) == 2


def test_ema_arithmetic_first_batch_initialises():
    q = QuantizationAwareLayer(bit_width=8, ema_decay=0.9)
    q.train()
    q(torch.tensor([-1.0, 2.0]))
    assert (float(q.running_min), float(q.running_max)) == (-1.0, 2.0)
    q(torch.tensor([-3.0, 4.0]))
    assert float(q.running_min) == pytest.approx(0.9 * -1.0 + 0.1 * -3.0)
    assert float(q.running_max) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    # scale = max(|min|, |max|) / 127
    assert float(q.scale()) == pytest.approx(2.2 / 127)


def test_eval_mode_and_frozen_observer_leave_ranges_untouched():
    q = QuantizationAwareLayer(bit_width=4)
    q.train()
    q(torch.tensor([-1.0, 1.0]))
    q.eval()
    q(torch.tensor([-10.0, 10.0]))
    assert (float(q.running_min), float(q.running_max)) == (-1.0, 1.0)
    q.train()
    q.freeze_observer()
    q(torch.tensor([-10.0, 10.0]))
    assert float(q.running_max) == 1.0
    q.freeze_observer(False)
    q(torch.tensor([-10.0, 10.0]))
    assert float(q.running_max) > 1.0


def test_straight_through_gradient_inside_and_outside_the_range():
    q = QuantizationAwareLayer(bit_width=4)
    q.train()
    q(torch.tensor([-1.0, 1.0]))
    q.eval()  # range fixed at +-1
    x = torch.tensor([-2.0, -0.5, 0.3, 0.99, 1.5], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_binary_gradient_is_clipped():
    q = QuantizationAwareLayer(bit_width=1)
    q.train()
    q(torch.tensor([-1.0, 1.0]))
    q.eval()
    x = torch.tensor([-3.0, -0.5, 0.5, 3.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_running_ranges_survive_a_state_dict_round_trip():
    q = QuantizationAwareLayer(bit_width=4)
    q.train()
    q(torch.tensor([-0.7, 1.3]))
    fresh = QuantizationAwareLayer(bit_width=4)
    fresh.load_state_dict(q.state_dict())
    assert (float(fresh.running_min), float(fresh.running_max)) == pytest.approx((-0.7, 1.3))
    assert bool(fresh.initialized)
    x = torch.linspace(-2, 2, 50)
    fresh.eval()
    q.eval()
    assert torch.equal(fresh(x), q(x))


@pytest.mark.parametrize("bad", [0, 17, -1, 2.5, "8", True])
def test_bad_bit_width_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match=repr(bad).replace(".", r"\.")):
        QuantizationAwareLayer(bit_width=bad)
    q = QuantizationAwareLayer()
    with pytest.raises(ValueError, match="bit_width"):
        q.set_bit_width(bad)


def test_switches_disable_and_change_bit_width():
    q = QuantizationAwareLayer(bit_width=8)
    x = torch.randn(1000)
    q.train()
    q(x)
    q.enable_quantization(False)
    assert torch.equal(q(x), x)
    q.enable_quantization()
    q.set_bit_width(2)
    assert len(q(x).unique()) <= 3


def test_learned_step_gets_a_gradient_and_stays_on_its_grid():
    q = QuantizationAwareLayer(bit_width=2, learn_scale=True)
    q.train()
    x = torch.randn(4, 1000, requires_grad=True)
    y = q(x)
    y.pow(2).mean().backward()
    assert q.step.grad is not None and q.step.grad.abs() > 0
    assert len((y / q.step.abs()).round().unique()) <= 3


def test_calibration_range_is_the_plain_mean_of_the_passes_even_in_eval_mode():
    q = QuantizationAwareLayer(bit_width=8, ema_decay=0.99)
    q.eval()
    q.start_calibration()
    for hi in (1.0, 2.0, 6.0):
        q(torch.tensor([-hi, hi]))
    q.end_calibration()
    assert float(q.running_max) == pytest.approx(3.0) and float(q.running_min) == pytest.approx(-3.0)
    q(torch.tensor([-50.0, 50.0]))  # eval mode again: the range stays
    assert float(q.running_max) == pytest.approx(3.0)
