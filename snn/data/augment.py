"""Random crop and flips applied alike to a sample's events, flow and masks.

A sample is the dict a reader returns: ``events`` [B, C, H, W], ``flow`` [2, H, W]
(u, v), ``valid`` [1, H, W] and ``event_mask`` [1, H, W] (docs/formats.md, section 3).
Training draws each sample's crop and flips from its own generator (``snn.data.sampling``), so a run
is repeatable whatever the worker count and however often it is interrupted.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SPATIAL_KEYS = ("events", "flow", "valid", "event_mask")


def as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``crop_size`` as (height, width); an int means a square."""
    if isinstance(size, int):
        height, width = size, size
    else:
        height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    return height, width


def check_crop_fits(crop_size: int | tuple[int, int] | list[int], height: int, width: int) -> tuple[int, int]:
    """Return the crop as (h, w); ValueError naming both sizes when it exceeds the image."""
    crop_h, crop_w = as_hw(crop_size)
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop size {crop_h}x{crop_w} is larger than the image {height}x{width}")
    return crop_h, crop_w


def random_crop(
    sample: dict[str, Any], crop_size: int | tuple[int, int] | list[int], generator: torch.Generator | None = None
) -> dict[str, Any]:
    """Cut the same random (h, w) window out of every spatial tensor of ``sample``."""
    height, width = sample["flow"].shape[-2:]
    crop_h, crop_w = check_crop_fits(crop_size, height, width)
    top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
    out = dict(sample)
    for key in SPATIAL_KEYS:
        out[key] = sample[key][..., top : top + crop_h, left : left + crop_w].contiguous()
    return out


def zoomed_crop(
    sample: dict[str, Any],
    crop_size: int | tuple[int, int] | list[int] | None,
    zoom_max: float,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """A random crop seen closer: a region 1/s the size of the crop (s drawn uniformly in [1, ``zoom_max``])
    enlarged to the crop's size (the whole frame's when ``crop_size`` is None), every tensor by nearest
    neighbour, so events stay integer counts and each pixel keeps a source pixel's events and flow; the
    flow grows by s. A camera twice as close (or with twice the pixels) sees edges twice as wide that
    move twice as far."""
    height, width = sample["flow"].shape[-2:]
    out_h, out_w = (height, width) if crop_size is None else check_crop_fits(crop_size, height, width)
    s = 1.0 + (zoom_max - 1.0) * float(torch.rand((), generator=generator))
    region_h, region_w = max(1, round(out_h / s)), max(1, round(out_w / s))
    region = random_crop(sample, (region_h, region_w), generator)
    out = dict(region)
    for key in SPATIAL_KEYS:
        x = region[key]
        lead = x.shape[:-2]
        y = F.interpolate(x.reshape(1, -1, region_h, region_w).float(), size=(out_h, out_w), mode="nearest")
        out[key] = y.reshape(*lead, out_h, out_w).to(x.dtype)
    out["flow"] = out["flow"] * torch.tensor([out_w / region_w, out_h / region_h]).view(2, 1, 1)
    return out


def hflip(sample: dict[str, Any]) -> dict[str, Any]:
    """Mirror left-right: x -> W-1-x, so the horizontal flow u changes sign."""
    out = {**sample, **{k: torch.flip(sample[k], dims=(-1,)) for k in SPATIAL_KEYS}}
    out["flow"] = out["flow"] * torch.tensor([-1.0, 1.0]).view(2, 1, 1)
    return out


def vflip(sample: dict[str, Any]) -> dict[str, Any]:
    """Mirror top-bottom: y -> H-1-y, so the vertical flow v changes sign."""
    out = {**sample, **{k: torch.flip(sample[k], dims=(-2,)) for k in SPATIAL_KEYS}}
    out["flow"] = out["flow"] * torch.tensor([1.0, -1.0]).view(2, 1, 1)
    return out


def random_flips(sample: dict[str, Any], p: float = 0.5, generator: torch.Generator | None = None) -> dict[str, Any]:
    """Horizontal and vertical flips, each applied independently with probability ``p``."""
    if float(torch.rand((), generator=generator)) < p:
        sample = hflip(sample)
    if float(torch.rand((), generator=generator)) < p:
        sample = vflip(sample)
    return sample


def thin_events(sample: dict[str, Any], keep_min: float, generator: torch.Generator | None = None) -> dict[str, Any]:
    """Keep each event with one probability p drawn uniformly in [keep_min, 1] for the sample (binomial
    thinning of the counts), as a higher contrast threshold would: the flow stays, the events get fewer.
    The events stay integer counts; ``event_mask`` is left as it was (the evaluation's mask is the
    reader's)."""
    p = keep_min + (1.0 - keep_min) * float(torch.rand((), generator=generator))
    events = sample["events"]
    thinned = torch.binomial(events.float(), torch.full_like(events, p, dtype=torch.float32), generator=generator)
    return {**sample, "events": thinned.to(events.dtype)}


def empty_window(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample without its events, labelled with no flow at every pixel.

    A window without events shows no motion; under the random flips the least-error guess for it is
    no flow, and without such windows in training the network's answer to one (and to the empty parts
    of a sparse one) is a frame-wide flow of its own, a different one for every seed."""
    out = {**sample, "events": torch.zeros_like(sample["events"]), "flow": torch.zeros_like(sample["flow"])}
    out["valid"] = torch.ones_like(sample["valid"])
    if "event_mask" in sample:
        out["event_mask"] = torch.zeros_like(sample["event_mask"])
    return out


def augment_sample(
    sample: dict[str, Any],
    crop_size: int | tuple[int, int] | list[int] | None = None,
    flip: bool = True,
    generator: torch.Generator | None = None,
    keep_min: float = 1.0,
    zoom_max: float = 1.0,
    empty_prob: float = 0.0,
) -> dict[str, Any]:
    """Crop (when ``crop_size`` is set; seen closer when ``zoom_max`` > 1, see ``zoomed_crop``), random
    flips (when ``flip``), thinning of the events (when ``keep_min`` < 1, see ``thin_events``), then,
    with probability ``empty_prob``, no events and no flow at all (see ``empty_window``).

    ``generator`` draws the crop position, zoom, flips, thinning and emptying (None: torch's global
    generator; with ``empty_prob`` 0 nothing is drawn for it, so the other draws stay as they were).
    """
    if zoom_max > 1:
        sample = zoomed_crop(sample, crop_size, zoom_max, generator)
    elif crop_size is not None:
        sample = random_crop(sample, crop_size, generator)
    if flip:
        sample = random_flips(sample, generator=generator)
    if keep_min < 1:
        sample = thin_events(sample, keep_min, generator)
    if empty_prob > 0 and float(torch.rand((), generator=generator)) < empty_prob:
        sample = empty_window(sample)
    return sample
