"""Property-based tests (hypothesis): random and corrupted inputs into the data readers.

Every reader either returns a well-formed result or raises our own error type,
DatasetFormatError naming the file (docs/formats.md). The pure-array functions of
snn.data.representations may also raise the ValueError their docstrings document,
and EventSlicer.get_events_by_index the IndexError it documents, each only when its
documented condition holds. Any other exception escaping, or a result of the wrong
shape, dtype or content, fails.

Bulk values come from a numpy generator seeded by hypothesis; the structure (which
dataset is missing, which shape or dtype is wrong, where a file is cut) is drawn by
hypothesis itself, so failures shrink to the mutation that matters.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from snn.data.blinksim import BlinkSimSequence
from snn.data.errors import DatasetFormatError
from snn.data.events import EventSlicer, EventWindow
from snn.data.representations import PolarityCounts, VoxelGrid, polarity_counts, voxel_grid

# database=None: no example database is kept (hypothesis still caches constants in a
# .hypothesis/ folder that ignores itself in git). The example counts keep the module
# near 12 s on two cores; raise them locally to search harder.
# In CI (CI=true) the examples are derandomized: the same inputs every run, so a landing never
# depends on the draw; locally every run draws new ones and keeps searching.
PROPERTY = settings(
    deadline=None,
    database=None,
    derandomize=os.environ.get("CI", "").lower() == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
FLOAT_DTYPES = ("float16", "float32", "float64")
NUMERIC_DTYPES = INT_DTYPES + FLOAT_DTYPES
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

GROUP = "<group>"  # an entry written as an HDF5 group instead of a dataset
EMPTY = "<empty>"  # an entry written as a dataset with a null dataspace (h5py.Empty)


# -- pure-array representations ---------------------------------------------------------------------


def _column(dtype: str, n: int, lo: int, hi: int) -> st.SearchStrategy[np.ndarray]:
    """n values of ``dtype``: mostly in [lo, hi], otherwise anything the dtype holds (NaN, inf, extremes)."""
    kind = np.dtype(dtype).kind
    if kind == "u":
        near = st.integers(max(lo, 0), hi)
    elif kind == "i":
        near = st.integers(lo, hi)
    else:
        near = st.floats(lo, hi, width=8 * np.dtype(dtype).itemsize)
    return hnp.arrays(dtype, n, elements=near | hnp.from_dtype(np.dtype(dtype)))


@st.composite
def event_arrays(draw: st.DrawFn, height: int, width: int) -> tuple[np.ndarray, ...]:
    """x, y, t, p of any dtype, mostly of one length; coordinates in and out of the image."""
    n = draw(st.integers(0, 25))
    lengths = draw(st.just((n,) * 4) | st.tuples(*[st.integers(0, 25)] * 4))
    x = draw(_column(draw(st.sampled_from(NUMERIC_DTYPES)), lengths[0], -3, width + 2))
    y = draw(_column(draw(st.sampled_from(NUMERIC_DTYPES)), lengths[1], -3, height + 2))
    t = draw(_column(draw(st.sampled_from(NUMERIC_DTYPES)), lengths[2], -50, 120))
    if draw(st.booleans()):
        t = np.sort(t)
    polarity = draw(st.sampled_from(["01", "pm1", "any"]))
    if polarity == "01":
        p = draw(hnp.arrays(draw(st.sampled_from(NUMERIC_DTYPES)), lengths[3], elements=st.integers(0, 1)))
    elif polarity == "pm1":
        p = draw(
            hnp.arrays(
                draw(st.sampled_from(("int8", "int64", "float32"))), lengths[3], elements=st.sampled_from([-1, 1])
            )
        )
    else:
        p = draw(_column(draw(st.sampled_from(NUMERIC_DTYPES)), lengths[3], -2, 2))
    return x, y, t, p


def _time_value() -> st.SearchStrategy[Any]:
    return (
        st.integers(-60, 130)
        | st.integers(INT64_MIN, INT64_MAX)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.sampled_from([np.int64(0), np.int64(100), np.uint64(2**64 - 1), np.float32(50.5)])
    )


def _reference_inside(x: np.ndarray, y: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which events lie in the image, decided one Python number at a time."""
    return np.array(
        [0 <= xi < width and 0 <= yi < height for xi, yi in zip(x.tolist(), y.tolist(), strict=True)], dtype=bool
    )


def _is_finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _window_is_good(t_start: Any, t_end: Any) -> bool:
    """The documented rule: both bounds finite and t_end > t_start (exactly for two integers, else in float64)."""
    if not (_is_finite_number(t_start) and _is_finite_number(t_end)):
        return False
    if isinstance(t_start, (int, np.integer)) and isinstance(t_end, (int, np.integer)):
        return int(t_end) > int(t_start)
    return float(t_end) > float(t_start)


def _array_error(x, y, t, p, num_bins: int) -> bool:
    """Whether the documented checks of polarity_counts / voxel_grid reject these events."""
    same_length = len({len(x), len(y), len(t), len(p)}) == 1
    finite_t = np.dtype(t.dtype).kind != "f" or bool(np.isfinite(t).all())
    return not same_length or not finite_t or num_bins < 1


@given(
    data=st.data(),
    num_bins=st.integers(-1, 4),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
    t_start=_time_value(),
    t_end=_time_value(),
)
@settings(PROPERTY, max_examples=250)
def test_polarity_counts_count_every_event_in_the_image(data, num_bins, height, width, t_start, t_end) -> None:
    x, y, t, p = data.draw(event_arrays(height, width))
    good_window = _window_is_good(t_start, t_end)
    expect_error = _array_error(x, y, t, p, num_bins) or not good_window
    try:
        counts = polarity_counts(x, y, t, p, num_bins, height, width, t_start, t_end)
    except DatasetFormatError:
        raise
    except ValueError:
        assert expect_error, "ValueError for arguments the docstring accepts"
        return
    assert not expect_error, "no ValueError for arguments the docstring rejects"
    assert counts.shape == (num_bins, 2, height, width) and counts.dtype == np.float32
    assert np.isfinite(counts).all() and (counts >= 0).all()
    inside = _reference_inside(x, y, height, width)
    on = np.array([v > 0 for v in p.tolist()], dtype=bool)
    assert counts.sum() == inside.sum()
    assert counts[:, 0].sum() == (inside & on).sum()  # ON is p > 0, NaN included as OFF
    # Events before the window land in the first bin, events at or after its end in the last.
    start, end = float(t_start), float(t_end)
    if abs(start) < 2**50 and abs(end) < 2**50:  # exact in float64, so the comparisons below are the function's
        times = t.tolist()
        before = np.array([v < start for v in times], dtype=bool) & inside
        after = np.array([v >= end for v in times], dtype=bool) & inside
        per_bin = [counts[b].sum() for b in range(num_bins)]
        assert per_bin[0] >= before.sum() and per_bin[-1] >= after.sum()
        assert sum(per_bin[1:]) <= inside.sum() - before.sum()
        assert sum(per_bin[:-1]) <= inside.sum() - after.sum()


@given(data=st.data(), num_bins=st.integers(-1, 4), height=st.integers(1, 5), width=st.integers(1, 5))
@settings(PROPERTY, max_examples=250)
def test_voxel_grid_keeps_each_events_polarity(data, num_bins, height, width) -> None:
    x, y, t, p = data.draw(event_arrays(height, width))
    expect_error = _array_error(x, y, t, p, num_bins)
    try:
        raw = voxel_grid(x, y, t, p, num_bins, height, width, normalize=False)
        grid = voxel_grid(x, y, t, p, num_bins, height, width)
    except DatasetFormatError:
        raise
    except ValueError:
        assert expect_error, "ValueError for arguments the docstring accepts"
        return
    assert not expect_error, "no ValueError for arguments the docstring rejects"
    for out in (raw, grid):
        assert out.shape == (num_bins, height, width) and out.dtype == np.float32
        assert np.isfinite(out).all()
    # Without normalisation each event spreads its +1/-1 over the bins with weights summing to 1.
    inside = _reference_inside(x, y, height, width)
    want = np.zeros((height, width))
    for xi, yi, pi in zip(x[inside].tolist(), y[inside].tolist(), p[inside].tolist(), strict=True):
        want[int(yi), int(xi)] += 1.0 if pi > 0 else -1.0
    np.testing.assert_allclose(raw.sum(axis=0), want, atol=1e-4 * (1 + inside.sum()))


@given(
    data=st.data(),
    num_bins=st.integers(1, 3),
    height=st.integers(1, 4),
    width=st.integers(1, 4),
    representation=st.sampled_from([PolarityCounts, VoxelGrid]),
    t_start=st.integers(-100, 100) | st.integers(INT64_MIN, INT64_MAX),
    length=st.integers(-5, 200),
)
@settings(PROPERTY, max_examples=150)
def test_representation_objects_convert_any_window(
    data, num_bins, height, width, representation, t_start, length
) -> None:
    x, y, t, p = data.draw(event_arrays(height, width))
    window = EventWindow(x, y, t, p, t_start, t_start + length)
    rep = representation(num_bins, height, width)
    expect_error = _array_error(x, y, t, p, num_bins) or (representation is PolarityCounts and length <= 0)
    try:
        out = rep.convert(window)
    except DatasetFormatError:
        raise
    except ValueError:
        assert expect_error, "ValueError for arguments the docstring accepts"
        return
    assert not expect_error, "no ValueError for arguments the docstring rejects"
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert tuple(out.shape) == (num_bins, rep.channels, height, width)
    assert torch.isfinite(out).all()


# -- HDF5 files: writing, corrupting ------------------------------------------------------------------


def write_h5(path: Path, entries: dict[str, Any]) -> None:
    """Write {path in file: array | scalar | GROUP | EMPTY} into a new HDF5 file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, value in sorted(entries.items()):
            if any(name.startswith(other + "/") for other in entries if other != name):
                continue  # a parent written as a dataset or group already: skip its children
            if isinstance(value, str) and value == GROUP:
                f.create_group(name)
            elif isinstance(value, str) and value == EMPTY:
                f.create_dataset(name, data=h5py.Empty("<i8"))
            else:
                f.create_dataset(name, data=value, **_storage(value))


def _storage(value: Any) -> dict[str, Any]:
    # Some datasets chunked and compressed, so corrupted bytes also hit the filter pipeline.
    arr = np.asarray(value)
    if arr.ndim >= 1 and arr.size >= 8 and arr.dtype.kind in "biuf" and int(arr.size) % 3 == 0:
        return {"compression": "gzip", "chunks": True}
    return {}


@st.composite
def corruption(draw: st.DrawFn) -> tuple[str, Any]:
    """How to damage a file: not at all, cut at a fraction of it, bytes overwritten anywhere
    ("overwrite") or inside the stored data of its datasets ("data"), where h5py finds the
    damage only when it reads that data."""
    how = draw(st.sampled_from(["none", "none", "truncate", "overwrite", "data", "data"]))
    if how == "truncate":
        return how, draw(st.floats(0.0, 0.999))
    if how in ("overwrite", "data"):
        spots = st.tuples(st.integers(0, 20), st.floats(0.0, 0.999), st.binary(min_size=1, max_size=16))
        return how, draw(st.lists(spots, min_size=1, max_size=6))
    return how, None


def _data_ranges(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of the stored data of each dataset (each chunk, when chunked) in an HDF5 file."""
    ranges: list[tuple[int, int]] = []

    def visit(_: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset) or obj.shape is None:
            return
        if obj.chunks is None:
            offset = obj.id.get_offset()
            if offset is not None and obj.id.get_storage_size():
                ranges.append((offset, obj.id.get_storage_size()))
        else:
            for k in range(obj.id.get_num_chunks()):
                info = obj.id.get_chunk_info(k)
                ranges.append((info.byte_offset, info.size))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError:
        pass
    return ranges


def corrupt(path: Path, how: tuple[str, Any]) -> None:
    kind, arg = how
    if kind == "none":
        return
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        del data[int(arg * len(data)) :]
    else:
        ranges = _data_ranges(path) if kind == "data" and path.suffix == ".h5" else []
        if kind == "data" and path.suffix == ".npy":
            ranges = [(128, max(len(data) - 128, 1))]  # past the header of a small .npy file
        for pick, where, chunk in arg:
            start, size = ranges[pick % len(ranges)] if ranges else (0, len(data))
            at = start + int(where * size)
            data[at : at + len(chunk)] = chunk[: max(len(data) - at, 0)]
    path.write_bytes(bytes(data))


# -- events files --------------------------------------------------------------------------------------

ODD_DTYPES = ("int8", "int32", "uint64", "float32", "float64", "bool", "S4", "compound")
FIELD_MUTATIONS = ("missing", "group", "empty", "rank0", "rank2", "length", "dtype", "extreme")
MS_TO_IDX = ("none", "correct", "correct", "random", "short", "shuffled", "empty", "rank2", "float", "uint_huge")
T_OFFSET = ("none", "int", "shape1", "shape2", "shape11", "float", "nan", "string", "huge", "empty", "group")


def _odd_dtype(arr: np.ndarray, dtype: str, rng: np.random.Generator) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        return arr  # already odd
    if dtype == "S4":
        return arr.astype("S4")
    if dtype == "compound":
        out = np.zeros(arr.shape, dtype=[("a", "<i4"), ("b", "<f4")])
        with np.errstate(invalid="ignore", over="ignore"):
            out["a"] = arr
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        out = arr.astype(dtype)
    if out.dtype.kind == "f" and out.size:
        out.reshape(-1)[rng.integers(0, out.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e30])
    if dtype == "uint64" and out.size:
        out.reshape(-1)[rng.integers(0, out.size)] += np.uint64(2**63)
    return out


def _extreme(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if arr.size == 0 or arr.dtype.kind not in "iuf":
        return arr
    out = arr.copy()
    info = np.iinfo(out.dtype) if out.dtype.kind in "iu" else np.finfo(out.dtype)
    out.reshape(-1)[rng.integers(0, out.size)] = rng.choice([info.max, info.min])
    return out


@st.composite
def event_entries(draw: st.DrawFn, height: int = 6, width: int = 8, mutate: bool = True) -> tuple[dict, bool]:
    """(HDF5 entries of an events file, whether they are as documented with sorted times).

    With ``mutate`` the file may miss datasets, have wrong ranks, lengths or dtypes,
    odd ms_to_idx and t_offset; the times may be unsorted or repeated.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 60))
    t = np.sort(rng.integers(0, 40_000, n)).astype(np.int64)
    order = draw(st.sampled_from(["sorted", "sorted", "equal", "unsorted"])) if mutate else "sorted"
    if order == "equal" and n:
        t[:] = t[0]
    elif order == "unsorted":
        rng.shuffle(t)
    entries: dict[str, Any] = {
        "events/x": rng.integers(0, width, n).astype(np.uint16),
        "events/y": rng.integers(0, height, n).astype(np.uint16),
        "events/t": t,
        "events/p": rng.integers(0, 2, n).astype(np.uint8),
    }
    clean = order != "unsorted"
    if mutate:
        for field, mutation in draw(
            st.lists(st.tuples(st.sampled_from("xytp"), st.sampled_from(FIELD_MUTATIONS)), max_size=2)
        ):
            clean = False
            key = f"events/{field}"
            arr = entries.get(key)
            if not isinstance(arr, np.ndarray):
                continue
            if mutation == "missing":
                del entries[key]
            elif mutation == "group":
                entries[key] = GROUP
            elif mutation == "empty":
                entries[key] = EMPTY
            elif mutation == "rank0":
                entries[key] = arr[0] if arr.size else arr.dtype.type(0)
            elif mutation == "rank2":
                entries[key] = arr.reshape(1, -1)
            elif mutation == "length":
                extra = draw(st.integers(-3, 3).filter(bool))
                entries[key] = arr[:extra] if extra < 0 else np.concatenate([arr, np.repeat(arr[:1], extra, axis=0)])
            elif mutation == "dtype":
                entries[key] = _odd_dtype(arr, draw(st.sampled_from(ODD_DTYPES)), rng)
            else:
                entries[key] = _extreme(arr, rng)
        if draw(st.sampled_from(["group"] * 15 + ["dataset"])) == "dataset":
            clean = False
            entries = {"events": rng.integers(0, 5, 4)}  # "events" is a dataset, not a group
    ms = draw(st.sampled_from(MS_TO_IDX)) if mutate else draw(st.sampled_from(["none", "correct"]))
    correct = np.searchsorted(t, np.arange(int(t.max(initial=0)) // 1000 + 2) * 1000).astype(np.uint64)
    if ms != "none":
        clean = clean and ms == "correct"
        entries["events/ms_to_idx"] = {
            "correct": correct,
            "random": rng.integers(-5, n + 5, len(correct)).astype(np.int64),
            "short": correct[: max(len(correct) // 3, 1)],
            "shuffled": rng.permutation(correct),
            "empty": correct[:0],
            "rank2": correct.reshape(1, -1),
            "float": correct.astype(np.float64) + 0.5,
            "uint_huge": correct + np.uint64(2**63),
        }.get(ms, correct)
    offset = draw(st.sampled_from(T_OFFSET)) if mutate else draw(st.sampled_from(["none", "int", "shape1"]))
    if offset != "none":
        clean = clean and offset in ("int", "shape1")
        big = int(rng.integers(0, 2**40))
        entries["t_offset"] = {
            "int": np.int64(big),
            "shape1": np.array([big], dtype=np.int64),
            "shape2": np.array([big, big], dtype=np.int64),
            "shape11": np.array([[big]], dtype=np.int64),
            "float": np.float64(1.5),
            "nan": np.float64(np.nan),
            "string": np.bytes_(b"abc"),
            "huge": np.uint64(2**64 - 1),
            "empty": EMPTY,
            "group": GROUP,
        }[offset]
    return entries, clean


@contextmanager
def scratch_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: it is one folder for all of a test's hypothesis examples.
    with tempfile.TemporaryDirectory(prefix="snn_props_") as name:
        yield Path(name)


def _check_events(events: dict[str, np.ndarray]) -> int:
    assert set(events) == {"x", "y", "t", "p"}
    lengths = {len(a) for a in events.values()}
    assert len(lengths) == 1 and all(a.ndim == 1 for a in events.values())
    assert events["x"].dtype == events["y"].dtype == events["t"].dtype == np.int64
    return lengths.pop()


WINDOW_BOUND = st.integers(-5_000, 50_000) | st.integers(INT64_MIN, INT64_MAX)


@given(
    file=event_entries(),
    damage=corruption(),
    windows=st.lists(st.tuples(WINDOW_BOUND, WINDOW_BOUND), max_size=4),
    index_pairs=st.lists(st.tuples(st.integers(-3, 70), st.integers(-3, 70)), max_size=4),
)
@settings(PROPERTY, max_examples=300)
def test_event_slicer_reads_or_names_the_file(file, damage, windows, index_pairs) -> None:
    entries, clean = file
    clean = clean and damage[0] == "none"
    with scratch_dir() as tmp:
        path = tmp / "events.h5"
        write_h5(path, entries)
        corrupt(path, damage)
        try:
            slicer = EventSlicer(path)
        except DatasetFormatError as err:
            assert not clean, f"documented file rejected: {err}"
            assert str(path) in str(err) and "\n" not in str(err)
            return
        with slicer:
            n = slicer.num_events
            offset = slicer.t_offset
            stored_t = np.asarray(entries["events/t"]).astype(np.int64) if clean else None
            try:
                first, last = slicer.time_range()
                assert n > 0 and isinstance(first, int) and isinstance(last, int)
                if clean:
                    assert (first, last) == (int(stored_t[0]) + offset, int(stored_t[-1]) + offset)
            except DatasetFormatError as err:
                assert str(path) in str(err)
                assert not clean or n == 0
            for t0, t1 in windows:
                try:
                    events = slicer.get_events(t0 + offset, t1 + offset)
                except DatasetFormatError as err:
                    assert not clean and str(path) in str(err)
                    continue
                _check_events(events)
                if clean:
                    want = np.flatnonzero((stored_t >= t0) & (stored_t < t1))
                    np.testing.assert_array_equal(events["t"], stored_t[want] + offset)
                    np.testing.assert_array_equal(events["x"], entries["events/x"][want])
            for i0, i1 in index_pairs:
                try:
                    events = slicer.get_events_by_index(i0, i1)
                except IndexError:
                    assert i0 < 0 or i1 >= n, "IndexError for indices inside the file"
                    continue
                except DatasetFormatError as err:
                    assert not clean and str(path) in str(err)
                    continue
                assert 0 <= i0 and i1 < n
                assert _check_events(events) == max(i1 - i0 + 1, 0)


# -- BlinkSim sequences --------------------------------------------------------------------------------

FLOW_MUTATIONS = {
    "C": (
        "flow_rank",
        "flow_channels",
        "flow_dtype",
        "flow_missing",
        "flow_group",
        "flow_nan",
        "flow_zero_size",
        "valid_n",
        "valid_shape",
        "valid_dtype",
        "valid_zero",
        "times_n",
        "times_missing",
        "times_inverted",
        "times_dtype",
        "times_extreme",
        "index_one",
        "index_range",
        "index_inverted",
        "index_n",
    ),
    "B": (
        "flow_rank",
        "flow_channels",
        "flow_dtype",
        "flow_missing",
        "flow_group",
        "flow_nan",
        "flow_zero_size",
        "valid_zero",
        "config",
    ),
    "A": (
        "flow_rank",
        "flow_channels",
        "flow_dtype",
        "flow_nan",
        "flow_zero_size",
        "valid_zero",
        "gap",
        "stray_npy",
        "later_shape",
        "object_npy",
        "npz_npy",
        "bytes_npy",
        "dir_npy",
        "config",
    ),
}
CONFIGS = (
    {"fps": 10, "duration": 10.0},
    {"fps": 10, "duration": 0.01},
    {"fps": 0},
    {"fps": -3},
    {"fps": "ten"},
    {"fps": True},
    {"fps": float("nan")},
    {"fps": float("inf")},
    {"fps": 1e-300},
    {"fps": 10**400},
    {"fps": 1e300},
    {"duration": 1.0},
    [1, 2, 3],
    None,
    b"\xff\xfe not utf-8 \x80",
    b"fps: [unclosed",
)
WINDOW_US = 100_000


def _flow_values(rng: np.random.Generator, shape: tuple[int, ...], mutations: set[str]) -> np.ndarray:
    flow = rng.normal(0.0, 3.0, shape).astype(np.float32)
    if "flow_nan" in mutations and flow.size:
        flat = flow.reshape(-1)
        spots = rng.integers(0, flat.size, max(flat.size // 3, 1))
        flat[spots] = rng.choice([np.nan, np.inf, -np.inf], len(spots))
    return flow


def _flow_dtype(flow: np.ndarray, rng: np.random.Generator, choice: str) -> np.ndarray:
    if choice == "float64_big":
        out = flow.astype(np.float64)
        if out.size:
            out.reshape(-1)[rng.integers(0, out.size)] = 1e39  # finite in float64, inf in float32
        return out
    if choice in ("S4", "compound"):
        return _odd_dtype(flow, choice, rng)
    with np.errstate(invalid="ignore", over="ignore"):
        return flow.astype(choice)


@st.composite
def sequence_files(draw: st.DrawFn) -> dict[str, Any]:
    """A sequence folder of a random layout, maybe broken: {relative path: content}, plus its facts.

    Contents: ("h5", entries), ("npy", array), ("bytes", bytes), ("yaml", object) or ("dir", None).
    """
    layout = draw(st.sampled_from("CBA"))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1 if layout == "A" else 0, 4))
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    mutations = set(draw(st.lists(st.sampled_from(FLOW_MUTATIONS[layout]), max_size=2)))
    if draw(st.sampled_from(["as documented"] * 3 + ["mutated"])) == "mutated":
        events, _ = draw(event_entries(height, width))
    else:
        events, _ = draw(event_entries(height, width, mutate=False))
        events.pop("t_offset", None)  # the flow's windows are in the events' own time
        # Spread the events over the n windows of 100 ms that the flow describes.
        t = events["events/t"]
        events["events/t"] = (t * max(n, 1) * WINDOW_US // 40_000).astype(np.int64)
        if "events/ms_to_idx" in events:
            t = events["events/t"]
            marks = np.arange(int(t.max(initial=0)) // 1000 + 2) * 1000
            events["events/ms_to_idx"] = np.searchsorted(t, marks).astype(np.uint64)
    files: dict[str, Any] = {}
    channels = 2 if layout == "C" else draw(st.sampled_from([2, 3]))
    if "flow_channels" in mutations:
        channels = draw(st.sampled_from([1, 4] if layout != "C" else [1, 3, 4]))
    shape = (n, height, width, channels)
    if "flow_zero_size" in mutations:
        shape = (n, 0, width, channels) if draw(st.booleans()) else (n, height, 0, channels)
    flow = _flow_values(rng, shape, mutations)
    if channels == 3 and layout != "C":
        flow[..., 2] = rng.random(shape[:3]) > 0.3
        if "valid_zero" in mutations:
            flow[..., 2] = 0
        elif draw(st.booleans()) and flow.size:
            flow[..., 2].reshape(-1)[rng.integers(0, flow[..., 2].size)] = np.nan
    if "flow_rank" in mutations:
        flow = flow.reshape(shape[0], shape[1], shape[2] * shape[3]) if layout != "A" else flow[0]
    if "flow_dtype" in mutations:
        flow = _flow_dtype(
            flow, rng, draw(st.sampled_from(["float64_big", "float16", "int16", "bool", "S4", "compound"]))
        )

    if layout == "C":
        files["events.h5"] = ("h5", events)
        valid_kind = draw(st.sampled_from(["none", "4d", "3d"]))
        entries: dict[str, Any] = {"flow/forward": flow}
        if valid_kind != "none":
            valid = (rng.random((n, height, width)) > 0.3).astype(np.uint8)
            if "valid_zero" in mutations:
                valid[:] = 0
            if valid_kind == "4d":
                valid = valid[..., None]
            if "valid_n" in mutations:
                valid = np.concatenate([valid, valid[:1]]) if draw(st.booleans()) or not n else valid[1:]
            if "valid_shape" in mutations:
                valid = np.zeros((n, height + 1, width), np.uint8) if draw(st.booleans()) else valid[..., None, None]
            if "valid_dtype" in mutations:
                valid = _odd_dtype(valid, draw(st.sampled_from(["bool", "float64", "S4", "compound"])), rng)
            entries["flow/valid"] = valid
        edges = np.arange(n + 1, dtype=np.int64) * WINDOW_US
        starts, ends = edges[:-1].copy(), edges[1:].copy()
        if "times_inverted" in mutations and n:
            k = rng.integers(0, n)
            starts[k], ends[k] = ends[k], starts[k] - draw(st.integers(0, 5))
        if "times_extreme" in mutations and n:
            starts[rng.integers(0, n)] = INT64_MIN
            ends[rng.integers(0, n)] = INT64_MAX
        entries["flow/event_start"], entries["flow/event_end"] = starts, ends
        if "times_n" in mutations:
            entries["flow/event_end"] = np.append(ends, ends[-1:] + 1)
        if "times_missing" in mutations:
            del entries[draw(st.sampled_from(["flow/event_start", "flow/event_end"]))]
        if "times_dtype" in mutations:
            name = draw(st.sampled_from(["flow/event_start", "flow/event_end"]))
            if name in entries:
                entries[name] = _odd_dtype(entries[name], draw(st.sampled_from(["float64", "S4", "uint64"])), rng)
        stored_t = events.get("events/t")
        if draw(st.booleans()) and isinstance(stored_t, np.ndarray) and stored_t.ndim == 1:
            t = stored_t.astype(np.float64) if stored_t.dtype.kind in "biuf" else np.zeros(len(stored_t))
            first = np.searchsorted(t, edges[:-1]).astype(np.int64)
            last = np.searchsorted(t, edges[1:]).astype(np.int64) - 1
            num = len(t)
            if "index_range" in mutations and n:
                last[rng.integers(0, n)] = num + draw(st.integers(0, 5))
                first[rng.integers(0, n)] = -draw(st.integers(1, 3))
            if "index_inverted" in mutations and n:
                last[rng.integers(0, n)] = first[0] - 2 - draw(st.integers(0, 3))
            entries["flow/frame_event_start"], entries["flow/frame_event_end"] = first, last
            if "index_n" in mutations:
                entries["flow/frame_event_start"] = first[:-1]
            if "index_one" in mutations:
                del entries["flow/frame_event_end"]
        if "flow_missing" in mutations:
            del entries["flow/forward"]
        if "flow_group" in mutations:
            entries["flow/forward"] = GROUP
        files["flow.h5"] = ("h5", entries)
    elif layout == "B":
        files[draw(st.sampled_from(["events.h5", "events_left/events.h5"]))] = ("h5", events)
        entries = {"flow": flow}
        if "flow_missing" in mutations:
            entries = {"other": flow}
        if "flow_group" in mutations:
            entries = {"flow": GROUP}
        files["forward_flow/flow_gt.h5"] = ("h5", entries)
    else:
        files["events_left/events.h5"] = ("h5", events)
        maps = [flow[i] for i in range(n)] if flow.ndim == 4 else [flow] * n
        names = [f"{i:06d}.npy" for i in range(n)]
        if "gap" in mutations and n >= 2:
            names[-1] = f"{n:06d}.npy"
        for name, array in zip(names, maps, strict=True):
            files[f"forward_flow/{name}"] = ("npy", array)
        last = f"forward_flow/{names[-1]}"
        if "stray_npy" in mutations:
            files["forward_flow/notes.npy"] = ("npy", np.zeros(3))
        if "later_shape" in mutations and n >= 2:
            files[last] = ("npy", np.zeros((height + 1, width, maps[0].shape[-1]), np.float32))
        if "object_npy" in mutations:
            files[last] = ("npy", np.array([{"u": 1}, None], dtype=object))
        if "npz_npy" in mutations:
            files[last] = ("npz", maps[-1])
        if "bytes_npy" in mutations:
            files[last] = ("bytes", bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
        if "dir_npy" in mutations:
            files[f"forward_flow/{n:06d}.npy"] = ("dir", None)
    if layout in "AB":
        config = (
            draw(st.sampled_from(CONFIGS))
            if "config" in mutations
            else draw(st.sampled_from(CONFIGS[:1] + ("absent",)))
        )
        if config != "absent":
            files["config.yaml"] = ("bytes", config) if isinstance(config, bytes) else ("yaml", config)
    return {"layout": layout, "files": files, "mutations": mutations}


def write_files(seq: Path, files: dict[str, Any]) -> None:
    for rel, (kind, content) in files.items():
        path = seq / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "h5":
            write_h5(path, content)
        elif kind == "npy":
            np.save(path, content, allow_pickle=True)
        elif kind == "npz":
            with open(path, "wb") as f:
                np.savez(f, flow=content)
        elif kind == "bytes":
            path.write_bytes(content)
        elif kind == "yaml":
            path.write_text(yaml.safe_dump(content))
        else:
            path.mkdir()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def warnings_of(name: str) -> Iterator[list[str]]:
    handler = _Records()
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


@given(
    spec=sequence_files(),
    damage=corruption(),
    victim=st.integers(0, 10),
    num_bins=st.integers(1, 3),
    representation=st.sampled_from(["counts", "voxel"]),
)
@settings(PROPERTY, max_examples=300)
def test_blinksim_sequence_reads_every_window_or_names_the_file(spec, damage, victim, num_bins, representation) -> None:
    with scratch_dir() as tmp:
        seq_dir = tmp / "boy2_SweepFall_0"
        write_files(seq_dir, spec["files"])
        damaged = [rel for rel, (kind, _) in spec["files"].items() if kind in ("h5", "npy")]
        if damage[0] != "none":
            corrupt(seq_dir / damaged[victim % len(damaged)], damage)
        with warnings_of("snn.data.sequence") as warnings:
            try:
                seq = BlinkSimSequence(seq_dir, num_bins=num_bins, representation=representation)
            except DatasetFormatError as err:
                message = str(err)
                assert str(seq_dir) in message and "\n" not in message
                return
        total = len(seq) * seq.height * seq.width
        assert 0 <= seq.num_valid_pixels <= total
        empty = [m for m in warnings if "ground-truth pixels are valid" in m]
        assert len(empty) == (seq.num_valid_pixels == 0)
        assert all(str(seq_dir) in m for m in empty)
        valid_pixels, failed = 0, False
        for i in range(len(seq)):
            try:
                sample = seq[i]
            except DatasetFormatError as err:
                # Only damaged bytes may stay hidden until a window is read; every
                # other problem is reported when the sequence is opened.
                assert damage[0] != "none", f"window {i} of an undamaged sequence fails: {err}"
                assert str(seq_dir) in str(err)
                failed = True
                continue
            h, w = seq.height, seq.width
            channels = 2 if representation == "counts" else 1
            assert tuple(sample["events"].shape) == (num_bins, channels, h, w)
            assert tuple(sample["flow"].shape) == (2, h, w)
            assert tuple(sample["valid"].shape) == tuple(sample["event_mask"].shape) == (1, h, w)
            for key in ("events", "flow", "valid", "event_mask"):
                assert sample[key].dtype == torch.float32 and torch.isfinite(sample[key]).all()
            assert set(sample["valid"].unique().tolist()) <= {0.0, 1.0}
            assert set(sample["event_mask"].unique().tolist()) <= {0.0, 1.0}
            valid_pixels += int(sample["valid"].sum())
        if not failed:
            assert valid_pixels == seq.num_valid_pixels  # the count matches what the windows hold
