"""Training order and augmentation that depend on (seed, epoch, position) alone.

A resumed or interrupted run must see exactly the batches an uninterrupted one
sees. So the shuffle of every epoch and every sample's augmentation seed are
drawn from a generator seeded with (run seed, epoch), not from a global RNG whose
state depends on the past: ``EpochSampler`` yields ``(index, sample_seed, epoch)`` keys,
and ``SeededAugmentation`` crops and flips each sample with a generator seeded
from its key (the epoch picks the crop size, which may grow late in training).
Worker count and worker seeding then do not matter either, and an epoch can be
resumed mid-way by skipping the batches already done.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from snn.data.augment import augment_sample


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator whose state is a function of (seed, epoch, stream) only; streams other than 0 give
    generators independent of stream 0's (which is what every epoch used before streams existed)."""
    entropy = [seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch] + ([stream] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


PASS_STREAM = 1  # the stream of the shuffled passes that fixed-size epochs walk through


class EpochSampler(Sampler):
    """``(index, sample_seed, epoch)`` keys in a fresh order each epoch; call ``set_epoch`` before iterating.

    ``set_epoch(epoch, skip=k)`` starts the epoch at position ``k`` of this rank's share (for
    resuming mid-epoch: the batches before it were already trained on).

    With ``epoch_samples`` an epoch holds that many keys instead of ``num_samples``: epoch ``e``
    takes positions ``[e * epoch_samples, (e + 1) * epoch_samples)`` of an endless walk through
    shuffled passes over the dataset (pass ``k`` shuffled from (seed, k) alone), so every sample is
    seen once per pass and the keys still depend on (seed, epoch) only.

    With ``world`` > 1 processes (DDP) every rank draws the same order and takes every
    ``world``-th key from position ``rank``; the last ``epoch_size % world`` keys are left
    out, so that every rank takes the same number of steps.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        epoch_samples: int | None = None,
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        if epoch_samples is not None and epoch_samples < 1:
            raise ValueError(f"epoch_samples must be >= 1, got {epoch_samples}")
        self.num_samples = num_samples
        self.epoch_samples = epoch_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world = rank, world
        self.epoch = 0
        self.skip = 0

    @property
    def epoch_size(self) -> int:
        """Keys per epoch, over all ranks."""
        return self.num_samples if self.epoch_samples is None else self.epoch_samples

    @property
    def share(self) -> int:
        """Keys this rank takes per epoch."""
        return self.epoch_size // self.world

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if not 0 <= skip <= self.share:
            raise ValueError(f"cannot skip {skip} of {self.share} samples")
        self.epoch, self.skip = epoch, skip

    def keys(self) -> list[tuple[int, int, int]]:
        """Every key of the current epoch, from position 0."""
        g = epoch_generator(self.seed, self.epoch)
        if self.epoch_samples is None:
            order = torch.randperm(self.num_samples, generator=g) if self.shuffle else torch.arange(self.num_samples)
        else:
            order = self._walk(self.epoch * self.epoch_samples, self.epoch_samples)
        seeds = torch.randint(0, 2**62, (len(order),), generator=g)
        return [(index, seed, self.epoch) for index, seed in zip(order.tolist(), seeds.tolist(), strict=True)]

    def _walk(self, start: int, count: int) -> torch.Tensor:
        """Positions ``[start, start + count)`` of the walk through the shuffled passes."""
        first, last = start // self.num_samples, (start + count - 1) // self.num_samples
        passes = [
            torch.randperm(self.num_samples, generator=epoch_generator(self.seed, k, PASS_STREAM))
            if self.shuffle
            else torch.arange(self.num_samples)
            for k in range(first, last + 1)
        ]
        offset = start - first * self.num_samples
        return torch.cat(passes)[offset : offset + count]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        mine = self.keys()[self.rank : self.share * self.world : self.world]
        return iter(mine[self.skip :])

    def __len__(self) -> int:
        return self.share - self.skip


class SeededAugmentation(Dataset):
    """A dataset read with ``(index, seed, epoch)`` keys: random crop (seen closer up to ``zoom_max``),
    flips, (``keep_min`` < 1) thinning of the events and (``empty_prob`` > 0) empty windows, drawn from
    the key's seed.

    Crops are ``crop_size``, or ``late_crop_size`` from epoch ``late_from`` on (None: no late phase).
    With ``history`` = k > 1 a sample's ``events`` also hold the k - 1 windows before it in its
    sequence, oldest first ([k * T, C, H, W]; windows before the sequence's start are empty), all
    cropped and flipped alike; ``dataset`` must then be a ``ConcatDataset`` of sequences, each with
    its windows in order.
    """

    def __init__(
        self,
        dataset: Dataset,
        crop_size: int | tuple[int, int] | None,
        flip: bool,
        late_crop_size: int | None = None,
        late_from: int | None = None,
        history: int = 1,
        keep_min: float = 1.0,
        zoom_max: float = 1.0,
        empty_prob: float = 0.0,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1 window, got {history}")
        self.history = history
        self.dataset = dataset
        self.crop_size = crop_size
        self.flip = flip
        self.late_crop_size = late_crop_size
        self.late_from = late_from
        self.keep_min = keep_min
        self.zoom_max = zoom_max
        self.empty_prob = empty_prob

    def _with_history(self, index: int, sample: dict[str, Any]) -> torch.Tensor:
        """The events of the ``history`` windows ending at ``index``, oldest first."""
        windows = []
        for back in range(self.history - 1, 0, -1):
            # ``index`` counts windows from the sequence's start: earlier ones lie in the same sequence
            if sample["index"] - back >= 0:
                windows.append(self.dataset[index - back]["events"])
            else:
                windows.append(torch.zeros_like(sample["events"]))
        return torch.cat([*windows, sample["events"]])

    def crop_at(self, epoch: int) -> int | tuple[int, int] | None:
        return self.late_crop_size if self.late_from is not None and epoch >= self.late_from else self.crop_size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int] | tuple[int, int]) -> dict[str, Any]:
        index, seed, *rest = key  # (index, seed) alone: epoch 0
        epoch = rest[0] if rest else 0
        sample = self.dataset[index]
        if self.history > 1:
            sample = {**sample, "events": self._with_history(index, sample)}
        crop = self.crop_at(epoch)
        if crop is None and not self.flip and self.keep_min >= 1 and self.zoom_max <= 1 and self.empty_prob <= 0:
            return sample
        generator = torch.Generator().manual_seed(seed)
        return augment_sample(sample, crop, self.flip, generator, self.keep_min, self.zoom_max, self.empty_prob)
