"""Event representations against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from snn.data.events import EventWindow
from snn.data.representations import (
    REPRESENTATIONS,
    PolarityCounts,
    VoxelGrid,
    make_representation,
    num_input_channels,
    polarity_counts,
    voxel_grid,
)

# Five events on a 2x2 image, times 0..100 us, p 1 = ON.
X = np.array([0, 1, 1, 1, 0])
Y = np.array([0, 1, 0, 1, 0])
T = np.array([0, 25, 75, 50, 100])
P = np.array([1, 1, 0, 1, 0])


def test_polarity_counts_by_hand() -> None:
    # Window [0, 100) in 2 bins of 50 us; t=100 is clipped into the last bin.
    counts = polarity_counts(X, Y, T, P, num_bins=2, height=2, width=2, t_start=0, t_end=100)
    expected = np.zeros((2, 2, 2, 2), dtype=np.float32)
    expected[0, 0, 0, 0] = 1  # t=0 ON at (0,0)
    expected[0, 0, 1, 1] = 1  # t=25 ON at (1,1)
    expected[1, 1, 0, 1] = 1  # t=75 OFF at (y0,x1)
    expected[1, 0, 1, 1] = 1  # t=50 ON at (1,1): 50/100*2 = bin 1
    expected[1, 1, 0, 0] = 1  # t=100 OFF at (0,0), clipped to bin 1
    assert counts.dtype == np.float32
    np.testing.assert_array_equal(counts, expected)


def test_polarity_counts_accumulates_and_ignores_outside() -> None:
    x = np.array([2, 2, 2, 5, 0])
    y = np.array([1, 1, 1, 0, 9])
    t = np.array([10, 20, 30, 40, 50])
    p = np.array([1, 1, 0, 1, 1])
    counts = polarity_counts(x, y, t, p, num_bins=1, height=2, width=3, t_start=0, t_end=60)
    assert counts[0, 0, 1, 2] == 2
    assert counts[0, 1, 1, 2] == 1
    assert counts.sum() == 3  # (5, 0) and (0, 9) lie outside the 2x3 image


def test_voxel_grid_by_hand() -> None:
    # B=3, span 0..100 us -> t_norm = 2 * t / 100 = 0, 0.5, 1.5, 1.0, 2.0.
    grid = voxel_grid(X, Y, T, P, num_bins=3, height=2, width=2, normalize=False)
    expected = np.zeros((3, 2, 2))
    expected[0, 0, 0] = 1.0  # t_norm 0, ON: all in bin 0
    expected[0, 1, 1] = 0.5  # t_norm 0.5, ON: half to bin 0 ...
    expected[1, 1, 1] = 0.5 + 1.0  # ... half to bin 1, plus t_norm 1.0 ON wholly in bin 1
    expected[1, 0, 1] = -0.5  # t_norm 1.5, OFF: half to bin 1 ...
    expected[2, 0, 1] = -0.5  # ... half to bin 2
    expected[2, 0, 0] = -1.0  # t_norm 2.0, OFF: all in bin 2
    np.testing.assert_allclose(grid, expected, atol=1e-6)

    # Non-zero values 1, .5, 1.5, -.5, -.5, -1: mean 1/6, mean square 5/6,
    # variance 5/6 - 1/36 = 29/36, std sqrt(29)/6 -> v' = (6v - 1) / sqrt(29).
    normalized = voxel_grid(X, Y, T, P, num_bins=3, height=2, width=2)
    root29 = math.sqrt(29)
    expected_norm = np.zeros((3, 2, 2))
    expected_norm[0, 0, 0] = 5 / root29
    expected_norm[0, 1, 1] = 2 / root29
    expected_norm[1, 1, 1] = 8 / root29
    expected_norm[1, 0, 1] = -4 / root29
    expected_norm[2, 0, 1] = -4 / root29
    expected_norm[2, 0, 0] = -7 / root29
    assert normalized.dtype == np.float32
    np.testing.assert_allclose(normalized, expected_norm, atol=1e-6)


def test_voxel_grid_single_instant_goes_to_bin_zero() -> None:
    grid = voxel_grid(
        np.array([0, 1]),
        np.array([0, 0]),
        np.array([7, 7]),
        np.array([1, 0]),
        num_bins=4,
        height=1,
        width=2,
        normalize=False,
    )
    np.testing.assert_array_equal(grid[0], [[1.0, -1.0]])
    assert not grid[1:].any()


def test_voxel_grid_empty_is_zero() -> None:
    empty = np.zeros(0, dtype=np.int64)
    grid = voxel_grid(empty, empty, empty, empty, num_bins=2, height=3, width=4)
    assert grid.shape == (2, 3, 4) and not grid.any()


@pytest.mark.parametrize(("name", "channels"), [("counts", 2), ("voxel", 1)])
def test_converted_shapes(name: str, channels: int) -> None:
    out = make_representation(name, num_bins=3, height=2, width=2).convert(EventWindow(X, Y, T, P, 0, 101))
    assert tuple(out.shape) == (3, channels, 2, 2)
    assert num_input_channels(name) == channels
    assert out.abs().sum() > 0


def test_unknown_representation_names_it_and_the_choices() -> None:
    with pytest.raises(ValueError, match="'histogram'") as info:
        make_representation("histogram", 3, 2, 2)
    for name in REPRESENTATIONS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="histogram"):
        num_input_channels("histogram")


@pytest.mark.parametrize(("cls", "name", "channels"), [(PolarityCounts, "counts", 2), (VoxelGrid, "voxel", 1)])
def test_each_class_has_its_name_and_channels(cls, name: str, channels: int) -> None:
    assert (cls.name, cls.channels) == (name, channels)
    rep = make_representation(name, num_bins=4, height=3, width=5)
    assert type(rep) is cls and (rep.name, rep.channels) == (name, channels)
    assert (rep.num_bins, rep.height, rep.width) == (4, 3, 5)
    assert REPRESENTATIONS == ("counts", "voxel")


# A window wider than its events' span, with one event outside the 2x2 image.
WIDE = EventWindow(np.append(X, 2), np.append(Y, 0), np.append(T, 60), np.append(P, 1), t_start=-50, t_end=250)


def test_counts_convert_is_polarity_counts_over_the_window() -> None:
    out = PolarityCounts(num_bins=3, height=2, width=2).convert(WIDE)
    core = polarity_counts(WIDE.x, WIDE.y, WIDE.t, WIDE.p, 3, 2, 2, t_start=-50, t_end=250)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), core)


def test_voxel_convert_is_voxel_grid_over_the_events_span() -> None:
    out = VoxelGrid(num_bins=3, height=2, width=2).convert(WIDE)
    core = voxel_grid(WIDE.x, WIDE.y, WIDE.t, WIDE.p, 3, 2, 2)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), core[:, None])
    # Neither the window bounds nor the event outside the image change the grid.
    np.testing.assert_array_equal(VoxelGrid(3, 2, 2).convert(EventWindow(X, Y, T, P, 0, 101)).numpy(), out.numpy())


def test_representation_rejects_no_bins() -> None:
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        PolarityCounts(num_bins=0, height=2, width=2)


def test_counts_rejects_empty_window() -> None:
    with pytest.raises(ValueError, match="empty time window"):
        polarity_counts(X, Y, T, P, 2, 2, 2, t_start=100, t_end=100)


def _random_events(count: int, size: int, seed: int) -> tuple[np.ndarray, ...]:
    """Unsorted events of mixed dtypes, a few outside the image (as DSEC's uint16 and MVSEC's floats)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, size + 2, count).astype(np.int32)
    y = rng.integers(0, size + 2, count).astype(np.uint16)
    t = rng.uniform(0, 1000, count)
    p = rng.choice(np.array([-1.0, 1.0]), count)
    return x, y, t, p


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_counts_equal_a_histogram_of_the_same_events(seed: int) -> None:
    x, y, t, p = _random_events(5000, 7, seed)
    counts = polarity_counts(x, y, t, p, num_bins=4, height=7, width=7, t_start=100, t_end=900)
    keep = (x >= 0) & (x < 7) & (y < 7)
    bins = np.clip(np.floor((t - 100) / 800 * 4), 0, 3)
    expected, _ = np.histogramdd(
        np.stack([bins, p < 0, y, x], axis=1)[keep], bins=(4, 2, 7, 7), range=((0, 4), (0, 2), (0, 7), (0, 7))
    )
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_voxel_grid_equals_a_loop_over_the_events(seed: int) -> None:
    x, y, t, p = _random_events(400, 5, seed)
    grid = voxel_grid(x, y, t, p, num_bins=3, height=5, width=5, normalize=False)
    keep = (x >= 0) & (x < 5) & (y < 5)
    t_min, t_max = t[keep].min(), t[keep].max()
    expected = np.zeros((4, 5, 5))
    for xi, yi, ti, pi in zip(x[keep], y[keep], t[keep], p[keep], strict=True):
        position = 2 * (ti - t_min) / (t_max - t_min)
        left = math.floor(position)
        expected[left, yi, xi] += pi * (1 - (position - left))
        expected[left + 1, yi, xi] += pi * (position - left)
    np.testing.assert_allclose(grid, expected[:3], atol=1e-5)
