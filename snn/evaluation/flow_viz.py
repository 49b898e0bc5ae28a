"""Flow and event pictures: the Middlebury colour wheel, event images, EPE maps.

All functions take numpy arrays or tensors and return uint8 RGB images [H, W, 3].
Hue gives the flow direction and saturation its magnitude relative to a
normalisation radius, so pictures that share a radius can be compared.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

# Colour-wheel segment lengths of the Middlebury benchmark (Baker et al. 2011):
# red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta, magenta-red.
_SEGMENTS = (15, 6, 4, 11, 13, 6)


def _as_numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float32)


def make_colorwheel() -> np.ndarray:
    """[55, 3] RGB colours in 0..255 around the hue circle."""
    ry, yg, gc, cb, bm, mr = _SEGMENTS
    ramps = [
        (ry, lambda r: np.stack([np.full_like(r, 255), 255 * r, 0 * r], 1)),
        (yg, lambda r: np.stack([255 - 255 * r, np.full_like(r, 255), 0 * r], 1)),
        (gc, lambda r: np.stack([0 * r, np.full_like(r, 255), 255 * r], 1)),
        (cb, lambda r: np.stack([0 * r, 255 - 255 * r, np.full_like(r, 255)], 1)),
        (bm, lambda r: np.stack([255 * r, 0 * r, np.full_like(r, 255)], 1)),
        (mr, lambda r: np.stack([np.full_like(r, 255), 0 * r, 255 - 255 * r], 1)),
    ]
    return np.concatenate([f(np.arange(n) / n) for n, f in ramps]).astype(np.float64)


def flow_to_color(flow, max_flow: float | None = None) -> np.ndarray:
    """Colour-code a [2, H, W] or [H, W, 2] flow; ``max_flow`` is the full-saturation radius."""
    f = _as_numpy(flow)
    if f.shape[0] == 2 and f.ndim == 3 and f.shape[-1] != 2:
        f = f.transpose(1, 2, 0)
    u, v = f[..., 0].astype(np.float64), f[..., 1].astype(np.float64)
    bad = ~np.isfinite(u) | ~np.isfinite(v)
    u, v = np.where(bad, 0, u), np.where(bad, 0, v)
    rad = np.sqrt(u**2 + v**2)
    if max_flow is None:
        max_flow = float(rad.max()) if rad.size else 1.0
    max_flow = max(max_flow, 1e-6)
    u, v, rad = u / max_flow, v / max_flow, rad / max_flow
    wheel = make_colorwheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % n
    frac = (fk - k0)[..., None]
    col = ((1 - frac) * wheel[k0] + frac * wheel[k1]) / 255.0
    inside = (rad <= 1)[..., None]
    # Saturation grows with magnitude; beyond the radius the colour is darkened.
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    col[bad] = 0
    return np.clip(np.floor(255 * col), 0, 255).astype(np.uint8)


def color_wheel_legend(size: int = 64) -> np.ndarray:
    """A disc showing which colour means which direction (radius = full saturation)."""
    r = np.linspace(-1, 1, size)
    u, v = np.meshgrid(r, r)
    img = flow_to_color(np.stack([u, v]), max_flow=1.0)
    img[np.sqrt(u**2 + v**2) > 1] = 255
    return img


def event_image(events) -> np.ndarray:
    """[T, C, H, W] event tensor -> RGB on white: ON events blue, OFF events red."""
    e = _as_numpy(events)
    h, w = e.shape[-2:]
    img = np.full((h, w, 3), 255, np.uint8)
    if e.shape[1] >= 2:
        on, off = e[:, 0].sum(0) > 0, e[:, 1].sum(0) > 0
    else:  # voxel grid: sign of the summed polarity
        total = e[:, 0].sum(0)
        on, off = total > 0, total < 0
    img[off] = (220, 40, 40)
    img[on] = (40, 80, 230)
    return img


def error_heatmap(pred, gt, valid=None, max_error: float | None = None) -> tuple[np.ndarray, float]:
    """EPE map coloured with a perceptual colour map; invalid pixels grey. Returns (image, scale)."""
    epe = np.linalg.norm(_as_numpy(pred) - _as_numpy(gt), axis=0)
    max_error = float(max_error if max_error is not None else max(np.percentile(epe, 99), 1e-3))
    scaled = np.clip(epe / max_error * 255, 0, 255).astype(np.uint8)
    img = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)[..., ::-1].copy()
    if valid is not None:
        img[_as_numpy(valid).reshape(epe.shape) < 0.5] = 128
    return img, max_error


def flow_panel(events, gt, pred, valid=None) -> np.ndarray:
    """Events | ground truth | prediction | EPE side by side (one flow normalisation)."""
    g = _as_numpy(gt)
    max_flow = float(np.linalg.norm(g, axis=0).max()) or 1.0
    gt_img = flow_to_color(g, max_flow)
    if valid is not None:
        gt_img[_as_numpy(valid).reshape(g.shape[1:]) < 0.5] = 0
    parts = [event_image(events), gt_img, flow_to_color(pred, max_flow), error_heatmap(pred, gt, valid)[0]]
    sep = np.full((g.shape[1], 2, 3), 255, np.uint8)
    out = []
    for p in parts:
        out += [p, sep]
    return np.concatenate(out[:-1], axis=1)
