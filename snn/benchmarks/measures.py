"""The benchmark's other measures: spiking against ANN steps, events to tensors, the data loader
against the training step, and inference latency and memory. Each returns plain numbers; the
ratios are taken within one run (tools/benchmark.py prints them)."""

from __future__ import annotations

import resource
import time

import numpy as np
import torch
from torch import nn

from snn.benchmarks.training_step import config_for, random_batch, time_steps
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
    """Seconds per training step of the FP model and of its ReLU twin."""
    cfg = config_for("event_snn_lite.yaml", {})
    data = random_batch(cfg, batch, size, torch.Generator().manual_seed(0))
    out = {}
    for label, make in (("spiking", lambda m: m), ("ann", as_ann)):
        torch.manual_seed(0)
        model = make(build_model(cfg.model, cfg.model_args()))
        out[label] = time_steps(model, cfg, data, steps, warmup)
    return out


def random_events(count: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, size, count), "y": rng.integers(0, size, count),
        "t": np.sort(rng.integers(0, 100_000, count)), "p": rng.integers(0, 2, count).astype(np.uint8),
    }  # fmt: skip


def events_to_tensor(count: int, size: int, num_bins: int = 5, repeats: int = 3) -> dict[str, float]:
    """Events per second of the counts and the voxel grid (best of ``repeats``), and tonic's
    ``to_voxel_grid_numpy`` where it is installed (with its largest difference to ours)."""
    ev = random_events(count, size)
    rates = {}
    timed = {
        "counts": lambda: polarity_counts(ev["x"], ev["y"], ev["t"], ev["p"], num_bins, size, size, 0, 100_000),
        "voxel": lambda: voxel_grid(ev["x"], ev["y"], ev["t"], ev["p"], num_bins, size, size, normalize=False),
    }
    try:
        from tonic.functional import to_voxel_grid_numpy
    except ImportError:
        pass
    else:
        structured = np.zeros(count, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
        for key in "xytp":
            structured[key] = ev[key]
        timed["tonic voxel"] = lambda: to_voxel_grid_numpy(structured, (size, size, 2), num_bins)
    for name, fn in timed.items():
        best = min(_seconds(fn) for _ in range(repeats))
        rates[name] = count / best
    return rates


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def inference(size: int, repeats: int = 3, device: str = "cpu") -> dict[str, float]:
    """Seconds per window (FP model, batch 1, best of ``repeats``) and peak memory in MB."""
    cfg = config_for("event_snn_lite.yaml", {})
    model = build_model(cfg.model, cfg.model_args()).to(device).eval()
    x = random_batch(cfg, 1, size, torch.Generator().manual_seed(0))["events"].to(device)
    with torch.no_grad():
        model(x)
        seconds = min(_seconds(lambda: _sync(model(x))) for _ in range(repeats))
    out = {"seconds_per_window": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
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
