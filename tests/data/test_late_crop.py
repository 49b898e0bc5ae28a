"""late_crop_size: larger training crops in the last part of a run, picked by the sampler's epoch."""

from __future__ import annotations

import pytest

from snn.config import ConfigError, load_config
from snn.data.errors import DatasetFormatError
from snn.data.loaders import make_dataset, make_loader


def _cfg(root, **extra):
    return load_config(
        overrides={"dataset": "blinksim", "data_root": str(root), "crop_size": 16, "batch_size": 2, **extra}
    )


def test_the_late_phase_is_the_last_fraction_of_the_epochs():
    cfg = load_config(overrides={"num_epochs": 28, "late_crop_size": 64})
    assert cfg.late_crop_epoch() == 21
    assert [cfg.crop_at(e) for e in (0, 20, 21, 27)] == [48, 48, 64, 64]
    assert (
        load_config(overrides={"num_epochs": 3, "late_crop_size": 64, "late_crop_fraction": 0.1}).late_crop_epoch() == 2
    )
    assert load_config().late_crop_epoch() is None and load_config().crop_at(27) == 48


@pytest.mark.parametrize(("key", "value"), [("late_crop_size", 60), ("late_crop_size", 0), ("late_crop_fraction", 0.0)])
def test_bad_late_crop_values_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides={key: value})


def test_training_batches_take_the_late_crop_from_its_epoch_on(tiny_synthetic_root):
    cfg = _cfg(tiny_synthetic_root, num_epochs=4, late_crop_size=24, late_crop_fraction=0.5)
    loader = make_loader(cfg, make_dataset(cfg, tiny_synthetic_root, "train", train=True), train=True)
    sizes = []
    for epoch in range(4):
        loader.sampler.set_epoch(epoch)
        sizes.append(tuple(next(iter(loader))["events"].shape[-2:]))
    assert sizes == [(16, 16), (16, 16), (24, 24), (24, 24)]


def test_a_late_crop_larger_than_the_frames_is_an_error_naming_its_key(tiny_synthetic_root):
    cfg = _cfg(tiny_synthetic_root, late_crop_size=40)  # the tiny frames are 32x32
    with pytest.raises(DatasetFormatError, match="late_crop_size.*--set late_crop_size=32"):
        make_dataset(cfg, tiny_synthetic_root, "train", train=True)
