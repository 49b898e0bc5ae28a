"""The one place that turns a config into datasets and DataLoaders, for training, evaluation and the tools."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from snn.data.augment import as_hw
from snn.data.errors import DatasetFormatError
from snn.data.provider import build_dataset
from snn.data.sampling import EpochSampler, SeededAugmentation
from snn.utils.distributed import world

if TYPE_CHECKING:
    from snn.config import Config
    from snn.data.synthetic_config import SyntheticDataset


def prepare_data_root(cfg: Config) -> Path:
    """The data root; the synthetic dataset is generated there on first use."""
    root = Path(cfg.data_root)
    if cfg.dataset == "synthetic":
        from snn.data.synthetic import ensure_synthetic_dataset

        ensure_synthetic_dataset(root, cfg.synthetic.scene, **cfg.synthetic.split_args())
    return root


def prepare_synthetic_set(root: str | Path, spec: SyntheticDataset) -> Path:
    """The synthetic set ``spec`` (e.g. ``UNSEEN_TEST_SET``), generated in ``root`` on first use."""
    from snn.data.synthetic import ensure_synthetic_dataset

    return ensure_synthetic_dataset(Path(root), spec.scene, **spec.split_args())


def prepare_unseen_test_set(root: str | Path) -> Path:
    """The ladder's unseen test set (``UNSEEN_TEST_SET``), generated in ``root`` on first use."""
    from snn.data.synthetic_config import UNSEEN_TEST_SET

    return prepare_synthetic_set(root, UNSEEN_TEST_SET)


def check_frame_sizes(
    dataset: Dataset, split: str, size_multiple: int, crop_size: int | None = None, key: str = "crop_size"
) -> None:
    """Fail now, naming the sequence, if training cannot take the split's frames (or crops).

    Training on whole frames needs height and width divisible by ``size_multiple``; a crop must
    fit every frame. (Evaluation takes any size: the model pads and crops back.)
    """
    sequences = sequences_of(dataset)
    for seq in sequences:
        h, w = seq.height, seq.width
        if crop_size is not None:
            ch, cw = as_hw(crop_size)
            if ch > h or cw > w:
                raise DatasetFormatError(
                    seq.seq_dir,
                    f"frames are {h}x{w}, smaller than the {ch}x{cw} training crop (config key {key}); "
                    + _crop_advice(sequences, size_multiple, key),
                )
        elif h % size_multiple or w % size_multiple:
            raise DatasetFormatError(
                seq.seq_dir,
                f"frames are {h}x{w} but the network takes only sizes divisible by {size_multiple} "
                f"({split} split{'; set crop_size to train on crops' if split == 'train' else ''})",
            )


def _crop_advice(sequences: list[Dataset], size_multiple: int, key: str = "crop_size") -> str:
    """What crop (config ``key``) fits every frame: the largest multiple of 8 (the config's rule) that
    does, and null (whole frames, or for late_crop_size no late phase) when the frames are sizes the
    network takes."""
    side = min(min(seq.height, seq.width) for seq in sequences)
    fits = side // 8 * 8
    whole = all(seq.height % size_multiple == 0 and seq.width % size_multiple == 0 for seq in sequences)
    null = "to train on whole frames" if key == "crop_size" else "for no late phase"
    options = ([f"a smaller one such as --set {key}={fits}"] if fits else []) + (
        [f"--set {key}=null {null}"] if whole or key != "crop_size" else []
    )
    return "use " + " or ".join(options) if options else f"no crop fits frames of side {side}"


def make_dataset(
    cfg: Config,
    data_root: str | Path,
    split: str,
    train: bool = False,
    sequences: Sequence[str] | None = None,
    size_multiple: int = 1,
) -> Dataset:
    """All windows of ``split``; a training set's frames (or crops) are checked against ``size_multiple``
    (the network's; evaluation takes frames of any size).

    A training set (``train=True``) is read with ``EpochSampler`` keys (see ``make_loader``) and
    gets the config's random crops and flips, each drawn from the key's seed.
    """
    dataset = build_dataset(
        data_root,
        split,
        num_bins=cfg.num_bins,
        representation=cfg.representation,
        data_format=cfg.data_format,
        mvsec_dt=cfg.mvsec_dt,
        names=list(sequences) if sequences else None,
    )
    if train:
        check_frame_sizes(dataset, split, size_multiple, cfg.crop_size)
        if cfg.late_crop_size is not None:
            check_frame_sizes(dataset, split, size_multiple, cfg.late_crop_size, key="late_crop_size")
        return SeededAugmentation(
            dataset,
            cfg.crop_size,
            cfg.augment,
            cfg.late_crop_size,
            cfg.late_crop_epoch(),
            cfg.sample_windows(),
            cfg.event_keep_min if cfg.augment else 1.0,
            cfg.zoom_max if cfg.augment else 1.0,
            cfg.empty_window_prob if cfg.augment else 0.0,
        )
    return dataset


def make_loader(
    cfg: Config, dataset: Dataset, train: bool = False, batch_size: int | None = None, seed: int = 0
) -> DataLoader:
    """Shuffled batches (the last partial one dropped) for training, the dataset in order otherwise.

    A training loader's ``sampler`` is an ``EpochSampler``: the trainer sets its epoch. Under DDP
    it takes this rank's share of each epoch (``snn.utils.distributed``).
    """
    batch_size = batch_size or cfg.batch_size
    rank, size = world()
    # A set no larger than epoch_samples is read whole every epoch, as without it.
    epoch_samples = cfg.epoch_samples if cfg.epoch_samples is not None and cfg.epoch_samples < len(dataset) else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, rank=rank, world=size, epoch_samples=epoch_samples) if train else None,
        drop_last=train and (epoch_samples or len(dataset)) > batch_size,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.num_workers > 0,
    )


def sequences_of(dataset: Dataset) -> list[Dataset]:
    """The per-sequence datasets inside what ``make_dataset`` returned."""
    inner = getattr(dataset, "dataset", dataset)
    return list(inner.datasets) if isinstance(inner, ConcatDataset) else [inner]
