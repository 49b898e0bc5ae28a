"""Check an export against the PyTorch model it came from, on the same inputs: the model evaluates
in the integer arithmetic it exports (``snn.models.integer``), so every spike and every flow
code must be equal."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from snn.deploy import reference
from snn.deploy.export import Export
from snn.models.hooks import capturing_outputs

FLOW_HEADS = ("head1", "head2", "head3")


@dataclass
class Agreement:
    windows: int = 0
    differing: dict[str, int] = field(default_factory=dict)  # per layer: neurons x steps whose spike differs
    total: dict[str, int] = field(default_factory=dict)
    code_differing: int = 0  # flow-head code sums that differ
    code_total: int = 0
    flow_max_abs: float = 0.0  # float32 (model) against float64 (reference) rounding of the same codes

    @property
    def spike_agreement(self) -> float:
        return 1 - sum(self.differing.values()) / max(1, sum(self.total.values()))

    @property
    def passed(self) -> bool:
        return self.windows > 0 and not any(self.differing.values()) and self.code_differing == 0

    def summary(self) -> str:
        worst = max(self.differing.items(), key=lambda kv: kv[1], default=("-", 0))
        return (
            f"{self.windows} windows: identical spikes {100 * self.spike_agreement:.4f} % of "
            f"{sum(self.total.values()):,} neurons x steps (most differing: {worst[0]}, {worst[1]}), "
            f"identical flow codes {self.code_total - self.code_differing:,} of {self.code_total:,}, "
            f"flow max |diff| {self.flow_max_abs:.1e} px (float32 rounding): {'PASS' if self.passed else 'FAIL'}"
        )


@torch.no_grad()
def torch_spikes_and_flow(
    model: nn.Module, events: torch.Tensor, code_sums: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's flow in evaluation and every spiking layer's spikes [T, N, C, H, W]; ``code_sums``
    receives each flow head's codes summed over the steps (an integer evaluation pass only)."""
    neurons = {name: layer.neuron for name, layer in model.spiking_layers().items()}
    with capturing_outputs(neurons, lambda out: out.cpu().numpy()) as spikes:
        flow = model.eval()(events).cpu().double().numpy()
    if code_sums is not None:
        for name in FLOW_HEADS:
            code_sums[name] = getattr(model, name).last_code_sum.cpu().numpy()
    return flow, spikes


def compare(model: nn.Module, export: Export, batches) -> Agreement:
    """Run the integer reference and the model on every batch of event windows ([N, T, C, H, W]) and
    count what differs."""
    if model.eval().integer_plan() is None:
        raise ValueError("the model does not evaluate in integer arithmetic, so an exact comparison means nothing")
    agreement = Agreement()
    for events in batches:
        trace: dict[str, dict[str, np.ndarray]] = {}
        flow_r, spikes_r = reference.run(export.description, export.weights, events.cpu().numpy(), trace=trace)
        codes_t: dict[str, np.ndarray] = {}
        flow_t, spikes_t = torch_spikes_and_flow(model, events.float(), codes_t)
        for name, s in spikes_t.items():
            agreement.differing[name] = agreement.differing.get(name, 0) + int((spikes_r[name] != s).sum())
            agreement.total[name] = agreement.total.get(name, 0) + s.size
        for name in FLOW_HEADS:
            agreement.code_differing += int((trace[name]["code_sum"] != codes_t[name]).sum())
            agreement.code_total += codes_t[name].size
        agreement.flow_max_abs = max(agreement.flow_max_abs, float(np.abs(flow_r - flow_t).max()))
        agreement.windows += len(events)
    return agreement
