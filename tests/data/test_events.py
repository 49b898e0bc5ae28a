"""EventSlicer: time windows with and without ms_to_idx, index ranges, validation; EventWindow; in_image."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from snn.data.errors import DatasetFormatError
from snn.data.events import EventSlicer, EventWindow, in_image

# Times sitting on and next to millisecond marks, with duplicates.
T = np.array([0, 999, 1000, 1000, 1500, 2000, 2999, 3000, 3000, 5000, 7001])
BOUNDARY_WINDOWS = [
    (0, 1000),
    (999, 1000),
    (1000, 2000),
    (1000, 1001),
    (0, 3000),
    (2000, 2000),
    (3000, 5001),
    (4000, 5000),
    (5001, 7001),
    (7001, 9000),
    (-500, 1),
    (8000, 20000),
]


@pytest.fixture
def slicers(tmp_path, write_events):
    n = len(T)
    fields = {"x": np.arange(n) % 7, "y": np.arange(n) % 5, "t": T, "p": np.arange(n) % 2}
    write_events(tmp_path / "indexed.h5", ms_to_idx=True, **fields)
    write_events(tmp_path / "plain.h5", ms_to_idx=False, **fields)
    with EventSlicer(tmp_path / "indexed.h5") as indexed:
        with EventSlicer(tmp_path / "plain.h5") as plain:
            assert indexed.ms_to_idx is not None and plain.ms_to_idx is None
            yield indexed, plain


@pytest.mark.parametrize(("t0", "t1"), BOUNDARY_WINDOWS)
def test_boundary_windows_agree_with_and_without_ms_to_idx(slicers, t0: int, t1: int) -> None:
    expected = np.flatnonzero((T >= t0) & (T < t1))
    for slicer in slicers:
        events = slicer.get_events(t0, t1)
        np.testing.assert_array_equal(events["t"], T[expected])
        np.testing.assert_array_equal(events["x"], expected % 7)
        np.testing.assert_array_equal(events["p"], expected % 2)


def test_many_events_bisection_matches_mask(tmp_path, write_events) -> None:
    # Enough events that the slicer bisects in the file before reading a chunk.
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 50_000, 30_000))
    zeros = np.zeros_like(t)
    write_events(tmp_path / "a.h5", x=zeros, y=zeros, t=t, p=zeros, ms_to_idx=True)
    write_events(tmp_path / "b.h5", x=zeros, y=zeros, t=t, p=zeros, ms_to_idx=False)
    with EventSlicer(tmp_path / "a.h5") as a, EventSlicer(tmp_path / "b.h5") as b:
        for t0, t1 in [(0, 1), (12_345, 23_456), (int(t[100]), int(t[20_000])), (0, 60_000)]:
            want = (t >= t0) & (t < t1)
            assert a.index_range(t0, t1) == b.index_range(t0, t1)
            i0, i1 = a.index_range(t0, t1)
            assert i1 - i0 == want.sum() and (i0 == 0 or t[i0 - 1] < t0)


def test_get_events_by_index_includes_the_end(slicers) -> None:
    indexed, _ = slicers
    np.testing.assert_array_equal(indexed.get_events_by_index(2, 4)["t"], T[2:5])
    assert len(indexed.get_events_by_index(3, 2)["t"]) == 0
    with pytest.raises(IndexError):
        indexed.get_events_by_index(0, len(T))


def test_t_offset_makes_times_absolute(tmp_path, write_events) -> None:
    t = np.array([0, 500, 1500])
    write_events(tmp_path / "dsec.h5", x=[0, 1, 2], y=[0, 0, 0], t=t, p=[1, 1, 1], t_offset=1_000_000)
    with EventSlicer(tmp_path / "dsec.h5") as slicer:
        assert slicer.t_offset == 1_000_000
        events = slicer.get_events(1_000_500, 1_002_000)
        np.testing.assert_array_equal(events["t"], [1_000_500, 1_001_500])
        np.testing.assert_array_equal(events["x"], [1, 2])
        assert slicer.time_range() == (1_000_000, 1_001_500)


def test_accepts_an_open_file_and_leaves_it_open(tmp_path, write_events) -> None:
    write_events(tmp_path / "e.h5", x=[0], y=[0], t=[5], p=[1])
    with h5py.File(tmp_path / "e.h5", "r") as f:
        with EventSlicer(f) as slicer:
            assert slicer.num_events == 1
        assert f.id.valid


def test_missing_group_names_the_file(tmp_path) -> None:
    path = tmp_path / "no_events.h5"
    with h5py.File(path, "w") as f:
        f["other"] = np.zeros(3)
    with pytest.raises(DatasetFormatError, match=r"no_events\.h5.*'events' group"):
        EventSlicer(path)


def test_unequal_lengths_name_the_file(tmp_path) -> None:
    path = tmp_path / "ragged.h5"
    with h5py.File(path, "w") as f:
        f["events/x"] = np.zeros(4, np.uint16)
        f["events/y"] = np.zeros(4, np.uint16)
        f["events/t"] = np.arange(3, dtype=np.int64)
        f["events/p"] = np.zeros(4, np.uint8)
    with pytest.raises(DatasetFormatError, match=r"ragged\.h5.*differ in length"):
        EventSlicer(path)


def test_missing_dataset_is_named(tmp_path) -> None:
    path = tmp_path / "nop.h5"
    with h5py.File(path, "w") as f:
        for name in "xyt":
            f[f"events/{name}"] = np.zeros(2)
    with pytest.raises(DatasetFormatError, match=r"nop\.h5.*lacks dataset\(s\) p"):
        EventSlicer(path)


def test_in_image_keeps_only_pixels_of_the_image() -> None:
    x = np.array([0, 7, 8, -1, 3, 3, 3])
    y = np.array([0, 5, 0, 0, 6, -1, 2])
    np.testing.assert_array_equal(in_image(x, y, height=6, width=8), [1, 1, 0, 0, 0, 0, 1])


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint16, np.float32])
def test_in_image_is_the_same_for_every_coordinate_type(dtype) -> None:
    """Signed integers are compared as unsigned (one comparison per axis); every type agrees."""
    rng = np.random.default_rng(0)
    low = 0 if np.dtype(dtype).kind == "u" else -40
    x, y = (rng.integers(low, 700, 5000).astype(dtype) for _ in range(2))
    expected = (x >= 0) & (x < 640) & (y >= 0) & (y < 480)
    assert 0 < expected.sum() < len(x)
    np.testing.assert_array_equal(in_image(x, y, height=480, width=640), expected)


def test_event_window_selects_events_and_keeps_its_bounds() -> None:
    window = EventWindow(np.arange(4), np.arange(4) + 10, np.arange(4) * 100, np.array([1, 0, 1, 0]), 0, 400)
    assert len(window) == 4
    half = window.select(np.array([True, False, True, False]))
    np.testing.assert_array_equal(half.t, [0, 200])
    np.testing.assert_array_equal(half.y, [10, 12])
    assert (half.t_start, half.t_end, len(half)) == (0, 400, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        window.t_end = 500
