"""Membranes carried across input windows: a spiking network run as a stream.

By default every forward pass starts from membranes at rest. In stateful mode each LIF neuron
keeps the membrane its last call ended with and starts the next call from it, so consecutive
windows of one sequence behave like one long input, as an event camera's stream does. The
state is per batch element; reset it at the start of every sequence (``reset_state``). No
gradient crosses a window boundary (truncation at the window), and the state is not saved in
checkpoints: a run rebuilds it from the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
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


def count_windows(steps: int, num_bins: int) -> int:
    """How many windows of ``num_bins`` time bins ``steps`` bins make; a ValueError unless whole."""
    if num_bins < 1 or steps % num_bins:
        raise ValueError(f"{steps} time bins are not whole windows of {num_bins} bins")
    return steps // num_bins


@contextmanager
def carrying_state(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in stateful mode, from rest, for the block; stateless again afterwards."""
    set_stateful(model, True)
    try:
        yield model
    finally:
        set_stateful(model, False)


def forward_with_history(
    forward: Callable[[torch.Tensor], object], model: nn.Module, events: torch.Tensor, num_bins: int
) -> object:
    """``forward`` of the last window of ``events`` [B, k * num_bins, C, H, W], its membranes carried
    over from the k - 1 windows before it, which run from rest without gradient.

    ``forward`` is ``model``'s (or a wrapper's, such as DDP's, around the same neurons). With k = 1
    it is a plain stateless call.
    """
    steps = events.shape[1]
    if count_windows(steps, num_bins) == 1:
        return forward(events)
    with carrying_state(model):
        with torch.no_grad():
            for start in range(0, steps - num_bins, num_bins):
                forward(events[:, start : start + num_bins])
        return forward(events[:, steps - num_bins :])


# (sequence, segment, index) of a window: see ``window_keys``.
WindowKey = tuple[str, int, int]


def stream_windows(
    model: nn.Module, events: torch.Tensor, keys: list[WindowKey], previous: WindowKey | None
) -> tuple[torch.Tensor, WindowKey | None]:
    """``model`` (in stateful mode) over a batch of windows one at a time, in order.

    ``keys`` are the windows' ``window_keys``; the membranes start at rest wherever a window does
    not ``follow`` ``previous``, the key of the window before it (a new sequence, or a gap in time).
    Returns the outputs, concatenated, and the last key, to pass on with the next batch.
    """
    outputs = []
    for i, key in enumerate(keys):
        if not follows(key, previous):
            reset_state(model)
        outputs.append(model(events[i : i + 1]))
        previous = key
    return torch.cat(outputs), previous


def window_keys(batch: dict) -> list[WindowKey]:
    """(sequence, segment, index) of every window of a collated batch; ``segment`` counts the gaps in
    time before the window in its sequence (``snn.data.sequence.window_segments``; 0 where the data
    does not say)."""
    segments = batch.get("segment", [0] * len(batch["index"]))
    return [
        (name, int(segment), int(index))
        for name, segment, index in zip(batch["sequence"], segments, batch["index"], strict=True)
    ]


def follows(key: WindowKey, previous: WindowKey | None) -> bool:
    """Whether window ``key`` comes right after ``previous`` in time: same sequence, no gap, next index."""
    return previous is not None and key[:2] == previous[:2] and key[2] == previous[2] + 1
