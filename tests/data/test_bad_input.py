"""Inputs that once crashed the readers (found by test_reader_properties.py), pinned as plain examples.

Each must now give DatasetFormatError naming the file, or, for the array
functions, the ValueError their docstrings document, or a correct result.
"""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest
import yaml

from snn.data.blinksim import BlinkSimSequence
from snn.data.errors import DatasetFormatError
from snn.data.events import EventSlicer
from snn.data.representations import polarity_counts, voxel_grid

T5 = np.arange(5, dtype=np.int64) * 1000


def events_h5(path, t=T5, x=None, **extra):
    """events/{x,y,t,p} of len(t) events at pixel (0, 0), plus extra {path in file: value}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(t)
    with h5py.File(path, "w") as f:
        f["events/x"] = np.zeros(n, np.uint16) if x is None else x
        f["events/y"] = np.zeros(n, np.uint16)
        f["events/t"] = t
        f["events/p"] = np.ones(n, np.uint8)
        for name, value in extra.items():
            f[name] = value
    return path


def overwrite_chunk(path, dataset: str, chunk: int) -> None:
    """Fill one stored (gzip) chunk of ``dataset`` with 0xff: the file opens, reading that chunk fails."""
    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(chunk)
    data = bytearray(path.read_bytes())
    data[info.byte_offset : info.byte_offset + info.size] = b"\xff" * info.size
    path.write_bytes(bytes(data))


# -- EventSlicer ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"t_offset": np.float64("nan")}, "t_offset must be a single integer"),  # was ValueError from int()
        ({"t_offset": np.bytes_(b"abc")}, "t_offset must be a single integer"),  # was ValueError from int()
        ({"t_offset": np.uint64(2**64 - 1)}, "t_offset 18446744073709551615 lies beyond"),  # was OverflowError
        ({"events/ms_to_idx": np.array([-(2**62), 3, 5, 5, 5, 5])}, "ms_to_idx must be non-decreasing"),  # IndexError
        ({"events/ms_to_idx": np.full(6, 2**63, np.uint64)}, "ms_to_idx must be non-decreasing"),
        ({"events/ms_to_idx": np.array([0, 5, 2, 1, 0, 0])}, "ms_to_idx must be non-decreasing"),
        ({"events/ms_to_idx": np.arange(6) + 0.5}, "ms_to_idx must be a non-empty 1-D dataset of integers"),
    ],
)
def test_odd_t_offset_and_ms_to_idx_name_the_file(tmp_path, extra, problem: str) -> None:
    path = events_h5(tmp_path / "e.h5", **extra)
    with pytest.raises(DatasetFormatError, match=problem) as info:
        EventSlicer(path).get_events(0, 10**6)
    assert str(info.value).startswith(f"{path}: ")


def test_event_datasets_of_the_wrong_dtype_name_the_file(tmp_path) -> None:
    compound = np.zeros(5, dtype=[("a", "<i4"), ("b", "<f4")])  # was TypeError when read
    with pytest.raises(DatasetFormatError, match=r"x\.h5: events/x has dtype .* expected integers"):
        EventSlicer(events_h5(tmp_path / "x.h5", x=compound))
    with pytest.raises(DatasetFormatError, match=r"t\.h5: events/t has dtype float64, expected integers"):
        EventSlicer(events_h5(tmp_path / "t.h5", t=np.array([0, np.nan, 2, 3, 4])))


def test_time_range_of_an_empty_file_is_a_format_error(tmp_path) -> None:
    with EventSlicer(events_h5(tmp_path / "e.h5", t=T5[:0])) as slicer:
        with pytest.raises(DatasetFormatError, match=r"e\.h5: holds no events"):
            slicer.time_range()


def test_damaged_bytes_are_reported_when_read(tmp_path) -> None:
    path = tmp_path / "e.h5"
    with h5py.File(path, "w") as f:
        for name, dtype in (("x", np.uint16), ("y", np.uint16), ("t", np.int64), ("p", np.uint8)):
            f.create_dataset(f"events/{name}", data=np.arange(64).astype(dtype), chunks=(8,), compression="gzip")
    overwrite_chunk(path, "events/t", 3)
    with EventSlicer(path) as slicer:  # opens: nothing damaged has been read yet
        with pytest.raises(DatasetFormatError, match=r"e\.h5: cannot read events/t, .*filter returned failure"):
            slicer.get_events(0, 100)  # was OSError from h5py


def test_event_times_beyond_2_to_62_us_are_rejected(tmp_path) -> None:
    t = np.arange(5, dtype=np.uint64) + np.uint64(2**63)  # was OverflowError in the window edges
    with pytest.raises(DatasetFormatError, match=r"e\.h5: event times 9223372036854775808 to .* beyond"):
        EventSlicer(events_h5(tmp_path / "e.h5", t=t))


# -- BlinkSim sequences -----------------------------------------------------------------------------------


def test_damaged_events_are_reported_when_the_sequence_opens(tmp_path, write_sequence) -> None:
    seq = write_sequence(tmp_path, "s", "C", per_window=30)["dir"]
    events = {}
    with h5py.File(seq / "events.h5") as f:
        events = {name: f[f"events/{name}"][:] for name in ("x", "y", "t", "p")}
    with h5py.File(seq / "events.h5", "w") as f:
        for name, values in events.items():
            f.create_dataset(f"events/{name}", data=values, chunks=(8,), compression="gzip")
    overwrite_chunk(seq / "events.h5", "events/x", 5)
    with pytest.raises(DatasetFormatError, match=r"events\.h5: cannot read events"):  # was OSError
        BlinkSimSequence(seq)


def test_damaged_flow_is_reported_when_the_sequence_opens(tmp_path, write_sequence) -> None:
    seq = write_sequence(tmp_path, "s", "C")["dir"]
    with h5py.File(seq / "flow.h5", "a") as f:
        flow = f["flow/forward"][:]
        del f["flow/forward"]
        f.create_dataset("flow/forward", data=flow, chunks=(1, 6, 8, 2), compression="gzip")
    overwrite_chunk(seq / "flow.h5", "flow/forward", 2)
    with pytest.raises(DatasetFormatError, match=r"flow\.h5: cannot read the flow maps"):
        BlinkSimSequence(seq)


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


GOOD_MAP = np.ones((6, 8, 3), np.float32)


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, flow=GOOD_MAP)
    return buffer.getvalue()


def _bad_header() -> bytes:
    data = _npy_bytes(GOOD_MAP)
    return data.replace(b"(6, 8, 3)", b"[6, 8, 3)")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(_npy_bytes(GOOD_MAP)[:100], "cannot read as .npy", id="header-cut"),  # was ValueError
        pytest.param(_npy_bytes(GOOD_MAP)[:200], "cannot read as .npy", id="data-cut"),  # was ValueError
        pytest.param(b"", "cannot read as .npy", id="empty"),  # was EOFError
        pytest.param(_npy_bytes(np.array([None, {}], dtype=object)), "cannot read as .npy", id="pickled"),
        pytest.param(_npz_bytes(), "is an .npz archive", id="npz"),  # was AttributeError ('NpzFile'.shape)
        pytest.param(_bad_header(), "cannot read as .npy", id="bad-header"),  # was ValueError / TokenError
        pytest.param(_npy_bytes(np.zeros((6, 8, 3), dtype=[("a", "<i4")])), "expected numbers", id="compound"),
    ],
)
@pytest.mark.parametrize("which", [0, 2])
def test_broken_layout_a_map_is_named_when_the_sequence_opens(tmp_path, write_sequence, content, problem, which):
    seq = write_sequence(tmp_path, "s", "A")["dir"]
    path = seq / "forward_flow" / f"{which:06d}.npy"
    path.write_bytes(content)
    with pytest.raises(DatasetFormatError, match=problem) as info:
        BlinkSimSequence(seq)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        pytest.param(b"\xff\xfe fps: 10", "is not valid YAML", id="not-utf8"),  # was UnicodeDecodeError
        pytest.param({"fps": 10**400}, "fps must be a positive finite number", id="huge-int"),  # OverflowError
        pytest.param({"fps": float("inf")}, "fps must be a positive finite number", id="inf"),  # windows at 0
        pytest.param({"fps": float("nan")}, "fps must be a positive finite number", id="nan"),  # garbage windows
        pytest.param({"fps": 1e-300}, "fps 1e-300 is too low", id="tiny"),  # garbage windows
    ],
)
def test_bad_config_names_the_config(tmp_path, write_sequence, config, problem: str) -> None:
    seq = write_sequence(tmp_path, "s", "B")["dir"]
    path = seq / "config.yaml"
    path.write_bytes(config) if isinstance(config, bytes) else path.write_text(yaml.safe_dump(config))
    with pytest.raises(DatasetFormatError, match=problem) as info:
        BlinkSimSequence(seq)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"flow/event_end": np.array([100_000, 50_000, 300_000])}, "window 1 ends before it starts"),
        ({"flow/forward": np.zeros((3, 6, 8, 2), "S4")}, "flow/forward has dtype |S4, expected numbers"),
        ({"flow/forward": np.zeros((3, 0, 8, 2), np.float32)}, r"shape \(3, 0, 8, 2\): its maps hold no pixel"),
        ({"flow/event_start": np.array([0.0, 1e5, 2e5])}, "flow/event_start has dtype float64, expected integers"),
    ],
)
def test_bad_layout_c_flow_names_the_flow_file(tmp_path, write_sequence, change, problem: str) -> None:
    seq = write_sequence(tmp_path, "s", "C")["dir"]
    with h5py.File(seq / "flow.h5", "a") as f:
        for name, value in change.items():
            del f[name]
            f[name] = value
    with pytest.raises(DatasetFormatError, match=problem) as info:
        BlinkSimSequence(seq)
    assert str(info.value).startswith(f"{seq / 'flow.h5'}: ")


# -- representations --------------------------------------------------------------------------------------

ONE = np.zeros(1, np.int64)


def test_arrays_of_different_lengths_are_a_documented_value_error() -> None:
    for fn in (
        lambda x: polarity_counts(x, ONE, ONE, ONE, 1, 2, 2, 0, 10),
        lambda x: voxel_grid(x, ONE, ONE, ONE, 1, 2, 2),
    ):
        with pytest.raises(ValueError, match="1-D arrays of one length"):  # was IndexError / broadcast error
            fn(np.zeros(2, np.int64))


def test_non_finite_times_are_a_documented_value_error() -> None:
    with pytest.raises(ValueError, match="event times must be finite"):  # voxel: was a bincount ValueError
        voxel_grid(np.zeros(3, int), np.zeros(3, int), np.array([-np.inf, 0.05, 1.0]), np.ones(3), 3, 1, 1)
    with pytest.raises(ValueError, match="bounds must be finite"):  # was accepted: every event in bin 0
        polarity_counts(ONE, ONE, ONE, ONE, 1, 1, 1, float("nan"), 10)


def test_window_bounds_of_mixed_integer_types() -> None:
    # Was OverflowError: np.uint64 minus a negative Python int.
    counts = polarity_counts(ONE, ONE, ONE, ONE, 1, 1, 1, -52, np.uint64(2**64 - 1))
    assert counts.sum() == 1


def test_nan_polarity_is_off_in_both_representations() -> None:
    nan = np.array([np.nan])
    counts = polarity_counts(ONE, ONE, ONE, nan, 1, 1, 1, 0, 10)
    assert (counts[0, 0].item(), counts[0, 1].item()) == (0.0, 1.0)  # was counted ON, unlike p > 0
    assert voxel_grid(ONE, ONE, ONE, nan, 1, 1, 1, normalize=False).item() == -1.0


@pytest.mark.parametrize(("t", "t_end"), [(1e300, 10), (300, 2.2e-103)])
def test_events_far_past_the_window_land_in_the_last_bin(t: float, t_end: float) -> None:
    counts = polarity_counts(ONE, ONE, np.array([t]), ONE, 2, 1, 1, 0, t_end)
    assert counts[1].sum() == 1  # was the first bin: the bin index overflowed int64 before the clip


def test_voxel_grid_of_times_near_the_float64_limits() -> None:
    grid = voxel_grid(np.zeros(2, int), np.zeros(2, int), np.array([-1e308, 1e308]), np.ones(2), 3, 1, 1, False)
    assert grid.ravel().tolist() == [1.0, 0.0, 1.0]  # was a bincount ValueError (inf - inf)
