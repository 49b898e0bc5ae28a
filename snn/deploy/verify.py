"""Check an export against the PyTorch fake-quant model it came from, on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from snn.deploy import reference
from snn.deploy.export import Export
from snn.models.hooks import capturing_outputs

SPIKE_AGREEMENT = 0.999  # identical spikes for at least this share of neurons x time steps
FLOW_TOLERANCE = 0.01  # px, largest absolute flow difference


@dataclass
class Agreement:
    windows: int = 0
    matched: dict[str, int] = field(default_factory=dict)  # per layer: neurons x steps with the same spike
    total: dict[str, int] = field(default_factory=dict)
    flow_max_abs: float = 0.0
    flow_mean_abs_sum: float = 0.0

    @property
    def spike_agreement(self) -> float:
        return sum(self.matched.values()) / max(1, sum(self.total.values()))

    def layer_agreement(self) -> dict[str, float]:
        return {k: self.matched[k] / max(1, self.total[k]) for k in self.total}

    @property
    def flow_mean_abs(self) -> float:
        return self.flow_mean_abs_sum / max(1, self.windows)

    @property
    def passed(self) -> bool:
        return self.spike_agreement >= SPIKE_AGREEMENT and self.flow_max_abs <= FLOW_TOLERANCE

    def summary(self) -> str:
        worst = min(self.layer_agreement().items(), key=lambda kv: kv[1])
        return (
            f"{self.windows} windows: identical spikes {100 * self.spike_agreement:.4f} % of neurons x steps "
            f"(bound {100 * SPIKE_AGREEMENT:.1f} %; lowest layer {worst[0]} {100 * worst[1]:.4f} %), "
            f"flow max |diff| {self.flow_max_abs:.2e} px (bound {FLOW_TOLERANCE} px), "
            f"mean |diff| {self.flow_mean_abs:.2e} px: {'PASS' if self.passed else 'FAIL'}"
        )


@torch.no_grad()
def torch_spikes_and_flow(model: nn.Module, events: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fake-quant model's flow and every spiking layer's spikes [T, N, C, H, W]."""
    neurons = {name: layer.neuron for name, layer in model.spiking_layers().items()}
    with capturing_outputs(neurons, lambda out: out.cpu().numpy()) as spikes:
        flow = model.eval()(events).cpu().double().numpy()
    return flow, spikes


def compare(models: dict[str, nn.Module], export: Export, batches) -> dict[str, Agreement]:
    """Run the integer reference and every model (e.g. the fake-quant model in float64 and in
    float32) on every batch of event windows ([N, T, C, H, W]) and count agreement per model."""
    agreements = {key: Agreement() for key in models}
    for events in batches:
        flow_r, spikes_r = reference.run(export.description, export.weights, events.cpu().numpy())
        for key, model in models.items():
            dtype = next(model.parameters()).dtype
            flow_t, spikes_t = torch_spikes_and_flow(model, events.to(dtype))
            agreement = agreements[key]
            for name, s in spikes_t.items():
                agreement.matched[name] = agreement.matched.get(name, 0) + int((spikes_r[name] == s).sum())
                agreement.total[name] = agreement.total.get(name, 0) + s.size
            diff = np.abs(flow_r - flow_t)
            agreement.flow_max_abs = max(agreement.flow_max_abs, float(diff.max()))
            agreement.flow_mean_abs_sum += float(diff.mean(axis=(1, 2, 3)).sum())
            agreement.windows += len(events)
    return agreements
