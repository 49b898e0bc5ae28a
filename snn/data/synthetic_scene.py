"""Layered scenes for the synthetic event-flow dataset: textures, shapes, motion, exact flow.

A scene is a stack of layers drawn back to front: a background that fills the frame and a few
foreground layers, each a textured canvas with a hard-edged alpha mask. Every layer carries a
pose that is a continuous function of time (translation with a small acceleration, rotation
about its own centre, log-scale change), so a frame at any sub-step time is rendered by warping
each canvas into the image and compositing. Because the poses are known exactly, so is the
forward flow: a point of layer ``L`` at pixel ``x`` in frame ``i`` moves to
``A_L(t_{i+1}) A_L(t_i)^{-1} x``.

Time here is measured in frames (float), positions in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from snn.data.photos import photo_texture

# A layer point counts as "on top" when its alpha is at least this; edges are blended by the
# bilinear warp, so the label follows whichever layer covers most of the pixel.
ALPHA_VISIBLE = 0.5
UNIT_RANGE = (1.0, 1.0)  # a (low, high) factor range that draws nothing


def draw_factor(rng: np.random.Generator, factor_range: tuple[float, float]) -> float:
    """A factor drawn uniformly in ``factor_range``, or 1 without a draw at ``UNIT_RANGE``, so that the
    scenes of a dataset made before the range existed stay what they were."""
    return 1.0 if tuple(factor_range) == UNIT_RANGE else float(rng.uniform(*factor_range))


@dataclass(frozen=True)
class MotionRanges:
    """Ranges the motion of one kind of layer is drawn from (units: px, rad, frames)."""

    speed: tuple[float, float]  # |translation velocity|, px/frame
    accel: float  # max |acceleration| per axis, px/frame^2
    spin: float  # max |angular velocity|, rad/frame
    zoom: float  # max |d log(scale) / dt|, 1/frame


@dataclass
class Layer:
    """One textured layer and its pose as a function of time.

    The pose maps canvas coordinates ``u`` to image coordinates:
    ``x = s(t) R(theta(t)) (u - centre) + pos(t)``, with ``pos`` quadratic, ``theta`` and
    ``log s`` linear in ``t`` (frames), all measured from ``t_mid``.
    """

    texture: np.ndarray  # float32 [h, w] log intensity
    alpha: np.ndarray | None  # float32 [h, w] in {0, 1}; None for the background
    centre: np.ndarray  # canvas point that sits at ``pos``
    pos: np.ndarray  # image position of ``centre`` at t_mid
    vel: np.ndarray
    acc: np.ndarray
    theta: float
    spin: float
    log_scale: float
    zoom: float
    t_mid: float

    def matrix(self, t: float) -> np.ndarray:
        """3x3 affine map from canvas to image coordinates at time ``t`` (frames)."""
        dt = t - self.t_mid
        angle = self.theta + self.spin * dt
        scale = np.exp(self.log_scale + self.zoom * dt)
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        linear = np.array([[c, -s], [s, c]])
        pos = self.pos + self.vel * dt + 0.5 * self.acc * dt * dt
        out = np.eye(3)
        out[:2, :2] = linear
        out[:2, 2] = pos - linear @ self.centre
        return out


def _blur_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / max(float(field.std()), 1e-6)


def _add_patch(rng: np.random.Generator, tex: np.ndarray, unit: float) -> None:
    """Add one hard-edged pattern (stripes, checker, blob or bar) to ``tex`` in place.

    These give the strong edges an event camera fires on; smooth noise alone would give few.
    """
    h, w = tex.shape
    kind = rng.integers(4)
    amp = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.5))
    region = np.zeros((h, w), np.uint8)
    cx, cy = int(rng.integers(w)), int(rng.integers(h))
    rx, ry = (int(v) for v in rng.uniform(0.15, 0.4, 2) * np.array([w, h]))
    cv2.ellipse(region, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    mask = region.astype(bool)
    if kind == 0:  # square-wave grating
        yy, xx = np.mgrid[:h, :w]
        phi = rng.uniform(0, np.pi)
        period = rng.uniform(3.0, 8.0) * unit
        wave = np.sign(np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period))
        tex[mask] += amp * wave[mask]
    elif kind == 1:  # checkerboard
        yy, xx = np.mgrid[:h, :w]
        cell = max(2, int(rng.uniform(2.0, 6.0) * unit))
        checker = ((xx // cell + yy // cell) % 2) * 2.0 - 1.0
        tex[mask] += amp * checker[mask]
    elif kind == 2:  # flat blob
        tex[mask] += amp
    else:  # rotated bar
        bar = np.zeros((h, w), np.uint8)
        size = (float(rng.uniform(0.3, 0.9) * w), float(rng.uniform(0.05, 0.2) * h))
        box = cv2.boxPoints(((cx, cy), size, float(rng.uniform(0, 180))))
        cv2.fillPoly(bar, [np.round(box).astype(np.int32)], 1)
        tex[bar.astype(bool)] += amp


def make_texture(
    rng: np.random.Generator, shape: tuple[int, int], unit: float, noise: tuple[float, float] = UNIT_RANGE
) -> np.ndarray:
    """Random log-intensity texture: multi-scale smooth noise plus hard-edged patches.

    ``unit`` is the image size divided by 64, so patterns keep their look at any resolution.
    ``noise`` (low, high): the smooth noise's weight is multiplied by a factor drawn in it, so that
    at small factors the patches sit on flat ground that fires no events, as the sky or a wall
    would (no draw at (1, 1)). Returns float32 with a random mean in [-1, 1] and a standard
    deviation of about 0.5.
    """
    gain = draw_factor(rng, noise)
    tex = np.zeros(shape, np.float32)
    for sigma, weight in ((1.5, 0.3), (3.0, 0.5), (8.0, 0.8)):
        tex += gain * weight * _blur_noise(rng, shape, sigma * unit)
    for _ in range(int(rng.integers(2, 7))):
        _add_patch(rng, tex, unit)
    # A light blur keeps edges sharp but lets bilinear warping reproduce them faithfully.
    tex = cv2.GaussianBlur(tex, (0, 0), 0.7)
    tex = (tex - tex.mean()) / max(float(tex.std()), 1e-6)
    return (rng.uniform(-1.0, 1.0) + rng.uniform(0.35, 0.65) * tex).astype(np.float32)


def make_shape_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """Hard-edged random shape (ellipse, polygon or rectangle) on a ``size`` square canvas."""
    mask = np.zeros((size, size), np.uint8)
    c = size / 2.0
    radius = rng.uniform(0.25, 0.45) * size
    kind = rng.integers(3)
    if kind == 0:
        axes = (int(radius), int(radius * rng.uniform(0.5, 1.0)))
        cv2.ellipse(mask, (int(c), int(c)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.6, 1.0, n)
        pts = np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:
        size_wh = (float(2 * radius), float(2 * radius * rng.uniform(0.4, 1.0)))
        box = cv2.boxPoints(((c, c), size_wh, float(rng.uniform(0, 180))))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    return mask.astype(np.float32)


def _random_motion(rng: np.random.Generator, ranges: MotionRanges, unit: float) -> dict:
    """Velocity, acceleration, spin and zoom drawn from ``ranges`` (pixel terms scaled)."""
    direction = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(*ranges.speed) * unit
    return {
        "vel": speed * np.array([np.cos(direction), np.sin(direction)]),
        "acc": rng.uniform(-ranges.accel, ranges.accel, 2) * unit,
        "spin": float(rng.uniform(-ranges.spin, ranges.spin)),
        "zoom": float(rng.uniform(-ranges.zoom, ranges.zoom)),
    }


def sample_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_frames: int,
    num_foreground: int,
    background_motion: MotionRanges,
    foreground_motion: MotionRanges,
    background_photos: Sequence[str] = (),
    photo_fraction: float = 1.0,
    scene_scale: tuple[float, float] = UNIT_RANGE,
    texture_noise: tuple[float, float] = UNIT_RANGE,
) -> list[Layer]:
    """Draw a background and ``num_foreground`` layers, ordered back to front.

    With ``background_photos`` the background is cut from one of these photographs (see
    ``snn.data.photos``) instead of a generated texture, with probability ``photo_fraction``.
    ``scene_scale`` (low, high) multiplies the pixel sizes of textures and motions by a factor
    drawn uniformly in it, as a frame that many times larger would see them. ``texture_noise``: the
    range of each generated texture's smooth-noise factor (``make_texture``).
    """
    unit = min(height, width) / 64.0 * draw_factor(rng, scene_scale)
    t_mid = (num_frames - 1) / 2.0
    image_centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    # The background canvas is twice the frame so its drift and rotation rarely reach the
    # reflected border; reflection still covers the corners when they do.
    bg_size = 2 * max(height, width)
    # (no draw at a fraction of 1, so that a photo-only set does not depend on the fraction's draw)
    if background_photos and (photo_fraction >= 1 or rng.random() < photo_fraction):
        background = photo_texture(rng, str(rng.choice(list(background_photos))), bg_size)
    else:
        background = make_texture(rng, (bg_size, bg_size), unit, texture_noise)
    layers = [
        Layer(
            texture=background,
            alpha=None,
            centre=np.array([(bg_size - 1) / 2.0] * 2),
            pos=image_centre.copy(),
            theta=float(rng.uniform(-np.pi, np.pi)),
            log_scale=0.0,
            t_mid=t_mid,
            **_random_motion(rng, background_motion, unit),
        )
    ]
    fg_size = int(round(0.75 * min(height, width)))
    for _ in range(num_foreground):
        # Layers sit near the centre mid-sequence, so they cross the frame rather than start
        # outside it and never arrive.
        offset = rng.uniform(-0.3, 0.3, 2) * np.array([width, height])
        layers.append(
            Layer(
                texture=make_texture(rng, (fg_size, fg_size), unit, texture_noise),
                alpha=make_shape_mask(rng, fg_size),
                centre=np.array([(fg_size - 1) / 2.0] * 2),
                pos=image_centre + offset,
                theta=float(rng.uniform(-np.pi, np.pi)),
                log_scale=float(rng.uniform(-0.2, 0.2)),
                t_mid=t_mid,
                **_random_motion(rng, foreground_motion, unit),
            )
        )
    return layers


def render(layers: Sequence[Layer], t: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite the layers at time ``t`` (frames).

    Returns the log-intensity image (float32 [H, W]) and the index of the topmost layer
    covering each pixel (int8 [H, W]).
    """
    image = np.zeros((height, width), np.float32)
    label = np.zeros((height, width), np.int8)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for index, layer in enumerate(layers):
        # warpAffine with WARP_INVERSE_MAP takes the image -> canvas map, i.e. A(t)^{-1}.
        inverse = np.linalg.inv(layer.matrix(t))[:2]
        if layer.alpha is None:
            image = cv2.warpAffine(
                layer.texture,
                inverse,
                (width, height),
                flags=flags,
                borderMode=cv2.BORDER_REFLECT_101,
            )
            continue
        tex = cv2.warpAffine(layer.texture, inverse, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(
            layer.alpha, inverse, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
        )
        image += alpha * (tex - image)
        label[alpha >= ALPHA_VISIBLE] = index
    return image, label


def forward_flow(
    layers: Sequence[Layer],
    t0: float,
    t1: float,
    label0: np.ndarray,
    label1: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact forward flow from time ``t0`` to ``t1`` and its validity.

    ``label0``/``label1`` are the topmost-layer maps of the two frames. A pixel is invalid when
    its point is occluded at ``t1`` (it leaves the image, or another layer is on top at its
    destination) or when the topmost layer at the pixel itself changes (disocclusion).
    Returns flow float32 [H, W, 2] (u, v) and valid bool [H, W].
    """
    height, width = label0.shape
    ys, xs = np.mgrid[:height, :width].astype(np.float64)
    dest_x = np.empty_like(xs)
    dest_y = np.empty_like(ys)
    for index, layer in enumerate(layers):
        sel = label0 == index
        if not sel.any():
            continue
        m = layer.matrix(t1) @ np.linalg.inv(layer.matrix(t0))
        px, py = xs[sel], ys[sel]
        dest_x[sel] = m[0, 0] * px + m[0, 1] * py + m[0, 2]
        dest_y[sel] = m[1, 0] * px + m[1, 1] * py + m[1, 2]
    flow = np.stack([dest_x - xs, dest_y - ys], axis=-1).astype(np.float32)
    inside = (dest_x >= 0) & (dest_x <= width - 1) & (dest_y >= 0) & (dest_y <= height - 1)
    col = np.clip(np.rint(dest_x), 0, width - 1).astype(np.intp)
    row = np.clip(np.rint(dest_y), 0, height - 1).astype(np.intp)
    visible_at_dest = label1[row, col] == label0
    valid = inside & visible_at_dest & (label1 == label0)
    return flow, valid
