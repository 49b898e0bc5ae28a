"""Photographs as scene backgrounds: the held-out ones are refused, the others reach the scene."""

from __future__ import annotations

import numpy as np
import pytest

from snn.data.photos import (
    HELD_OUT_PHOTOS,
    LOG_EPS,
    NATURAL_TEST_PHOTOS,
    TRAINING_PHOTOS,
    PhotoError,
    load_photo,
    photo_texture,
)
from snn.data.synthetic import generate_sequence
from snn.data.synthetic_config import NATURAL_TEST_SET, SyntheticConfig


def test_the_three_groups_are_disjoint_and_the_motorcycle_pair_stays_out_of_training():
    groups = [set(HELD_OUT_PHOTOS), set(NATURAL_TEST_PHOTOS), set(TRAINING_PHOTOS)]
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    assert "motorcycle_right" not in TRAINING_PHOTOS


@pytest.mark.parametrize("name", HELD_OUT_PHOTOS)
def test_a_held_out_photograph_is_refused_everywhere(name):
    with pytest.raises(PhotoError, match="held out"):
        load_photo(name)
    with pytest.raises(ValueError, match=f"background_photos.*{name}.*held out"):
        SyntheticConfig(background_photos=(name,))


def test_an_unknown_photograph_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown photograph 'lena'"):
        SyntheticConfig(background_photos=["lena"])


@pytest.mark.parametrize("name", NATURAL_TEST_PHOTOS + TRAINING_PHOTOS)
def test_every_usable_photograph_loads_as_grey_levels(name):
    image = load_photo(name)
    assert image.ndim == 2 and image.dtype == np.float32 and min(image.shape) >= 170
    assert 0.0 <= image.min() < image.max() <= 1.0


def test_a_photo_texture_is_a_log_crop_of_the_photograph():
    rng = np.random.default_rng(0)
    tex = photo_texture(rng, "coins", 96)
    assert tex.shape == (96, 96)
    grey = np.exp(tex) - LOG_EPS  # back to [0, 1] grey levels
    assert grey.min() >= -1e-5 and grey.max() <= 1 + 1e-5
    assert tex.std() > 0.2  # a photograph's contrast, not a flat field


def test_a_photo_background_scene_is_the_photograph_moving():
    config = SyntheticConfig(
        height=32, width=32, num_frames=3, min_foreground=0, max_foreground=0, background_photos=("brick",)
    )
    seq = generate_sequence(7, config)
    textured = generate_sequence(
        7, SyntheticConfig(height=32, width=32, num_frames=3, min_foreground=0, max_foreground=0)
    )
    # the first frame's log intensities are a photograph's: within log(LOG_EPS) .. log(1 + LOG_EPS)
    assert seq["log_frames"].min() >= np.log(LOG_EPS) - 1e-4 and seq["log_frames"].max() <= np.log(1 + LOG_EPS) + 1e-4
    assert not np.allclose(seq["log_frames"], textured["log_frames"])
    assert seq["t"].size > 0 and seq["valid"].mean() > 0.9  # a camera motion: no occlusions but the borders


def test_the_default_scenes_read_no_photograph(monkeypatch):
    """Generated-texture scenes (our fixed test splits) take no photograph and draw no extra random number."""
    import snn.data.synthetic_scene as scene

    def no_photo(*args):
        raise AssertionError("a photograph was read")

    monkeypatch.setattr(scene, "photo_texture", no_photo)
    generate_sequence(3, SyntheticConfig(height=32, width=32, num_frames=3))
    assert "background_photos" not in SyntheticConfig().to_dict()  # datasets made before the key still match


def test_the_natural_test_set_uses_only_its_own_photographs():
    assert set(NATURAL_TEST_SET.scene.background_photos) == set(NATURAL_TEST_PHOTOS)
    assert NATURAL_TEST_SET.num_train == NATURAL_TEST_SET.num_val == 0
    assert (NATURAL_TEST_SET.scene.height, NATURAL_TEST_SET.scene.width) == (320, 320)


def test_photo_fraction_mixes_photo_and_generated_backgrounds():
    base = {"height": 32, "width": 32, "num_frames": 2, "min_foreground": 0, "max_foreground": 0}
    lowest = np.log(LOG_EPS) - 1e-4
    photo_like = [
        generate_sequence(s, SyntheticConfig(**base, background_photos=("grass",), photo_fraction=0.5))["log_frames"]
        for s in range(12)
    ]
    # a photograph's log intensities lie in [log(eps), log(1 + eps)]; a generated texture's mean is in [-1, 1]
    # with a spread of about 0.5, so it leaves that band (above log(1 + eps) = 0.02) almost surely
    in_band = [bool(f.min() >= lowest and f.max() <= np.log(1 + LOG_EPS) + 1e-4) for f in photo_like]
    assert 0 < sum(in_band) < 12
    with pytest.raises(ValueError, match="photo_fraction"):
        SyntheticConfig(photo_fraction=1.5)
