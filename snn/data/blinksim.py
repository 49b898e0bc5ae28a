"""Reader for one BlinkSim sequence in any of its three on-disk layouts (docs/formats.md, section 2).

The layout is detected per sequence, newest first::

    <seq>/                          layout C (newest)
      events.h5                     events/{x,y,t,p}, optional events/ms_to_idx
      flow.h5                       flow/forward          float32 [N,H,W,2]  (u, v) pixels
                                    flow/valid            bool|uint8 [N,H,W,1]
                                    flow/event_start      int64 [N]  window start, us
                                    flow/event_end        int64 [N]  window end, us
                                    flow/frame_event_start, flow/frame_event_end
                                                          int64 [N]  event indices, end
                                                          inclusive (optional)
    <seq>/                          layout B
      events.h5                     (or events_left/events.h5)
      forward_flow/flow_gt.h5       flow [N,H,W,2|3], channel 2 = valid
      config.yaml                   fps, duration (optional)
    <seq>/                          layout A (oldest, BlinkFlow v1)
      events_left/events.h5
      forward_flow/000000.npy ...   float [H,W,3] = (u, v, valid), one per window
      config.yaml                   fps, duration (optional)

Window i covers frame i to i+1. In layouts A and B frame k sits at k / fps
seconds; without an fps the N windows are spread evenly over the events' span.

Each layout has its decoder in :mod:`snn.data.blinksim_layouts`; the sequence
picks one by the files it finds and reads the events itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from snn.data.blinksim_layouts import LAYOUT_FILES, MAX_OUTSIDE_SHARE, find_layout
from snn.data.sequence import EventFlowSequence

__all__ = ["LAYOUT_FILES", "MAX_OUTSIDE_SHARE", "BlinkSimSequence", "detect_layout"]


def detect_layout(seq_dir: str | os.PathLike[str]) -> str:
    """'C', 'B', 'A' or 'events only'; DatasetFormatError listing each layout's files when none matches."""
    return find_layout(Path(seq_dir))[0].layout


class BlinkSimSequence(EventFlowSequence):
    """The flow windows of one BlinkSim sequence folder, in whichever layout it holds
    (see :class:`~snn.data.sequence.EventFlowSequence` for the samples)."""

    def __init__(self, seq_dir: str | os.PathLike[str], num_bins: int = 5, representation: str = "counts") -> None:
        seq_dir = Path(seq_dir)
        decoder_class, events_path, flow_path = find_layout(seq_dir)
        super().__init__(decoder_class(seq_dir, events_path, flow_path), seq_dir.name, num_bins, representation)
