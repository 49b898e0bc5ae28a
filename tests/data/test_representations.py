"""Event representations against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from snn.data.representations import (
    REPRESENTATIONS,
    events_to_tensor,
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
def test_events_to_tensor_shapes(name: str, channels: int) -> None:
    out = events_to_tensor(name, X, Y, T, P, num_bins=3, height=2, width=2, t_start=0, t_end=101)
    assert tuple(out.shape) == (3, channels, 2, 2)
    assert num_input_channels(name) == channels
    assert out.abs().sum() > 0


def test_unknown_representation_names_it_and_the_choices() -> None:
    with pytest.raises(ValueError, match="'histogram'") as info:
        events_to_tensor("histogram", X, Y, T, P, 3, 2, 2, 0, 100)
    for name in REPRESENTATIONS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="histogram"):
        num_input_channels("histogram")


def test_counts_rejects_empty_window() -> None:
    with pytest.raises(ValueError, match="empty time window"):
        polarity_counts(X, Y, T, P, 2, 2, 2, t_start=100, t_end=100)
