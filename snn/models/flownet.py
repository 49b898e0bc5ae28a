"""EventSNNFlowNetLiteV2: a spiking encoder-decoder that estimates optical flow from events.

Input: [B, T, C, H, W] event tensors (per-bin ON/OFF counts, C=2); each of the
T time bins is one SNN time step (with ``bins_per_step`` g, g consecutive bins stacked as
channels make one step, T/g steps in all; with ``input_bins`` k > 1 a step also reads the
k - 1 steps' bins before it, so the stem takes k*g*C channels). Output: flow in pixels over the input
window, [B, 2, H, W].

    stem   C  -> c    (H)        SpikingConv2d
    enc1   c  -> 2c   (H/2)      SpikingConvBlock, stride 2
    enc2   2c -> 4c   (H/4)      SpikingConvBlock, stride 2
    enc3   4c -> 4c   (H/8)      SpikingConvBlock, stride 2
    res1-2 4c -> 4c   (H/8)      residual SpikingConvBlocks (dilated by ``bottleneck_dilation``)
    dec3   4c -> 4c   (H/4)      SpikingConvTranspose2d, then concat enc2
    dec2   8c -> 2c   (H/2)      SpikingConvTranspose2d, then concat enc1
    dec1   4c -> c    (H)        SpikingConvTranspose2d, then concat stem

Flow heads are plain convolutions on decoder spikes whose output currents a
non-spiking integrator averages over time. Each finer head predicts a residual
on the upsampled coarser flow, so the network refines coarse-to-fine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from snn.models.integer import (
    INPUT_MAX,
    RATE_BITS,
    FoldedLayer,
    FoldError,
    fold_layer,
    frame_rates,
    integer_conv,
)
from snn.models.layers import (
    QuantSpec,
    SpikingConv2d,
    SpikingConvBlock,
    SpikingConvTranspose2d,
    into_quantizer,
    make_conv,
    make_quant_layer,
    seq_apply,
)
from snn.models.neurons import LIFNeuron, NonSpikingIntegrator
from snn.quantization import control

# A binary current of +-step fires its neuron only if step reaches the least firing input; the
# margin makes a current that stays positive over all time bins fire at the last one for sure.
BINARY_FLOOR_MARGIN = 1.01
HEAD_INPUTS = ("spikes", "current")


class FlowHead(nn.Module):
    """3x3 convolution on spikes -> time-integrated 2-channel flow."""

    def __init__(self, in_channels: int, quantize: bool, quant: QuantSpec | None):
        super().__init__()
        self.conv = make_conv(quantize, quant, in_channels=in_channels, out_channels=2, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.weight)  # start at zero flow: a sane first guess
        nn.init.zeros_(self.conv.bias)
        self.quant_layer = make_quant_layer(quantize, quant)
        self.integrator = NonSpikingIntegrator()
        self.folded: FoldedLayer | None = None  # the integer arithmetic of an integer evaluation pass
        self.last_code_sum: torch.Tensor | None = None  # that pass's current codes summed over the steps

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        if self.folded is not None:
            current = self.folded.current
            codes = seq_apply(lambda x: current.codes_from_acc(self.conv(x)), spikes)  # conv: integer_conv
            self.last_code_sum = codes.sum(dim=0)
            return (self.last_code_sum * (current.step / codes.shape[0])).to(spikes.dtype)
        return self.integrator(seq_apply(lambda x: into_quantizer(self.quant_layer, self.conv, x), spikes))


class EventSNNFlowNetLiteV2(nn.Module):
    """Spiking U-Net for event-based optical flow (about 1.2 M parameters at base_ch=32).

    Args:
        base_ch: channel width of the first layer; the others are multiples of it.
        num_bins: time bins per input window (= SNN time steps, unless ``bins_per_step`` > 1).
        in_channels: channels per bin (2 for ON/OFF counts, 1 for a voxel grid).
        tau, threshold, reset, surrogate_alpha: LIF neuron parameters.
        flow_scale: flow heads output ``flow_scale`` pixels per unit current, so
            heads start in a sensible range for flows of a few pixels.
        quantize: build every layer with per-channel weight fake-quantization and a
            ``QuantizationAwareLayer`` after its convolution.
        bit_width, binarize, ema_decay, learn_scale: quantizer settings (see
            ``snn.quantization``); ``bit_width`` is the weights' width; ``binarize`` makes
            weights and currents binary (W1A1).
        current_bits: the width of the current quantizers (None: ``bit_width``), e.g.
            ``bit_width=1, current_bits=4`` is W1A4: binary weights, 4-bit currents.
        first_last_bits: the input layer (stem) and the flow heads never go below
            this many bits (None: they follow ``bit_width`` like the rest).
        current_range: how the spiking layers' current quantizers turn the observed range into
            a step, "maxabs" or "positive" (see ``QuantizationAwareLayer``); heads stay "maxabs".
        learn_leak: every spiking layer learns its own leak, a shift from ``tau`` on (see ``LIFNeuron``).
        input_norm: divide each window's input by the mean of its non-zero values (E-RAFT's
            normalization of voxel grids, without the shift, so that no event still means zero
            input); the input is then no longer integer counts, and the integer export refuses it.
        input_bins: each time step reads its own bin and the ``input_bins - 1`` bins before it,
            stacked as channels (``stack_recent_bins``), so that the stem sees events move within
            the window; the stem then takes ``in_channels * input_bins`` channels.
        bins_per_step: each SNN time step reads this many consecutive bins, stacked as channels
            (oldest first), so a window runs ``num_bins // bins_per_step`` steps (it must divide
            ``num_bins``); ``input_bins`` then counts steps' worth of bins. The default runs the
            default five-bin window in one step; checkpoints from before this key existed ran one
            bin per step, and loading fills that in (``LEGACY_DEFAULTS`` in ``snn.models.checkpoint``).
        align_current_steps: every spiking layer's current step is snapped so that the threshold
            falls on a rounding boundary (``QuantizationAwareLayer.align_step``): with one step per
            window a neuron then fires on its quantized current exactly when it would on the
            unquantized one. Binary currents and the flow heads are left as they are.
        integer_input: the input is integer event counts (two channels per bin); otherwise (a voxel
            grid) the model evaluates in float and the integer export refuses it.
        bottleneck_dilation: the dilations of the two residual blocks at 1/8 resolution: a wider view
            (receptive field about 49 px at (1, 1), 81 at (2, 2), 113 at (2, 4)) at no cost in weights.
        head_input: what each flow head reads from the decoder layer before it: "spikes" (binary, and
            with one step per window at most one per neuron), or "current", the multi-bit input current
            of those neurons (the membrane they integrate); the skip connections stay spikes either way.
            The integer export folds only "spikes".
        global_context: a context path: the bottleneck's spike rates averaged over the whole frame,
            through a 1x1 convolution, add the same current at every pixel of the first decoder layer,
            so that flat regions far from any edge hear of the motion elsewhere in the frame. It joins
            that layer's current before its quantizer; a quantized model rounds the frame rates down to
            ``RATE_BITS`` fractional bits, and the integer export folds it into that layer's arithmetic.
        binary_threshold: every spiking layer's binary current takes its sign against a learned
            threshold per channel, which starts at the least current that fires the neuron in one
            window (the threshold itself with one step per window), so that a binary current fires
            where the unquantized one would; the integer export folds it into the comparison's offset.
            Multi-bit currents ignore it.
        shortcut_before_quant: the residual blocks add their input spikes (the shortcut) to the current
            before its quantizer, not after: a binary current then fires on current + shortcut >= its
            threshold as the unquantized one does, instead of drowning the shortcut in its +-step,
            and a ternary one no longer fires on a shortcut spike alone. The integer export adds
            the spikes to ``acc * M + B`` before the rounding or the sign.
    """

    downsample_factor = 8

    def __init__(
        self,
        base_ch: int = 32,
        num_bins: int = 5,
        in_channels: int = 2,
        tau: float = 2.0,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate_alpha: float = 2.0,
        flow_scale: float = 1.0,
        quantize: bool = False,
        bit_width: int = 8,
        binarize: bool = False,
        ema_decay: float = 0.99,
        learn_scale: bool = False,
        first_last_bits: int | None = 8,
        current_bits: int | None = None,
        current_range: str = "maxabs",
        learn_leak: bool = False,
        input_norm: bool = False,
        input_bins: int = 1,
        bins_per_step: int = 5,
        align_current_steps: bool = False,
        bottleneck_dilation: tuple[int, int] | list[int] = (1, 1),
        integer_input: bool = True,
        head_input: str = "spikes",
        global_context: bool = True,
        binary_threshold: bool = False,
        shortcut_before_quant: bool = False,
    ) -> None:
        super().__init__()
        if head_input not in HEAD_INPUTS:
            raise ValueError(f"head_input must be one of {', '.join(HEAD_INPUTS)} (got {head_input!r})")
        self.head_input = head_input
        if len(bottleneck_dilation) != 2 or any(int(d) != d or d < 1 for d in bottleneck_dilation):
            raise ValueError(f"bottleneck_dilation must be two integers >= 1 (got {bottleneck_dilation!r})")
        if bins_per_step < 1 or num_bins % bins_per_step:
            raise ValueError(f"bins_per_step must divide num_bins = {num_bins} (got {bins_per_step})")
        time_steps = num_bins // bins_per_step
        if not 1 <= input_bins <= time_steps:
            raise ValueError(f"input_bins must lie in [1, num_bins / bins_per_step = {time_steps}] (got {input_bins})")
        if base_ch < 1 or num_bins < 1 or in_channels < 1:
            raise ValueError(
                f"base_ch, num_bins and in_channels must be >= 1 (got {base_ch}, {num_bins}, {in_channels})"
            )
        self.num_bins = num_bins
        self.in_channels = in_channels
        self.input_norm = input_norm
        self.input_bins = input_bins
        self.bins_per_step = bins_per_step
        self.time_steps = time_steps
        self.flow_scale = flow_scale
        c = base_ch
        spec = QuantSpec(bit_width, binarize, ema_decay, learn_scale, current_bits, current_range, binary_threshold)
        q = {"quantize": quantize, "quant": spec}
        # The input layer and flow heads keep at least first_last_bits (common practice: they
        # are a small share of the weights and the most sensitive).
        self.pinned = (
            {} if first_last_bits is None else {name: first_last_bits for name in ("stem", "head1", "head2", "head3")}
        )
        edge_bits = max(bit_width, first_last_bits or 0)
        edge_current = None if current_bits is None else max(current_bits, first_last_bits or 0)
        edge_spec = QuantSpec(
            edge_bits,
            binarize and first_last_bits is None,
            ema_decay,
            learn_scale,
            edge_current,
            current_range,
            binary_threshold and first_last_bits is None,  # a pinned stem never goes binary
        )
        edge = {"quantize": quantize, "quant": edge_spec}
        # The flow heads' currents are signed flow, not input to a threshold: always the symmetric range.
        head_spec = dataclasses.replace(edge_spec, current_range="maxabs", binary_threshold=False)
        head = {"quantize": quantize, "quant": head_spec}
        n = {"tau": tau, "threshold": threshold, "reset": reset, "alpha": surrogate_alpha, "learn_leak": learn_leak}
        self.stem = SpikingConv2d(in_channels * bins_per_step * input_bins, c, 3, norm=True, neuron=n, **edge)
        self.enc1 = SpikingConvBlock(c, 2 * c, stride=2, neuron=n, **q)
        self.enc2 = SpikingConvBlock(2 * c, 4 * c, stride=2, neuron=n, **q)
        self.enc3 = SpikingConvBlock(4 * c, 4 * c, stride=2, neuron=n, **q)
        d1, d2 = (int(d) for d in bottleneck_dilation)
        short = {"residual": True, "neuron": n, "shortcut_before_quant": shortcut_before_quant}
        self.res1 = SpikingConvBlock(4 * c, 4 * c, dilation=d1, **short, **q)
        self.res2 = SpikingConvBlock(4 * c, 4 * c, dilation=d2, **short, **q)
        self.dec3 = SpikingConvTranspose2d(4 * c, 4 * c, neuron=n, **q)
        self.context = None
        if global_context:
            self.context = make_conv(quantize, spec, in_channels=4 * c, out_channels=4 * c, kernel_size=1)
            nn.init.zeros_(self.context.weight)  # start as the network without it
            nn.init.zeros_(self.context.bias)
        self.dec2 = SpikingConvTranspose2d(8 * c, 2 * c, neuron=n, **q)
        self.dec1 = SpikingConvTranspose2d(4 * c, c, neuron=n, **q)
        self.head3 = FlowHead(8 * c, **head)
        self.head2 = FlowHead(4 * c, **head)
        self.head1 = FlowHead(2 * c, **head)
        for layer in self.spiking_layers().values():
            if quantize:  # a binary current step below this keeps the layer silent by construction
                layer.quant_layer.binary_floor = layer.neuron.least_firing_input(time_steps) * BINARY_FLOOR_MARGIN
                if align_current_steps:
                    layer.quant_layer.align_to = layer.neuron.threshold
                layer.quant_layer.init_binary_threshold(layer.neuron.least_firing_input(time_steps))
        self.quantize = quantize
        # Event counts (integers), or not: a voxel grid, which is also the only one-channel input (checkpoints
        # from before this argument are told apart by that).
        self.integer_input = integer_input and in_channels == 2
        # Evaluate a quantized model in the integer arithmetic of its export (see integer_plan).
        self.integer_eval = True
        self._warned_float_eval = False
        self.bit_width = bit_width if not binarize else 1
        self.current_bits = 1 if binarize else (bit_width if current_bits is None else current_bits)

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"expected input [B, T, C, H, W], got shape {list(x.shape)}")
        _, t, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels per bin, got {c}")
        k = self.downsample_factor
        if h % k or w % k:
            raise ValueError(
                f"input size {h}x{w} is not accepted: height and width must be multiples of {k} "
                f"(e.g. {max(k, h // k * k)}x{max(k, w // k * k)} or {(h // k + 1) * k}x{(w // k + 1) * k})"
            )

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Flows at full, 1/2 and 1/4 resolution (finest first), all in full-resolution pixels.

        A quantized model in evaluation runs the integer arithmetic of its export (``integer_plan``).
        """
        self.check_input(x)
        x = x.clamp(-INPUT_MAX, INPUT_MAX)  # the input saturates where the integer stem's bound says
        plan = self.integer_plan()
        if plan is None:
            return self._forward_multiscale(x)
        layers = dict(self.named_children())
        try:
            for name, folded in plan.items():
                layer = layers[name]
                layer.folded = folded
                layer.conv.integer_forward = functools.partial(integer_conv, layer.conv, folded.current)
                if folded.neuron is not None:
                    layer.neuron.folded = folded.neuron
            return self._forward_multiscale(x)
        finally:
            for name in plan:
                layers[name].folded = None
                layers[name].conv.integer_forward = None
                if hasattr(layers[name], "neuron"):
                    layers[name].neuron.folded = None

    def _forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.input_norm:
            x = normalize_window(x)
        x_seq = step_inputs(x, self.bins_per_step, self.input_bins).transpose(0, 1)  # [steps, B, C', H, W]
        s0 = self.stem(x_seq)
        s1 = self.enc1(s0)
        s2 = self.enc2(s1)
        s3 = self.res2(self.res1(self.enc3(s2)))
        d3, h3 = self._decode(self.dec3, s3, s2, self._context(s3))
        flow3 = self.head3(h3) * self.flow_scale
        d2, h2 = self._decode(self.dec2, d3, s1)
        flow2 = upsample_flow(flow3) + self.head2(h2) * self.flow_scale
        d1, h1 = self._decode(self.dec1, d2, s0)
        flow1 = upsample_flow(flow2) + self.head1(h1) * self.flow_scale
        return [flow1, flow2, flow3]

    def _context(self, s3: torch.Tensor) -> torch.Tensor | None:
        """The context path's output [steps, B, 4c, 1, 1] for the bottleneck's spikes ``s3``: one value per
        channel for the whole frame, added to dec3's current before its quantizer (None without the path).

        An integer pass gives the integer context accumulators (``FoldedContext.accumulate``); a quantized
        model in training rounds the frame rates down to ``RATE_BITS`` fractional bits as the integer
        arithmetic does, the gradient passing straight through."""
        if self.context is None:
            return None
        folded = self.dec3.folded
        if folded is not None:
            return seq_apply(folded.current.context.accumulate, s3)
        rates = s3.mean(dim=(-2, -1), keepdim=True)
        if self.quantize:
            exact = frame_rates(s3)[..., None, None] / 2**RATE_BITS
            rates = rates + (exact.to(rates.dtype) - rates).detach()
        return seq_apply(self.context, rates)

    def _decode(
        self, layer: nn.Module, x: torch.Tensor, skip: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the next decoder layer reads, what the flow head reads): the layer's spikes or, with
        ``head_input="current"``, its neurons' input current for the head, each beside the skip's spikes.
        ``context`` joins the layer's current before its quantizer (see ``_context``)."""
        if self.head_input == "spikes":  # the layer's own forward: the integer pass runs there
            out = torch.cat([layer(x, context), skip], dim=2)
            return out, out
        current = layer.current(x, context=context)
        out = torch.cat([layer.neuron(current), skip], dim=2)
        return out, torch.cat([current.to(skip.dtype), skip], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flow in pixels over the input window, [B, 2, H, W], for frames of any size.

        Sides that are not multiples of ``downsample_factor`` (MVSEC's 260x346, say) are padded
        with empty input (no events) at the bottom and right, and the flow is cropped back.
        ``forward_multiscale``, which training uses on crops, takes only multiples.
        """
        h, w = x.shape[-2:]
        k = self.downsample_factor
        pad_h, pad_w = -h % k, -w % k
        if x.dim() == 5 and (pad_h or pad_w):
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.forward_multiscale(x)[0][..., :h, :w]

    def integer_plan(self) -> dict[str, FoldedLayer] | None:
        """Every layer's integer arithmetic when this forward pass runs it, else None.

        It runs in evaluation (not in training, which needs the float fake-quant gradients) once every
        current quantizer has its range and step and quantizes, unless ``integer_eval`` is False. A
        model that cannot be folded exactly evaluates in float, with a warning (the export refuses it).
        """
        if not self.quantize or self.training or not self.integer_eval or self.input_norm or not self.integer_input:
            return None
        for _, q in control.activation_quantizers(self):
            if not q.enabled or q.calibrating or not q.has_range or (q.learn_scale and not q.has_step):
                return None  # the float path runs (and says what is missing)
        try:
            if self.head_input != "spikes":
                raise FoldError("the integer arithmetic does not cover head_input=current")
            return self.fold_layers()
        except FoldError as exc:
            if not self._warned_float_eval:
                logging.getLogger(__name__).warning("evaluating in float fake-quant arithmetic: %s", exc)
                self._warned_float_eval = True
            return None

    def fold_layers(self) -> dict[str, FoldedLayer]:
        """The integer arithmetic of every layer, in execution order (FoldError when it cannot be exact)."""
        folded = {}
        for name, layer in self.named_children():
            if not hasattr(layer, "quant_layer"):
                continue
            spiking = isinstance(getattr(layer, "neuron", None), LIFNeuron)
            try:
                folded[name] = fold_layer(
                    layer,
                    INPUT_MAX if name == "stem" else 1,
                    bool(getattr(layer, "residual", False)),
                    spiking,
                    self.context if name == "dec3" else None,
                )
            except FoldError as exc:
                raise FoldError(f"layer {name}: {exc}") from None
        return folded

    def spiking_layers(self) -> dict[str, nn.Module]:
        """Named layers that end in LIF neurons, in forward order."""
        return {name: m for name, m in self.named_modules() if isinstance(getattr(m, "neuron", None), LIFNeuron)}

    # ------------------------------------------------------------ quantization
    def set_bit_width(self, bit_width: int, current_bits: int | None = None) -> None:
        """Switch the weights to ``bit_width`` and the currents to ``current_bits`` (None: the same);
        the pinned edge layers keep their floor."""
        control.set_bit_width(self, bit_width, self.pinned, current_bits)
        self.bit_width = bit_width
        self.current_bits = bit_width if current_bits is None else current_bits

    def freeze_observers(self, frozen: bool = True) -> None:
        control.freeze_observers(self, frozen)

    def spike_rates(self) -> dict[str, float]:
        """Mean firing rate of each spiking layer in the last forward pass."""
        return {name: float(m.neuron.last_spike_rate) for name, m in self.spiking_layers().items()}


@contextlib.contextmanager
def float_fake_quant(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` in the float fake-quant arithmetic of training instead of its integer one
    (for the ONNX step graph, which follows the float form, and for comparisons)."""
    before = getattr(model, "integer_eval", False)
    model.integer_eval = False
    try:
        yield model
    finally:
        model.integer_eval = before


def normalize_window(x: torch.Tensor) -> torch.Tensor:
    """Each sample of [B, T, C, H, W] divided by the mean magnitude of its non-zero entries
    (an empty window stays zero)."""
    mag = x.abs().flatten(1)
    count = (mag > 0).sum(dim=1).clamp_min(1)
    mean = (mag.sum(dim=1) / count).clamp_min(1e-6)
    return x / mean.view(-1, 1, 1, 1, 1)


def step_inputs(x: torch.Tensor, bins_per_step: int = 1, input_bins: int = 1) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, T / g, k*g*C, H, W], what the stem reads at each SNN step: the g =
    ``bins_per_step`` bins of the step (oldest first), and with k = ``input_bins`` those of the
    k - 1 steps before it (``stack_recent_bins``)."""
    b, t, c, h, w = x.shape
    return stack_recent_bins(x.reshape(b, t // bins_per_step, bins_per_step * c, h, w), input_bins)


def stack_recent_bins(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, T, k*C, H, W]: step t gets bins t, t-1, ..., t-k+1, newest first, each
    with its C channels; bins before the window's first are empty (zeros)."""
    if k == 1:
        return x
    t = x.shape[1]
    padded = F.pad(x, (0, 0, 0, 0, 0, 0, k - 1, 0))  # k - 1 empty bins in front
    return torch.cat([padded[:, k - 1 - j : k - 1 - j + t] for j in range(k)], dim=2)


def upsample_flow(flow: torch.Tensor) -> torch.Tensor:
    """x2 bilinear upsampling of a coarser flow (already in full-resolution pixels)."""
    return F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=False)
