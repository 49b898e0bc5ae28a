import pytest
import torch

from snn.models.neurons import LIFNeuron, NonSpikingIntegrator, atan_surrogate_primitive, spike_fn


def test_lif_subtract_reset_matches_hand_computation():
    # tau=2 -> decay 0.5, threshold 1.
    # t0: v=0.6 -> no spike;  t1: v=0.3+0.9=1.2 -> spike, v=0.2
    # t2: v=0.1+0.5=0.6 -> no; t3: v=0.3+1.0=1.3 -> spike, v=0.3
    lif = LIFNeuron(tau=2.0, threshold=1.0, reset="subtract")
    x = torch.tensor([0.6, 0.9, 0.5, 1.0]).view(4, 1)
    spikes = lif(x)
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    v = None
    membranes = []
    for xt in x:
        _, v = lif.single_step(xt, v)
        membranes.append(float(v))
    assert membranes == pytest.approx([0.6, 0.2, 0.6, 0.3])
    assert float(lif.last_spike_rate) == pytest.approx(0.5)


def test_lif_zero_reset_drops_overshoot():
    # t0: v=1.5 -> spike, v=0;  t1: v=0+0.8=0.8 -> no spike (subtract would give 0.25+0.8=1.05)
    lif = LIFNeuron(tau=2.0, threshold=1.0, reset="zero")
    spikes = lif(torch.tensor([[1.5], [0.8]]))
    assert spikes.flatten().tolist() == [1.0, 0.0]
    lif_sub = LIFNeuron(tau=2.0, threshold=1.0, reset="subtract")
    assert lif_sub(torch.tensor([[1.5], [0.8]])).flatten().tolist() == [1.0, 1.0]


def test_lif_rejects_bad_parameters():
    with pytest.raises(ValueError, match="tau"):
        LIFNeuron(tau=1.0)
    with pytest.raises(ValueError, match="reset"):
        LIFNeuron(reset="hard")


@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_surrogate_gradient_matches_finite_differences(alpha):
    x = torch.linspace(-1.5, 1.5, 31, dtype=torch.float64, requires_grad=True)
    spike_fn(x, alpha).sum().backward()
    eps = 1e-6
    fd = (atan_surrogate_primitive(x.detach() + eps, alpha) - atan_surrogate_primitive(x.detach() - eps, alpha)) / (
        2 * eps
    )
    torch.testing.assert_close(x.grad, fd, rtol=1e-5, atol=1e-7)
    # Sharper surrogate -> taller peak at the threshold.
    assert x.grad[15] == pytest.approx(alpha / 2)


def test_spike_forward_is_heaviside():
    x = torch.tensor([-0.1, 0.0, 0.1])
    assert spike_fn(x).tolist() == [0.0, 1.0, 1.0]


def test_integrator_averages_or_leaks():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    assert float(NonSpikingIntegrator()(x)) == pytest.approx(2.0)
    # tau=2: v = ((1*0.5)+2)*0.5+3 = 4.25, / 3 steps
    assert float(NonSpikingIntegrator(tau=2.0)(x)) == pytest.approx(4.25 / 3)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_fused_sequence_matches_the_stepwise_loop_in_spikes_and_gradients(reset, detach_reset):
    neuron = LIFNeuron(tau=2.0, threshold=1.0, reset=reset, alpha=2.0, detach_reset=detach_reset)
    x = torch.randn(6, 3, 4, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.4
    upstream = torch.randn_like(x)
    grads, outs = [], []
    for run in (neuron.forward, neuron.forward_stepwise):
        xi = x.clone().requires_grad_(True)
        out = run(xi)
        (out * upstream).sum().backward()
        outs.append(out.detach())
        grads.append(xi.grad)
    assert 0.05 < float(outs[0].mean()) < 0.95  # both firing and silent steps are exercised
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
    assert float(grads[0][0].abs().sum()) > 0  # the first step's gradient comes through the recurrence


def test_fused_sequence_keeps_float32_under_autocast_and_records_the_rate():
    neuron = LIFNeuron()
    x = torch.full((4, 1, 2), 0.6, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = neuron(x)
    assert out.dtype == torch.float32
    # 0.6, then 0.9, then 1.05 -> fires and drops to 0.05, then 0.625
    assert out[:, 0, 0].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert float(neuron.last_spike_rate) == pytest.approx(0.25)
