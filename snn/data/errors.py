"""The one error type raised for data on disk that does not match docs/formats.md."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class DatasetFormatError(ValueError):
    """A file or folder is missing, truncated or shaped unlike the documented format.

    The message is one line, ``"<path>: <problem>"``, so it names the file to fix.
    Built either as ``DatasetFormatError(path, problem)`` or from a finished
    message, ``DatasetFormatError("<path>: <problem>")``.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str | None = None) -> None:
        self.path = str(path) if problem is not None else None
        self.problem = problem
        message = str(path) if problem is None else f"{os.fspath(path)}: {problem}"
        # One line: callers list expected files with "; ", never newlines.
        super().__init__(" ".join(message.split("\n")))

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # Rebuild from the finished message so the error survives pickling
        # (DataLoader workers pass exceptions back to the main process).
        return (type(self), (self.args[0],))


class MissingSplitError(DatasetFormatError):
    """A data root lacks the split asked for; ``available`` names the splits it has, so that a tool
    with a --split flag can suggest one (``snn.cli.split_hint``)."""

    def __init__(
        self, path: str | os.PathLike[str], problem: str | None = None, available: tuple[str, ...] = ()
    ) -> None:
        super().__init__(path, problem)
        self.available = tuple(available)


def splits_note(available: tuple[str, ...] | list[str]) -> str:
    """'; this root has the train split' (or '; ... the train and val splits'), '' for none."""
    if not available:
        return ""
    return f"; this root has the {' and '.join(available)} split{'s' if len(available) > 1 else ''}"


@contextmanager
def reading(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn the OSError h5py raises for unreadable bytes into a DatasetFormatError naming ``path``.

    HDF5 reports a damaged or truncated file only when the damaged part is read,
    which may be long after the file was opened; wrap each read in this.
    """
    try:
        yield
    except OSError as err:
        raise DatasetFormatError(path, f"cannot read {what}, the file may be truncated or corrupt ({err})") from err
