"""The benchmark's other measures: spiking against ANN steps, events to tensors, the data loader
against the training step, and inference latency and memory. Each returns plain numbers; the
ratios are taken within one run (tools/benchmark.py prints them)."""

from __future__ import annotations

import resource
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snn.benchmarks.timing import in_fresh_process, interleaved_seconds, median_ratios
from snn.benchmarks.training_step import config_for, random_batch, training_step
from snn.data.representations import polarity_counts, voxel_grid
from snn.models.factory import build_model
from snn.models.neurons import LIFNeuron


class ReluOverTime(nn.Module):
    """Stands in for a LIF neuron: ReLU on the whole [T, B, ...] current, the same shapes out."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return torch.relu(x_seq)


def as_ann(model: nn.Module) -> nn.Module:
    """The same network, every LIF neuron replaced by a ReLU: identical convolutions."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LIFNeuron):
                setattr(module, name, ReluOverTime())
    return model


def spiking_vs_ann(batch: int, size: int, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per training step of the FP model and of its ReLU twin, timed in interleaved
    rounds, and ``ratio``: the median of the rounds' spiking / ANN ratios."""
    cfg = config_for("event_snn_lite.yaml", {})
    data = random_batch(cfg, batch, size, torch.Generator().manual_seed(0))
    runs = {}
    for label, make in (("spiking", lambda m: m), ("ann", as_ann)):
        torch.manual_seed(0)
        runs[label] = training_step(make(build_model(cfg.model, cfg.model_args())), cfg, data)
    seconds = interleaved_seconds(runs, steps, warmup)
    return {label: statistics.median(times) for label, times in seconds.items()} | {
        "ratio": median_ratios(seconds, "ann")["spiking"]
    }


def _forward_backward(run, leaf: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The spikes of ``run(leaf)`` and the leaf's gradient after backward with ``upstream``."""
    leaf.grad = None
    spikes = run(leaf)
    spikes.backward(upstream)
    return spikes.detach(), leaf.grad


def _peer_neurons(tau: float, threshold: float, alpha: float) -> dict:
    """spikingjelly's multi-step ``LIFNode`` (its PyTorch implementation) and snntorch's ``Leaky`` over a loop, where
    installed, set up for our arithmetic: v = (1 - 1/tau) v + x, soft (subtracting) detached reset, arctan
    surrogate of the same sharpness."""
    peers = {}
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        pass
    else:
        node = neuron.LIFNode(tau=tau, decay_input=False, v_threshold=threshold, v_reset=None,
                              surrogate_function=surrogate.ATan(alpha=alpha), detach_reset=True,
                              step_mode="m")  # fmt: skip

        def jelly(x):
            node.reset()
            return node(x)

        peers["spikingjelly LIFNode"] = jelly
    try:
        import snntorch
        from snntorch import surrogate as snn_surrogate
    except ImportError:
        pass
    else:
        leaky = snntorch.Leaky(beta=1 - 1 / tau, threshold=threshold, spike_grad=snn_surrogate.atan(alpha=alpha),
                               reset_mechanism="subtract", reset_delay=False)  # fmt: skip

        def snn_loop(x):
            mem = leaky.init_leaky()
            out = []
            for step in x:
                spk, mem = leaky(step, mem)
                out.append(spk)
            return torch.stack(out)

        peers["snntorch Leaky"] = snn_loop
    return peers


def multistep_lif(shape: tuple[int, ...] = (5, 4, 32, 160, 160), repeats: int = 5) -> dict[str, dict]:
    """Forward+backward seconds (median of ``repeats`` interleaved rounds) of our LIF over a [T, B, C, H, W]
    current, of the same arithmetic as a plain per-step loop, and of spikingjelly's and snntorch's neurons
    where installed; each with the median of its rounds' time over ours, the number of spikes and the
    largest gradient difference against ours (a spike that differs changes the gradients of every later
    step)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator) * 0.8 + 0.4
    upstream = torch.randn(shape, generator=generator)
    ours = LIFNeuron(tau=2.0, threshold=1.0, alpha=2.0)
    runs = {"ours (fused)": ours.forward, "plain per-step loop": ours.forward_stepwise}
    runs.update(_peer_neurons(ours.tau, ours.threshold, ours.alpha))
    # A leaf of its own for each, so that no run's gradient lands in another's.
    calls = {
        name: partial(_forward_backward, run, x.clone().requires_grad_(True), upstream) for name, run in runs.items()
    }
    results = {name: call() for name, call in calls.items()}  # also the warm-up
    seconds = interleaved_seconds(calls, repeats, warmup=0)
    ratios = median_ratios(seconds, "ours (fused)")
    spikes, grad = results["ours (fused)"]
    return {
        name: {
            "seconds": statistics.median(seconds[name]),
            "ratio_to_ours": ratios[name],
            "spikes_differing": int((theirs[0] != spikes).sum()),
            "max_grad_difference": float((theirs[1] - grad).abs().max()),
        }
        for name, theirs in results.items()
    }


def random_events(count: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, size, count), "y": rng.integers(0, size, count),
        "t": np.sort(rng.integers(0, 100_000, count)), "p": rng.integers(0, 2, count).astype(np.uint8),
    }  # fmt: skip


def events_to_tensor(count: int, size: int, num_bins: int = 5, repeats: int = 3) -> dict[str, float]:
    """Events per second of the counts and the voxel grid (best of ``repeats``), and of tonic's
    ``to_voxel_grid_numpy`` where it is installed, with ``tonic voxel max difference``: the largest
    difference between its grid and ours on the bins both define.

    Tonic follows E2VID and spreads the window over ``n`` bins, dropping what falls past the last;
    ours follows E-RAFT and spreads it over ``num_bins - 1`` intervals. Tonic with ``num_bins - 1``
    bins therefore gives our first ``num_bins - 1`` bins; it is timed with ``num_bins``, the same
    output size as ours."""
    ev = random_events(count, size)
    rates = {}
    ours = lambda: voxel_grid(ev["x"], ev["y"], ev["t"], ev["p"], num_bins, size, size, normalize=False)  # noqa: E731
    timed = {
        "counts": lambda: polarity_counts(ev["x"], ev["y"], ev["t"], ev["p"], num_bins, size, size, 0, 100_000),
        "voxel": ours,
    }
    try:
        from tonic.functional import to_voxel_grid_numpy
    except ImportError:
        to_voxel_grid_numpy = None
    else:
        structured = np.zeros(count, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
        for key in "xytp":
            structured[key] = ev[key]
        structured["p"][structured["p"] == 0] = -1  # what tonic does in place on its first call
        timed["tonic voxel"] = lambda: to_voxel_grid_numpy(structured, (size, size, 2), num_bins)
    for name, times in interleaved_seconds(timed, repeats).items():
        rates[name] = count / min(times)
    if to_voxel_grid_numpy is not None and num_bins > 1:
        theirs = to_voxel_grid_numpy(structured, (size, size, 2), num_bins - 1)[:, 0]
        rates["tonic voxel max difference"] = float(np.abs(theirs - ours()[: num_bins - 1]).max())
    return rates


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def inference(size: int, repeats: int = 3, device: str = "cpu") -> dict[str, float]:
    """Seconds per window (FP model, batch 1, best of ``repeats``) and peak memory in MB, measured in a
    fresh process so that nothing measured before counts: its peak RSS, the part of it the forward passes
    added (``forward_rss_mb``), and on CUDA the most memory allocated."""
    return in_fresh_process(_inference_here, size, repeats, device)


def _memory_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process from /proc (Linux), else the peak from getrusage.

    Not getrusage on Linux: its peak carries over from the parent that started this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _inference_here(size: int, repeats: int, device: str) -> dict[str, float]:
    cfg = config_for("event_snn_lite.yaml", {})
    model = build_model(cfg.model, cfg.model_args()).to(device).eval()
    x = random_batch(cfg, 1, size, torch.Generator().manual_seed(0))["events"].to(device)
    before = _memory_mb("VmRSS")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        model(x)
        seconds = min(_seconds(lambda: _sync(model(x))) for _ in range(repeats))
    peak = _memory_mb("VmHWM")
    out = {"seconds_per_window": seconds, "peak_rss_mb": peak, "forward_rss_mb": max(0.0, peak - before)}
    if device.startswith("cuda"):
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _sync(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
    return tensor


def loader_samples_per_s(loader, batches: int) -> float:
    """Samples per second the loader delivers over ``batches`` batches (after its first)."""
    it = iter(loader)
    next(it)
    t0, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            seen += len(next(it)["events"])
        except StopIteration:
            break
    return seen / (time.perf_counter() - t0)


def integer_reference(size: int = 320, rounds: int = 3, variant: str = "W8A8") -> dict[str, float]:
    """Seconds per ``size`` x ``size`` window (batch 1, 5 bins of Poisson events, CPU) of the numpy
    integer reference of a shipped model's export, against the PyTorch model evaluating the same window
    in its integer arithmetic and in the float fake-quant one; interleaved rounds in a fresh process."""
    return in_fresh_process(_integer_reference_here, size, rounds, variant)


def _integer_reference_here(size: int, rounds: int, variant: str) -> dict[str, float]:
    from snn.deploy import reference
    from snn.deploy.fold import fold_network
    from snn.models.flownet import float_fake_quant
    from snn.models.zoo import pretrained

    model = pretrained(variant).eval()
    description, tensors = fold_network(model, size, size)
    weights = {name: codes for name, (codes, _) in tensors.items()}
    events = torch.poisson(torch.full((1, model.num_bins, model.in_channels, size, size), 0.3))

    def floating():
        with float_fake_quant(model):
            return model(events)

    with torch.no_grad():
        seconds = interleaved_seconds(
            {
                "reference": lambda: reference.run(description, weights, events.numpy()),
                "torch_integer": lambda: model(events),
                "torch_float": floating,
            },
            rounds,
        )
    out = {f"{k}_seconds": statistics.median(v) for k, v in seconds.items()}
    for other in ("torch_integer", "torch_float"):
        out[f"reference_over_{other}"] = median_ratios(seconds, other)["reference"]
    return out
