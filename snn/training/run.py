"""Assemble a training run from a config: data, model, trainer, output folders.

The scripts (train.py, finetune_quantized.py) parse flags and call in here.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from snn.config import Config, save_config
from snn.data.provider import build_dataset
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.models.factory import build_model
from snn.training.checkpoint import is_own_checkpoint, load_checkpoint
from snn.training.trainer import Trainer
from snn.utils.runtime import resolve_device, seed_everything

logger = logging.getLogger(__name__)


class RunDirError(ValueError):
    """Starting the run would overwrite another run's checkpoints or logs."""


def prepare_data_root(cfg: Config) -> Path:
    """The data root; the synthetic dataset is generated on first use."""
    root = Path(cfg.data_root)
    if cfg.dataset == "synthetic":
        from snn.data.synthetic import ensure_synthetic_dataset

        ensure_synthetic_dataset(root, synthetic_config(cfg), **synthetic_split_args(cfg))
    return root


_SPLIT_KEYS = ("num_train", "num_val", "num_test", "seed", "workers")


def synthetic_config(cfg: Config):
    """The generator settings of the config's ``synthetic`` section (split sizes aside)."""
    from snn.data.synthetic_config import SyntheticConfig

    fields = {k: v for k, v in cfg.synthetic.items() if k not in _SPLIT_KEYS}
    return SyntheticConfig.from_dict(fields, source="config key 'synthetic'")


def synthetic_split_args(cfg: Config) -> dict:
    return {k: v for k, v in cfg.synthetic.items() if k in _SPLIT_KEYS}


def make_dataset(cfg: Config, root: Path, split: str, train: bool) -> Dataset:
    return build_dataset(
        root,
        split,
        num_bins=cfg.num_bins,
        representation=cfg.representation,
        crop_size=cfg.crop_size if train else None,
        augment=cfg.augment and train,
    )


def make_loader(cfg: Config, dataset: Dataset, train: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        persistent_workers=cfg.num_workers > 0,
    )


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
        raise RunDirError(
            f"{taken[0]} already exists: another run wrote there. Resume it with --resume "
            f"{checkpoint_dir / 'last.pth'}, or choose another --checkpoint-dir/--log-dir"
        )


ARCH_KEYS = ("base_ch", "num_bins", "tau", "threshold", "reset", "surrogate_alpha", "flow_scale")


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


def build_trainer(
    cfg: Config,
    device: torch.device,
    resume: Path | None = None,
    trainer_cls: type[Trainer] = Trainer,
    strict_load: bool = False,
    warm_start: bool | None = None,
) -> Trainer:
    """Data, model and trainer for ``cfg``; ``resume`` continues or warm-starts (see Trainer.resume)."""
    checkpoint_dir, log_dir = Path(cfg.checkpoint_dir), Path(cfg.log_dir)
    own = resume is not None and is_own_checkpoint(resume, checkpoint_dir) and not warm_start
    check_run_dirs(checkpoint_dir, log_dir, own)
    if resume is not None:
        ckpt = load_checkpoint(resume)  # fail on a bad file before any data work
        if not own:
            cfg = adopt_architecture(cfg, ckpt, resume)
    root = prepare_data_root(cfg)
    train_set = make_dataset(cfg, root, "train", train=True)
    val_set = make_dataset(cfg, root, "val", train=False)
    logger.info("data: %s (%d training windows, %d validation windows)", root, len(train_set), len(val_set))
    model_args = cfg.model_args()
    model = build_model(cfg.model, model_args)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    trainer = trainer_cls(
        cfg,
        model,
        cfg.model,
        model_args,
        make_loader(cfg, train_set, train=True, seed=cfg.seed),
        make_loader(cfg, val_set, train=False),
        device,
        checkpoint_dir,
        log_dir,
    )
    if resume is not None:
        trainer.resume(resume, strict=strict_load, warm_start=warm_start)
    save_config(cfg, checkpoint_dir / "config.yaml")
    return trainer


def train_and_test(
    cfg: Config, resume: Path | None = None, strict_load: bool = False, warm_start: bool | None = None
) -> str:
    """Train (or fine-tune) on ``cfg.device`` from ``cfg.seed``, then evaluate the best checkpoint
    on the test split; returns a summary."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    trainer = build_trainer(cfg, device, resume=resume, strict_load=strict_load, warm_start=warm_start)
    bits = f"{trainer.model.bit_width}-bit" if trainer.quantized else "full-precision"
    logger.info(
        "training %s on %s, checkpoints in %s, logs in %s", bits, device, trainer.checkpoint_dir, trainer.log_dir
    )
    best = trainer.fit()
    best_path = trainer.checkpoint_dir / "best_model.pth"
    test = evaluate_checkpoint(best_path, trainer.cfg.data_root, "test", device=device).metrics["dense"]["overall"]
    return (
        f"best validation AEE {best:.3f}\n"
        f"test AEE {test['aee']:.3f} px (zero-flow AEE {test['zero_flow_aee']:.3f} px, "
        f"ratio {test['aee'] / test['zero_flow_aee']:.2f}) from {best_path}"
    )
