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
ON_COLOUR, OFF_COLOUR = (40, 80, 230), (220, 40, 40)


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
    """[T, C, H, W] event tensor -> RGB on white: ON events blue, OFF events red.

    A pixel with both polarities takes the one with more events over the window.
    """
    e = _as_numpy(events)
    h, w = e.shape[-2:]
    img = np.full((h, w, 3), 255, np.uint8)
    if e.shape[1] >= 2:
        on_n, off_n = np.abs(e[:, 0]).sum(0), np.abs(e[:, 1]).sum(0)
        on, off = (on_n > 0) & (on_n >= off_n), (off_n > 0) & (off_n > on_n)
    else:  # voxel grid: sign of the summed polarity
        total = e[:, 0].sum(0)
        on, off = total > 0, total < 0
    img[off] = OFF_COLOUR
    img[on] = ON_COLOUR
    return img


def error_heatmap(pred, gt, valid=None, max_error: float | None = None) -> tuple[np.ndarray, float]:
    """EPE map coloured with a perceptual colour map; invalid pixels grey. Returns (image, scale).

    The default scale is the 99th percentile of the EPE over valid pixels, so one
    wild pixel does not wash out the rest of the map.
    """
    epe = np.linalg.norm(_as_numpy(pred) - _as_numpy(gt), axis=0)
    ok = np.ones(epe.shape, bool) if valid is None else _as_numpy(valid).reshape(epe.shape) >= 0.5
    if max_error is None:
        max_error = float(np.percentile(epe[ok], 99)) if ok.any() else 0.0
    max_error = max(float(max_error), 1e-3)
    scaled = np.clip(epe / max_error * 255, 0, 255).astype(np.uint8)
    img = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)[..., ::-1].copy()
    img[~ok] = 128
    return img, max_error


# ---------------------------------------------------------------- annotated figure
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.5
_TITLE_H = 26
_GAP = 6
_WHEEL = 96  # colour-wheel legend diameter, px
_BLACK, _WHITE = (0, 0, 0), (255, 255, 255)


def auto_scale(height: int, width: int, target: int = 256) -> int:
    """Integer nearest-neighbour zoom that makes a panel about ``target`` px across (at least 1)."""
    return max(1, round(target / max(height, width)))


def upscale(img: np.ndarray, scale: int) -> np.ndarray:
    return img if scale == 1 else np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def put_text(img: np.ndarray, parts, x: int, y: int) -> int:
    """Write ``[(text, rgb), ...]`` left to right from baseline (x, y); returns the end x."""
    for text, colour in parts:
        cv2.putText(img, text, (x, y), _FONT, _FONT_SCALE, colour, 1, cv2.LINE_AA)
        x += cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)[0][0]
    return x


def titled(img: np.ndarray, title) -> np.ndarray:
    """Put a white strip with a title (a string or ``[(text, rgb), ...]``) above ``img``."""
    strip = np.full((_TITLE_H, img.shape[1], 3), 255, np.uint8)
    put_text(strip, [(title, _BLACK)] if isinstance(title, str) else title, 4, _TITLE_H - 8)
    return np.concatenate([strip, img], axis=0)


def _fmt(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def wheel_legend(height: int, max_flow: float, arrow_gain: float | None = None, size: int = _WHEEL) -> np.ndarray:
    """The colour wheel with its radius in px (and the arrow stretch), as a column ``height`` px tall."""
    col = np.full((height, size + 16, 3), 255, np.uint8)
    disc = color_wheel_legend(size)
    y0 = _TITLE_H + 4
    col[y0 : y0 + size, 8 : 8 + size] = disc
    c = (8 + size // 2, y0 + size // 2)
    cv2.circle(col, c, size // 2, (160, 160, 160), 1, cv2.LINE_AA)
    put_text(col, [("flow colour", _BLACK)], 4, _TITLE_H - 8)
    put_text(col, [(f"rim {_fmt(max_flow)} px", _BLACK)], 8, y0 + size + 18)
    notes = ["white: 0", "black: no GT"] + ([f"arrows x{arrow_gain:.3g}"] if arrow_gain is not None else [])
    for k, note in enumerate(notes):
        put_text(col, [(note, (90, 90, 90))], 8, y0 + size + 36 + 18 * k)
    return col


def colorbar(height: int, max_error: float, label: str = "EPE px", bar_w: int = 14) -> np.ndarray:
    """A vertical INFERNO bar from 0 (bottom) to ``max_error`` (top) with numbers, ``height`` px tall."""
    width = 70
    col = np.full((height, width, 3), 255, np.uint8)
    top, bottom = _TITLE_H + 6, height - 8
    ramp = np.linspace(255, 0, bottom - top).astype(np.uint8)[:, None]
    bar = cv2.applyColorMap(np.repeat(ramp, bar_w, axis=1), cv2.COLORMAP_INFERNO)[..., ::-1]
    col[top:bottom, 6 : 6 + bar_w] = bar
    cv2.rectangle(col, (6, top), (6 + bar_w - 1, bottom - 1), (120, 120, 120), 1)
    for frac in (1.0, 0.5, 0.0):
        y = int(round(bottom - 1 - frac * (bottom - 1 - top)))
        cv2.line(col, (6 + bar_w, y), (10 + bar_w, y), _BLACK, 1)
        put_text(col, [(_fmt(frac * max_error), _BLACK)], 13 + bar_w, min(max(y + 5, top + 10), bottom))
    put_text(col, [(label, _BLACK)], 4, _TITLE_H - 8)
    return col


def arrow_grid_step(height: int, width: int, per_side: int = 10) -> int:
    return max(1, max(height, width) // per_side)


def draw_arrows(img: np.ndarray, flow, scale: int, valid=None, gain: float = 1.0, per_side: int = 10) -> np.ndarray:
    """Sparse flow arrows on an image zoomed by ``scale``; ``gain`` stretches them (1: to scale)."""
    f = _as_numpy(flow)
    h, w = f.shape[1:]
    step = arrow_grid_step(h, w, per_side)
    ok = np.ones((h, w), bool) if valid is None else _as_numpy(valid).reshape(h, w) >= 0.5
    out = img.copy()
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            u, v = float(f[0, y, x]), float(f[1, y, x])
            if not ok[y, x] or not np.isfinite(u + v) or (u * u + v * v) * gain**2 < 0.04:
                continue
            p0 = (int((x + 0.5) * scale), int((y + 0.5) * scale))
            p1 = (int(round(p0[0] + u * scale * gain)), int(round(p0[1] + v * scale * gain)))
            # White under black so arrows read on dark and light colours alike.
            cv2.arrowedLine(out, p0, p1, _WHITE, 3, cv2.LINE_AA, tipLength=0.3)
            cv2.arrowedLine(out, p0, p1, _BLACK, 1, cv2.LINE_AA, tipLength=0.3)
    return out


def render_panels(
    events,
    gt,
    pred,
    valid=None,
    scale: int | None = None,
    arrows: bool = False,
    max_flow: float | None = None,
    max_error: float | None = None,
    caption: str | None = None,
) -> np.ndarray:
    """Events | ground truth | prediction | wheel legend | EPE | colour bar, titled, upscaled.

    GT and prediction share one colour normalisation, ``max_flow`` (default: the
    largest valid |gt|); invalid ground truth is black, and grey in the EPE map.
    """
    g, p = _as_numpy(gt), _as_numpy(pred)
    h, w = g.shape[1:]
    ok = np.ones((h, w), bool) if valid is None else _as_numpy(valid).reshape(h, w) >= 0.5
    if max_flow is None:
        mag = np.linalg.norm(g, axis=0)[ok]
        max_flow = float(mag.max()) if mag.size else 0.0
    max_flow = max(max_flow, 1e-3)
    scale = scale or auto_scale(h, w)
    gt_img = flow_to_color(g, max_flow)
    gt_img[~ok] = 0
    err_img, max_error = error_heatmap(p, g, valid, max_error)
    epe = np.linalg.norm(p - g, axis=0)[ok]
    aee = f"{epe.mean():.2f} px" if epe.size else "n/a"
    panels = [
        upscale(event_image(events), scale),
        upscale(gt_img, scale),
        upscale(flow_to_color(p, max_flow), scale),
        upscale(err_img, scale),
    ]
    gain = None
    if arrows:
        # Stretch so that a flow of max_flow spans about one grid cell: small motions stay visible.
        gain = 0.9 * arrow_grid_step(h, w) / max_flow
        panels[1] = draw_arrows(panels[1], g, scale, valid, gain)
        panels[2] = draw_arrows(panels[2], p, scale, None, gain)
    titles = [
        [("events ", _BLACK), ("ON", ON_COLOUR), (" / ", _BLACK), ("OFF", OFF_COLOUR)],
        "ground truth",
        "prediction",
        f"EPE (AEE {aee})",
    ]
    # A thin grey frame, so that a panel with white content (no events, zero flow) still has edges.
    panels = [np.pad(img, ((1, 1), (1, 1), (0, 0)), constant_values=180) for img in panels]
    panels = [titled(img, t) for img, t in zip(panels, titles, strict=True)]
    # Small inputs at scale 1 give panels lower than the legend: pad them at the bottom.
    full_h = max(panels[0].shape[0], _TITLE_H + _WHEEL + 4 + 18 * 4 + 8)
    panels = [np.pad(img, ((0, full_h - img.shape[0]), (0, 0), (0, 0)), constant_values=255) for img in panels]
    panels.insert(3, wheel_legend(full_h, max_flow, gain))
    panels.append(colorbar(full_h, max_error))
    sep = np.full((full_h, _GAP, 3), 255, np.uint8)
    row = np.concatenate([x for img in panels for x in (img, sep)][:-1], axis=1)
    if caption:
        row = titled(row, caption)
    # Even sizes: video encoders want them.
    return np.pad(row, ((0, row.shape[0] % 2), (0, row.shape[1] % 2), (0, 0)), constant_values=255)
