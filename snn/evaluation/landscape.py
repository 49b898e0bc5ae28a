"""Where the contrast loss has its minimum on data with ground truth: at the true flow, or elsewhere.

A loss trains a network toward the truth only if the truth is (near) its minimum. Here the flow of
each window is a free tensor, one vector per pixel, with no network in between: the contrast loss
(``snn.evaluation.contrast``, chained over the span's windows) plus its smoothness term is
minimized by gradient descent from the true flow and from zero flow, and each minimum is compared
with the truth. A minimum far from the truth, with a lower loss than the truth's, is one that the
network can find too.

``tile_span`` asks the same of a flow that cannot collapse the events: one constant flow per tile
(``snn.evaluation.tile_search``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from snn.evaluation.contrast import contrast_loss, smoothness_loss
from snn.evaluation.tile_search import tile_search


def spans(sequence: Dataset, windows: int, stride: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(events [1, w * K, C, H, W], true flows [1, w, 2, H, W]) of ``windows`` consecutive windows of one
    sequence, oldest first, every ``stride`` windows (default: spans that do not overlap)."""
    stride = stride or windows
    for end in range(windows - 1, len(sequence), stride):
        samples = [sequence[i] for i in range(end - windows + 1, end + 1)]
        events = torch.cat([s["events"] for s in samples]).unsqueeze(0)
        flows = torch.stack([s["flow"] for s in samples]).unsqueeze(0)
        yield events, flows


def span_loss(events: torch.Tensor, flows: torch.Tensor, num_bins: int, smoothness_weight: float) -> torch.Tensor:
    """The chained contrast loss of a span plus ``smoothness_weight`` times the flows' smoothness."""
    return contrast_loss(events, flows, num_bins=num_bins) + smoothness_weight * smoothness_loss(flows)


def free_minimum(
    events: torch.Tensor,
    start: torch.Tensor,
    num_bins: int,
    smoothness_weight: float,
    steps: int = 300,
    lr: float = 0.05,
) -> torch.Tensor:
    """The per-pixel flows [1, w, 2, H, W] of lowest ``span_loss`` that Adam passes through in ``steps``
    steps from ``start`` (``start`` itself included: a fixed step size may overshoot a sharp minimum)."""
    flows = start.detach().clone().requires_grad_()
    optimizer = torch.optim.Adam([flows], lr=lr)
    best, best_loss = flows.detach().clone(), float("inf")
    for _ in range(steps + 1):
        optimizer.zero_grad()
        loss = span_loss(events, flows, num_bins, smoothness_weight)
        if loss.item() < best_loss:
            best, best_loss = flows.detach().clone(), loss.item()
        loss.backward()
        optimizer.step()
    return best


class TableRow:
    """A dataclass that is one row of a markdown table: its class gives the header (``COLUMNS``, the
    row's name first) and the mean of several rows, field by field."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def header(cls) -> str:
        """The table's header and separator lines, for the rows of ``row``."""
        return "| " + " | ".join(cls.COLUMNS) + " |\n|" + "---|" * len(cls.COLUMNS)

    @classmethod
    def mean(cls, rows: list) -> TableRow:
        """Every field averaged over ``rows``."""
        return cls(**{f.name: sum(getattr(r, f.name) for r in rows) / len(rows) for f in fields(rows[0])})


@dataclass
class SpanLandscape(TableRow):
    """One span: the loss at the truth and at zero flow, and at the minima reached from each, with the
    mean distance (px, over the span's last window) of each minimum from the truth."""

    COLUMNS = (
        "span",
        "truth",
        "zero flow",
        "minimum from truth (px off)",
        "minimum from zero (px off)",
        "true length (px)",
    )

    truth: float
    zero: float
    from_truth: float
    from_zero: float
    from_truth_px: float
    from_zero_px: float
    true_length_px: float

    def row(self, name: str) -> str:
        return (
            f"| {name} | {self.truth:.3f} | {self.zero:.3f} | {self.from_truth:.3f} ({self.from_truth_px:.2f}) | "
            f"{self.from_zero:.3f} ({self.from_zero_px:.2f}) | {self.true_length_px:.2f} |"
        )


def span_landscape(
    events: torch.Tensor, truth: torch.Tensor, num_bins: int, smoothness_weight: float, steps: int = 300
) -> SpanLandscape:
    """The loss at the truth, at zero flow and at the free minima reached from each."""

    def loss(flows: torch.Tensor) -> float:
        return float(span_loss(events, flows, num_bins, smoothness_weight))

    def off(flows: torch.Tensor) -> float:
        return float((flows - truth)[0, -1].norm(dim=0).mean())

    zero = torch.zeros_like(truth)
    near_truth = free_minimum(events, truth, num_bins, smoothness_weight, steps)
    near_zero = free_minimum(events, zero, num_bins, smoothness_weight, steps)
    return SpanLandscape(
        truth=loss(truth),
        zero=loss(zero),
        from_truth=loss(near_truth),
        from_zero=loss(near_zero),
        from_truth_px=off(near_truth),
        from_zero_px=off(near_zero),
        true_length_px=float(truth[0, -1].norm(dim=0).mean()),
    )


@dataclass
class TileSpan(TableRow):
    """One span's last window: the mean distance (px) from the truth of zero flow, of the tiles' best
    constant flows (``tile_search``) and of the tiles' mean true flows (the best a constant flow per
    tile could do)."""

    COLUMNS = ("span", "zero flow (px)", "tile search (px)", "ratio", "tiles' mean truth (px)", "ratio")

    zero_px: float
    search_px: float
    tile_truth_px: float

    def row(self, name: str) -> str:
        zero = max(self.zero_px, 1e-9)
        return (
            f"| {name} | {self.zero_px:.3f} | {self.search_px:.3f} | {self.search_px / zero:.3f} | "
            f"{self.tile_truth_px:.3f} | {self.tile_truth_px / zero:.3f} |"
        )


def tile_span(
    events: torch.Tensor, truth: torch.Tensor, num_bins: int, tile: int, candidates: torch.Tensor
) -> TileSpan:
    """``tile_search`` on a span, scored against its last window's true flow ([1, w, 2, H, W])."""
    last = truth[0, -1].float()

    def off(tiles: torch.Tensor) -> float:
        dense = F.interpolate(tiles[None], scale_factor=tile, mode="nearest")[0]
        return float((dense - last).norm(dim=0).mean())

    return TileSpan(
        zero_px=float(last.norm(dim=0).mean()),
        search_px=off(tile_search(events, num_bins, tile, candidates)),
        tile_truth_px=off(F.avg_pool2d(last[None], tile)[0]),
    )
