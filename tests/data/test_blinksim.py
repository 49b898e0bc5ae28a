"""BlinkSimSequence on tiny files of layouts A, B and C written by the tests."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from snn.data.blinksim import LAYOUT_FILES, BlinkSimSequence, detect_layout
from snn.data.blinksim_layouts import DECODERS, LayoutA, LayoutB, LayoutC, find_layout
from snn.data.errors import DatasetFormatError
from snn.data.loaders import check_frame_sizes
from snn.data.sampling import SeededAugmentation


def expected_counts(events, t0, t1, num_bins, height, width) -> np.ndarray:
    """Polarity counts of the events in [t0, t1), counted one event at a time."""
    out = np.zeros((num_bins, 2, height, width), dtype=np.float32)
    for x, y, t, p in zip(events["x"], events["y"], events["t"], events["p"], strict=True):
        if t0 <= t < t1 and 0 <= x < width and 0 <= y < height:
            b = min(int((t - t0) * num_bins // (t1 - t0)), num_bins - 1)
            out[b, 0 if p == 1 else 1, y, x] += 1
    return out


@pytest.mark.parametrize("layout", ["A", "B", "C"])
def test_reads_back_what_was_written(tmp_path, write_sequence, layout: str) -> None:
    w = write_sequence(tmp_path, f"boy2_SweepFall_{layout}", layout)
    seq = BlinkSimSequence(w["dir"], num_bins=4)
    assert (seq.layout, len(seq), seq.height, seq.width) == (layout, 3, w["height"], w["width"])
    assert seq.name == f"boy2_SweepFall_{layout}"
    for i in range(len(seq)):
        sample = seq[i]
        t0, t1 = w["windows"][i]
        finite = np.isfinite(w["flow"][i]).all(-1)
        want_flow = np.where(finite[..., None], w["flow"][i], 0).transpose(2, 0, 1)
        np.testing.assert_array_equal(sample["flow"].numpy(), want_flow)
        np.testing.assert_array_equal(sample["valid"][0].numpy(), w["valid"][i] & finite)
        counts = expected_counts(w["events"], t0, t1, 4, w["height"], w["width"])
        np.testing.assert_array_equal(sample["events"].numpy(), counts)
        np.testing.assert_array_equal(sample["event_mask"][0].numpy(), counts.sum((0, 1)) > 0)
        assert sample["sequence"] == seq.name and sample["index"] == i
        for key in ("events", "flow", "valid", "event_mask"):
            assert sample[key].dtype == torch.float32
    # The NaN written at window 1, pixel (2, 3) is invalid and zeroed.
    assert seq[1]["valid"][0, 2, 3] == 0 and seq[1]["flow"][0, 2, 3] == 0


def test_layout_c_without_index_datasets_slices_by_time(tmp_path, write_sequence) -> None:
    with_idx = BlinkSimSequence(write_sequence(tmp_path, "a", "C")["dir"])
    by_time = BlinkSimSequence(write_sequence(tmp_path, "b", "C", frame_indices=False)["dir"])
    for i in range(len(with_idx)):
        assert torch.equal(with_idx[i]["events"], by_time[i]["events"])


def test_layout_b_without_config_spreads_windows_over_events(tmp_path, write_sequence) -> None:
    w = write_sequence(tmp_path, "s", "B", config=False)
    seq = BlinkSimSequence(w["dir"], num_bins=2)
    total = sum(seq[i]["events"].sum().item() for i in range(len(seq)))
    assert total == len(w["events"]["t"])  # every event, the last one included, used once


def test_voxel_representation_has_one_channel(tmp_path, write_sequence) -> None:
    seq = BlinkSimSequence(write_sequence(tmp_path, "s", "C")["dir"], num_bins=3, representation="voxel")
    assert tuple(seq[0]["events"].shape) == (3, 1, 6, 8)


def test_newest_layout_wins(tmp_path, write_sequence) -> None:
    w = write_sequence(tmp_path, "s", "A")
    assert detect_layout(w["dir"]) == "A"
    write_sequence(tmp_path, "s", "C")  # same folder now also holds layout C files
    assert detect_layout(w["dir"]) == "C"


def test_folder_matching_no_layout_lists_expected_files(tmp_path) -> None:
    seq = tmp_path / "broken_seq"
    (seq / "events_left").mkdir(parents=True)
    with pytest.raises(DatasetFormatError) as info:
        BlinkSimSequence(seq)
    message = str(info.value)
    assert "broken_seq" in message and "\n" not in message
    for expected in ("flow.h5", "forward_flow/flow_gt.h5", "000000.npy"):
        assert expected in message


@pytest.mark.parametrize("victim", ["events.h5", "flow.h5"])
def test_truncated_hdf5_names_the_file(tmp_path, write_sequence, victim: str) -> None:
    path = write_sequence(tmp_path, "s", "C")["dir"] / victim
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match=rf"{victim}: cannot open as HDF5"):
        BlinkSimSequence(path.parent)


def test_wrong_flow_shape_is_reported(tmp_path, write_sequence) -> None:
    seq = write_sequence(tmp_path, "s", "B")["dir"]
    with h5py.File(seq / "forward_flow" / "flow_gt.h5", "w") as f:
        f["flow"] = np.zeros((3, 6, 8, 4), np.float32)
    with pytest.raises(DatasetFormatError, match=r"flow_gt\.h5: .*\(3, 6, 8, 4\)"):
        BlinkSimSequence(seq)


def test_valid_count_mismatch_is_reported(tmp_path, write_sequence) -> None:
    seq = write_sequence(tmp_path, "s", "C")["dir"]
    with h5py.File(seq / "flow.h5", "a") as f:
        del f["flow/valid"]
        f["flow/valid"] = np.ones((2, 6, 8, 1), np.uint8)
    with pytest.raises(DatasetFormatError, match=r"flow\.h5: flow/valid holds 2 maps"):
        BlinkSimSequence(seq)


def test_events_from_a_bigger_sensor_are_reported(tmp_path, write_sequence) -> None:
    rng = np.random.default_rng(0)
    events = {
        "x": rng.integers(0, 16, 40),
        "y": rng.integers(0, 12, 40),
        "t": np.sort(rng.integers(0, 300_000, 40)),
        "p": rng.integers(0, 2, 40),
    }
    seq = write_sequence(tmp_path, "s", "C", events=events)["dir"]
    with pytest.raises(DatasetFormatError, match=r"events\.h5: .*different sensor sizes"):
        BlinkSimSequence(seq)


def test_stray_events_outside_the_image_are_dropped(tmp_path, write_sequence) -> None:
    rng = np.random.default_rng(1)
    n = 100
    events = {
        "x": rng.integers(0, 8, n),
        "y": rng.integers(0, 6, n),
        "t": np.sort(rng.integers(0, 100_000, n)),
        "p": rng.integers(0, 2, n),
    }
    events["x"][10] = 8  # one stray event, 1% of the file
    seq = BlinkSimSequence(write_sequence(tmp_path, "s", "C", num_windows=1, events=events)["dir"])
    assert seq[0]["events"].sum() == n - 1


def test_index_out_of_range_and_negative_index(tmp_path, write_sequence) -> None:
    seq = BlinkSimSequence(write_sequence(tmp_path, "s", "B")["dir"])
    with pytest.raises(IndexError):
        seq[3]
    assert seq[-1]["index"] == 2


def test_files_open_lazily_and_survive_pickling(tmp_path, write_sequence) -> None:
    w = write_sequence(tmp_path, "s", "C")
    seq = BlinkSimSequence(w["dir"])
    assert seq._slicer is None and seq._decoder._flow_h5 is None  # nothing held open by __init__
    first = seq[0]
    clone = pickle.loads(pickle.dumps(seq))  # what a spawned DataLoader worker receives
    assert clone._slicer is None and clone._decoder._flow_h5 is None
    assert torch.equal(clone[0]["events"], first["events"])
    seq.close()
    assert torch.equal(seq[0]["flow"], first["flow"])  # reopens after close


def test_crop_and_augment_keep_shapes_and_follow_the_key_seed(tmp_path, write_sequence) -> None:
    seq = BlinkSimSequence(write_sequence(tmp_path, "s", "A")["dir"], num_bins=2)
    train = SeededAugmentation(seq, crop_size=(4, 5), flip=True)
    sample = train[(0, 7)]
    assert tuple(sample["events"].shape) == (2, 2, 4, 5)
    assert tuple(sample["flow"].shape) == (2, 4, 5)
    assert tuple(sample["valid"].shape) == tuple(sample["event_mask"].shape) == (1, 4, 5)
    # The same key gives the same sample; another seed (almost surely) another crop or flip.
    again = train[(0, 7)]
    assert all(torch.equal(sample[k], again[k]) for k in ("events", "flow", "valid"))
    assert any(not torch.equal(sample["flow"], train[(0, s)]["flow"]) for s in range(8, 16))
    with pytest.raises(DatasetFormatError, match="6x8, smaller than the 7x9"):
        check_frame_sizes(seq, "train", 8, crop_size=(7, 9))


@pytest.mark.parametrize(("layout", "cls"), [("A", LayoutA), ("B", LayoutB), ("C", LayoutC)])
def test_each_layout_has_its_decoder(tmp_path, write_sequence, layout: str, cls) -> None:
    w = write_sequence(tmp_path, "s", layout)
    found, events_path, flow_path = find_layout(w["dir"])
    assert found is cls and cls.layout == layout and LAYOUT_FILES[layout] == cls.files
    decoder = cls(w["dir"], events_path, flow_path)
    assert (decoder.height, decoder.width, decoder.num_windows) == (w["height"], w["width"], 3)
    np.testing.assert_array_equal(decoder.time_windows, w["windows"])
    assert (decoder.index_windows is not None) == (layout == "C")
    decoder.open()
    try:
        uv, valid = decoder.read_flow(1)
    finally:
        decoder.close()
    assert uv.dtype == np.float32 and uv.shape == (2, w["height"], w["width"])
    assert valid.dtype == bool and valid.shape == (w["height"], w["width"])
    finite = np.isfinite(w["flow"][1]).all(-1)
    np.testing.assert_array_equal(valid, w["valid"][1] & finite)


def test_decoders_are_tried_newest_first() -> None:
    assert [cls.layout for cls in DECODERS] == list(LAYOUT_FILES) == ["C", "B", "A"]
