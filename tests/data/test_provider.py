"""Split resolution both ways, sequence listing and the concatenated dataset."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from snn.data.errors import DatasetFormatError
from snn.data.provider import build_dataset, list_sequences, resolve_split_dir


def test_root_of_sequences_serves_any_split(tmp_path, write_sequence) -> None:
    write_sequence(tmp_path, "b_seq", "C")
    write_sequence(tmp_path, "a_seq", "A")
    (tmp_path / "notes").mkdir()  # not a sequence: ignored
    for split in ("train", "val", "test"):
        assert resolve_split_dir(tmp_path, split) == tmp_path
    assert [p.name for p in list_sequences(tmp_path, "test")] == ["a_seq", "b_seq"]


@pytest.mark.parametrize("train_folder", ["train", "training"])
def test_split_folders_are_used(tmp_path, write_sequence, train_folder: str) -> None:
    write_sequence(tmp_path / train_folder, "t1", "B")
    write_sequence(tmp_path / "test", "e1", "C")
    assert resolve_split_dir(tmp_path, "train") == tmp_path / train_folder
    assert resolve_split_dir(tmp_path, "test") == tmp_path / "test"
    with pytest.raises(DatasetFormatError, match=r"has no val/ split folder"):
        resolve_split_dir(tmp_path, "val")


def test_root_without_splits_or_sequences(tmp_path) -> None:
    (tmp_path / "misc").mkdir()
    with pytest.raises(DatasetFormatError, match=r"has no train/, training/ split folder") as info:
        resolve_split_dir(tmp_path, "train")
    assert str(tmp_path) in str(info.value)


def test_missing_root(tmp_path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetFormatError, match=rf"^{missing}: data root does not exist$"):
        build_dataset(missing, "train")


def test_names_select_and_unknown_names_list_available(tmp_path, write_sequence) -> None:
    for name in ("s1", "s2", "s3"):
        write_sequence(tmp_path, name, "C")
    assert [p.name for p in list_sequences(tmp_path, "val", names=["s3", "s1"])] == ["s1", "s3"]
    with pytest.raises(DatasetFormatError, match=r"no sequence named s9; available: s1, s2, s3"):
        list_sequences(tmp_path, "val", names=["s9"])


def test_build_dataset_concatenates_windows(tmp_path, write_sequence) -> None:
    write_sequence(tmp_path / "train", "x", "A", num_windows=2)
    write_sequence(tmp_path / "train", "y", "C", num_windows=3)
    dataset = build_dataset(tmp_path, "train", num_bins=2, representation="voxel")
    assert len(dataset) == 5
    assert dataset[1]["sequence"] == "x" and dataset[2]["sequence"] == "y"
    assert tuple(dataset[4]["events"].shape) == (2, 1, 6, 8)


def test_empty_split_folder(tmp_path) -> None:
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetFormatError, match="holds no sequences"):
        build_dataset(tmp_path, "test")


def test_dataloader_workers_read_the_same_samples(tmp_path, write_sequence) -> None:
    write_sequence(tmp_path, "s1", "B")
    write_sequence(tmp_path, "s2", "C")
    dataset = build_dataset(tmp_path, "train")
    dataset[0]  # a handle opened in the parent must not be reused by forked workers
    serial = list(DataLoader(dataset, batch_size=2, num_workers=0))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["events"], b["events"]) and torch.equal(a["flow"], b["flow"])
        assert a["sequence"] == b["sequence"]
