"""DSEC-Flow reader on a tiny release-shaped folder written here: Blosc events, rectify map, OpenCV PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from snn.data.dsec import DsecSequence, decode_flow_png, dsec_sequences, encode_flow_png, is_dsec_root
from snn.data.errors import DatasetFormatError
from snn.data.provider import build_dataset
from tests.data.dsec_files import H, W, write_dsec_root


@pytest.fixture
def dsec_root(tmp_path: Path) -> Path:
    return write_dsec_root(tmp_path / "DSEC")


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
    with pytest.raises(DatasetFormatError, match="sequence named interlaken; available: zurich_city_01_a"):
        build_dataset(dsec_root, "train", names=["interlaken"])


def test_a_split_without_its_folders_names_them(dsec_root: Path) -> None:
    with pytest.raises(DatasetFormatError, match="val_events/ and val_optical_flow/") as err:
        dsec_sequences(dsec_root, "val")
    # Which splits the root has, for a tool to suggest one (snn.cli.split_hint).
    assert str(err.value).endswith("; this root has the train split") and err.value.available == ("train",)
