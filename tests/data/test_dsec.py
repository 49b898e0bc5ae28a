"""DSEC-Flow reader on a tiny release-shaped folder written here: Blosc events, rectify map, OpenCV PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import hdf5plugin
import numpy as np
import pytest

from snn.data.dsec import DsecSequence, decode_flow_png, dsec_sequences, encode_flow_png, is_dsec_root
from snn.data.errors import DatasetFormatError
from snn.data.provider import build_dataset

H, W = 8, 12
T_OFFSET = 5_000_000  # us: the stored times are relative to it
WINDOWS = np.array([[T_OFFSET + 0, T_OFFSET + 1000], [T_OFFSET + 1000, T_OFFSET + 2000]], np.int64)


def _write_events(path: Path, x, y, t, p) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blosc = hdf5plugin.Blosc(cname="zstd", clevel=5)
    with h5py.File(path, "w") as f:
        for name, values, dtype in (("x", x, np.uint16), ("y", y, np.uint16), ("t", t, np.int64), ("p", p, np.uint8)):
            f.create_dataset(f"events/{name}", data=np.asarray(values, dtype), chunks=True, **blosc)
        f["t_offset"] = np.int64(T_OFFSET)
        ms = np.searchsorted(np.asarray(t), np.arange(0, 3) * 1000)
        f["ms_to_idx"] = ms.astype(np.uint64)  # at the root, as DSEC keeps it


def _write_flow_png(path: Path, u: float, v: float, valid: np.ndarray) -> None:
    """By hand, in OpenCV's BGR order: blue = valid, green = v, red = u."""
    bgr = np.zeros((H, W, 3), np.uint16)
    bgr[..., 0] = valid.astype(np.uint16)
    bgr[..., 1] = np.uint16(v * 128 + 2**15)
    bgr[..., 2] = np.uint16(u * 128 + 2**15)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr)


@pytest.fixture
def dsec_root(tmp_path: Path) -> Path:
    root = tmp_path / "DSEC"
    seq_events = root / "train_events" / "zurich_city_01_a" / "events" / "left"
    # Window 0: two events at raw (2, 3) and one at (11, 7); window 1: one at (0, 0).
    _write_events(seq_events / "events.h5", [2, 2, 11, 0], [3, 3, 7, 0], [100, 200, 900, 1500], [1, 0, 1, 1])
    # Rectification moves every pixel one column right and keeps its row.
    rect = np.stack(np.meshgrid(np.arange(W, dtype=np.float32) + 1, np.arange(H, dtype=np.float32)), axis=-1)
    with h5py.File(seq_events / "rectify_map.h5", "w") as f:
        f["rectify_map"] = rect
    flow = root / "train_optical_flow" / "zurich_city_01_a" / "flow"
    valid = np.zeros((H, W), bool)
    valid[:4] = True
    _write_flow_png(flow / "forward" / "000002.png", 1.5, -2.25, valid)
    _write_flow_png(flow / "forward" / "000004.png", -0.5, 3.0, ~valid)
    header = "# from_timestamp_us, to_timestamp_us\n"
    (flow / "forward_timestamps.txt").write_text(header + "".join(f"{a}, {b}\n" for a, b in WINDOWS))
    return root


def test_flow_png_decodes_rgb_not_bgr(dsec_root: Path) -> None:
    uv, valid = decode_flow_png(dsec_root / "train_optical_flow/zurich_city_01_a/flow/forward/000002.png")
    assert uv.shape == (2, H, W) and uv.dtype == np.float32
    assert (uv[0] == 1.5).all() and (uv[1] == -2.25).all()
    assert valid[:4].all() and not valid[4:].any()


def test_sequence_reads_blosc_events_rectified_in_their_windows(dsec_root: Path) -> None:
    assert is_dsec_root(dsec_root)
    [(name, events, flow_dir)] = dsec_sequences(dsec_root, "train")
    seq = DsecSequence(events, flow_dir, num_bins=1)
    assert (name, len(seq), seq.height, seq.width) == ("zurich_city_01_a", 2, H, W)
    assert seq.num_valid_pixels == 4 * W + 4 * W
    first = seq[0]
    counts = first["events"][0]  # [2 polarities, H, W]
    # Raw (2, 3) lands at (3, 3): one ON and one OFF; raw (11, 7) leaves the image at x = 12.
    assert counts[0, 3, 3] == 1 and counts[1, 3, 3] == 1 and counts.sum() == 2
    assert first["event_mask"][0, 3, 3] == 1 and first["event_mask"].sum() == 1
    assert (first["flow"][0] == 1.5).all() and (first["flow"][1] == -2.25).all()
    second = seq[1]
    assert second["events"][0, 0, 0, 1] == 1 and second["events"].sum() == 1
    assert (second["flow"][1] == 3.0).all() and second["valid"][0, 4:].all() and not second["valid"][0, :4].any()


def test_upload_format_decodes_back_within_a_128th_of_a_pixel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    uv = rng.uniform(-200, 200, size=(2, H, W)).astype(np.float32)
    encode_flow_png(tmp_path / "000010.png", uv)
    back, valid = decode_flow_png(tmp_path / "000010.png")
    assert valid.all()
    assert np.abs(back - uv).max() <= 0.5 / 128 + 1e-6
    assert np.abs(back - uv).max() > 0  # it is quantized, not copied


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda r: (r / "train_events/zurich_city_01_a/events/left/rectify_map.h5").unlink(), "rectify_map.h5"),
        (lambda r: (r / "train_optical_flow/zurich_city_01_a/flow/forward/000004.png").unlink(), "lists 2 windows"),
        (
            lambda r: cv2.imwrite(
                str(r / "train_optical_flow/zurich_city_01_a/flow/forward/000002.png"), np.zeros((H, W, 3), np.uint8)
            ),
            "16-bit",
        ),
    ],
)
def test_damaged_sequences_are_one_line_errors_naming_the_file(dsec_root: Path, damage, named) -> None:
    damage(dsec_root)
    [(_, events, flow_dir)] = dsec_sequences(dsec_root, "train")
    with pytest.raises(DatasetFormatError, match=named) as err:
        DsecSequence(events, flow_dir)
    assert "\n" not in str(err.value) and str(dsec_root) in str(err.value)


def test_a_dsec_root_is_a_data_root_like_any_other(dsec_root: Path) -> None:
    dataset = build_dataset(dsec_root, "train", num_bins=2)
    assert len(dataset) == 2 and dataset[1]["events"].shape == (2, 2, H, W)
    with pytest.raises(DatasetFormatError, match="no DSEC train sequence named interlaken"):
        build_dataset(dsec_root, "train", names=["interlaken"])


def test_a_split_without_its_folders_names_them(dsec_root: Path) -> None:
    with pytest.raises(DatasetFormatError, match="val_events/ and val_optical_flow/"):
        dsec_sequences(dsec_root, "val")
