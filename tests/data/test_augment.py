"""Crop and flips: same geometry on every tensor, flow components negated by value."""

from __future__ import annotations

import pytest
import torch

from snn.config import DEFAULT_CONFIG, ConfigError, load_config
from snn.data.augment import (
    augment_sample,
    check_crop_fits,
    hflip,
    random_crop,
    random_flips,
    thin_events,
    vflip,
    zoomed_crop,
)
from snn.data.sampling import SeededAugmentation

H, W = 4, 5


def coordinate_sample() -> dict:
    """Every spatial tensor holds its pixel's id y * W + x, so crops can be compared."""
    ids = torch.arange(H * W, dtype=torch.float32).view(1, H, W)
    return {
        "events": ids.expand(3, 2, H, W).clone(),
        "flow": torch.cat([ids, 100 + ids]),
        "valid": ids.clone(),
        "event_mask": ids.clone(),
        "sequence": "s",
        "index": 0,
    }


def test_hflip_mirrors_x_and_negates_u() -> None:
    sample = coordinate_sample()
    sample["flow"] = torch.zeros(2, H, W)
    sample["flow"][:, 1, 0] = torch.tensor([1.5, -2.0])  # (u, v) at y=1, x=0
    out = hflip(sample)
    assert out["flow"][0, 1, W - 1] == -1.5  # u negated, moved to x = W-1
    assert out["flow"][1, 1, W - 1] == -2.0  # v unchanged
    assert out["events"][0, 0, 1, W - 1] == 1 * W + 0
    assert out["valid"][0, 0, 0] == W - 1
    assert sample["flow"][0, 1, 0] == 1.5  # input left untouched


def test_vflip_mirrors_y_and_negates_v() -> None:
    sample = coordinate_sample()
    sample["flow"] = torch.zeros(2, H, W)
    sample["flow"][:, 0, 2] = torch.tensor([1.5, -2.0])
    out = vflip(sample)
    assert out["flow"][0, H - 1, 2] == 1.5
    assert out["flow"][1, H - 1, 2] == 2.0
    assert out["event_mask"][0, H - 1, 2] == 2


def test_random_flips_pick_each_combination() -> None:
    sample = coordinate_sample()
    outcomes = {
        "none": sample,
        "h": hflip(sample),
        "v": vflip(sample),
        "hv": vflip(hflip(sample)),
    }
    seen = set()
    torch.manual_seed(0)
    for _ in range(64):
        out = random_flips(sample)
        match = [k for k, ref in outcomes.items() if torch.equal(out["flow"], ref["flow"])]
        assert len(match) == 1 and torch.equal(out["events"], outcomes[match[0]]["events"])
        seen.add(match[0])
    assert seen == set(outcomes)


def test_crop_is_the_same_window_on_every_tensor() -> None:
    torch.manual_seed(1)
    corners = set()
    for _ in range(20):
        out = random_crop(coordinate_sample(), (2, 3))
        top_left = out["valid"][0, 0, 0]
        y0, x0 = divmod(int(top_left), W)
        want = torch.tensor([[(y0 + r) * W + x0 + c for c in range(3)] for r in range(2)], dtype=torch.float32)
        assert torch.equal(out["valid"][0], want)
        assert torch.equal(out["event_mask"][0], want)
        assert torch.equal(out["flow"][0], want) and torch.equal(out["flow"][1], 100 + want)
        assert torch.equal(out["events"], want.expand(3, 2, 2, 3))
        corners.add((y0, x0))
    assert len(corners) > 1  # the window moves


def test_square_crop_from_int() -> None:
    assert tuple(random_crop(coordinate_sample(), 3)["flow"].shape) == (2, 3, 3)


def test_crop_larger_than_image_names_both_sizes() -> None:
    with pytest.raises(ValueError, match=r"5x5 is larger than the image 4x5"):
        random_crop(coordinate_sample(), 5)
    with pytest.raises(ValueError, match="positive"):
        check_crop_fits(0, H, W)


def test_thinning_keeps_fewer_integer_events_and_the_flow() -> None:
    torch.manual_seed(0)
    sample = {**coordinate_sample(), "events": torch.poisson(torch.full((5, 2, 32, 32), 3.0))}
    before = sample["events"].sum()
    kept = []
    for seed in range(20):
        out = thin_events(sample, 0.4, torch.Generator().manual_seed(seed))
        assert torch.equal(out["events"], out["events"].round()) and bool((out["events"] <= sample["events"]).all())
        assert torch.equal(out["flow"], sample["flow"]) and torch.equal(out["event_mask"], sample["event_mask"])
        kept.append(float(out["events"].sum() / before))
    assert 0.37 <= min(kept) and max(kept) <= 1.0 and max(kept) - min(kept) > 0.3  # one p per sample, over [0.4, 1]
    again = thin_events(sample, 0.4, torch.Generator().manual_seed(3))
    assert torch.equal(again["events"], thin_events(sample, 0.4, torch.Generator().manual_seed(3))["events"])


def test_training_samples_are_thinned_by_their_key_alone() -> None:
    windows = [{**coordinate_sample(), "events": torch.full((5, 2, H, W), 4.0)} for _ in range(3)]
    data = SeededAugmentation(windows, crop_size=None, flip=False, keep_min=0.2)
    assert torch.equal(data[1, 7]["events"], data[1, 7]["events"]) and not torch.equal(
        data[1, 7]["events"], data[1, 8]["events"]
    )
    assert torch.equal(SeededAugmentation(windows, None, False)[1, 7]["events"], windows[1]["events"])


def test_thinning_is_validated_at_load() -> None:
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="key 'event_keep_min' must lie in"):
            load_config(DEFAULT_CONFIG, {"event_keep_min": bad})
    with pytest.raises(ConfigError, match="thins event counts"):
        load_config(DEFAULT_CONFIG, {"event_keep_min": 0.5, "representation": "voxel"})


def test_empty_windows_come_with_their_key_and_hold_no_events_and_no_flow() -> None:
    windows = [{**coordinate_sample(), "events": torch.full((5, 2, H, W), 4.0)} for _ in range(3)]
    data = SeededAugmentation(windows, crop_size=None, flip=False, empty_prob=0.5)
    emptied = [seed for seed in range(40) if data[1, seed]["events"].sum() == 0]
    assert 5 < len(emptied) < 35  # about half of the keys
    out, kept = data[1, emptied[0]], data[1, next(s for s in range(40) if s not in emptied)]
    assert torch.equal(out["flow"], torch.zeros_like(windows[1]["flow"]))
    assert bool(out["valid"].all()) and not bool(out["event_mask"].any())
    assert torch.equal(kept["events"], windows[1]["events"]) and torch.equal(kept["flow"], windows[1]["flow"])
    assert torch.equal(data[1, emptied[0]]["events"], out["events"])  # the same key, the same answer


def test_without_empty_windows_the_augmentation_draws_as_before() -> None:
    sample = coordinate_sample()
    a = augment_sample(sample, 2, True, torch.Generator().manual_seed(5), keep_min=0.5)
    b = augment_sample(sample, 2, True, torch.Generator().manual_seed(5), keep_min=0.5, empty_prob=0.0)
    assert all(torch.equal(a[k], b[k]) for k in ("events", "flow", "valid"))


@pytest.mark.parametrize("bad", [1.0, -0.1])
def test_empty_window_prob_is_validated_at_load(bad) -> None:
    with pytest.raises(ConfigError, match="key 'empty_window_prob' must lie in"):
        load_config(DEFAULT_CONFIG, {"empty_window_prob": bad})


def test_a_zoomed_crop_enlarges_a_region_and_its_flow_alike() -> None:
    h, w = 32, 40
    ids = torch.arange(h * w, dtype=torch.float32).view(1, h, w)
    sample = {"events": ids.expand(3, 2, h, w).clone(), "flow": torch.cat([ids, ids]), "valid": ids.clone(),
              "event_mask": ids.clone()}  # fmt: skip
    scales = set()
    for seed in range(8):
        out = zoomed_crop(sample, 16, 2.0, torch.Generator().manual_seed(seed))
        src = out["valid"][0]
        assert out["events"].shape == (3, 2, 16, 16) and torch.equal(out["events"][2, 1], src)  # events follow pixels
        kept = src.unique()
        rows, cols = (kept // w).unique(), (kept % w).unique()
        assert len(kept) == len(rows) * len(cols) and rows.diff().eq(1).all() and cols.diff().eq(1).all()
        s_x, s_y = 16 / len(cols), 16 / len(rows)
        assert torch.allclose(out["flow"][0], src * s_x) and torch.allclose(out["flow"][1], src * s_y)
        scales.add(len(cols))
    assert min(scales) >= 8 and len(scales) > 2  # regions of 8 to 16 px: zooms drawn from [1, 2]
    whole = zoomed_crop(sample, None, 1.5, torch.Generator().manual_seed(0))
    assert whole["flow"].shape == (2, h, w)
    for bad in (0.5, 9):
        with pytest.raises(ConfigError, match="key 'zoom_max' must lie in"):
            load_config(DEFAULT_CONFIG, {"zoom_max": bad})
