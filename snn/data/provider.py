"""Find the sequences of a split under a data root and concatenate them into one dataset.

A data root is either a folder of sequences or a folder of split folders::

    <root>/<seq>/...                      any split reads every sequence
    <root>/train/<seq>/... (or training/)
    <root>/val/<seq>/...
    <root>/test/<seq>/...

A folder is a sequence when it holds ``events.h5`` or ``events_left/``. A DSEC root
(``<split>_events/`` beside ``<split>_optical_flow/``, see :mod:`snn.data.dsec`) is
recognised by those folders, an MVSEC root by its ``<name>_data.hdf5`` files
(:mod:`snn.data.mvsec`); each is read by its own reader.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import ConcatDataset

from snn.data.blinksim import BlinkSimSequence
from snn.data.dsec import DsecSequence, dsec_sequences, is_dsec_root
from snn.data.errors import DatasetFormatError, MissingSplitError, splits_note
from snn.data.mvsec import MvsecSequence, is_mvsec_root, mvsec_sequences

logger = logging.getLogger(__name__)

SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val",), "test": ("test",)}


def is_sequence_dir(path: Path) -> bool:
    """True when ``path`` holds events.h5 or events_left/."""
    return (path / "events.h5").is_file() or (path / "events_left").is_dir()


def _holds_sequences(folder: Path) -> bool:
    return any(child.is_dir() and is_sequence_dir(child) for child in folder.iterdir())


def resolve_split_dir(data_root: str | os.PathLike[str], split: str) -> Path:
    """The folder holding ``split``'s sequences: its split folder, else the root itself."""
    root = Path(data_root)
    if not root.is_dir():
        raise DatasetFormatError(root, "data root does not exist")
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLIT_FOLDERS)}")
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    if _holds_sequences(root):
        logger.info(
            "%s has no %s folder; using its sequences for the %s split", root, "/".join(SPLIT_FOLDERS[split]), split
        )
        return root
    looked_for = ", ".join(f"{name}/" for name in SPLIT_FOLDERS[split])
    available = tuple(s for s, names in SPLIT_FOLDERS.items() if any((root / n).is_dir() for n in names))
    raise MissingSplitError(
        root,
        f"has no {looked_for} split folder and no sequence folders (a sequence holds events.h5 or events_left/)"
        + splits_note(available),
        available,
    )


def list_sequences(data_root: str | os.PathLike[str], split: str, names: Sequence[str] | None = None) -> list[Path]:
    """Sorted sequence folders of ``split``; ``names`` keeps only those sequences."""
    return _sequences_in(resolve_split_dir(data_root, split), names)


def _sequences_in(split_dir: Path, names: Sequence[str] | None) -> list[Path]:
    found = sorted(p for p in split_dir.iterdir() if p.is_dir() and is_sequence_dir(p))
    return _named(found, names, split_dir, "sequence", lambda p: p.name)


def _named(found: list, names: Sequence[str] | None, where: Path, what: str, name_of=lambda entry: entry[0]) -> list:
    """The entries of ``found`` whose ``name_of`` is in ``names`` (all when None); DatasetFormatError
    naming the unknown ones and what is available."""
    if names is None:
        return found
    if isinstance(names, str):  # one name, not a sequence of characters
        names = [names]
    available = [name_of(entry) for entry in found]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise DatasetFormatError(
            where, f"no {what} named {', '.join(unknown)}; available: {', '.join(available) or '(none)'}"
        )
    wanted = set(names)
    return [entry for entry in found if name_of(entry) in wanted]


FORMATS = ("auto", "blinksim", "dsec", "mvsec")


def detect_format(root: Path) -> str:
    """ "dsec", "mvsec" or "blinksim" by the files under ``root``; one error listing what each expects."""
    if not root.is_dir():
        raise DatasetFormatError(root, "data root does not exist")
    if is_dsec_root(root):
        return "dsec"
    if is_mvsec_root(root):
        return "mvsec"
    if any((root / n).is_dir() for names in SPLIT_FOLDERS.values() for n in names) or _holds_sequences(root):
        return "blinksim"
    raise DatasetFormatError(
        root,
        "matches no supported format: BlinkSim expects sequence folders holding events.h5 or events_left/ "
        "(or train/, val/, test/ folders of them), none found; DSEC expects <split>_events/ beside "
        "<split>_optical_flow/, none found; MVSEC expects <name>_data.hdf5 beside <name>_gt_flow_dist.npz, none found",
    )


def build_dataset(
    data_root: str | os.PathLike[str],
    split: str,
    num_bins: int = 5,
    representation: str = "counts",
    names: Sequence[str] | None = None,
    data_format: str = "auto",
    mvsec_dt: int = 1,
) -> ConcatDataset:
    """All windows of the split's sequences as one dataset: BlinkSim (layouts A, B, C), DSEC or MVSEC
    (``data_format``; "auto" tells them apart by their files; ``mvsec_dt``: MVSEC's protocol).

    Logs a warning when no window of the split has a valid ground-truth pixel, and when none holds an event.
    """
    root = Path(data_root)
    if data_format not in FORMATS:
        raise ValueError(f"unknown data format {data_format!r}; accepted: {', '.join(FORMATS)}")
    fmt = detect_format(root) if data_format == "auto" else data_format
    kind = {"num_bins": num_bins, "representation": representation}
    if fmt == "dsec":
        split_dir = root
        found = _named(dsec_sequences(root, split), names, root, f"DSEC {split} sequence")
        sequences = [DsecSequence(events, flow, **kind) for _, events, flow in found]
    elif fmt == "mvsec":
        split_dir = root
        found = _named(mvsec_sequences(root, split), names, root, "MVSEC recording")
        sequences = [MvsecSequence(data, gt, mvsec_dt, **kind) for _, data, gt in found]
    else:
        split_dir = resolve_split_dir(data_root, split)
        seq_dirs = _sequences_in(split_dir, names)
        if not seq_dirs:
            raise DatasetFormatError(split_dir, "holds no sequences (a sequence holds events.h5 or events_left/)")
        sequences = [BlinkSimSequence(d, **kind) for d in seq_dirs]
    dataset = ConcatDataset(sequences)
    logger.info("%s split: %d sequences, %d windows", split, len(sequences), len(dataset))
    if sum(seq.num_valid_pixels for seq in sequences) == 0 and any(seq.has_ground_truth for seq in sequences):
        logger.warning(
            "%s: none of the %d windows of its %d sequence(s) has a valid ground-truth pixel: the %s split has "
            "no supervision",
            split_dir,
            len(dataset),
            len(sequences),
            split,
        )
    if sum(seq.num_window_events for seq in sequences) == 0:
        logger.warning(
            "%s: none of the %d windows of its %d sequence(s) holds an event: the %s split has no input, and its "
            "AEE is that of a network that saw nothing",
            split_dir,
            len(dataset),
            len(sequences),
            split,
        )
    return dataset
