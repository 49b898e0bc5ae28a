"""The knobs of the synthetic event-flow generator, as one validated dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from snn.data.photos import NATURAL_TEST_PHOTOS, check_photo_names
from snn.data.synthetic_scene import UNIT_RANGE

PHOTO_KEYS = ("background_photos", "photo_fraction")
RANGE_KEYS = ("scene_scale", "texture_noise")  # factor ranges: records leave them out at UNIT_RANGE


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic scenes, camera and event model.

    Motion is given per frame at 64x64 and scaled with the image size, so the defaults give a
    forward flow of mostly 0.5-5 px per frame pair (mean about 2 px) at any resolution.
    """

    height: int = 64
    width: int = 64
    num_frames: int = 16  # frames per sequence, so num_frames - 1 flow windows
    fps: float = 30.0
    substeps: int = 12  # renders per frame interval fed to the event model
    min_foreground: int = 2  # foreground layers per scene, on top of the background
    max_foreground: int = 4
    threshold_on: float = 0.2  # mean log-intensity contrast threshold
    threshold_off: float = 0.2
    threshold_std: float = 0.03  # per-pixel spread, drawn once per sequence
    threshold_min: float = 0.05
    refractory_us: float = 1000.0
    noise_rate_hz: float = 0.5  # noise events per pixel per second
    background_speed: tuple[float, float] = (0.6, 2.4)  # px/frame
    background_accel: float = 0.03  # px/frame^2, per axis
    background_spin: float = 0.01  # rad/frame
    background_zoom: float = 0.006  # log-scale per frame
    foreground_speed: tuple[float, float] = (1.0, 6.5)
    foreground_accel: float = 0.1
    foreground_spin: float = 0.04
    foreground_zoom: float = 0.02
    # Photographs (names in snn.data.photos) that backgrounds are cut from instead of the
    # generated textures; each sequence draws one. Empty: generated textures only.
    background_photos: tuple[str, ...] = ()
    photo_fraction: float = 1.0  # of the sequences that take a photograph (with background_photos)
    # Each sequence draws a scale s uniformly in this range and sees its textures and motions as a
    # frame s times larger would (pattern sizes and speeds in pixels times s; the objects keep their
    # size relative to the frame). (1, 1): every sequence at the frame's own scale.
    scene_scale: tuple[float, float] = UNIT_RANGE
    # Each generated texture multiplies its smooth noise by a factor drawn in this range: near 0 the
    # hard-edged patches lie on flat ground that fires no events, like the sky or a wall in a
    # photograph. (1, 1): every texture as textured as before.
    texture_noise: tuple[float, float] = UNIT_RANGE

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(field.default, tuple) and isinstance(value, list):
                value = tuple(value)  # YAML has no tuples; frozen, hence object.__setattr__
                object.__setattr__(self, field.name, value)
            if field.name == "background_photos":
                ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
                expected = "a list of photograph names"
            elif isinstance(field.default, tuple):
                ok = (
                    isinstance(value, tuple)
                    and len(value) == 2
                    and all(_is_number(v) for v in value)
                    and 0 <= value[0] <= value[1]
                )
                expected = "a pair [low, high] of finite numbers with 0 <= low <= high"
            elif isinstance(field.default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
                expected = "an integer"
            else:
                ok = _is_number(value) and value >= 0
                expected = "a finite number >= 0"
            if not ok:
                raise ValueError(f"SyntheticConfig.{field.name} must be {expected}, got {value!r}")
        checks = {
            "height": self.height >= 16,
            "width": self.width >= 16,
            "num_frames": self.num_frames >= 2,
            "fps": self.fps > 0,
            # Ten or more renders per frame spread event timestamps over the window.
            "substeps": self.substeps >= 10,
            "min_foreground": 0 <= self.min_foreground <= self.max_foreground,
            "max_foreground": self.max_foreground <= 100,  # layer labels are int8
            "threshold_on": self.threshold_on > 0,
            "threshold_off": self.threshold_off > 0,
            "threshold_min": 0 < self.threshold_min,
            "photo_fraction": self.photo_fraction <= 1,
            "scene_scale": self.scene_scale[0] > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SyntheticConfig.{name} is out of range: {getattr(self, name)!r}")
        if self.background_photos:
            try:
                check_photo_names(self.background_photos)
            except ValueError as err:
                raise ValueError(f"SyntheticConfig.background_photos: {err}") from None

    @property
    def frame_interval_us(self) -> int:
        """Time between frames in whole microseconds (33333 at 30 fps)."""
        return int(round(1e6 / self.fps))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for YAML. The photo keys are left out without photographs, and
        ``scene_scale`` and ``texture_noise`` at (1, 1), so that a dataset generated before they existed
        still matches the settings it was made with."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
            if not (key in PHOTO_KEYS and not self.background_photos)
            and not (key in RANGE_KEYS and tuple(value) == UNIT_RANGE)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> SyntheticConfig:
        """Build from a dict as ``to_dict`` writes it; an unknown key is an error naming it."""
        unknown = sorted(set(data) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown synthetic-config key(s) {unknown} in {source}")
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(f"{err} (in {source})") from None


def _is_number(value: Any) -> bool:
    # NaN passes no range check and no scene setting has a use for infinity: both are refused.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


SPLIT_KEYS = ("num_train", "num_val", "num_test", "seed", "workers")


@dataclass(frozen=True)
class SyntheticDataset:
    """The run config's ``synthetic`` section: the dataset that training generates on first use.

    In YAML it is one flat mapping: the split sizes, the dataset seed and the worker count,
    plus any ``SyntheticConfig`` key (the scene, camera and event model), e.g.
    ``synthetic: {num_train: 256, num_val: 8, num_test: 16, seed: 0, height: 96}``.
    These defaults are the generator's own, which ``tools/make_synthetic_dataset.py`` offers and the
    yardstick (``data/synthetic``) uses; ``python train.py`` adds a scene scale (``DEFAULT_SYNTHETIC``).
    """

    num_train: int = 256
    num_val: int = 8
    num_test: int = 16
    seed: int = 0
    workers: int = 2
    scene: SyntheticConfig = SyntheticConfig()

    def __post_init__(self) -> None:
        for key in SPLIT_KEYS:
            value = getattr(self, key)
            low = 1 if key == "workers" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")

    def split_args(self) -> dict[str, int]:
        """Keyword arguments of ``ensure_synthetic_dataset`` besides the scene settings."""
        return {key: getattr(self, key) for key in SPLIT_KEYS}

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping the YAML holds (every scene key written out)."""
        return {**self.split_args(), **self.scene.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> SyntheticDataset:
        if not isinstance(data, dict):
            raise ValueError(f"must be a mapping of keys to values, got {data!r}")
        scene = SyntheticConfig.from_dict({k: v for k, v in data.items() if k not in SPLIT_KEYS}, source)
        try:
            return cls(**{k: v for k, v in data.items() if k in SPLIT_KEYS}, scene=scene)
        except ValueError as err:
            raise ValueError(f"{err} (in {source})") from None


# The default run's set (``python train.py``): the generator's own, each sequence drawn at a scale of
# 1 to 2, which over three seeds scored better on the unseen set and natural images (README, Train).
DEFAULT_SYNTHETIC = SyntheticDataset(scene=SyntheticConfig(scene_scale=(1.0, 2.0)))

# A test set no ladder step trains on: new scenes (another dataset seed), frames twice as large
# (128x128 instead of 64x64, so motions in pixels are twice as large, since they scale with the
# image) and only a test split. The textures come from the same generator, drawn anew.
UNSEEN_TEST_SET = SyntheticDataset(
    num_train=0, num_val=0, num_test=16, seed=1, scene=SyntheticConfig(height=128, width=128)
)

# Natural images under camera motion: 320x320 frames whose background is one of the natural-test
# photographs, moving with a camera-like drift, roll and zoom, with no independent objects. The
# speeds are lower than the generated scenes' (which scale with the frame) so that the flow stays
# at a few pixels per frame, as a hand-held camera at 30 fps gives.
NATURAL_TEST_SET = SyntheticDataset(
    num_train=0,
    num_val=0,
    num_test=18,
    seed=4,  # draws each photograph 2 to 4 times
    scene=SyntheticConfig(
        height=320,
        width=320,
        min_foreground=0,
        max_foreground=0,
        background_speed=(0.2, 1.0),
        background_spin=0.004,
        background_zoom=0.003,
        background_photos=NATURAL_TEST_PHOTOS,
    ),
)
