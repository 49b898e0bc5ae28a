"""Photographs for natural-image scenes, taken from the sample images scikit-image and matplotlib ship.

Three disjoint groups:

- ``HELD_OUT_PHOTOS``: a held-out evaluation that nothing in this repository may train, tune or
  build its own test sets on. ``load_photo`` refuses them, so no scene can use them by mistake.
- ``NATURAL_TEST_PHOTOS``: the backgrounds of our natural-image test set (``NATURAL_TEST_SET``).
- ``TRAINING_PHOTOS``: free for training scenes. The right image of the motorcycle stereo pair
  is in no group: it shows the test set's left image from a few centimetres away.

Only the image files are read (with OpenCV), from the packages' data folders: no download.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

HELD_OUT_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "hubble_deep_field", "rocket")
NATURAL_TEST_PHOTOS = ("motorcycle_left", "grace_hopper", "coins", "ihc", "retina", "moon")
TRAINING_PHOTOS = ("brick", "grass", "gravel", "page", "text", "cell", "horse")

# name -> (package, file name inside the package's sample-data folder)
_FILES = {
    **{name: ("skimage", f"{name}.png") for name in NATURAL_TEST_PHOTOS + TRAINING_PHOTOS},
    "retina": ("skimage", "retina.jpg"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
}

# Added to the [0, 1] intensity before the logarithm: an event camera's log response flattens
# in the dark, and black pixels would otherwise give unbounded contrasts.
LOG_EPS = 0.02


class PhotoError(ValueError):
    """A photograph that cannot be used: unknown, held out, or its file is missing."""


def _data_folder(package: str) -> Path:
    try:
        if package == "skimage":
            import skimage.data

            return Path(skimage.data.__file__).parent
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError:
        pip_name = "scikit-image" if package == "skimage" else package
        raise PhotoError(
            f"the photographs come with {pip_name}, which is not installed (python -m pip install -r requirements.txt)"
        ) from None


def check_photo_names(names: tuple[str, ...]) -> None:
    """Raise ``PhotoError`` for an unknown or held-out name (files are not touched)."""
    for name in names:
        if name in HELD_OUT_PHOTOS:
            raise PhotoError(f"photograph {name!r} is held out for evaluation: no scene of ours may use it")
        if name not in _FILES:
            raise PhotoError(f"unknown photograph {name!r}; known: {', '.join(sorted(_FILES))}")


def photo_path(name: str) -> Path:
    """The file of photograph ``name``; held-out and unknown names are refused."""
    check_photo_names((name,))
    package, file_name = _FILES[name]
    path = _data_folder(package) / file_name
    if not path.is_file():
        raise PhotoError(f"{path}: photograph {name!r} is missing from the installed {package}")
    return path


@functools.lru_cache(maxsize=16)
def load_photo(name: str) -> np.ndarray:
    """Photograph ``name`` as float32 grey levels in [0, 1], [H, W] (cached; do not modify)."""
    path = photo_path(name)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise PhotoError(f"{path}: OpenCV cannot read photograph {name!r}")
    image = image.astype(np.float32) / 255.0
    image.setflags(write=False)
    return image


def photo_texture(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """A ``size`` x ``size`` log-intensity canvas cut from photograph ``name``.

    The photograph is scaled so that its shorter side covers the canvas (times a random factor
    up to 1.5, so that crops differ), cut at a random place and flipped at random.
    """
    image = load_photo(name)
    h, w = image.shape
    scale = size / min(h, w) * float(rng.uniform(1.0, 1.5))
    resized = cv2.resize(
        image, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    top = int(rng.integers(resized.shape[0] - size + 1))
    left = int(rng.integers(resized.shape[1] - size + 1))
    canvas = resized[top : top + size, left : left + size]
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    return np.log(canvas + LOG_EPS).astype(np.float32)
