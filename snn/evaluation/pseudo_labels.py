"""Flow labels read from the events alone: the tile search, kept only where it can be trusted.

For each span of a few windows, every tile gets the constant flow that sharpens its own events most
(``snn.evaluation.tile_search``, a coarse grid refined twice around each tile's best). The search is
wrong where the events cannot tell: a tile of sensor noise only (it stays at zero flow), or a
single straight edge (any motion along the edge sharpens it alike). Neither needs the truth to be
seen: a noise tile holds few events, and a tile that found the wrong motion disagrees with its
neighbours. So a tile's flow becomes a label only where the tile holds at least ``min_density``
events per pixel and window and lies within ``max_spread`` px of its neighbours' median; every other
pixel is marked invalid, and a supervised loss that honours the valid mask learns from the rest.

With ``fill``, the tiles left without a label get the smoothest flow that joins those with one (a
membrane fill: each is the mean of its four neighbours), which is what a smoothness prior puts where
the events say nothing, and every pixel is labelled. That suits a camera moving over a static scene,
whose flow is smooth across the untextured regions too; it is wrong where such a region moves on its
own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from snn.evaluation.tile_search import check_scoring, flow_grid, neighbour_spread, tile_search


@dataclass(frozen=True)
class TileLabelling:
    """How the labels are searched (px a window) and which tiles are kept."""

    tile: int = 32
    limit: float = 6.0  # the largest flow component searched
    step: float = 2.0  # the coarse grid's step; two finer grids (step / 4, then step / 8) follow
    windows: int = 3  # windows per span, each labelled with the span's constant flow
    min_density: float = 0.1  # events per pixel and window in a kept tile
    max_spread: float = 0.75  # px from the neighbours' median flow in a kept tile
    fill: bool = False  # label the other tiles too, by a membrane fill from the kept ones
    polarity: str = "signed"  # how events enter the search's images: ON minus OFF, or "summed"
    blur: int = 1  # [1, 2, 1] / 4 passes over each warped image: splatting then favours no flow
    beyond_frame: str = "keep"  # the events a candidate moves out of the frame still count

    def __post_init__(self) -> None:
        for name in ("tile", "windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        flow_grid(self.limit, self.step)  # refuses a limit or step that is not positive
        check_scoring(self.polarity, self.blur, self.beyond_frame)
        if self.min_density < 0 or self.max_spread <= 0:
            raise ValueError(
                f"min_density must be >= 0 and max_spread > 0, got {self.min_density} and {self.max_spread}"
            )

    def candidates(self) -> torch.Tensor:
        return flow_grid(self.limit, self.step)

    def refine(self) -> list[torch.Tensor]:
        return [flow_grid(self.step / 2, self.step / 4), flow_grid(self.step / 8, self.step / 8)]


def span_ends(num_windows: int, windows: int) -> list[int]:
    """The last window of each span that labels a sequence of ``num_windows``: spans of ``windows``
    that do not overlap, plus one ending at the last window where they leave it out."""
    ends = list(range(windows - 1, num_windows, windows))
    if not ends or ends[-1] != num_windows - 1:
        ends.append(num_windows - 1)
    return ends


def label_span(events: torch.Tensor, num_bins: int, labelling: TileLabelling) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiles' flows [2, H, W] (px a window, constant per tile) of a span's events
    [1, w * num_bins, C, H, W], and where they are kept [H, W] (bool)."""
    tile = labelling.tile
    flows = tile_search(
        events,
        num_bins,
        tile,
        labelling.candidates(),
        labelling.refine(),
        polarity=labelling.polarity,
        blur=labelling.blur,
        beyond_frame=labelling.beyond_frame,
    )
    windows = events.shape[1] // num_bins
    density = F.avg_pool2d(events[0].float().sum(dim=(0, 1))[None], tile)[0] / windows
    kept = (density >= labelling.min_density) & (neighbour_spread(flows) <= labelling.max_spread)
    if labelling.fill:
        if not kept.any():
            return torch.zeros(2, *events.shape[-2:]), torch.zeros(events.shape[-2:], dtype=torch.bool)
        # Bilinear between tile centres: a smooth field stays smooth inside each tile too.
        dense = F.interpolate(fill_tiles(flows, kept)[None], scale_factor=tile, mode="bilinear", align_corners=False)
        return dense[0], torch.ones(events.shape[-2:], dtype=torch.bool)
    dense = F.interpolate(flows[None], scale_factor=tile, mode="nearest")[0]
    return dense, F.interpolate(kept[None, None].float(), scale_factor=tile, mode="nearest")[0, 0] > 0


def fill_tiles(flows: torch.Tensor, kept: torch.Tensor, tolerance: float = 1e-4) -> torch.Tensor:
    """``flows`` [2, Ty, Tx] with every tile not ``kept`` [Ty, Tx] replaced by the mean of its four
    neighbours (beyond the frame, the tile itself), iterated until no tile moves by ``tolerance`` px: the
    membrane that the kept tiles hold in place."""
    filled = torch.where(kept, flows, flows[:, kept].mean(dim=1)[:, None, None])
    for _ in range(100 * max(flows.shape[1:]) ** 2):  # Jacobi converges in O(size^2) sweeps
        padded = F.pad(filled[None], (1, 1, 1, 1), mode="replicate")[0]
        around = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]) / 4
        updated = torch.where(kept, flows, around)
        if (updated - filled).abs().max() < tolerance:
            return updated
        filled = updated
    return filled


def label_sequence(sequence, labelling: TileLabelling) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-labels of every window of ``sequence`` (an ``EventFlowSequence``; its flow, if any, is
    never used): flow [N, H, W, 2] float32 and valid [N, H, W] bool, each window labelled by the span
    that holds it."""
    n = len(sequence)
    if sequence.height % labelling.tile or sequence.width % labelling.tile:
        raise ValueError(
            f"{sequence.seq_dir}: tiles of {labelling.tile} px do not divide its "
            f"{sequence.height}x{sequence.width} frame"
        )
    windows = min(labelling.windows, n)
    flow = np.zeros((n, sequence.height, sequence.width, 2), np.float32)
    valid = np.zeros((n, sequence.height, sequence.width), bool)
    for end in span_ends(n, windows):
        start = end - windows + 1
        events = torch.cat([sequence[i]["events"] for i in range(start, end + 1)]).unsqueeze(0)
        dense, kept = label_span(events, sequence.num_bins, labelling)
        flow[start : end + 1] = dense.permute(1, 2, 0).numpy()
        valid[start : end + 1] = kept.numpy()
    return flow, valid
