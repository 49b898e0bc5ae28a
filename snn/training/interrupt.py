"""Ctrl-C and SIGTERM end a run cleanly: the trainer saves last.pth, then stops.

Inside ``StopRequests`` the first SIGINT or SIGTERM only records itself; the
trainer looks at it after every step, saves a resumable ``last.pth`` and raises
``TrainingInterrupted``. A second signal aborts at once (a half-written
checkpoint is then a ``.*.tmp`` file that the next start removes).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path


class TrainingInterrupted(Exception):
    """The run stopped on a signal after saving ``checkpoint``; ``exit_code`` is the shell's 128 + signal."""

    def __init__(self, signum: int, checkpoint: Path, epoch: int, step: int) -> None:
        self.signum, self.checkpoint, self.epoch, self.step = signum, Path(checkpoint), epoch, step
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name} at epoch {epoch}, step {step}: saved {checkpoint}")


class StopRequests:
    """Context manager: SIGINT/SIGTERM set ``signum`` instead of killing the process (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second request: stop now, without saving
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
