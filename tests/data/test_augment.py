"""Crop and flips: same geometry on every tensor, flow components negated by value."""

from __future__ import annotations

import pytest
import torch

from snn.data.augment import check_crop_fits, hflip, random_crop, random_flips, vflip

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
