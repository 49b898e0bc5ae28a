"""Keeping spiking layers alive at low bit widths: a penalty on firing rates outside a band.

At 1 or 2 bits a layer can fall silent: its neurons never reach threshold, nothing
downstream sees it, and the flow loss alone hardly moves it back (the surrogate
gradient is small far below threshold). The penalty reads each layer's mean firing
rate with its gradient and pushes the rates back into ``[low, high]``; through the
surrogate it reaches the batch-norm shift and scale before the neurons (the
thresholds folded into batch norm) and the learned current steps, which still get a
gradient when a layer's input spikes are all zero.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import nn

from snn.models.hooks import capturing_outputs
from snn.models.neurons import LIFNeuron


def spiking_neurons(model: nn.Module) -> dict[str, LIFNeuron]:
    """Every LIF neuron of ``model``, named by its layer ("enc1"; "neuron" for a lone layer)."""
    return {
        name.removesuffix(".neuron") or "neuron": m for name, m in model.named_modules() if isinstance(m, LIFNeuron)
    }


def recording_firing_rates(model: nn.Module) -> AbstractContextManager[dict[str, torch.Tensor]]:
    """Inside, every forward pass fills the yielded dict with each spiking layer's mean firing
    rate, as a tensor that keeps its gradient; the hooks are gone on leaving."""
    return capturing_outputs(spiking_neurons(model), lambda spikes: spikes.mean())


def firing_rate_penalty(rates: dict[str, torch.Tensor], low: float, high: float) -> torch.Tensor:
    """Mean over layers of how far each rate lies outside ``[low, high]``, relative to the edge it
    crosses: a silent layer costs 1, one at ``low / 2`` costs 0.5, one inside the band 0."""
    if not 0 < low < high <= 1:
        raise ValueError(f"the firing-rate band needs 0 < low < high <= 1, got [{low}, {high}]")
    if not rates:
        raise ValueError("no firing rates recorded: did the model run inside recording_firing_rates?")
    terms = [F.relu(1 - r / low) + F.relu(r / high - 1) for r in rates.values()]
    return torch.stack(terms).mean()
