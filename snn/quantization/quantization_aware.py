"""QuantizationAwareLayer: fake-quantizes the current that enters spiking neurons.

Per-tensor symmetric quantization around zero, built from small parts:

- a range observer: ``running_min`` / ``running_max`` follow an exponential
  moving average while training (the first batch initialises them) and are
  frozen in eval mode or after ``freeze_observer()``;
- a scale rule: ``scale = max(|running_min|, |running_max|) / qmax`` with
  ``qmax = 2**(b-1) - 1`` (8 -> 127, 4 -> 7, 2 -> 1: ternary), or, with
  ``learn_scale=True``, a learned step size (LSQ, Esser et al. 2019) that the
  observed range initialises;
- a rounding step with a straight-through estimator: PyTorch's fake-quant
  kernels, whose gradient is 1 inside the clipping range and 0 outside.

At 1 bit (or ``binarize=True``) the output is ``sign(x) * scale`` with a clipped
straight-through gradient (1 where |x| <= the clip level, else 0); the binary
scale is the running mean of |x| (as in XNOR-Net), or learned, and never below
``binary_floor``, the least current that lets the neuron behind it fire. With
``binary_threshold=True`` the sign is taken of ``x - t`` with a learned threshold ``t``
per channel (ReActNet's RSign): a binary current then tells the neuron whether its input
reached ``t``, not whether it was positive, and the integer export folds ``t`` into the
per-channel offset of its comparison at no cost.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from snn.quantization.torch_ops import fake_quantize, learnable_fake_quantize
from snn.utils.distributed import mean_over_ranks, reduce_observation
from snn.utils.runtime import at_least_float32

MIN_BITS, MAX_BITS = 1, 16
# How the observed range becomes a step: "maxabs" covers max(|min|, |max|); "positive" covers the
# positive side only (negative currents clip at minus it), for currents in front of a threshold.
RANGE_MODES = ("maxabs", "positive")


def check_bit_width(bit_width) -> int:
    if isinstance(bit_width, bool) or not isinstance(bit_width, int) or not MIN_BITS <= bit_width <= MAX_BITS:
        raise ValueError(f"bit_width must be an integer in {MIN_BITS}..{MAX_BITS}, got {bit_width!r}")
    return bit_width


def qmax_for(bit_width: int) -> int:
    """Largest code of the signed narrow range: 8 -> 127, 4 -> 7, 2 -> 1; 1 bit -> 1 (binary)."""
    return max(1, 2 ** (bit_width - 1) - 1)


class QuantizerStateError(ValueError):
    """A quantizer was asked to run in a state it cannot be in honestly (e.g. evaluated without a range)."""


def lsq_grad_factor(x: torch.Tensor, qmax: int) -> float:
    """LSQ's gradient scale for a step, ``1 / sqrt(N * qmax)`` with N the elements of one sample:
    it keeps the step's updates in proportion to the weights' whatever the layer's size."""
    return 1.0 / math.sqrt(x.numel() / max(1, x.shape[0]) * qmax)


class _BinarizeSTE(torch.autograd.Function):
    """sign(x) * scale; the gradient passes where |x| <= clip (clipped STE). The scale's
    gradient is the LSQ one, ``sum(grad * sign(x))``, times ``grad_factor``."""

    @staticmethod
    def forward(ctx, x, scale, clip, grad_factor):
        ctx.save_for_backward(x, scale, clip)
        ctx.grad_factor = grad_factor
        return torch.where(x >= 0, scale, -scale)

    @staticmethod
    def backward(ctx, grad_out):
        x, scale, clip = ctx.saved_tensors
        grad_x = grad_out * (x.abs() <= clip).to(grad_out.dtype)
        grad_scale = None
        if ctx.needs_input_grad[1]:
            signed = (grad_out * torch.where(x >= 0, 1.0, -1.0)).sum() * ctx.grad_factor
            grad_scale = signed.reshape(scale.shape)
        return grad_x, grad_scale, None, None


class QuantizationAwareLayer(nn.Module):
    """Fake-quantize a tensor to ``bit_width`` bits (per tensor, symmetric).

    Args:
        bit_width: 1..16; 1 means binary.
        binarize: force binary output whatever ``bit_width`` says.
        ema_decay: weight of the old range in the moving average.
        learn_scale: learn the step size (LSQ) instead of deriving it from the range.
        range_mode: "maxabs" (the step covers the larger side of the range) or "positive" (it
            covers the positive side; more negative values clip).
        channels, binary_threshold: with ``binary_threshold``, a learned threshold per channel
            (dimension 1 of the input, ``channels`` of them) that binary currents take the sign
            against; it starts at zero (the plain sign) until ``init_binary_threshold`` sets it.
            Multi-bit currents ignore it.
    """

    def __init__(
        self,
        bit_width: int = 8,
        binarize: bool = False,
        ema_decay: float = 0.99,
        learn_scale: bool = False,
        range_mode: str = "maxabs",
        channels: int | None = None,
        binary_threshold: bool = False,
    ) -> None:
        super().__init__()
        if binary_threshold and (not isinstance(channels, int) or channels < 1):
            raise ValueError(f"a binary threshold needs the number of channels (got {channels!r})")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay!r}")
        if range_mode not in RANGE_MODES:
            raise ValueError(f"range_mode must be one of {RANGE_MODES}, got {range_mode!r}")
        self.range_mode = range_mode
        self.bit_width = check_bit_width(bit_width)
        self.binarize = bool(binarize)
        self.ema_decay = float(ema_decay)
        self.learn_scale = bool(learn_scale)
        self.enabled = True
        self.observer_enabled = True
        self.calibrating = False
        self._calibration_passes = 0
        self.register_buffer("running_min", torch.zeros(()))
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("running_absmean", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # The learned step (used only with learn_scale); re-seeded from the range when needed.
        self.step = nn.Parameter(torch.ones(()))
        self.register_buffer("step_initialized", torch.zeros((), dtype=torch.bool))
        self.binary_threshold = nn.Parameter(torch.zeros(channels)) if binary_threshold else None
        # The smallest binary step: the model sets it to the least current with which its neuron
        # can ever fire (below it a +-step current keeps the layer silent whatever comes in).
        self.binary_floor = 0.0
        # The threshold of the neuron this current feeds, when the model aligns the grid to it
        # (``align_step``); None: the step is used as learned or observed.
        self.align_to: float | None = None
        # Host-side copies of the two flags once they are True, so that a forward pass does not
        # read a device buffer (a GPU sync) every step; False means "read the buffer".
        self._range_known = False
        self._step_known = False

    @property
    def has_range(self) -> bool:
        if not self._range_known:
            self._range_known = bool(self.initialized)
        return self._range_known

    @property
    def has_step(self) -> bool:
        if not self._step_known:
            self._step_known = bool(self.step_initialized)
        return self._step_known

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._range_known = self._step_known = False  # the loaded buffers decide

    # ------------------------------------------------------------ switches
    # The one switch API; snn.quantization.control applies it to every quantizer of a model.
    @property
    def is_binary(self) -> bool:
        return self.binarize or self.bit_width == 1

    @property
    def qmax(self) -> int:
        return qmax_for(self.bit_width)

    def set_bit_width(self, bit_width: int) -> None:
        bit_width = check_bit_width(bit_width)
        if bit_width != self.bit_width:
            self.bit_width = bit_width
            self._step_from_range()  # a new grid needs a new step, sized from the training range

    def enable_quantization(self, enabled: bool = True) -> None:
        """``False``: pass the current through unchanged."""
        self.enabled = enabled

    def freeze_observer(self, frozen: bool = True) -> None:
        """``True``: keep the observed range while training (it never moves in eval mode)."""
        self.observer_enabled = not frozen

    def start_calibration(self) -> None:
        """Forget the range; until ``end_calibration`` every forward pass, in eval mode too,
        adds its range to a plain mean over the passes seen."""
        self.initialized.fill_(False)
        self._range_known = False
        self._forget_step()
        self.calibrating = True
        self._calibration_passes = 0

    def end_calibration(self) -> None:
        self.calibrating = False
        self._step_from_range()  # learned steps start from the calibrated range

    def _forget_step(self) -> None:
        self.step_initialized.fill_(False)
        self._step_known = False

    def _step_from_range(self) -> None:
        """Seed the learned step from the observed range and mean |x| (training or calibration
        batches only); forget it when nothing has been observed yet."""
        if self.learn_scale and self.has_range:
            self._set_step(self._step_seed(self.running_absmean))
        else:
            self._forget_step()

    @torch.no_grad()
    def init_binary_threshold(self, value: float) -> None:
        """Start every channel's binary threshold at ``value`` (no-op without one)."""
        if self.binary_threshold is not None:
            self.binary_threshold.fill_(value)

    def sign_input(self, x: torch.Tensor) -> torch.Tensor:
        """What a binary current takes the sign of: ``x`` less its channel's threshold, if any."""
        if self.binary_threshold is None:
            return x
        t = self.binary_threshold.to(x.dtype)
        return x - t.view(1, -1, *([1] * (x.dim() - 2)))

    # --------------------------------------------------------------- range
    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        # Several processes (DDP) observe their own batches; all of them apply the same reduced one.
        lo, hi, absmean = reduce_observation(x.min(), x.max(), x.abs().mean())
        if not self.has_range:
            self.running_min.copy_(lo)
            self.running_max.copy_(hi)
            self.running_absmean.copy_(absmean)
            self.initialized.fill_(True)
            self._range_known = True
            return
        if self.calibrating:  # the n-th pass weighs 1/n: a plain mean
            self._calibration_passes += 1
            d = self._calibration_passes / (self._calibration_passes + 1)
        else:
            d = self.ema_decay
        self.running_min.mul_(d).add_((1 - d) * lo)
        self.running_max.mul_(d).add_((1 - d) * hi)
        self.running_absmean.mul_(d).add_((1 - d) * absmean)

    def range_scale(self) -> torch.Tensor:
        """The scale the observed range gives (no learning)."""
        if self.is_binary:
            return self.running_absmean.clamp_min(max(1e-8, self.binary_floor))
        if self.range_mode == "positive":
            return (self.running_max.clamp_min(0) / self.qmax).clamp_min(1e-8)
        amax = torch.maximum(self.running_min.abs(), self.running_max.abs())
        return (amax / self.qmax).clamp_min(1e-8)

    def scale(self) -> torch.Tensor:
        if self.learn_scale:
            if self.is_binary:
                return self.step.abs().clamp_min(max(1e-8, self.binary_floor))
            return self.align_step(self.step.abs().clamp_min(1e-8))
        return self.range_scale() if self.is_binary else self.align_step(self.range_scale())

    def align_step(self, step: torch.Tensor) -> torch.Tensor:
        """With ``align_to`` (a threshold theta): the step theta / (k + 1/2), k = floor(theta / step)
        but at most qmax - 1, so that theta falls on a rounding boundary within reach of the codes and
        a current fires exactly when it would unquantized (code >= k + 1 iff x >= theta). Otherwise a
        grid off the threshold moves it by up to half a step, which at 4 bits was up to a third of
        the threshold. The gradient passes to the step straight through."""
        if self.align_to is None:
            return step
        theta = self.align_to
        snapped = theta / (torch.floor(theta / step.detach()).clamp_max(self.qmax - 1) + 0.5)
        return step + (snapped - step).detach()

    def _step_seed(self, absmean: torch.Tensor) -> torch.Tensor:
        """LSQ's initial step 2*mean|x|/sqrt(qmax), or the range scale when it is smaller (binary: the range scale)."""
        if self.is_binary:
            return self.range_scale()
        return torch.minimum(2 * absmean / math.sqrt(self.qmax), self.range_scale())

    @torch.no_grad()
    def _set_step(self, seed: torch.Tensor) -> None:
        self.step.copy_(seed.clamp_min(1e-6))
        self.step_initialized.fill_(True)
        self._step_known = True

    # ------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        # Rounding and ranges in float32, also under autocast: the grid must be the exported one.
        with torch.autocast(x.device.type, enabled=False):
            return self._quantize(at_least_float32(x))

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        # Ranges and steps come from training or calibration batches; an evaluation only reads them.
        learning = self.training or self.calibrating
        if self.is_binary:  # its range, mean |x| and clip level are those of what the sign reads
            x = self.sign_input(x)
        if self.calibrating or (self.training and (self.observer_enabled or not self.has_range)):
            self.observe(x)
        elif not self.has_range:
            raise QuantizerStateError(
                "a current quantizer has no observed range: calibrate the model on training batches "
                "(snn.quantization.control.calibrating) or train it a step before evaluating it"
            )
        if self.learn_scale and not self.has_step:
            if not learning:
                raise QuantizerStateError(
                    "a current quantizer has no learned step: calibrate the model on training batches "
                    "(snn.quantization.control.calibrating) or train it a step before evaluating it"
                )
            self._set_step(self._step_seed(mean_over_ranks(x.detach().abs().mean())))  # the same on every rank
        if self.is_binary:
            return self._binary(x)
        if self.learn_scale:
            grad_factor = lsq_grad_factor(x, self.qmax)
            return learnable_fake_quantize(x, self.scale(), self.qmax, grad_factor)
        return fake_quantize(x, self.scale().float(), self.qmax)  # the scale stays a tensor: no device sync

    def _binary(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale().to(x.dtype)
        # Clip the straight-through gradient at the largest magnitude seen in range.
        clip = torch.maximum(self.running_min.abs(), self.running_max.abs()).clamp_min(scale).detach()
        return _BinarizeSTE.apply(x, scale, clip, lsq_grad_factor(x, self.qmax))

    def extra_repr(self) -> str:
        kind = "binary" if self.is_binary else f"{self.bit_width} bit"
        if self.binary_threshold is not None:
            kind += f", {self.binary_threshold.numel()} binary thresholds"
        return f"{kind}, ema_decay={self.ema_decay}, learn_scale={self.learn_scale}, enabled={self.enabled}"
