"""MVSEC reader: events in seconds, both protocols (dt=1, dt=4), ground truth carried across maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from snn.data.errors import DatasetFormatError
from snn.data.mvsec import MvsecSequence, npz_member
from snn.data.provider import build_dataset, detect_format
from tests.data.mvsec_files import H, W, write_mvsec_root


@pytest.fixture
def mvsec_root(tmp_path: Path) -> Path:
    return write_mvsec_root(tmp_path / "MVSEC")


def _sequence(root: Path, dt: int, name: str = "indoor_flying1") -> MvsecSequence:
    return MvsecSequence(root / f"{name}_data.hdf5", root / f"{name}_gt_flow_dist.npz", dt=dt, num_bins=1)


def test_dt1_windows_are_consecutive_frames_with_the_ground_truth_scaled_to_them(mvsec_root: Path) -> None:
    seq = _sequence(mvsec_root, 1)
    assert (len(seq), seq.height, seq.width) == (6, H, W)
    first = seq[0]  # frames 0 -> 1: half of the first map's 100 ms
    valid = first["valid"][0].numpy().astype(bool)
    assert not valid[2, 3] and valid.sum() == H * W - 1  # no ground truth there
    assert first["flow"][0].numpy()[valid] == pytest.approx(np.full(H * W - 1, 1.0), abs=1e-6)
    assert (first["flow"][1] == 0).all()
    # One ON event at (1, 1) in the first 50 ms; frames 2 -> 3 hold one ON and one OFF event.
    assert first["events"][0, 0, 1, 1] == 1 and first["events"].sum() == 1
    third = seq[2]
    assert third["flow"][0].numpy() == pytest.approx(np.full((H, W), 2.0), abs=1e-6)  # half of the 4 px map
    assert third["events"][0, 0, 5, 9] == 1 and third["events"][0, 1, 4, 3] == 1 and third["events"].sum() == 2


def test_dt4_carries_each_pixel_across_the_maps_it_spans(mvsec_root: Path) -> None:
    seq = _sequence(mvsec_root, 4)
    assert len(seq) == 3  # frames 0->4, 1->5, 2->6
    # Frames 1 -> 5 (50 to 250 ms): half of map 0 (1 px), all of map 1 (4 px), half of map 2 (0.5 px).
    second = seq[1]
    # Valid only where the carried pixel stayed in the frame for every map (x + 1 + 4 <= 9) and
    # started on ground truth (not at (2, 3)).
    valid = second["valid"][0].numpy().astype(bool)
    expected = np.zeros((H, W), bool)
    expected[:, :5] = True
    expected[2, 3] = False
    assert (valid == expected).all()
    assert second["flow"][0].numpy()[valid] == pytest.approx(np.full(valid.sum(), 5.5), abs=1e-6)


def test_outdoor_recordings_never_count_the_hood(tmp_path: Path) -> None:
    root = write_mvsec_root(tmp_path / "out", name="outdoor_day1", height=192)
    valid = _sequence(root, 1, "outdoor_day1")[0]["valid"][0]
    assert valid[:190].sum() == 190 * W - 1 and valid[190:].sum() == 0


def test_uncompressed_ground_truth_is_memory_mapped_and_compressed_reads_the_same(tmp_path: Path) -> None:
    plain = write_mvsec_root(tmp_path / "plain")
    packed = write_mvsec_root(tmp_path / "packed", compressed=True)
    assert isinstance(npz_member(plain / "indoor_flying1_gt_flow_dist.npz", "x_flow_dist"), np.memmap)
    for i in range(3):
        a, b = _sequence(plain, 4)[i], _sequence(packed, 4)[i]
        assert (a["flow"] == b["flow"]).all() and (a["valid"] == b["valid"]).all()


def test_format_is_detected_and_a_root_of_nothing_names_what_each_format_expects(
    mvsec_root: Path, tmp_path: Path
) -> None:
    assert detect_format(mvsec_root) == "mvsec"
    assert len(build_dataset(mvsec_root, "test", num_bins=2, mvsec_dt=4)) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFormatError, match="BlinkSim expects .*DSEC expects .*MVSEC expects") as err:
        build_dataset(empty, "test")
    assert "\n" not in str(err.value)


def test_missing_ground_truth_and_a_bad_protocol_are_errors(mvsec_root: Path) -> None:
    with pytest.raises(ValueError, match="dt must be one of"):
        _sequence(mvsec_root, 2)
    (mvsec_root / "indoor_flying1_gt_flow_dist.npz").unlink()
    (mvsec_root / "indoor_flying1_gt_flow_dist.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetFormatError, match="gt_flow_dist.npz: cannot read as .npz"):
        _sequence(mvsec_root, 1)
