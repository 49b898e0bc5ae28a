"""One typed, validated run configuration.

YAML files in ``snn/configs/`` give the defaults, command-line flags override
them, and the resolved config is saved next to the checkpoints and inside
them. Unknown keys and wrong types are rejected at load with an error that
names the key and the file.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from snn.data.mvsec import PROTOCOLS
from snn.data.provider import FORMATS
from snn.data.representations import REPRESENTATIONS, num_input_channels
from snn.data.synthetic_config import DEFAULT_SYNTHETIC, SyntheticDataset
from snn.models.factory import MODELS
from snn.models.neurons import RESET_MODES

# How training may use mixed precision (snn.training.precision): no, bfloat16 or float16 autocast.
AMP_MODES = ("none", "bf16", "fp16")
# What training learns from (key "loss"): the flow labels, the events' contrast, or both.
LOSSES = ("supervised", "contrast", "both")
# How the contrast loss moves the events of the windows before the flow's own (key "contrast_flow").
CONTRAST_FLOWS = ("constant", "chained")

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "event_snn_lite.yaml"

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and the key."""


@dataclass
class Config:
    # Model (EventSNNFlowNetLiteV2 constructor arguments).
    model: str = "EventSNNFlowNetLiteV2"
    base_ch: int = 32
    num_bins: int = 5
    tau: float = 2.0
    # Each spiking layer learns its leak among tau = 2, 4, 8, 16 (decay 1 - 2**-k: a shift in
    # integer hardware), starting from tau, which must then be one of those.
    learn_leak: bool = False
    # Divide each window's input by the mean of its non-zero values (see EventSNNFlowNetLiteV2);
    # such a model's input is not integer counts, so the integer export refuses it.
    input_norm: bool = False
    # Each time step reads its own bin and the input_bins - 1 bins before it, stacked as channels
    # (empty bins before the window's first): the first layer then sees how events moved within a
    # window instead of one bin at a time. 1: one bin per step. At most num_bins.
    input_bins: int = 1
    # Each SNN time step reads this many consecutive bins, stacked as channels, so a window runs
    # num_bins / bins_per_step steps: fewer steps cost less time. Must divide num_bins; input_bins
    # then counts steps. The default 5 runs the whole window in one step (four times cheaper per
    # epoch than one bin per step, at least as accurate over more epochs); 1: one bin per step.
    bins_per_step: int = 5
    # Dilations of the two residual blocks at 1/8 resolution: [1, 1] sees about 49 px, [2, 4] about
    # 113 px, with the same weights (context for flat regions, far from any edge).
    bottleneck_dilation: list = field(default_factory=lambda: [1, 1])
    # What the flow heads read from the decoder: "spikes", or "current", its neurons' multi-bit input
    # current (the membrane they integrate). The integer export folds only "spikes".
    head_input: str = "spikes"
    # A context path: the bottleneck's frame-wide spike rates, through a 1x1 convolution, add one
    # current per channel at every pixel of the first decoder layer, before its quantizer; the
    # integer export folds it into that layer's arithmetic (docs/hardware.md). On by default: it
    # lowered the test-split ratio over three seeds (README, Train).
    global_context: bool = True
    threshold: float = 1.0
    reset: str = "subtract"
    surrogate_alpha: float = 2.0  # the model's own default too: EventSNNFlowNetLiteV2() is this model
    flow_scale: float = 1.0

    # Data.
    dataset: str = "synthetic"  # "synthetic" (generated on first use) or "blinksim"
    # The default's set: scenes drawn at scales of 1 to 2 (``DEFAULT_SYNTHETIC``). data/synthetic
    # holds the generator's own scale, an earlier default's data, kept as a yardstick.
    data_root: str = "data/synthetic_s12"
    representation: str = "counts"  # "counts" or "voxel"
    data_format: str = "auto"  # of a data_root: "auto" (told by its files), "blinksim", "dsec" or "mvsec"
    mvsec_dt: int = 1  # MVSEC's protocol: windows of 1 or 4 grayscale frames
    crop_size: int | None = 48  # random training crops (None: whole frames)
    # Context late in training: from epoch ceil((1 - late_crop_fraction) * num_epochs) on, crops of
    # late_crop_size (None: crop_size throughout). Larger crops cost time in proportion to their area.
    late_crop_size: int | None = None
    late_crop_fraction: float = 0.25
    # State across windows: each training sample is this many consecutive windows of a sequence;
    # all but the last only carry the membranes forward (no gradient), the loss is on the last.
    # Above 1, validation and the final test run every sequence in order with its state carried.
    state_windows: int = 1
    augment: bool = True
    # With augment: each training sample keeps each of its events with a probability drawn uniformly
    # in [event_keep_min, 1] (as a higher contrast threshold would give fewer events for the same
    # motion), so that the number of events at an edge stops telling the speed. 1: no thinning.
    event_keep_min: float = 1.0
    # With augment: each training sample loses all its events with this probability and is labelled
    # with no flow at every pixel. Without such windows the network answers a window without events
    # (and the empty parts of a sparse one) with a frame-wide flow of its own, different for every
    # seed. At 0.1 from the start of training it scored worse on two seeds (README, Train). 0: none.
    empty_window_prob: float = 0.0
    # With augment: each training crop is cut at 1/s its size and enlarged by s, drawn uniformly in
    # [1, zoom_max] (nearest neighbour, the flow times s): edges as wide and motions as large as a
    # closer camera, or one with more pixels, sees. 1: no zoom.
    zoom_max: float = 1.0
    batch_size: int = 8
    # At most this many training windows per epoch (None: every window once; a smaller set is read
    # whole). A larger dataset then keeps the epoch's size, so the epoch counts of the schedules (QAT
    # steps, bit-width switches, observer freezes, late crops) keep their meaning; successive epochs
    # walk on through shuffled passes over the whole set, so every window is seen once per pass.
    epoch_samples: int | None = 960
    num_workers: int = 0
    # YAML: one flat mapping, see its class; a mapping given replaces this one whole (keys it leaves
    # out take the generator's own values, so scene_scale falls back to [1, 1]).
    synthetic: SyntheticDataset = field(default_factory=lambda: DEFAULT_SYNTHETIC)

    # Optimisation.
    num_epochs: int = 120
    learning_rate: float = 6e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # "cosine" or "constant"
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    # Two different moving averages share the word "EMA":
    # - weight_ema averages the network's *weights* over training steps; the averaged copy
    #   (BN statistics and quantizer ranges included) is what is validated and saved (0: off).
    # - ema_decay (below, a QAT key) is the decay of each quantizer's *range observer*, the
    #   running min/max of the current it quantizes.
    weight_ema: float = 0.995
    scale_weights: list = field(default_factory=lambda: [1.0, 0.5, 0.25])
    # What the network learns from: "supervised" (the flow labels), "contrast" (the events alone,
    # by contrast maximization; the labels are never read, so data without flow trains too) or
    # "both", each term weighted by its *_loss_weight. smoothness_weight weighs the contrast loss's
    # smoothness term, which fills in the pixels without events (snn.evaluation.contrast).
    loss: str = "supervised"
    flow_loss_weight: float = 1.0
    contrast_loss_weight: float = 1.0
    smoothness_weight: float = 0.1
    # Weight of a penalty on the flow's divergence in the contrast loss (0: off), against flows that
    # draw the events onto their edges, sharper than the true motion does (README, Learning without labels).
    divergence_weight: float = 0.0
    # Windows of events the contrast loss warps along each predicted flow: the window the flow is of
    # and the k - 1 before it, the flow taken as constant over them. A longer span gives the true flow
    # a sharper image than any short one (README, Learning without labels); the network still reads
    # only its own window (state_windows decides what it carries over).
    contrast_windows: int = 1
    # How those windows' events move: "constant" along the flow of the last window, or "chained": the
    # network also runs on each window before it (from rest, with gradient) and every event moves
    # along its own window's flow, then through each later one along that window's (README, Learning
    # without labels). Chained costs contrast_windows forward passes a sample.
    contrast_flow: str = "constant"

    # Quantization-aware training (see QAT_GUIDE.md).
    quantization_enabled: bool = False
    initial_bit_width: int = 8
    binarize: bool = False  # 1-bit: sign x scale for weights and currents
    quant_weight: float = 0.001  # weight of the weight-quantization-error penalty
    # Distillation: a loss between the model's flow and its teacher's at every scale, weighted by
    # distill_weight (0: off). The teacher is the checkpoint a fine-tune starts from; the run records
    # its path in distill_from (set it by hand only to pick another teacher).
    distill_weight: float = 0.0
    distill_from: str | None = None
    # Keeping layers alive at low bits: a penalty, weighted by firing_rate_weight (0: off), on every
    # spiking layer whose mean firing rate leaves firing_rate_band = [low, high].
    firing_rate_weight: float = 0.0
    firing_rate_band: list = field(default_factory=lambda: [0.002, 0.5])
    # {epoch: bits} or {epoch: "W2A4"} (weights 2 bit, currents 4 bit); overrides initial_bit_width.
    quantization_schedule: dict | None = None
    # Bits of the current quantizers (the input current of every spiking neuron); None: the same as
    # the weights'. With initial_bit_width 1 and current_bits 4 the network is W1A4.
    current_bits: int | None = None
    freeze_observers_epoch: int | None = None  # stop range tracking from this epoch on
    ema_decay: float = 0.99  # range observers' moving-average decay (not weight_ema, see above)
    learn_scale: bool = False  # learned step sizes (LSQ) for the currents
    # How a current quantizer's observed range becomes its step: "maxabs" covers max(|min|, |max|);
    # "positive" covers the positive side only, where the thresholds are (negative currents clip).
    current_range: str = "maxabs"
    # Snap each spiking layer's current step so its threshold falls on a rounding boundary: with
    # one SNN step per window, a quantized current then fires exactly when the unquantized one would.
    align_current_steps: bool = False
    scale_lr_multiplier: float = 100.0  # the learned steps' LR relative to learning_rate
    # The batch-norm shift and scale before each spiking layer act as its per-channel threshold and
    # gain; their LR relative to learning_rate (the guide's low-bit rates barely move them).
    norm_lr_multiplier: float = 1.0
    # The batch norms normalize with their running statistics while training and never update them
    # (eval mode): a fine-tune keeps the statistics its start model was trained with, instead of
    # re-estimating them from the new data's crops and batches.
    freeze_norm_stats: bool = False
    # The same from this epoch on (counted from 0, like freeze_observers_epoch; null: never): the
    # statistics first follow the new weights, then hold still. At 1 bit, statistics that keep moving
    # tip whole frames between two levels of error from one epoch to the next (QAT_GUIDE.md).
    freeze_norm_stats_epoch: int | None = None
    first_last_bits: int | None = 8  # stem and flow heads never go below this
    # Binary currents (W1A1): each spiking layer takes the sign against a learned threshold per
    # channel that starts where the neuron fires (ReActNet's RSign), not against zero.
    binary_threshold: bool = False
    # The residual blocks add their input spikes to the current before its quantizer, not after:
    # what keeps the shortcut alive under binary or ternary currents.
    shortcut_before_quant: bool = False
    calibration_batches: int = 20  # batches that initialise the ranges before QAT starts

    # Runtime and logging.
    seed: int = 0
    device: str = "auto"
    amp: str = "none"  # mixed precision on the convolutions: "none", "bf16" (CPU or GPU) or "fp16" (CUDA)
    log_every: int = 20  # steps between TensorBoard scalar points
    image_every: int = 2  # epochs between TensorBoard flow images (0: never)
    checkpoint_dir: str = "checkpoints/V2"
    log_dir: str = "logs/V2"

    def model_args(self) -> dict[str, Any]:
        """Constructor arguments of the model, as stored in checkpoints."""
        weights, currents = self.widths_at(0)
        return {
            "base_ch": self.base_ch,
            "num_bins": self.num_bins,
            "in_channels": num_input_channels(self.representation),
            "tau": self.tau,
            "learn_leak": self.learn_leak,
            "input_norm": self.input_norm,
            "input_bins": self.input_bins,
            "bins_per_step": self.bins_per_step,
            "threshold": self.threshold,
            "reset": self.reset,
            "surrogate_alpha": self.surrogate_alpha,
            "flow_scale": self.flow_scale,
            "quantize": self.quantization_enabled,
            "bit_width": weights,
            "current_bits": None if currents == weights else currents,  # None: the model's default
            "binarize": self.binarize,
            "ema_decay": self.ema_decay,
            "learn_scale": self.learn_scale,
            "current_range": self.current_range,
            "first_last_bits": self.first_last_bits,
            "align_current_steps": self.align_current_steps,
            "bottleneck_dilation": list(self.bottleneck_dilation),
            "head_input": self.head_input,
            "global_context": self.global_context,
            "binary_threshold": self.binary_threshold,
            "shortcut_before_quant": self.shortcut_before_quant,
            "integer_input": self.representation == "counts",
        }

    def widths_at(self, epoch: int) -> tuple[int, int]:
        """(weight bits, current bits) for ``epoch``: the schedule's entry (or initial_bit_width),
        ``current_bits`` where set; (1, 1) when binarized."""
        if self.binarize:
            return 1, 1
        value: Any = self.initial_bit_width
        if self.quantization_schedule:
            starts = [e for e in sorted(self.quantization_schedule) if e <= epoch]
            value = self.quantization_schedule[starts[-1] if starts else min(self.quantization_schedule)]
        weights, currents = parse_widths(value)
        if currents is None:
            currents = weights if self.current_bits is None else self.current_bits
        return weights, currents

    def late_crop_epoch(self) -> int | None:
        """The first (0-based) epoch of ``late_crop_size`` crops; None when there is no late phase."""
        if self.late_crop_size is None:
            return None
        return min(self.num_epochs - 1, math.ceil((1 - self.late_crop_fraction) * self.num_epochs - 1e-9))

    def sample_windows(self) -> int:
        """Consecutive windows of a sequence in one training sample: enough for the carried state
        (``state_windows``) and for the contrast loss (``contrast_windows``)."""
        return max(self.state_windows, self.contrast_windows)

    def crop_at(self, epoch: int) -> int | None:
        """The training crop of (0-based) ``epoch``."""
        start = self.late_crop_epoch()
        return self.late_crop_size if start is not None and epoch >= start else self.crop_size

    def bit_width_at(self, epoch: int) -> int:
        """The weights' bit width for ``epoch`` (see ``widths_at``)."""
        return self.widths_at(epoch)[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (it is stored in checkpoints and written as YAML)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values = {k: (v.to_dict() if k == "synthetic" else copy.deepcopy(v)) for k, v in values.items()}
        return values


_CHOICES = {
    "model": tuple(MODELS),
    "dataset": ("synthetic", "blinksim"),
    "representation": REPRESENTATIONS,
    "reset": RESET_MODES,
    "lr_schedule": ("cosine", "constant"),
    "current_range": ("maxabs", "positive"),
    "data_format": FORMATS,
    "amp": AMP_MODES,
    "mvsec_dt": PROTOCOLS,
}
_POSITIVE = (
    "base_ch",
    "num_bins",
    "state_windows",
    "contrast_windows",
    "batch_size",
    "num_epochs",
    "learning_rate",
    "tau",
    "threshold",
    "scale_lr_multiplier",
    "norm_lr_multiplier",
)
_NON_NEGATIVE = (
    "num_workers",
    "weight_decay",
    "warmup_epochs",
    "grad_clip",
    "log_every",
    "image_every",
    "calibration_batches",
)


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


def parse_widths(value: Any) -> tuple[int, int | None]:
    """A bit-width entry: ``4`` -> (4, None: currents as configured), ``"W2A4"`` -> (2, 4)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*[wW](\d+)\s*[aA](\d+)\s*", value)
        if m is None:
            raise ValueError(f"expected bits (e.g. 4) or 'W<bits>A<bits>' (e.g. 'W2A4'), got {value!r}")
        return int(m.group(1)), int(m.group(2))
    return value, None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _takes_float(annotation: Any) -> bool:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return float in typing.get_args(annotation)
    return annotation is float


def validate(cfg: Config, source: str = "config") -> Config:
    """Check types and values; floats given as ints or numeric strings are converted, nested sections built.

    YAML 1.1 reads ``1e-3`` (no dot) as a string; a float key accepts it.
    """
    if not isinstance(cfg.synthetic, SyntheticDataset):
        try:
            cfg.synthetic = SyntheticDataset.from_dict(cfg.synthetic, f"{source}, key 'synthetic'")
        except ValueError as exc:
            raise ConfigError(f"{source}: key 'synthetic': {exc}") from None
    for name, annotation in typing.get_type_hints(Config).items():
        value = getattr(cfg, name)
        if isinstance(value, str) and _takes_float(annotation):
            try:
                value = float(value)
                setattr(cfg, name, value)
            except ValueError:
                pass  # reported as a wrong type below
        if not _type_ok(value, annotation):
            expected = getattr(annotation, "__name__", str(annotation))
            raise ConfigError(f"{source}: key '{name}' must be {expected}, got {value!r} ({type(value).__name__})")
        if annotation is float and isinstance(value, int):
            setattr(cfg, name, float(value))
        # NaN passes every range check below (all comparisons with it are false), and no float key
        # has a use for infinity; both are caught here, by name, not by torch an epoch later.
        if _takes_float(annotation) and isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: key '{name}' must be a finite number, got {value!r}")
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"{source}: key '{key}' must be one of {choices}, got {getattr(cfg, key)!r}")
    for key in _POSITIVE:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{source}: key '{key}' must be > 0, got {getattr(cfg, key)!r}")
    for key in _NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{source}: key '{key}' must be >= 0, got {getattr(cfg, key)!r}")
    samples = cfg.epoch_samples
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ConfigError(f"{source}: key 'epoch_samples' must be a positive integer or null, got {samples!r}")
    for key in ("crop_size", "late_crop_size"):
        size = getattr(cfg, key)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 8):
            raise ConfigError(f"{source}: key '{key}' must be a positive multiple of 8, got {size!r}")
    if cfg.bins_per_step < 1 or cfg.num_bins % cfg.bins_per_step:
        raise ConfigError(
            f"{source}: key 'bins_per_step' must divide num_bins = {cfg.num_bins}, got {cfg.bins_per_step}"
        )
    steps = cfg.num_bins // cfg.bins_per_step
    if not 1 <= cfg.input_bins <= steps:
        raise ConfigError(
            f"{source}: key 'input_bins' must lie in [1, num_bins / bins_per_step = {steps}], got {cfg.input_bins}"
        )
    dil = cfg.bottleneck_dilation
    if len(dil) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dil):
        raise ConfigError(f"{source}: key 'bottleneck_dilation' must be two integers >= 1, got {dil!r}")
    if not 1 <= cfg.zoom_max <= 8:
        raise ConfigError(f"{source}: key 'zoom_max' must lie in [1, 8], got {cfg.zoom_max}")
    if not 0 < cfg.event_keep_min <= 1:
        raise ConfigError(f"{source}: key 'event_keep_min' must lie in (0, 1], got {cfg.event_keep_min}")
    if not 0 <= cfg.empty_window_prob < 1:
        raise ConfigError(f"{source}: key 'empty_window_prob' must lie in [0, 1), got {cfg.empty_window_prob}")
    if cfg.event_keep_min < 1 and cfg.representation != "counts":
        raise ConfigError(
            f"{source}: key 'event_keep_min' thins event counts; representation {cfg.representation!r} has none"
        )
    if cfg.head_input not in ("spikes", "current"):
        raise ConfigError(f"{source}: key 'head_input' must be 'spikes' or 'current', got {cfg.head_input!r}")
    if cfg.learn_leak and cfg.tau not in (2, 4, 8, 16):
        raise ConfigError(f"{source}: key 'learn_leak' needs tau = 2, 4, 8 or 16 to start from, got tau {cfg.tau}")
    if not 0 < cfg.late_crop_fraction <= 1:
        raise ConfigError(f"{source}: key 'late_crop_fraction' must lie in (0, 1], got {cfg.late_crop_fraction}")
    for key in ("freeze_observers_epoch", "freeze_norm_stats_epoch"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 0:
            raise ConfigError(f"{source}: key '{key}' must be an epoch >= 0 or null, got {getattr(cfg, key)}")
    if not 0 <= cfg.weight_ema < 1:
        raise ConfigError(f"{source}: key 'weight_ema' must lie in [0, 1), got {cfg.weight_ema}")
    if not 0 < cfg.min_lr_ratio <= 1:
        raise ConfigError(f"{source}: key 'min_lr_ratio' must lie in (0, 1], got {cfg.min_lr_ratio}")
    if not cfg.scale_weights or not all(_finite_number(w) for w in cfg.scale_weights):
        raise ConfigError(
            f"{source}: key 'scale_weights' must be a non-empty list of finite numbers, got {cfg.scale_weights!r}"
        )
    _validate_quantization(cfg, source)
    return cfg


def _validate_quantization(cfg: Config, source: str) -> None:
    from snn.quantization.quantization_aware import check_bit_width

    def bits(key: str, value: Any) -> None:
        try:
            check_bit_width(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: key '{key}': {exc}") from None

    bits("initial_bit_width", cfg.initial_bit_width)
    if cfg.first_last_bits is not None:
        bits("first_last_bits", cfg.first_last_bits)
    if cfg.current_bits is not None:
        bits("current_bits", cfg.current_bits)
        if cfg.binarize:
            raise ConfigError(
                f"{source}: key 'current_bits' cannot go with binarize: true, which binarizes weights and "
                "currents (W1A1); for binary weights with wider currents set initial_bit_width: 1, binarize: false"
            )
    for epoch, b in (cfg.quantization_schedule or {}).items():
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ConfigError(f"{source}: key 'quantization_schedule': epoch {epoch!r} must be an integer >= 0")
        try:
            weights, currents = parse_widths(b)
        except ValueError as exc:
            raise ConfigError(f"{source}: key 'quantization_schedule[{epoch}]': {exc}") from None
        bits(f"quantization_schedule[{epoch}]", weights)
        if currents is not None:
            bits(f"quantization_schedule[{epoch}]", currents)
    late = sorted(e for e in (cfg.quantization_schedule or {}) if e >= cfg.num_epochs)
    if late:
        raise ConfigError(
            f"{source}: key 'quantization_schedule' switches bit width at epoch(s) {late}, but num_epochs is "
            f"{cfg.num_epochs}: those phases would never run (give more epochs or an earlier schedule)"
        )
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"{source}: key 'ema_decay' must lie in [0, 1), got {cfg.ema_decay}")
    if cfg.distill_weight < 0:
        raise ConfigError(f"{source}: key 'distill_weight' must be >= 0, got {cfg.distill_weight}")
    if cfg.loss not in LOSSES:
        raise ConfigError(f"{source}: key 'loss' must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
    for key in ("flow_loss_weight", "contrast_loss_weight", "smoothness_weight", "divergence_weight"):
        if not (_finite_number(getattr(cfg, key)) and getattr(cfg, key) >= 0):
            raise ConfigError(f"{source}: key '{key}' must be a finite number >= 0, got {getattr(cfg, key)!r}")
    if cfg.contrast_flow not in CONTRAST_FLOWS:
        raise ConfigError(
            f"{source}: key 'contrast_flow' must be one of {', '.join(CONTRAST_FLOWS)}, got {cfg.contrast_flow!r}"
        )
    if cfg.contrast_flow == "chained" and (cfg.contrast_windows < 2 or cfg.state_windows > 1):
        raise ConfigError(
            f"{source}: key 'contrast_flow' is 'chained', which needs contrast_windows >= 2 (got "
            f"{cfg.contrast_windows}) and runs each window from rest (state_windows: 1, got {cfg.state_windows})"
        )
    if cfg.contrast_windows > 1 and cfg.loss == "supervised":
        raise ConfigError(
            f"{source}: key 'contrast_windows' is {cfg.contrast_windows}, but loss is 'supervised', which warps "
            "no events (use loss: contrast or both, or contrast_windows: 1)"
        )
    if cfg.firing_rate_weight < 0:
        raise ConfigError(f"{source}: key 'firing_rate_weight' must be >= 0, got {cfg.firing_rate_weight}")
    band = cfg.firing_rate_band
    if not (len(band) == 2 and all(_finite_number(v) for v in band) and 0 < band[0] < band[1] <= 1):
        raise ConfigError(f"{source}: key 'firing_rate_band' must be [low, high] with 0 < low < high <= 1, got {band}")
    if cfg.quant_weight < 0:
        raise ConfigError(f"{source}: key 'quant_weight' must be >= 0, got {cfg.quant_weight}")


def data_root_overrides(data_root: str | Path | None) -> dict[str, Any]:
    """Config overrides for an explicit data root (None: none).

    An explicit folder is read as it is (the synthetic set is BlinkSim layout C too);
    nothing is ever generated into a user's folder.
    """
    if data_root is None:
        return {}
    return {"data_root": str(data_root), "dataset": "blinksim"}


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
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if values is None:
        raise ConfigError(f"{path}: the config file is empty (give at least 'base: event_snn_lite.yaml')")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return values


def base_candidates(path: Path, base: str | Path) -> list[Path]:
    """Where ``base: <base>`` of the config ``path`` may lie, in order: relative to that config, then
    among the shipped configs (so ``base: event_snn_lite.yaml`` works from any folder)."""
    tried = [(path.parent / base).resolve()]
    if not Path(base).is_absolute():
        tried.append((CONFIG_DIR / base).resolve())
    return list(dict.fromkeys(tried))


def read_with_base(path: str | Path, _seen: tuple = ()) -> dict[str, Any]:
    """A config's values on top of those of its ``base`` file (see ``base_candidates``)."""
    path = Path(path)
    values = read_yaml(path)
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: key 'base' must be the path of a YAML config, got {base!r}")
    tried = base_candidates(path, base)
    base_path = next((p for p in tried if p.is_file()), None)
    if base_path is None:
        raise ConfigError(f"{path}: base config {base!r} not found; looked for {' and '.join(map(str, tried))}")
    if base_path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to {base_path}")
    return {**read_with_base(base_path, (*_seen, base_path)), **values}


def load_config(
    path: str | Path = DEFAULT_CONFIG,
    overrides: dict[str, Any] | None = None,
    scale_schedule: bool = True,
    settings: dict[str, Any] | None = None,
    source: str | None = None,
) -> Config:
    """Read a YAML config (and its ``base``), apply ``settings`` then ``overrides``, validate.

    ``settings`` are keys set explicitly (``--set KEY=VALUE``): None there is a value (``crop_size:
    null``). In ``overrides`` (the named flags, which win) None means "not given" and is ignored.
    ``source`` names the values in errors (default: the path).

    When ``num_epochs`` is overridden and the YAML's ``quantization_schedule`` is not, the schedule
    is scaled to the new epoch budget (``scale_schedule=False``: kept as it is, and then an error if
    a switch falls beyond the budget) so that no phase is silently dropped.
    """
    source = str(path) if source is None else source
    values = read_with_base(path)
    given = {**(settings or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    schedule = values.get("quantization_schedule")
    if scale_schedule and schedule and "num_epochs" in given and "quantization_schedule" not in given:
        values["quantization_schedule"] = scaled_schedule(
            schedule, values.get("num_epochs", Config.num_epochs), given["num_epochs"], source
        )
    values.update(given)
    return config_from_dict(values, source)


def scaled_schedule(schedule: dict, from_epochs: Any, to_epochs: int, source: str = "config") -> dict:
    """``{epoch: bits}`` stretched from ``from_epochs`` to ``to_epochs``, keeping every phase.

    Switch epochs scale in proportion and round: {0: 8, 30: 4, 60: 2} over 90 epochs becomes
    {0: 8, 8: 4, 16: 2} over 24. Too few epochs for one epoch per phase is an error.
    """
    if not isinstance(schedule, dict) or not all(isinstance(e, int) for e in schedule):
        return schedule  # validation reports it
    if not isinstance(from_epochs, int) or from_epochs == to_epochs or from_epochs <= 0:
        return schedule
    scaled = {round(e * to_epochs / from_epochs): b for e, b in sorted(schedule.items())}
    if len(scaled) < len(schedule) or max(scaled) >= to_epochs:
        raise ConfigError(
            f"{source}: quantization_schedule {schedule} has {len(schedule)} phases, which do not fit in "
            f"{to_epochs} epoch(s): give at least {len(schedule)} epochs"
        )
    logger.info("quantization_schedule scaled from %d to %d epochs: %s -> %s", from_epochs, to_epochs, schedule, scaled)
    return scaled


def config_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Config:
    """The config a checkpoint was trained with; keys this version does not know are dropped with a warning."""
    stored = dict(ckpt["config"])
    known = {f.name for f in dataclasses.fields(Config)}
    dropped = sorted(set(stored) - known)
    if dropped:  # a checkpoint from an older or newer version of the code: keep what we understand
        logger.warning("%s: ignoring stored config keys this version does not know: %s", path, ", ".join(dropped))
    return config_from_dict({k: v for k, v in stored.items() if k in known}, f"{path} (stored config)")


# Keys that may differ when a run is continued: the epoch budget, and settings that do not change the numbers
# (the folders too: a run moved off a full disk continues where it now is).
RESUMABLE_CHANGES = ("num_epochs", "device", "num_workers", "log_every", "image_every", "checkpoint_dir", "log_dir")


_PATH_KEYS = ("data_root", "checkpoint_dir", "log_dir")


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for every key but ``RESUMABLE_CHANGES`` whose value differs (paths compared resolved)."""
    a, b = old.to_dict(), new.to_dict()

    def same(k: str) -> bool:
        if k in _PATH_KEYS:
            return Path(a[k]).resolve() == Path(b[k]).resolve()
        return a[k] == b[k]

    return {k: (a[k], b[k]) for k in a if k not in RESUMABLE_CHANGES and not same(k)}


def save_config(cfg: Config, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(path)
