"""One sequence's flow windows as a dataset, whatever layout or dataset its files follow.

A :class:`~snn.data.blinksim_layouts.LayoutDecoder` says where each window lies in time,
reads its flow map and may move the events' pixels (DSEC's rectification); the
sequence slices the events, turns them into the network's input and pairs them with
the flow.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from snn.data.blinksim_layouts import LayoutDecoder
from snn.data.errors import DatasetFormatError
from snn.data.events import EventSlicer, EventWindow, in_image
from snn.data.representations import make_representation, num_input_channels

logger = logging.getLogger(__name__)


class EventFlowSequence(Dataset):
    """The flow windows of one sequence, read through a layout decoder (BlinkSim, DSEC, ...).

    Sample ``i`` is a dict: ``events`` float32 [num_bins, C, H, W] (C from the
    representation), ``flow`` float32 [2, H, W] (u, v pixels), ``valid`` and
    ``event_mask`` float32 [1, H, W] of 0/1, ``sequence`` (name), ``index`` (i) and ``segment``:
    the run of back-to-back windows i belongs to (0 until the first window that does not start
    where the one before it ended, then 1, ...). Carrying state, or warping events, from one
    window into the next is right only inside a segment.
    HDF5 files are opened on the first ``__getitem__`` of each process. Samples are whole
    frames; training crops and flips them (``snn.data.sampling.SeededAugmentation``).

    ``num_valid_pixels`` is the number of valid ground-truth pixels over all
    windows (the sum of every sample's ``valid``), counted when the sequence is
    opened, out of ``num_flow_pixels`` (N x H x W); a sequence with none logs a
    warning. So does one whose windows hold no event (``num_window_events``).
    """

    def __init__(
        self,
        decoder: LayoutDecoder,
        name: str,
        num_bins: int = 5,
        representation: str = "counts",
    ) -> None:
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        num_input_channels(representation)  # unknown names fail here, not in a worker
        self.seq_dir = decoder.seq_dir
        self.name = name
        self.num_bins = num_bins
        self.representation = representation
        self._decoder = decoder
        self.events_path, self.flow_path = decoder.events_path, decoder.flow_path
        self.layout = decoder.layout
        self.height, self.width = decoder.height, decoder.width
        self.segments = window_segments(np.asarray(decoder.time_windows))
        self._converter = make_representation(representation, num_bins, self.height, self.width)
        self._slicer: EventSlicer | None = None
        self._pid: int | None = None
        # Ground truth that supervises nothing is reported here, not found after a training run.
        self.num_flow_pixels = len(self) * self.height * self.width
        self.num_valid_pixels = decoder.count_valid_pixels()
        if self.num_valid_pixels == 0 and decoder.has_ground_truth:
            logger.warning(
                "%s: 0 of %s ground-truth pixels are valid: this sequence adds nothing to training or evaluation",
                self.seq_dir,
                f"{self.num_flow_pixels:,}",
            )
        # So are windows without events: a wrong time unit or t_offset looks like this, and the network,
        # seeing nothing, still scores a plausible AEE.
        self.num_window_events = decoder.num_window_events
        if self.num_window_events == 0 and len(self):
            t0, t1 = int(decoder.time_windows[:, 0].min()), int(decoder.time_windows[:, 1].max())
            span = decoder.event_span
            found = (
                f"the events at {span[0]} to {span[1]} us: a wrong time unit or t_offset?"
                if span
                else f"{self.events_path} holds none"
            )
            logger.warning(
                "%s: 0 of %s events fall in its %d windows (%d to %d us; %s): the network sees no input in this "
                "sequence",
                self.seq_dir,
                f"{decoder.num_events:,}",
                len(self),
                t0,
                t1,
                found,
            )
        logger.debug("%s: layout %s, %d windows, %dx%d", self.name, self.layout, len(self), self.height, self.width)

    # -- per-process file handles ---------------------------------------------------------

    def _open(self) -> None:
        # A handle inherited through fork is not safe to use: reopen in each process.
        if self._pid == os.getpid():
            return
        self._slicer = self._decoder.event_reader()
        self._decoder.open()
        self._pid = os.getpid()

    def close(self) -> None:
        """Close this process's file handles (they reopen on the next access)."""
        if self._pid == os.getpid():
            self._slicer.close()
            self._decoder.close()
        self._slicer, self._pid = None, None

    def __getstate__(self) -> dict[str, Any]:
        # h5py handles cannot be pickled (spawned DataLoader workers pickle the dataset);
        # the decoder drops its own.
        state = dict(self.__dict__)
        state.update(_slicer=None, _pid=None)
        return state

    # -- samples --------------------------------------------------------------------------

    def window_name(self, i: int) -> str:
        """The file name (no suffix) window i's prediction is written under."""
        return self._decoder.window_name(i)

    @property
    def window_times(self) -> np.ndarray:
        """Each window's [start, end] time (us), [N, 2]."""
        return np.asarray(self._decoder.time_windows)

    @property
    def has_ground_truth(self) -> bool:
        return self._decoder.has_ground_truth

    def __len__(self) -> int:
        return self._decoder.num_windows

    def _read_events(self, i: int) -> EventWindow:
        t_start, t_end = (int(v) for v in self._decoder.time_windows[i])
        index_windows = self._decoder.index_windows
        if index_windows is not None:
            events = self._slicer.get_events_by_index(*(int(v) for v in index_windows[i]))
        else:
            events = self._slicer.get_events(t_start, t_end)
        # A window of no length would give the counts no bins: keep it 1 us long.
        window = EventWindow(**events, t_start=t_start, t_end=max(t_end, t_start + 1))
        return self._decoder.map_events(window)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: window {index} out of range [0, {len(self)})")
        i = index % len(self)
        self._open()
        try:
            events = self._read_events(i)
            flow, valid = self._decoder.read_flow(i)
        except OSError as err:
            raise DatasetFormatError(self.seq_dir, f"cannot read window {i} ({err})") from err

        inside = in_image(events.x, events.y, self.height, self.width)
        if not inside.all():
            logger.debug("%s[%d]: dropped %d events outside the image", self.name, i, int((~inside).sum()))
            events = events.select(inside)
        hits = np.bincount(events.y * self.width + events.x, minlength=self.height * self.width) > 0
        sample = {
            "events": self._converter.convert(events),
            "flow": torch.from_numpy(flow),
            "valid": torch.from_numpy(valid[None].astype(np.float32)),
            "event_mask": torch.from_numpy(hits.reshape(1, *valid.shape).astype(np.float32)),
            "sequence": self.name,
            "index": i,
            "segment": int(self.segments[i]),
        }
        return sample


def window_segments(times: np.ndarray) -> np.ndarray:
    """For windows [start, end] (us, [N, 2]), the index of the run of back-to-back windows each
    belongs to, [N]: a window starts a new run unless it starts where the one before it ended
    (within 1 us, for files that close windows at end - 1). A gap between windows (flow asked for
    only at intervals), or an overlap, as MVSEC's four-frame windows have, starts a new run."""
    if len(times) < 2:
        return np.zeros(len(times), dtype=np.int64)
    step = times[1:, 0].astype(np.int64) - times[:-1, 1].astype(np.int64)
    return np.concatenate([[0], np.cumsum((step < 0) | (step > 1))]).astype(np.int64)
