"""The one error type raised for data on disk that does not match docs/formats.md."""

from __future__ import annotations

import os


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
