"""Time one training step of the shipped configs: full precision, each QAT width, and distillation.

A step is what ``Trainer.train_one_epoch`` does per batch: the multi-scale forward pass, the
flow loss (plus, with a teacher, its no-grad forward pass and the distillation loss), backward
and an AdamW step, on a fixed random batch so that data loading is not timed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from snn.benchmarks.timing import interleaved_seconds, median_ratios
from snn.config import CONFIG_DIR, Config, load_config
from snn.models.factory import build_model
from snn.quantization.control import calibrating
from snn.training.losses import distillation_loss, multiscale_epe_loss

# (label, config, overrides): the ladder's steps.
STEPS = (
    ("FP32", "event_snn_lite.yaml", {}),
    ("W8A8", "event_snn_lite_8bit.yaml", {}),
    ("W4A4", "event_snn_lite_4bit.yaml", {}),
    ("W2A4", "event_snn_lite_2bit.yaml", {"current_bits": 4}),
    ("W1A4", "event_snn_lite_1bit.yaml", {"binarize": False, "current_bits": 4}),
    ("W1A1", "event_snn_lite_1bit.yaml", {}),
)


@dataclass
class StepTime:
    label: str
    seconds: float  # median seconds per step
    samples_per_s: float
    ratio_to_fp: float  # median over rounds of this step's time over the FP step's


def config_for(name: str, overrides: dict) -> Config:
    return load_config(CONFIG_DIR / name, overrides or None)


def random_batch(cfg: Config, batch: int, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Poisson event counts, a smooth random flow and a full validity mask."""
    shape = (batch, cfg.num_bins, 2, size, size)
    events = torch.poisson(torch.full(shape, 0.3), generator=generator)
    flow = torch.randn(batch, 2, 1, 1, generator=generator).expand(batch, 2, size, size).contiguous()
    return {"events": events, "flow": flow, "valid": torch.ones(batch, 1, size, size)}


def training_step(model: nn.Module, cfg: Config, data: dict, teacher: nn.Module | None = None) -> Callable[[], None]:
    """A function that runs one training step of ``model`` on ``data`` (with its own AdamW); on CUDA
    it waits for the GPU to finish the step, so that a timer around it sees the whole step."""
    model.train()
    on_cuda = data["events"].is_cuda
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        preds = model.forward_multiscale(data["events"])
        loss = multiscale_epe_loss(preds, data["flow"], data["valid"], cfg.scale_weights)
        if teacher is not None:
            with torch.no_grad():
                taught = teacher.forward_multiscale(data["events"])
            loss = loss + distillation_loss(preds, taught, cfg.scale_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_cuda:
            torch.cuda.synchronize()

    return step


def training_step_times(
    batch: int = 8, size: int = 48, steps: int = 10, warmup: int = 2, device: str = "cpu"
) -> list[StepTime]:
    """Each ladder width's step, and W4A4 with its teacher (the W8A8 model) distilling, timed in
    interleaved rounds on ``device``; the ratio to FP32 is the median of the rounds' ratios."""
    generator = torch.Generator().manual_seed(0)
    runs = {}
    for label, name, overrides in STEPS:
        cfg = config_for(name, overrides)
        torch.manual_seed(0)
        model = build_model(cfg.model, cfg.model_args()).to(device)
        data = {k: v.to(device) for k, v in random_batch(cfg, batch, size, generator).items()}
        model(data["events"][:1])  # quantizer ranges start from a first pass
        runs[label] = training_step(model, cfg, data)
        if label == "W4A4":
            teacher_cfg = config_for("event_snn_lite_8bit.yaml", {})
            teacher = build_model(teacher_cfg.model, teacher_cfg.model_args()).to(device)
            with calibrating(teacher), torch.no_grad():  # its ranges and steps from a first pass
                teacher(data["events"][:1])
            runs["W4A4 + distillation"] = training_step(model, cfg, data, teacher)
    seconds = interleaved_seconds(runs, steps, warmup)
    ratios = median_ratios(seconds, "FP32")
    out = []
    for label, times in seconds.items():
        median = statistics.median(times)
        out.append(StepTime(label, median, batch / median, ratios[label]))
    return out
