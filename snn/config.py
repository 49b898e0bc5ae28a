"""One typed, validated run configuration.

YAML files in ``snn/configs/`` give the defaults, command-line flags override
them, and the resolved config is saved next to the checkpoints and inside
them. Unknown keys and wrong types are rejected at load with an error that
names the key and the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "event_snn_lite.yaml"


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and the key."""


@dataclass
class Config:
    # Model (EventSNNFlowNetLiteV2 constructor arguments).
    model: str = "EventSNNFlowNetLiteV2"
    base_ch: int = 32
    num_bins: int = 5
    tau: float = 2.0
    threshold: float = 1.0
    reset: str = "subtract"
    surrogate_alpha: float = 4.0
    flow_scale: float = 1.0

    # Data.
    dataset: str = "synthetic"  # "synthetic" (generated on first use) or "blinksim"
    data_root: str = "data/synthetic"
    representation: str = "counts"  # "counts" or "voxel"
    crop_size: int | None = None
    augment: bool = True
    batch_size: int = 8
    num_workers: int = 0
    synthetic: dict = field(default_factory=dict)  # SyntheticConfig overrides and split sizes

    # Optimisation.
    num_epochs: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # "cosine" or "constant"
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    scale_weights: list = field(default_factory=lambda: [1.0, 0.5, 0.25])

    # Runtime and logging.
    seed: int = 0
    device: str = "auto"
    log_every: int = 20  # steps between TensorBoard scalar points
    image_every: int = 2  # epochs between TensorBoard flow images (0: never)
    checkpoint_dir: str = "checkpoints/V2"
    log_dir: str = "logs/V2"

    def model_args(self) -> dict[str, Any]:
        """Constructor arguments of the model, as stored in checkpoints."""
        from snn.data.representations import num_input_channels

        return {
            "base_ch": self.base_ch,
            "num_bins": self.num_bins,
            "in_channels": num_input_channels(self.representation),
            "tau": self.tau,
            "threshold": self.threshold,
            "reset": self.reset,
            "surrogate_alpha": self.surrogate_alpha,
            "flow_scale": self.flow_scale,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    "model": ("EventSNNFlowNetLiteV2",),
    "dataset": ("synthetic", "blinksim"),
    "representation": ("counts", "voxel"),
    "reset": ("subtract", "zero"),
    "lr_schedule": ("cosine", "constant"),
}
_POSITIVE = ("base_ch", "num_bins", "batch_size", "num_epochs", "learning_rate", "tau", "threshold")
_NON_NEGATIVE = ("num_workers", "weight_decay", "warmup_epochs", "grad_clip", "log_every", "image_every")


def _type_ok(value: Any, annotation: Any) -> bool:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def validate(cfg: Config, source: str = "config") -> Config:
    """Check types and values; floats given as ints are converted."""
    for name, annotation in typing.get_type_hints(Config).items():
        value = getattr(cfg, name)
        if not _type_ok(value, annotation):
            expected = getattr(annotation, "__name__", str(annotation))
            raise ConfigError(
                f"{source}: key '{name}' must be {expected}, got {value!r} ({type(value).__name__})"
            )
        if annotation is float and isinstance(value, int):
            setattr(cfg, name, float(value))
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"{source}: key '{key}' must be one of {choices}, got {getattr(cfg, key)!r}")
    for key in _POSITIVE:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{source}: key '{key}' must be > 0, got {getattr(cfg, key)!r}")
    for key in _NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{source}: key '{key}' must be >= 0, got {getattr(cfg, key)!r}")
    if cfg.crop_size is not None and cfg.crop_size % 8:
        raise ConfigError(f"{source}: key 'crop_size' must be a multiple of 8, got {cfg.crop_size}")
    if not 0 < cfg.min_lr_ratio <= 1:
        raise ConfigError(f"{source}: key 'min_lr_ratio' must lie in (0, 1], got {cfg.min_lr_ratio}")
    if not cfg.scale_weights or not all(isinstance(w, (int, float)) for w in cfg.scale_weights):
        raise ConfigError(f"{source}: key 'scale_weights' must be a non-empty list of numbers")
    return cfg


def config_from_dict(values: dict[str, Any], source: str = "config") -> Config:
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
    return validate(Config(**values), source)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return values


def load_config(path: str | Path = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config, apply overrides (None values are ignored), validate."""
    values = read_yaml(path)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(values, str(path))


def save_config(cfg: Config, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(path)
