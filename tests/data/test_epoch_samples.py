"""Fixed-size epochs: an epoch of ``epoch_samples`` keys walks on through shuffled passes over the data."""

from __future__ import annotations

from collections import Counter

import pytest

from snn.config import DEFAULT_CONFIG, load_config
from snn.data.loaders import make_loader
from snn.data.sampling import EpochSampler


def _indices(sampler: EpochSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return [index for index, _, _ in sampler]


def test_fixed_size_epochs_see_every_sample_once_per_pass():
    sampler = EpochSampler(10, seed=4, epoch_samples=4)
    epochs = [_indices(sampler, e) for e in range(5)]  # 20 positions: two whole passes
    assert [len(e) for e in epochs] == [4] * 5
    walk = [i for e in epochs for i in e]
    assert sorted(walk[:10]) == list(range(10)) and sorted(walk[10:]) == list(range(10))
    assert walk[:10] != walk[10:]  # each pass is shuffled anew
    assert Counter(walk) == Counter({i: 2 for i in range(10)})


def test_fixed_size_epochs_depend_on_seed_and_epoch_alone():
    keys = EpochSampler(10, seed=4, epoch_samples=4)
    keys.set_epoch(3)
    fresh = EpochSampler(10, seed=4, epoch_samples=4)
    fresh.set_epoch(3)
    assert fresh.keys() == keys.keys()
    fresh.set_epoch(3, skip=2)
    assert list(fresh) == keys.keys()[2:]  # a resume mid-epoch skips what was trained
    other = EpochSampler(10, seed=5, epoch_samples=4)
    other.set_epoch(3)
    assert other.keys() != keys.keys()
    assert {epoch for _, _, epoch in keys.keys()} == {3}


def test_an_epoch_larger_than_the_data_spans_passes_and_ranks_share_it():
    sampler = EpochSampler(3, seed=0, epoch_samples=7)
    first = _indices(sampler, 0)
    assert sorted(Counter(first).values()) == [2, 2, 3]  # two whole passes and one key of the third
    assert sorted(first[:3]) == sorted(first[3:6]) == [0, 1, 2]
    ranks = [EpochSampler(3, seed=0, rank=r, world=2, epoch_samples=7) for r in range(2)]
    shares = [_indices(s, 1) for s in ranks]
    assert [len(s) for s in shares] == [3, 3]
    with pytest.raises(ValueError, match="epoch_samples"):
        EpochSampler(3, seed=0, epoch_samples=0)


def test_the_loader_takes_its_epoch_size_from_the_config(tiny_synthetic_root):
    from snn.data.loaders import make_dataset

    cfg = load_config(
        DEFAULT_CONFIG, {"data_root": str(tiny_synthetic_root), "batch_size": 2, "crop_size": 16, "epoch_samples": 6}
    )
    dataset = make_dataset(cfg, cfg.data_root, "train", train=True)
    assert len(dataset) != 6
    loader = make_loader(cfg, dataset, train=True)
    assert len(loader) == 3
    whole = make_loader(
        load_config(DEFAULT_CONFIG, {"batch_size": 2}, settings={"epoch_samples": None}), dataset, train=True
    )
    assert len(whole) == len(dataset) // 2 and whole.sampler.epoch_samples is None
    # a set no larger than epoch_samples is read whole, in the order it had without the key
    capped = make_loader(load_config(DEFAULT_CONFIG, {"batch_size": 2, "epoch_samples": 1000}), dataset, train=True)
    assert len(capped) == len(dataset) // 2 and capped.sampler.epoch_samples is None
