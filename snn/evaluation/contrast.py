"""Contrast maximization: how sharp a window's events become when warped along a flow.

Events warped along the true flow to one reference time pile up on the edges that
made them: the image of warped events (IWE) is sharp, its variance high. Along a
wrong flow, zero flow included, the same events smear. This needs no ground truth,
so it both trains a network on unlabeled events (``contrast_loss``) and scores a
prediction on any recording (``flow_warp_loss``, the FWL of Stoffregen et al. 2020; over
several consecutive windows, each along its own flow, ``span_flow_warp_loss`` and ``WindowSpans``).

The events come as the network's input, counts or a voxel grid [B, K, C, H, W]:
each of the K time bins is taken to sit at its centre, (k + 1/2) / K of the
window, and each pixel of it moves by ``flow * (t_ref - t_k)``, with ``flow`` in
pixels over the whole window (the ground truth's convention). The bins limit the
time resolution to 1/K of the window, which at a few pixels of flow per window
blurs the IWE by a fraction of a pixel, the same for every flow that is compared.

Events may also span several consecutive windows ([B, w * K, C, H, W], oldest first,
``num_bins`` = K): the window the flow is of then lies at times [0, 1] and those before
it at [-1, 0], [-2, -1], ..., all moved along the same flow. Over one window of our
synthetic scenes the true flow sharpens the events little (an FWL of about 1.05), less
than a flow that draws each edge's events onto it; over three windows it sharpens them
much more (about 1.76), and 0.8 or 1.2 times it clearly less.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from snn.models.state import WindowKey, count_windows, follows

# The reference times the training loss warps to (fractions of the window). Sharpening at one
# of them by piling events onto few pixels (collapse) blurs them at the others.
CONTRAST_REFS = (0.0, 0.5, 1.0)
# Windows whose unwarped IWE has less variance than this carry no signal (next to no events).
MIN_VARIANCE = 1e-6
# How many consecutive windows the reported FWL warps together. Over one window the true flow
# sharpens our scenes' events little (an FWL of about 1.2), and models whose AEEs differ by 0.1 px
# score within 0.01 of each other; over three, each along its own flow, the FWL ranked the 19
# checkpoints of one ladder (three seeds) in AEE's order with a Spearman correlation of 0.90,
# against 0.68 over one window.
FWL_WINDOWS = 3


def bin_times(num_bins: int, device: torch.device | None = None, windows: int = 1) -> torch.Tensor:
    """The centre of each time bin in windows, [windows * num_bins], oldest first: the last window's
    bins lie in [0, 1] (fractions of it), the one before it in [-1, 0], and so on."""
    steps = torch.arange(windows * num_bins, device=device, dtype=torch.float32)
    return (steps + 0.5) / num_bins - (windows - 1)


def span_windows(events: torch.Tensor, num_bins: int | None) -> int:
    """How many windows of ``num_bins`` bins ``events`` [B, w * K, C, H, W] hold (None: all one window)."""
    return 1 if num_bins is None else count_windows(events.shape[1], num_bins)


def reference_times(windows: int = 1) -> tuple[float, ...]:
    """``CONTRAST_REFS`` stretched over a span of ``windows`` windows ending at time 1."""
    return tuple(1 - windows + windows * t for t in CONTRAST_REFS)


def warp_events(events: torch.Tensor, flow: torch.Tensor, t_ref: float, num_bins: int | None = None) -> torch.Tensor:
    """The image of warped events, [B, C, H, W]: every bin's values moved by ``flow * (t_ref - t_k)``.

    Each value is splatted bilinearly onto the four pixels around where it lands, so the image
    is differentiable in the flow; what lands outside the frame is lost. events: [B, K, C, H, W],
    or several windows of ``num_bins`` bins each (see ``bin_times``); flow: [B, 2, H, W] (u, v) in
    pixels over one window, read at each event's own pixel.
    """
    if events.dim() != 5 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected events [B, K, C, H, W] and flow [B, 2, H, W], got {events.shape}, {flow.shape}")
    b, k, c, h, w = events.shape
    if flow.shape[0] != b or flow.shape[-2:] != (h, w):
        raise ValueError(f"flow {list(flow.shape)} does not match events {list(events.shape)}")
    windows = span_windows(events, num_bins)
    events, flow = events.float(), flow.float()
    # Only the pixels of a bin that hold events move: gather them, their time and their pixel's flow.
    bi, ki, ci, yi, xi = events.detach().nonzero(as_tuple=True)
    values = events[bi, ki, ci, yi, xi]
    dt = t_ref - bin_times(k // windows, flow.device, windows)[ki]
    x = xi.float() + dt * flow[bi, 0, yi, xi]
    y = yi.float() + dt * flow[bi, 1, yi, xi]
    return splat(x, y, values, bi * c + ci, (b, c, h, w))


def splat(x: torch.Tensor, y: torch.Tensor, values: torch.Tensor, image: torch.Tensor, shape) -> torch.Tensor:
    """Events of ``values`` at (``x``, ``y``) added bilinearly into the images ``image`` (index into
    ``shape[0] * shape[1]`` images of ``shape[2:]``), [B, C, H, W]; what lands outside is lost."""
    b, c, h, w = shape
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0
    first = image * (h * w)  # the first pixel of each event's own image
    iwe = values.new_zeros(b * c * h * w)
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            xc, yc = x0 + dx, y0 + dy
            inside = (xc >= 0) & (xc < w) & (yc >= 0) & (yc < h)
            index = first + torch.where(inside, yc * w + xc, torch.zeros_like(xc)).long()
            iwe = iwe.index_add(0, index, values * wx * wy * inside)
    return iwe.view(b, c, h, w)


def sample_flow(flow: torch.Tensor, bi: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``flow`` [B, 2, H, W] read bilinearly at (``x``, ``y``) of batch item ``bi``, [2, N]; positions
    outside the frame read its border. Differentiable in the flow and in the positions."""
    _, _, h, w = flow.shape
    x = x.clamp(0, w - 1)
    y = y.clamp(0, h - 1)
    x0, y0 = x.detach().floor().clamp(max=w - 2), y.detach().floor().clamp(max=h - 2)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    out = 0
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            out = out + flow[bi, :, y0 + dy, x0 + dx].t() * (wx * wy)
    return out


def warp_events_chained(events: torch.Tensor, flows: torch.Tensor, t_ref: float, num_bins: int) -> torch.Tensor:
    """The image of warped events, [B, C, H, W], for events spanning several windows that each have their
    own flow: ``flows`` [B, w, 2, H, W], oldest first, ``events`` [B, w * num_bins, C, H, W] (times as in
    ``bin_times``: the last window at [0, 1]).

    Each event first moves along its own window's flow, read at its pixel, to the end of that window
    (or its start, or ``t_ref`` where that lies inside it); then through each window between there and
    ``t_ref`` along that window's flow, read where the event has got to (the iterative warping of
    Paredes-Valles et al. 2023). A flow that changes from one window to the next, as an object passing a
    pixel makes it, is followed instead of being taken as constant over the span.
    """
    if events.dim() != 5 or flows.dim() != 5 or flows.shape[2] != 2:
        raise ValueError(
            f"expected events [B, w*K, C, H, W] and flows [B, w, 2, H, W], got {events.shape}, {flows.shape}"
        )
    b, k, c, h, w = events.shape
    windows = count_windows(k, num_bins)
    if flows.shape[:2] != (b, windows) or flows.shape[-2:] != (h, w):
        raise ValueError(f"flows {list(flows.shape)} do not match {windows} windows of events {list(events.shape)}")
    events, flows = events.float(), flows.float()
    bi, ki, ci, yi, xi = events.detach().nonzero(as_tuple=True)
    values = events[bi, ki, ci, yi, xi]
    own = ki // num_bins  # each event's window
    t = bin_times(num_bins, flows.device, windows)[ki]
    start = (own - (windows - 1)).float()  # its window's start time
    flow = flows[bi, own, :, yi, xi].t()
    step = torch.minimum(torch.maximum(torch.full_like(t, t_ref), start), start + 1) - t
    x, y = xi.float() + step * flow[0], yi.float() + step * flow[1]
    # Forward through later windows (oldest first), backward through earlier ones (newest first).
    for m in range(windows):
        s_m = m - (windows - 1)
        moving = (own < m) & (t_ref > s_m)
        if moving.any():
            dt = min(1.0, t_ref - s_m) * moving.float()
            f = sample_flow(flows[:, m], bi, x, y)
            x, y = x + dt * f[0], y + dt * f[1]
    for m in reversed(range(windows)):
        s_m = m - (windows - 1)
        moving = (own > m) & (t_ref < s_m + 1)
        if moving.any():
            dt = min(1.0, s_m + 1 - t_ref) * moving.float()
            f = sample_flow(flows[:, m], bi, x, y)
            x, y = x - dt * f[0], y - dt * f[1]
    return splat(x, y, values, bi * c + ci, (b, c, h, w))


def image_variance(iwe: torch.Tensor) -> torch.Tensor:
    """Variance over the pixels of each channel, summed over channels: [B]."""
    return iwe.flatten(2).var(dim=-1, unbiased=False).sum(dim=1)


def flow_warp_loss(events: torch.Tensor, flow: torch.Tensor, t_ref: float = 0.0) -> torch.Tensor:
    """FWL of each window, [B]: the variance of the events warped along ``flow`` to ``t_ref`` over that of
    the events as they are. 1 for zero flow by definition; above 1, the flow sharpens the events.

    NaN for a window without events (or as good as: variance below ``MIN_VARIANCE``), which has none to
    sharpen; ``FlowWarpLoss`` leaves those out.
    """
    return sharpening(events, warp_events(events, flow, t_ref))


def span_flow_warp_loss(events: torch.Tensor, flows: torch.Tensor, num_bins: int) -> torch.Tensor:
    """FWL of spans of consecutive windows, [B]: ``events`` [B, w * num_bins, C, H, W] warped along each
    window's own flow ``flows`` [B, w, 2, H, W] (oldest first; ``warp_events_chained``) to the start of
    the span, over the variance of the same events unwarped. One window gives ``flow_warp_loss``.

    Over a longer span the events travel further, so a wrong flow smears them more: the measure
    tells models apart that one window scores alike (see ``FWL_WINDOWS``).
    """
    t_start = reference_times(count_windows(events.shape[1], num_bins))[0]
    return sharpening(events, warp_events_chained(events, flows, t_start, num_bins))


def sharpening(events: torch.Tensor, iwe: torch.Tensor) -> torch.Tensor:
    """The variance of the warped image ``iwe`` over that of ``events`` summed unwarped, [B]; NaN where
    the events have (next to) no variance."""
    unwarped = image_variance(events.float().sum(dim=1))
    ratio = image_variance(iwe) / unwarped.clamp_min(MIN_VARIANCE)
    return torch.where(unwarped >= MIN_VARIANCE, ratio, torch.full_like(ratio, float("nan")))


def contrast_loss(
    events: torch.Tensor, flow: torch.Tensor, refs: Sequence[float] | None = None, num_bins: int | None = None
) -> torch.Tensor:
    """Self-supervised flow loss: the mean over windows and reference times of the unwarped events' variance
    over the warped ones' (the inverse of the FWL).

    Zero flow scores 1; a flow that sharpens the events scores less, down to 0. The inverse keeps what
    one reference time can gain from a collapse of the events onto few pixels below 1, while the blur it
    causes at the other reference times costs without bound. Windows without events add 0 (no gradient).
    ``events`` may span several windows of ``num_bins`` bins (see ``bin_times``), warped along one flow
    [B, 2, H, W] taken as constant over them, or along each window's own flow [B, w, 2, H, W]
    (``warp_events_chained``); ``refs`` default to the start, middle and end of the span
    (``reference_times``).
    """
    if refs is None:
        refs = reference_times(span_windows(events, num_bins))
    if not refs:
        raise ValueError("contrast_loss needs at least one reference time")
    if flow.dim() == 5 and num_bins is None:
        raise ValueError("contrast_loss: a flow per window [B, w, 2, H, W] needs num_bins")
    warp = warp_events_chained if flow.dim() == 5 else warp_events
    unwarped = image_variance(events.float().sum(dim=1))
    has_events = (unwarped >= MIN_VARIANCE).float()
    total = events.new_zeros((), dtype=torch.float32)
    for t_ref in refs:
        warped = image_variance(warp(events, flow, t_ref, num_bins))
        total = total + (has_events * unwarped / (warped + MIN_VARIANCE)).sum()
    return total / (len(refs) * has_events.sum().clamp_min(1.0))


def smoothness_loss(flow: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier penalty of the flow's differences between horizontal and vertical neighbours: the
    prior that fills in pixels without events, where the contrast says nothing."""
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    return torch.sqrt(dx.float() ** 2 + eps**2).mean() + torch.sqrt(dy.float() ** 2 + eps**2).mean()


def divergence_loss(flow: torch.Tensor) -> torch.Tensor:
    """Mean absolute divergence of the flow (central differences). A flow that draws the events of a
    window together onto their edges (a local collapse, which sharpens them beyond what the true
    motion does) converges there and diverges between them; rigid motion has none."""
    flow = flow.flatten(0, -4)  # a flow per window [B, w, 2, H, W] counts each window's
    du = flow[:, 0, 1:-1, 2:] - flow[:, 0, 1:-1, :-2]
    dv = flow[:, 1, 2:, 1:-1] - flow[:, 1, :-2, 1:-1]
    return ((du + dv) / 2).float().abs().mean()


def multiscale_contrast_loss(
    preds: Sequence[torch.Tensor],
    events: torch.Tensor,
    weights: Sequence[float],
    smoothness_weight: float,
    refs: Sequence[float] | None = None,
    divergence_weight: float = 0.0,
    num_bins: int | None = None,
) -> torch.Tensor:
    """``contrast_loss`` plus ``smoothness_weight`` times ``smoothness_loss`` (and ``divergence_weight`` times
    ``divergence_loss``) at every flow scale (finest first, each in full-resolution pixels and resampled to
    the events' size), weighted as the supervised loss. ``events`` may span several windows of ``num_bins``
    bins, the flow being that of the last ([B, 2, h, w] at each scale) or each window's own
    ([B, w, 2, h, w], chained: see ``warp_events_chained``)."""
    if len(weights) < len(preds):
        raise ValueError(f"{len(preds)} flow scales but only {len(weights)} scale weights")
    total = events.new_zeros((), dtype=torch.float32)
    for pred, weight in zip(preds, weights, strict=False):
        if pred.shape[-2:] != events.shape[-2:]:
            lead = pred.shape[:-3]
            pred = F.interpolate(pred.flatten(0, -4), size=events.shape[-2:], mode="bilinear", align_corners=False)
            pred = pred.view(*lead, *pred.shape[-3:])
        term = contrast_loss(events, pred, refs, num_bins) + smoothness_weight * smoothness_loss(pred)
        if divergence_weight:
            term = term + divergence_weight * divergence_loss(pred)
        total = total + weight * term
    return total


class FlowWarpLoss:
    """The mean FWL over the windows with events, accumulated batch by batch."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, events: torch.Tensor, flow: torch.Tensor) -> None:
        self.add(flow_warp_loss(events, flow))

    def add(self, fwl: torch.Tensor) -> None:
        """Windows' FWL as ``flow_warp_loss`` returns it; those without events (NaN) are left out."""
        fwl = fwl[torch.isfinite(fwl)]
        self.total += float(fwl.sum())
        self.count += int(fwl.numel())

    def merge(self, other: FlowWarpLoss) -> None:
        self.total += other.total
        self.count += other.count

    def compute(self) -> float:
        """The mean FWL; NaN when no window had events."""
        return self.total / self.count if self.count else float("nan")


class WindowSpans:
    """The FWL of each window over a span of ``windows`` consecutive windows of its sequence: the window
    and the ``windows - 1`` before it, each along its own predicted flow (``span_flow_warp_loss``).

    Windows come in order, as an evaluation loader gives them, keyed by ``window_keys``. A window
    whose ``windows - 1`` predecessors were not all just seen, back to back (the first windows of a
    sequence, or after a gap in time), has no full span and scores NaN, which ``FlowWarpLoss`` leaves
    out; a span never reaches into another sequence.
    """

    def __init__(self, windows: int = FWL_WINDOWS) -> None:
        if windows < 1:
            raise ValueError(f"the FWL needs a span of at least one window, got {windows}")
        self.windows = windows
        self.history: deque = deque(maxlen=windows - 1)  # (events, flow) of the windows just before
        self.last: WindowKey | None = None

    def fwl(self, events: torch.Tensor, flow: torch.Tensor, keys: Sequence[WindowKey]) -> torch.Tensor:
        """Each window's FWL, [B]: ``events`` [B, K, C, H, W], ``flow`` [B, 2, H, W], ``keys`` [B]."""
        if self.windows == 1:
            return flow_warp_loss(events, flow)
        scores = []
        for i, key in enumerate(keys):
            if not follows(key, self.last):
                self.history.clear()
            self.last = key
            if len(self.history) == self.windows - 1:
                span = torch.cat([*(e for e, _ in self.history), events[i]])[None]
                flows = torch.stack([*(f for _, f in self.history), flow[i]])[None]
                scores.append(span_flow_warp_loss(span, flows, events.shape[1])[0])
            else:
                scores.append(torch.tensor(float("nan")))
            self.history.append((events[i], flow[i]))
        return torch.stack(scores)
