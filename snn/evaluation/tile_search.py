"""The constant flow per tile that sharpens the tile's own events most, found by trying candidates.

A constant flow moves all of a tile's events alike, so unlike a per-pixel flow it cannot pile them
onto a few pixels; and trying every candidate (no descent) leaves no basin to start in. Each tile is
scored by its own events, wherever they land, so the events of a neighbour that moves another way
stay out of its score. The score of a candidate is the variance of the full-frame image of the
tile's events warped bilinearly to each of the span's reference times, summed. The events enter
that image as counts with both polarities added (``summed``) or as ON minus OFF (``signed``). As a
texture slides over a pixel, the pixel fires ON and OFF events in turn: added, they pile up at zero
flow, whose image then keeps the texture's pattern of activity and can outscore the true flow
(on 8x8 tiles of our synthetic scenes it often does); signed, they cancel there. At the
true flow each edge of a scene that divides a brighter region from a darker one gathers events of
one polarity, which signed images keep; a thin line that brightens and then darkens the same place
cancels under the true flow too, and wants ``summed``.

The image of one tile's events is zero outside a patch around the tile (the tile grown by the
farthest any candidate moves an event), so the variance is computed from that patch alone: its sum
and sum of squares over the frame's pixel count give exactly the full frame's variance, at the cost
of the patch instead of the frame.

Two biases of that score favour short flows, and each has an option that removes it. Bilinear
splatting spreads an event moved by a fraction of a pixel over four pixels, which lowers the
variance, while zero flow moves no event and spreads none: ``blur`` passes of a [1, 2, 1] / 4
filter over every warped image (each a blur of about 0.7 px) spread every candidate's image alike.
And in a full-frame image the events a candidate moves beyond the frame are lost, which lowers
the variance of every flow that points out of the frame near its border; ``beyond_frame="keep"``
keeps them in the tile's patch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from snn.evaluation.contrast import bin_times, reference_times
from snn.models.state import count_windows

# Candidates scored per pass: bounds the memory of the patches (chunk x tiles x patch pixels).
_PATCH_VALUES_PER_PASS = 16_000_000
POLARITIES = ("summed", "signed")  # how the events enter a tile's image (module docstring)
BEYOND_FRAME = ("drop", "keep")  # the events a candidate moves out of the frame (module docstring)


def check_polarity(polarity: str) -> None:
    """Refuses a ``polarity`` that is not one of ``POLARITIES``."""
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")


def check_scoring(polarity: str, blur: int, beyond_frame: str) -> None:
    """Refuses scoring options that ``tile_scores`` does not know: a ``polarity`` not in ``POLARITIES``,
    a negative ``blur`` or a ``beyond_frame`` not in ``BEYOND_FRAME``."""
    check_polarity(polarity)
    if blur < 0:
        raise ValueError(f"blur must be >= 0 passes, got {blur}")
    if beyond_frame not in BEYOND_FRAME:
        raise ValueError(f"beyond_frame must be one of {', '.join(BEYOND_FRAME)}, got {beyond_frame!r}")


def binomial_blur(images: torch.Tensor, passes: int) -> torch.Tensor:
    """``images`` [..., H, W] filtered ``passes`` times by [1, 2, 1] / 4 along each axis, zero beyond
    the edges (the same size: the caller keeps ``passes`` px of zeros around what it blurs)."""
    for _ in range(passes):
        padded = F.pad(images, (1, 1, 1, 1))
        images = (padded[..., 1:-1, :-2] + 2 * padded[..., 1:-1, 1:-1] + padded[..., 1:-1, 2:]) / 4
        padded = F.pad(images, (0, 0, 1, 1))
        images = (padded[..., :-2, :] + 2 * padded[..., 1:-1, :] + padded[..., 2:, :]) / 4
    return images


def event_values(events: torch.Tensor, polarity: str) -> torch.Tensor:
    """Per-bin images [K, H, W] of events [K, C, H, W] (channel 0 ON, channel 1 OFF): counts with the
    polarities added, or ON minus OFF."""
    check_polarity(polarity)
    events = events.float()
    if polarity == "summed" or events.shape[1] == 1:
        return events.sum(dim=1)
    return events[:, 0] - events[:, 1:].sum(dim=1)


def flow_grid(limit: float, step: float) -> torch.Tensor:
    """Candidate flows [N, 2] (px a window): every (u, v) on a grid of ``step`` from -``limit`` to ``limit``."""
    if limit <= 0 or step <= 0:
        raise ValueError(f"the flow grid needs a positive limit and step, got {limit} and {step}")
    values = torch.arange(-limit, limit + step / 2, step)
    return torch.cartesian_prod(values, values)


def tile_scores(
    events: torch.Tensor,
    num_bins: int,
    tile: int,
    candidates: torch.Tensor,
    polarity: str = "summed",
    blur: int = 0,
    beyond_frame: str = "drop",
) -> torch.Tensor:
    """The sharpness [N, T] of each tile's events under each of N candidate flows, constant over the
    span's windows. Events [1, w * num_bins, C, H, W]; candidates [N, 2] shared by all tiles or
    [N, T, 2] per tile, T tiles of ``tile`` px in row-major order; ``polarity`` as in ``event_values``;
    ``blur`` passes of ``binomial_blur`` over each warped image, and the events moved out of the frame
    dropped or kept (``beyond_frame``), as the module docstring says."""
    check_scoring(polarity, blur, beyond_frame)
    _, k, _, h, w = events.shape
    if h % tile or w % tile:
        raise ValueError(f"tiles of {tile} px do not divide the {h}x{w} frame")
    tiles_x, num_tiles = w // tile, (h // tile) * (w // tile)
    if candidates.dim() == 2:
        candidates = candidates[:, None].expand(-1, num_tiles, -1)
    if candidates.shape[1:] != (num_tiles, 2):
        raise ValueError(f"expected candidates [N, 2] or [N, {num_tiles}, 2], got {list(candidates.shape)}")
    windows = count_windows(k, num_bins)
    counts = event_values(events[0], polarity)  # [w * K, H, W]
    ki, yi, xi = counts.nonzero(as_tuple=True)
    values = counts[ki, yi, xi]
    t = bin_times(num_bins, counts.device, windows)[ki]
    owner = (yi // tile) * tiles_x + xi // tile
    refs = reference_times(windows)
    reach = max(abs(r - float(s)) for r in refs for s in (t.min(), t.max())) if len(t) else 0.0
    # Room for the farthest move, the bilinear splat's extra pixel and each blur pass's spread.
    margin = math.ceil(reach * float(candidates.abs().max())) + 1 + blur
    size = tile + 2 * margin
    # Each event's place in its tile's patch, whose corner lies margin px above and left of the tile.
    px, py = xi - (xi // tile) * tile + margin, yi - (yi // tile) * tile + margin
    frame_x, frame_y = xi - px, yi - py  # the patch's corner in the frame
    n, pixels = len(candidates), h * w
    chunk = max(1, _PATCH_VALUES_PER_PASS // (num_tiles * size * size))
    scores = counts.new_zeros(n, num_tiles)
    for first in range(0, n, chunk):
        flows = candidates[first : first + chunk, owner]  # [c, E, 2]
        c = len(flows)
        base = (torch.arange(c)[:, None] * num_tiles + owner) * (size * size)
        for t_ref in refs:
            dx, dy = (t_ref - t) * flows[..., 0], (t_ref - t) * flows[..., 1]
            x, y = px + dx, py + dy
            x0, y0 = x.floor(), y.floor()
            fx, fy = x - x0, y - y0
            patch = values.new_zeros(c * num_tiles * size * size)
            for ox, wx in ((0, 1 - fx), (1, fx)):
                for oy, wy in ((0, 1 - fy), (1, fy)):
                    xc, yc = x0 + ox, y0 + oy
                    weight = values * wx * wy
                    if beyond_frame == "drop":  # lost, as in a full-frame image
                        inside = (xc + frame_x >= 0) & (xc + frame_x < w) & (yc + frame_y >= 0) & (yc + frame_y < h)
                        weight = weight * inside
                    patch.index_add_(0, (base + yc.long() * size + xc.long()).flatten(), weight.flatten())
            patch = binomial_blur(patch.view(c * num_tiles, size, size), blur).view(c, num_tiles, -1)
            mean = patch.sum(dim=2) / pixels
            scores[first : first + c] += patch.square().sum(dim=2) / pixels - mean.square()
    return scores


def tile_search(
    events: torch.Tensor,
    num_bins: int,
    tile: int,
    candidates: torch.Tensor,
    refine: Sequence[torch.Tensor] = (),
    polarity: str = "summed",
    blur: int = 0,
    beyond_frame: str = "drop",
) -> torch.Tensor:
    """For each ``tile`` x ``tile`` tile, the candidate flow (px a window) of highest ``tile_scores``;
    then, for each grid of offsets [M, 2] in ``refine``, the best of that flow plus each offset, tile
    by tile (a coarse grid, then finer ones around each tile's best). ``polarity``, ``blur`` and
    ``beyond_frame``: as in ``tile_scores``. Returns the tiles' flows [2, H / tile, W / tile]."""
    _, _, _, h, w = events.shape
    tiles = torch.arange((h // tile) * (w // tile))
    options = {"polarity": polarity, "blur": blur, "beyond_frame": beyond_frame}
    best = candidates[tile_scores(events, num_bins, tile, candidates, **options).argmax(dim=0)]  # [T, 2]
    for offsets in refine:
        around = best[None] + offsets[:, None]  # [M, T, 2]
        best = around[tile_scores(events, num_bins, tile, around, **options).argmax(dim=0), tiles]
    return best.t().reshape(2, h // tile, w // tile)


def neighbour_spread(tiles: torch.Tensor) -> torch.Tensor:
    """For each tile of ``tiles`` [2, Ty, Tx], the distance (px) of its flow from the median of its
    (up to 8) neighbours' flows, component by component, [Ty, Tx]: small where a tile agrees with
    those around it. Without the truth this is what tells a search that found the motion (tiles
    agree) from one that did not (tiles scatter, or sit at zero among moving ones)."""
    ty, tx = tiles.shape[1:]
    padded = F.pad(tiles[None], (1, 1, 1, 1), value=float("nan"))[0]
    around = torch.stack(
        [padded[:, 1 + dy : 1 + dy + ty, 1 + dx : 1 + dx + tx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    )  # [8, 2, Ty, Tx]
    return (tiles - around.nanmedian(dim=0).values).norm(dim=0)
