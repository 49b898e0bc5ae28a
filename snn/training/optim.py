"""The optimiser's parameter groups and the LR schedule of a run."""

from __future__ import annotations

import math

from torch import nn

from snn.config import Config


def lr_lambda_factory(cfg: Config, steps_per_epoch: int):
    """Per-step LR factor: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    total = max(warmup + 1, cfg.num_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def schedule_change_note(cfg: Config, stored_epochs: int, start_epoch: int, lr_before: float, lr_after: float) -> str:
    """One line for a resume whose ``num_epochs`` differs from the run's own (``stored_epochs``): the
    cosine schedule is refitted to the new budget, so the LR jumps where the run continues ('' when
    nothing changes: another budget under a constant schedule keeps the LR)."""
    if cfg.lr_schedule != "cosine" or stored_epochs == cfg.num_epochs:
        return ""
    ended = " and had ended at its minimum" if start_epoch >= stored_epochs else ""
    return (
        f"this run's cosine LR schedule was made for {stored_epochs} epochs{ended}; with num_epochs "
        f"{cfg.num_epochs} it is refitted to {cfg.num_epochs} epochs, so the LR goes from {lr_before:.3g} to "
        f"{lr_after:.3g} at epoch {start_epoch + 1} and decays to {cfg.learning_rate * cfg.min_lr_ratio:.3g} "
        f"by epoch {cfg.num_epochs}"
    )


def norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The shift and scale of every batch norm (per-channel thresholds and gains of the neurons after it)."""
    return [p for m in norm_layers(model) for p in m.parameters()]


def freeze_norm_statistics(model: nn.Module) -> None:
    """Put every batch norm in eval mode: it normalizes with its running statistics and keeps them
    (its shift and scale still learn)."""
    for m in norm_layers(model):
        m.eval()


def param_groups(model: nn.Module, cfg: Config) -> list[dict]:
    """Weights; the learned quantizer steps (own LR multiplier, no weight decay); with
    ``norm_lr_multiplier != 1`` the batch norms (own LR multiplier, no weight decay); learned leaks
    (no weight decay, which would pull every leak to its shortest); learned binary thresholds (no
    weight decay, which would pull them to zero, the plain sign)."""
    steps = [p for n, p in model.named_parameters() if n.endswith("quant_layer.step")]
    norms = norm_parameters(model) if cfg.norm_lr_multiplier != 1 else []
    leaks = [p for n, p in model.named_parameters() if n.endswith("neuron.leak_log2")]
    thresholds = [p for n, p in model.named_parameters() if n.endswith("quant_layer.binary_threshold")]
    ids = {id(p) for p in steps + norms + leaks + thresholds}
    # Group order is part of the optimizer state: new groups go last, and only when used, so
    # that runs saved before them still resume.
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    if steps:
        groups.append({"params": steps, "lr": cfg.learning_rate * cfg.scale_lr_multiplier, "weight_decay": 0.0})
    if norms:
        groups.append({"params": norms, "lr": cfg.learning_rate * cfg.norm_lr_multiplier, "weight_decay": 0.0})
    if leaks:
        groups.append({"params": leaks, "weight_decay": 0.0})
    if thresholds:
        groups.append({"params": thresholds, "weight_decay": 0.0})
    return groups
