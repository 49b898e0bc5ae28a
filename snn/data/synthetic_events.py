"""Event-camera simulation from log-intensity images sampled at sub-steps.

Each pixel keeps a reference log level. Between two sub-steps its log intensity is taken to
change linearly; every time it crosses ``reference +- threshold`` the pixel fires an event at
the interpolated crossing time and the reference moves by one threshold. Thresholds are drawn
per pixel (separately for ON and OFF) once per sequence, a refractory period drops events that
follow the pixel's previous event too closely, and uniform noise events are added at the end.
Everything is vectorised over pixels; only the sub-steps (and the few crossings a pixel makes
within one sub-step) are Python loops.
"""

from __future__ import annotations

import numpy as np


def draw_thresholds(
    rng: np.random.Generator,
    shape: tuple[int, int],
    mean: float,
    std: float,
    minimum: float,
) -> np.ndarray:
    """Per-pixel contrast thresholds ~ N(mean, std), clipped below at ``minimum``."""
    return np.maximum(rng.normal(mean, std, shape), minimum)


class EventSimulator:
    """Turns a stream of (log image, time) samples into events.

    Args:
        first_image: log intensity at ``t0``; it sets the initial reference levels.
        t0_us: time of ``first_image`` in microseconds.
        threshold_on: per-pixel ON thresholds [H, W].
        threshold_off: per-pixel OFF thresholds [H, W].
        refractory_us: minimum time between two events of one pixel.
    """

    def __init__(
        self,
        first_image: np.ndarray,
        t0_us: float,
        threshold_on: np.ndarray,
        threshold_off: np.ndarray,
        refractory_us: float,
    ) -> None:
        self.width = first_image.shape[1]
        self.prev = first_image.astype(np.float64).ravel()
        self.ref = self.prev.copy()
        self.t_prev = float(t0_us)
        self.thr_on = threshold_on.astype(np.float64).ravel()
        self.thr_off = threshold_off.astype(np.float64).ravel()
        self.refractory_us = float(refractory_us)
        self.last_t = np.full(self.prev.shape, -np.inf)
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def step(self, image: np.ndarray, t_us: float) -> None:
        """Advance to ``image`` at time ``t_us``, emitting the crossings in between."""
        cur = image.astype(np.float64).ravel()
        n_on = np.floor((cur - self.ref) / self.thr_on)
        n_off = np.floor((self.ref - cur) / self.thr_off)
        idx = np.flatnonzero((n_on > 0) | (n_off > 0))
        if idx.size:
            self._emit(idx, n_on[idx], cur, t_us)
        self.prev = cur
        self.t_prev = float(t_us)

    def _emit(self, idx: np.ndarray, n_on: np.ndarray, cur: np.ndarray, t_us: float) -> None:
        on = n_on > 0
        sign = np.where(on, 1.0, -1.0)
        thr = np.where(on, self.thr_on[idx], self.thr_off[idx])
        count = np.where(on, n_on, np.floor((self.ref[idx] - cur[idx]) / thr)).astype(np.int64)
        start, delta = self.prev[idx], cur[idx] - self.prev[idx]
        ref = self.ref[idx]
        span = t_us - self.t_prev
        for j in range(1, int(count.max()) + 1):
            # Crossings are taken in time order per pixel, so the refractory test sees them
            # in the order a real pixel would.
            active = np.flatnonzero(count >= j)
            level = ref[active] + sign[active] * j * thr[active]
            d = delta[active]
            safe = np.where(d != 0, d, 1.0)
            frac = np.clip(np.where(d != 0, (level - start[active]) / safe, 1.0), 0.0, 1.0)
            t = self.t_prev + frac * span
            pix = idx[active]
            keep = t - self.last_t[pix] >= self.refractory_us
            pix, t = pix[keep], t[keep]
            self.last_t[pix] = t
            self._chunks.append((pix, t, on[active][keep]))
        # The reference moves by one threshold per crossing, fired or dropped, as a real
        # pixel resets to the level it saw when it crossed.
        self.ref[idx] = ref + sign * count * thr

    def events(self) -> dict[str, np.ndarray]:
        """All events so far, unsorted: pixel index, float time (us) and polarity (bool)."""
        if not self._chunks:
            return {"pix": np.zeros(0, np.int64), "t": np.zeros(0), "on": np.zeros(0, bool)}
        pix, t, on = (np.concatenate(parts) for parts in zip(*self._chunks, strict=True))
        return {"pix": pix, "t": t, "on": on}


def noise_events(
    rng: np.random.Generator,
    shape: tuple[int, int],
    duration_us: float,
    rate_hz: float,
) -> dict[str, np.ndarray]:
    """Uniform background-activity noise: ``rate_hz`` events per pixel per second."""
    height, width = shape
    n = int(rng.poisson(rate_hz * height * width * duration_us * 1e-6))
    return {
        "pix": rng.integers(0, height * width, n),
        "t": rng.uniform(0.0, duration_us, n),
        "on": rng.random(n) < 0.5,
    }


def finalize_events(parts: list[dict[str, np.ndarray]], width: int, duration_us: int) -> dict[str, np.ndarray]:
    """Merge event sets, round times to integer microseconds and sort them by time.

    Returns x, y (uint16), t (int64, us) and p (uint8, 1 = ON).
    """
    pix = np.concatenate([p["pix"] for p in parts]).astype(np.int64)
    t = np.clip(np.rint(np.concatenate([p["t"] for p in parts])), 0, duration_us)
    on = np.concatenate([p["on"] for p in parts])
    # A stable sort keeps the (deterministic) generation order among equal timestamps.
    order = np.argsort(t, kind="stable")
    pix, t, on = pix[order], t[order].astype(np.int64), on[order]
    return {
        "x": (pix % width).astype(np.uint16),
        "y": (pix // width).astype(np.uint16),
        "t": t,
        "p": on.astype(np.uint8),
    }


def ms_to_idx(t: np.ndarray, duration_us: int) -> np.ndarray:
    """``out[m]`` = first index with ``t >= m * 1000``, for every ms up to the duration."""
    num_ms = -(-int(duration_us) // 1000) + 1
    return np.searchsorted(t, np.arange(num_ms, dtype=np.int64) * 1000, side="left").astype(np.uint64)
