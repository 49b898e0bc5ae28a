"""Membranes carried across input windows: a spiking network run as a stream.

By default every forward pass starts from membranes at rest. In stateful mode each LIF neuron
keeps the membrane its last call ended with and starts the next call from it, so consecutive
windows of one sequence behave like one long input, as an event camera's stream does. The
state is per batch element; reset it at the start of every sequence (``reset_state``). No
gradient crosses a window boundary (truncation at the window), and the state is not saved in
checkpoints: a run rebuilds it from the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from snn.models.neurons import LIFNeuron


def lif_neurons(model: nn.Module) -> list[LIFNeuron]:
    return [m for m in model.modules() if isinstance(m, LIFNeuron)]


def reset_state(model: nn.Module) -> None:
    """Every neuron back at rest before the next window (the start of a sequence)."""
    for neuron in lif_neurons(model):
        neuron.state = None


def set_stateful(model: nn.Module, stateful: bool) -> None:
    """Carry membranes from one forward call to the next (True) or start each at rest (False); resets."""
    for neuron in lif_neurons(model):
        neuron.stateful = stateful
        neuron.state = None


@contextmanager
def carrying_state(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in stateful mode, from rest, for the block; stateless again afterwards."""
    set_stateful(model, True)
    try:
        yield model
    finally:
        set_stateful(model, False)
