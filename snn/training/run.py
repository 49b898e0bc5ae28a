"""Assemble a training run from a config: data, model, trainer, output folders.

The scripts (train.py, finetune_quantized.py) parse flags and call in here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import torch

from snn.config import Config, config_changes, config_from_checkpoint, save_config
from snn.data.errors import DatasetFormatError
from snn.data.loaders import make_dataset, make_loader, prepare_data_root, sequences_of
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.models.checkpoint import checkpoint_widths, load_checkpoint, load_model
from snn.models.factory import MODELS, build_model
from snn.quantization.control import model_widths, widths_tag
from snn.training.resume import continues_run
from snn.training.trainer import Trainer
from snn.utils.distributed import barrier, describe_run, finish, init_from_environment, is_main
from snn.utils.runtime import resolve_device, seed_everything

logger = logging.getLogger(__name__)


class RunDirError(ValueError):
    """Starting the run would overwrite another run's checkpoints or logs."""


def check_run_dirs(checkpoint_dir: Path, log_dir: Path, resuming_own_run: bool) -> None:
    """Refuse to start a fresh run on top of another run's checkpoints or CSV log."""
    if resuming_own_run:
        return
    taken = [
        p
        for p in (checkpoint_dir / "last.pth", checkpoint_dir / "best_model.pth", log_dir / "metrics.csv")
        if p.exists()
    ]
    if taken:
        last = checkpoint_dir / "last.pth"
        hint = f"Resume it with --resume {last}, or choose" if last.exists() else "Choose"
        raise RunDirError(
            f"{taken[0]} already exists: another run wrote there. {hint} another --checkpoint-dir/--log-dir"
        )


ARCH_KEYS = ("base_ch", "num_bins", "tau", "threshold", "reset", "surrogate_alpha", "flow_scale", "learn_leak",
             "input_norm", "input_bins", "bins_per_step", "bottleneck_dilation", "head_input",
             "global_context")  # fmt: skip


def adopt_architecture(cfg: Config, ckpt: dict, path: Path) -> Config:
    """Take the network's shape from a checkpoint we start from; quantization stays the config's."""
    changes = {
        k: ckpt["model_args"][k]
        for k in ARCH_KEYS
        if k in ckpt["model_args"] and ckpt["model_args"][k] != getattr(cfg, k)
    }
    rep = ckpt["config"].get("representation")
    if rep is not None and rep != cfg.representation:
        changes["representation"] = rep
    if changes:
        logger.info("architecture taken from %s: %s", path, changes)
        cfg = dataclasses.replace(cfg, **changes)
    return cfg


def load_teacher(path: Path, device: torch.device) -> torch.nn.Module:
    """The distillation teacher: the checkpoint's model in eval mode, without gradients, loaded once."""
    teacher = load_model(path, device=device)
    teacher.requires_grad_(False)
    logger.info("distilling from %s (%s)", path, widths_tag(*model_widths(teacher)))
    return teacher


def check_same_settings(cfg: Config, ckpt: dict, path: Path) -> None:
    """Continuing a run with other settings would mix two experiments in one folder: refuse, naming the keys."""
    changes = config_changes(config_from_checkpoint(ckpt, path), cfg)
    if changes:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        raise RunDirError(
            f"{path}: this {widths_tag(*checkpoint_widths(ckpt))} run was trained with other settings ({listed}); "
            f"resume it with its own config "
            f"(omit --config, or --config {Path(path).parent / 'config.yaml'}), start a new run in another "
            f"--checkpoint-dir, or pass --allow-config-change"
        )


def remove_partial_files(checkpoint_dir: Path) -> None:
    """A process killed while saving leaves ``.<name>.tmp``; the file it replaced is intact, so drop the partial one."""
    for tmp in sorted(checkpoint_dir.glob(".*.tmp")):
        logger.info("removing %s, left by a save that was interrupted", tmp)
        tmp.unlink()


def build_trainer(
    cfg: Config,
    device: torch.device,
    resume: Path | None = None,
    strict_load: bool = False,
    warm_start: bool | None = None,
    allow_config_change: bool = False,
) -> Trainer:
    """Data, model and trainer for ``cfg``, started from ``resume`` when given.

    Whether ``resume`` continues this run or warm-starts a new one from its
    weights is decided here, once (``snn.training.resume.continues_run``);
    ``warm_start`` forces the answer. Continuing with settings other than the
    run's own is an error unless ``allow_config_change``.
    """
    checkpoint_dir, log_dir = Path(cfg.checkpoint_dir), Path(cfg.log_dir)
    ckpt = None if resume is None else load_checkpoint(resume)  # fail on a bad file before any data work
    continuing = ckpt is not None and continues_run(resume, ckpt, checkpoint_dir, warm_start)
    if continuing and not allow_config_change:
        check_same_settings(cfg, ckpt, resume)
    check_run_dirs(checkpoint_dir, log_dir, continuing)
    barrier()  # every rank has checked the folders before rank 0 writes in them
    if is_main():
        remove_partial_files(checkpoint_dir)
    if ckpt is not None and not continuing:
        cfg = adopt_architecture(cfg, ckpt, resume)
        if cfg.distill_weight > 0 and cfg.distill_from is None:
            cfg = dataclasses.replace(cfg, distill_from=str(resume))  # the model we start from teaches
    if cfg.distill_weight > 0 and cfg.distill_from is None:
        raise RunDirError(
            "distill_weight > 0 needs a teacher: start from a trained checkpoint (--pretrained, or --resume "
            "with another run's checkpoint) or set distill_from"
        )
    if is_main():
        prepare_data_root(cfg)  # rank 0 generates the synthetic set; the others wait for it
    barrier()
    root = prepare_data_root(cfg)
    multiple = MODELS[cfg.model].downsample_factor
    train_set = make_dataset(cfg, root, "train", train=True, size_multiple=multiple)
    if cfg.loss != "contrast" and not any(seq.has_ground_truth for seq in sequences_of(train_set)):
        raise DatasetFormatError(
            root, f"its training sequences have no flow labels, which loss: {cfg.loss} learns from (use loss: contrast)"
        )
    val_set = make_dataset(cfg, root, "val")
    logger.info("data: %s (%d training windows, %d validation windows)", root, len(train_set), len(val_set))
    model_args = cfg.model_args()
    model = build_model(cfg.model, model_args)
    trainer = Trainer(
        cfg,
        model,
        cfg.model,
        model_args,
        make_loader(cfg, train_set, train=True, seed=cfg.seed),
        make_loader(cfg, val_set),
        device,
        checkpoint_dir,
        log_dir,
    )
    if cfg.distill_weight > 0:
        trainer.teacher = load_teacher(Path(cfg.distill_from), device)
    if continuing:
        trainer.continue_from(ckpt, resume, strict=strict_load)
    elif ckpt is not None:
        trainer.warm_start_from(ckpt, resume, strict=strict_load)
    # The folders only now: a run refused above (a flag, the teacher, a checkpoint that does not fit)
    # leaves none behind.
    if is_main():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, checkpoint_dir / "config.yaml")
    return trainer


def run_precision(trainer: Trainer) -> str:
    """What the run computes in, for its first log line: 'full-precision with bfloat16 autocast', 'W4A4', ..."""
    amp = trainer.cfg.amp
    if not trainer.quantized:
        return "full-precision" + ("" if amp == "none" else f" with {amp} autocast")
    tag = widths_tag(*model_widths(trainer.model))
    return tag + ("" if amp == "none" else f" (--amp {amp} unused: quantized currents are computed in float32)")


def train_and_test(
    cfg: Config,
    resume: Path | None = None,
    strict_load: bool = False,
    warm_start: bool | None = None,
    allow_config_change: bool = False,
) -> str:
    """Train (or fine-tune) on ``cfg.device`` from ``cfg.seed``, then evaluate the best checkpoint
    on the test split; returns a summary. SIGINT/SIGTERM raise ``TrainingInterrupted`` after saving.

    Under torchrun or srun each process trains its share (``snn.utils.distributed``); rank 0
    alone evaluates and returns the summary, the others return an empty string.
    """
    device = init_from_environment(resolve_device(cfg.device))
    spread = describe_run(cfg.batch_size)
    if spread:
        logger.info(spread)
    seed_everything(cfg.seed)
    try:
        return _train_and_test(cfg, device, resume, strict_load, warm_start, allow_config_change)
    finally:
        finish()


def _train_and_test(cfg, device, resume, strict_load, warm_start, allow_config_change) -> str:
    # The test split is read only after training: check now that it is there and readable.
    if is_main():
        make_dataset(cfg, prepare_data_root(cfg), "test")
    barrier()
    trainer = build_trainer(cfg, device, resume, strict_load, warm_start, allow_config_change)
    logger.info(
        "training %s on %s, checkpoints in %s, logs in %s",
        run_precision(trainer), device, trainer.checkpoint_dir, trainer.log_dir,
    )  # fmt: skip
    best = trainer.fit()
    if not is_main():
        return ""
    best_path = trainer.checkpoint_dir / "best_model.pth"
    metrics = evaluate_checkpoint(best_path, trainer.cfg.data_root, "test", device=device).metrics
    test, fwl = metrics["dense"]["overall"], metrics["fwl"]["overall"]
    # The validation FWL that picks a contrast run's model is one window's; the test figure is the tools'.
    fwl_span = f"over spans of {metrics['fwl']['windows']} windows"
    chosen = (
        f"best validation FWL {trainer.best_val_fwl:.3f} (flow warp loss of one window: higher is better)"
        if trainer.cfg.loss == "contrast" or not math.isfinite(best)
        else f"best validation AEE {best:.3f}"
    )
    if not test["num_pixels"]:
        return f"{chosen}\ntest FWL {fwl:.3f} {fwl_span} (no ground truth) from {best_path}"
    return (
        f"{chosen}\n"
        f"test AEE {test['aee']:.3f} px (zero-flow AEE {test['zero_flow_aee']:.3f} px, "
        f"ratio {test['aee'] / test['zero_flow_aee']:.2f}), FWL {fwl:.3f} {fwl_span}, from {best_path}"
    )
