"""Valid ground-truth pixels: counted when a sequence opens, warned about when a sequence or split has none."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

import snn.data.blinksim_files as blinksim_files
from snn.data.blinksim import BlinkSimSequence
from snn.data.provider import build_dataset

EMPTY_MESSAGE = "ground-truth pixels are valid"


def valid_in_windows(seq: BlinkSimSequence) -> int:
    """The valid pixels the samples themselves hold."""
    return sum(int(seq[i]["valid"].sum()) for i in range(len(seq)))


def remove_supervision(seq_dir, layout: str) -> None:
    """Clear every validity flag of a sequence written by the ``write_sequence`` fixture."""
    if layout == "C":
        with h5py.File(seq_dir / "flow.h5", "a") as f:
            f["flow/valid"][...] = 0
    elif layout == "B":
        with h5py.File(seq_dir / "forward_flow" / "flow_gt.h5", "a") as f:
            flow = f["flow"][...]
            flow[..., 2] = 0
            f["flow"][...] = flow
    else:
        for path in sorted((seq_dir / "forward_flow").glob("*.npy")):
            flow = np.load(path)
            flow[..., 2] = 0
            np.save(path, flow)


def empty_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if EMPTY_MESSAGE in r.getMessage()]


@pytest.mark.parametrize("layout", ["A", "B", "C"])
def test_count_is_what_the_windows_hold(tmp_path, write_sequence, layout: str) -> None:
    w = write_sequence(tmp_path, "s", layout)
    seq = BlinkSimSequence(w["dir"])
    finite = np.isfinite(w["flow"]).all(-1)
    assert seq.num_valid_pixels == int((w["valid"] & finite).sum()) == valid_in_windows(seq)
    assert seq.num_flow_pixels == 3 * w["height"] * w["width"]


def test_count_reads_one_window_at_a_time_under_a_small_budget(tmp_path, write_sequence, monkeypatch) -> None:
    seq_dir = write_sequence(tmp_path, "s", "B", num_windows=5)["dir"]
    whole = BlinkSimSequence(seq_dir).num_valid_pixels
    with h5py.File(seq_dir / "forward_flow" / "flow_gt.h5") as f:
        assert len(blinksim_files.window_chunks(f["flow"], max_bytes=1)) == 5
        assert len(blinksim_files.window_chunks(f["flow"])) == 1
    monkeypatch.setattr(blinksim_files, "COUNT_CHUNK_BYTES", 1)
    assert BlinkSimSequence(seq_dir).num_valid_pixels == whole


def test_without_validity_flags_every_finite_pixel_is_valid(tmp_path, write_sequence) -> None:
    w = write_sequence(tmp_path, "c", "C")
    with h5py.File(w["dir"] / "flow.h5", "a") as f:
        del f["flow/valid"]
    b = write_sequence(tmp_path, "b", "B")
    with h5py.File(b["dir"] / "forward_flow" / "flow_gt.h5", "a") as f:
        flow = f["flow"][..., :2]
        del f["flow"]
        f["flow"] = flow  # two channels: no validity flag
    finite = int(np.isfinite(w["flow"]).all(-1).sum())
    assert finite == 3 * 6 * 8 - 1  # the one NaN the writer puts in
    for seq in (BlinkSimSequence(w["dir"]), BlinkSimSequence(b["dir"])):
        assert seq.num_valid_pixels == finite == valid_in_windows(seq)


def test_flow_beyond_float32_is_invalid_in_the_count_too(tmp_path, write_sequence) -> None:
    seq_dir = write_sequence(tmp_path, "s", "B")["dir"]
    with h5py.File(seq_dir / "forward_flow" / "flow_gt.h5", "a") as f:
        flow = f["flow"][...].astype(np.float64)
        flow[..., 2] = 1
        flow[0, 0, 0, 0] = 1e39  # finite in float64, inf once read as float32
        del f["flow"]
        f["flow"] = flow
    seq = BlinkSimSequence(seq_dir)
    assert seq.num_valid_pixels == 3 * 6 * 8 - 2 == valid_in_windows(seq)


@pytest.mark.parametrize("layout", ["A", "B", "C"])
def test_sequence_without_valid_pixel_warns_once(tmp_path, write_sequence, caplog, layout: str) -> None:
    seq_dir = write_sequence(tmp_path, "seq_0003", layout, num_windows=30)["dir"]
    remove_supervision(seq_dir, layout)
    with caplog.at_level(logging.WARNING):
        seq = BlinkSimSequence(seq_dir)
    assert seq.num_valid_pixels == 0 and seq.num_flow_pixels == 30 * 6 * 8
    [message] = empty_warnings(caplog)
    assert message == (
        f"{seq_dir}: 0 of 1,440 ground-truth pixels are valid: this sequence adds nothing to training or evaluation"
    )


def test_flags_set_but_flow_nan_everywhere_warns(tmp_path, write_sequence, caplog) -> None:
    seq_dir = write_sequence(tmp_path, "s", "C")["dir"]
    with h5py.File(seq_dir / "flow.h5", "a") as f:
        f["flow/valid"][...] = 1
        f["flow/forward"][...] = np.nan
    with caplog.at_level(logging.WARNING):
        assert BlinkSimSequence(seq_dir).num_valid_pixels == 0
    assert len(empty_warnings(caplog)) == 1


def test_normal_data_does_not_warn(tiny_synthetic_root, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        dataset = build_dataset(tiny_synthetic_root, "train")
    assert all(seq.num_valid_pixels > 0 for seq in dataset.datasets)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_split_without_supervision_warns_for_the_split(tmp_path, write_sequence, caplog) -> None:
    for name in ("s1", "s2"):
        remove_supervision(write_sequence(tmp_path / "train", name, "C")["dir"], "C")
    with caplog.at_level(logging.WARNING):
        build_dataset(tmp_path, "train")
    assert len(empty_warnings(caplog)) == 2  # one per sequence
    [split] = [r.getMessage() for r in caplog.records if "no supervision" in r.getMessage()]
    assert split.startswith(f"{tmp_path / 'train'}: none of the 6 windows of its 2 sequence(s)")
    assert "the train split has no supervision" in split


def test_split_with_one_supervised_sequence_does_not_warn_for_the_split(tmp_path, write_sequence, caplog) -> None:
    remove_supervision(write_sequence(tmp_path / "val", "s1", "B")["dir"], "B")
    write_sequence(tmp_path / "val", "s2", "B")
    with caplog.at_level(logging.WARNING):
        build_dataset(tmp_path, "val")
    assert len(empty_warnings(caplog)) == 1
    assert not [r for r in caplog.records if "no supervision" in r.getMessage()]
