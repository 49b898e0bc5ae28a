"""The one place that turns a config into datasets and DataLoaders, for training, evaluation and the tools."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset

from snn.data.provider import build_dataset

if TYPE_CHECKING:
    from snn.config import Config


def prepare_data_root(cfg: Config) -> Path:
    """The data root; the synthetic dataset is generated there on first use."""
    root = Path(cfg.data_root)
    if cfg.dataset == "synthetic":
        from snn.data.synthetic import ensure_synthetic_dataset

        ensure_synthetic_dataset(root, cfg.synthetic.scene, **cfg.synthetic.split_args())
    return root


def make_dataset(
    cfg: Config,
    data_root: str | Path,
    split: str,
    train: bool = False,
    sequences: Sequence[str] | None = None,
) -> Dataset:
    """All windows of ``split``; training sets get the config's random crops and flips, others whole frames."""
    return build_dataset(
        data_root,
        split,
        num_bins=cfg.num_bins,
        representation=cfg.representation,
        crop_size=cfg.crop_size if train else None,
        augment=cfg.augment and train,
        names=list(sequences) if sequences else None,
    )


def make_loader(
    cfg: Config, dataset: Dataset, train: bool = False, batch_size: int | None = None, seed: int = 0
) -> DataLoader:
    """Shuffled batches (the last partial one dropped) for training, the dataset in order otherwise."""
    batch_size = batch_size or cfg.batch_size
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > batch_size,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=cfg.num_workers > 0,
    )
