"""Firing rates and synaptic operations (SynOps) of a spiking network, measured with hooks.

SynOps is the energy proxy neuromorphic papers compare by: every non-zero input
of a layer triggers one accumulate per synapse it drives, so

    SynOps = sum over convolutions of  sum over non-zero inputs of  fan-out.

Fan-out of one input element (``g`` groups, ``C_out`` output channels):

- ``Conv2d``: ``C_out/g`` times the output positions whose window covers the
  input. Away from the borders that averages ``kh*kw / (sh*sw)``; at a given
  position it is exact only per position (a 3x3 stride-2 convolution reaches
  1 or 2 outputs per axis depending on parity), so we count it exactly.
- ``ConvTranspose2d``: each input scatters a full ``kh x kw`` kernel, so
  ``C_out/g * kh*kw``, less the positions that ``padding`` crops at the borders.

Both are counted exactly by running the same convolution with an all-ones
1-channel kernel on the map of non-zero inputs (summed over the input channels
of the group) and multiplying the sum of the result by ``C_out/g``: each output
position then counts the non-zero inputs in its window, which totals the
connections actually used.

What an input is: spikes (0/1) everywhere except the stem, whose input is the
event tensor (per-bin ON/OFF counts, or a signed voxel grid). There one
(time bin, channel, pixel) with any events counts once, whatever its count: an
event-driven accelerator adds ``weight * count`` in one accumulate. Residual
additions and the flow heads' time integration are not synapses. Dense MACs
(what a non-spiking network of the same shape would do over the same time
steps) are reported beside SynOps for scale. Figures are per sample, summed
over all time steps.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from snn.models.neurons import LIFNeuron


def connection_count(conv: nn.Module, x: torch.Tensor) -> float:
    """Synapses driven by the non-zero entries of ``x`` [N, C_in, H, W] in ``conv`` (exact)."""
    g = conv.groups
    n, c = x.shape[:2]
    # [N, g, H, W]: non-zero inputs per group; one all-ones kernel per group.
    active = (x != 0).view(n, g, c // g, *x.shape[2:]).sum(2, dtype=torch.float32)
    ones = torch.ones(g, 1, *conv.kernel_size, dtype=torch.float32, device=x.device)
    if isinstance(conv, nn.ConvTranspose2d):
        hits = F.conv_transpose2d(active, ones, None, conv.stride, conv.padding, conv.output_padding, g, conv.dilation)
    else:
        hits = F.conv2d(active, ones, None, conv.stride, conv.padding, conv.dilation, g)
    return float(hits.double().sum()) * conv.out_channels / g


def dense_macs(conv: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Multiply-accumulates of the same convolution on dense (non-spiking) inputs."""
    kernel = conv.kernel_size[0] * conv.kernel_size[1]
    if isinstance(conv, nn.ConvTranspose2d):
        return float(x.numel()) * conv.out_channels / conv.groups * kernel
    return float(y.numel()) * conv.in_channels / conv.groups * kernel


def _owner(name: str) -> str:
    """``enc1.conv`` -> ``enc1``, ``enc1.neuron`` -> ``enc1`` (the layer a module belongs to)."""
    return name.rsplit(".", 1)[0] if "." in name else name


class ActivityMonitor:
    """Hooks a model to pool firing rates and SynOps over every forward pass it sees.

        with ActivityMonitor(model) as monitor:
            evaluate_model(model, loader, device)
        monitor.firing_rates()       # {"stem": 0.08, "enc1": 0.05, ...}, pooled over all samples
        monitor.synops_per_sample()  # total SynOps of one sample

    Layers are named by the module that owns the convolution or neuron
    (``stem``, ``enc1``, ..., ``head1``). The number of samples is read from the
    model input's first dimension.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.handles: list = []
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.hook_seconds = 0.0  # time spent counting, to take out of throughput figures
        self.spikes: dict[str, float] = defaultdict(float)
        self.neuron_steps: dict[str, int] = defaultdict(int)
        self.synops: dict[str, float] = defaultdict(float)
        self.macs: dict[str, float] = defaultdict(float)

    # ------------------------------------------------------------ hooks
    def attach(self) -> ActivityMonitor:
        if self.handles:
            return self
        self.handles.append(self.model.register_forward_pre_hook(self._count_samples))
        for name, m in self.model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                self.handles.append(m.register_forward_hook(self._conv_hook(_owner(name))))
            elif isinstance(m, LIFNeuron):
                self.handles.append(m.register_forward_hook(self._neuron_hook(_owner(name))))
        return self

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> ActivityMonitor:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _count_samples(self, module, inputs) -> None:
        self.samples += int(inputs[0].shape[0])

    def _start(self, x: torch.Tensor) -> float:
        # Let queued device work finish first, so that hook_seconds holds only the hook's own time.
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        return time.perf_counter()

    def _conv_hook(self, layer: str):
        @torch.no_grad()
        def hook(conv, inputs, output) -> None:
            x = inputs[0]
            t0 = self._start(x)
            self.synops[layer] += connection_count(conv, x)
            self.macs[layer] += dense_macs(conv, x, output)
            self.hook_seconds += time.perf_counter() - t0

        return hook

    def _neuron_hook(self, layer: str):
        @torch.no_grad()
        def hook(neuron, inputs, spikes) -> None:
            t0 = self._start(spikes)
            # Partial sums over one image plane stay exact in float32 (< 2**24 ones) and are fast.
            self.spikes[layer] += float(spikes.detach().sum(dim=(-2, -1)).double().sum())
            self.neuron_steps[layer] += spikes.numel()
            self.hook_seconds += time.perf_counter() - t0

        return hook

    # ------------------------------------------------------------ results
    def firing_rates(self) -> dict[str, float]:
        """Spikes per neuron per time step of every spiking layer, pooled over all samples."""
        return {k: self.spikes[k] / n for k, n in self.neuron_steps.items() if n}

    def synops_per_layer(self) -> dict[str, float]:
        return {k: v / max(self.samples, 1) for k, v in self.synops.items()}

    def macs_per_layer(self) -> dict[str, float]:
        return {k: v / max(self.samples, 1) for k, v in self.macs.items()}

    def synops_per_sample(self) -> float:
        return sum(self.synops.values()) / max(self.samples, 1)

    def macs_per_sample(self) -> float:
        return sum(self.macs.values()) / max(self.samples, 1)

    def summary(self) -> dict:
        """Plain-value summary (JSON-able) of everything measured."""
        return {
            "samples": self.samples,
            "firing_rates": self.firing_rates(),
            "synops_per_layer": self.synops_per_layer(),
            "synops_per_sample": self.synops_per_sample(),
            "dense_macs_per_layer": self.macs_per_layer(),
            "dense_macs_per_sample": self.macs_per_sample(),
        }
