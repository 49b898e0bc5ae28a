"""learn_leak: a leak learned among shifts (decay 1 - 2**-k), with the fused neuron's own gradient."""

from __future__ import annotations

import pytest
import torch

from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.neurons import LIFNeuron
from snn.models.state import carrying_state


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("tau", [2.0, 8.0])
def test_the_fused_gradient_equals_autograd_through_the_steps(reset, detach, tau):
    torch.manual_seed(0)
    x = (torch.rand(6, 3, 5, dtype=torch.float64) * 1.6).requires_grad_()
    weights = torch.randn(6, 3, 5, dtype=torch.float64)
    grads = []
    for run in ("forward", "forward_stepwise"):
        neuron = LIFNeuron(tau=tau, reset=reset, detach_reset=detach, learn_leak=True).double()
        x.grad = None
        (getattr(neuron, run)(x) * weights).sum().backward()
        grads.append((x.grad.clone(), neuron.leak_log2.grad.clone()))
    (gx_fused, gl_fused), (gx_steps, gl_steps) = grads
    torch.testing.assert_close(gx_fused, gx_steps)
    torch.testing.assert_close(gl_fused, gl_steps)
    assert gl_fused.abs() > 0


def test_the_leak_gradient_counts_the_carried_membrane():
    """In stateful mode the first step leaks the membrane carried from the window before."""
    torch.manual_seed(1)
    x = torch.rand(4, 2, 3, dtype=torch.float64) * 1.5
    neuron = LIFNeuron(tau=4.0, learn_leak=True).double()
    with carrying_state(neuron):
        neuron(x)
        carried = neuron.state.clone()
        assert carried.abs().sum() > 0
        neuron.leak_log2.grad = None
        neuron(x).sum().backward()
    stepwise = LIFNeuron(tau=4.0, learn_leak=True).double()
    spikes, v = [], carried
    for t in range(4):
        s, v = stepwise.single_step(x[t], v)
        spikes.append(s)
    torch.stack(spikes).sum().backward()
    torch.testing.assert_close(neuron.leak_log2.grad, stepwise.leak_log2.grad)


def test_the_leak_moves_in_shifts_and_the_model_learns_it_per_layer():
    neuron = LIFNeuron(tau=4.0, learn_leak=True)
    assert neuron.decay == 0.75
    neuron.leak_log2.data.fill_(2.6)
    assert neuron.decay == 0.875  # rounded to the shift 3: tau 8
    neuron.leak_log2.data.fill_(9.0)
    assert neuron.decay == 1 - 2**-4  # clamped to the longest leak
    with pytest.raises(ValueError, match="tau = 2, 4, 8 or 16"):
        LIFNeuron(tau=3.0, learn_leak=True)
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1, learn_leak=True)
    leaks = [n for n, _ in model.named_parameters() if n.endswith("leak_log2")]
    assert len(leaks) == len(model.spiking_layers()) == 9
    plain = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1)
    assert not [n for n, _ in plain.named_parameters() if n.endswith("leak_log2")]


def test_a_run_learns_the_leaks_without_weight_decay_and_its_checkpoint_keeps_them(tiny_synthetic_root, tmp_path):
    from snn.config import load_config
    from snn.models.checkpoint import load_model
    from snn.training.run import build_trainer

    cfg = load_config(
        settings={
            "dataset": "blinksim", "data_root": str(tiny_synthetic_root), "base_ch": 4, "num_bins": 3,
            "bins_per_step": 1,
            "batch_size": 2, "num_epochs": 1, "crop_size": 16, "device": "cpu", "image_every": 0,
            "learn_leak": True, "tau": 4.0, "learning_rate": 0.05,
            "checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "logs"),
        }
    )  # fmt: skip
    trainer = build_trainer(cfg, torch.device("cpu"))
    leak_group = [
        g for g in trainer.optimizer.param_groups if any(p is trainer.model.stem.neuron.leak_log2 for p in g["params"])
    ]
    assert len(leak_group) == 1 and leak_group[0]["weight_decay"] == 0.0 and len(leak_group[0]["params"]) == 9
    trainer.fit()
    learned = {n: p.detach().clone() for n, p in trainer.eval_model.named_parameters() if n.endswith("leak_log2")}
    assert any(float(v) != 2.0 for v in learned.values())  # the leaks moved from log2(4)
    reloaded = load_model(tmp_path / "ckpt" / "last.pth")
    for name, value in learned.items():
        assert torch.equal(reloaded.get_parameter(name), value)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(tmp_path / "logs")).Reload().Tags()["scalars"]
    assert {t for t in logged if t.startswith("leak_tau/")} == {f"leak_tau/{n}" for n in reloaded.spiking_layers()}
