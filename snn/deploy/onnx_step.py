"""One time step of an 8-bit network as an ONNX graph, with the state as explicit inputs and outputs.

Hardware and runtimes that step an SNN bin by bin want the graph of one step:

    inputs:  events_t [N, C, H, W], what the stem reads at step t ([N, k*g*C, H, W] with
             bins_per_step g and input_bins k: see ``step_inputs``),
             then the membrane of every spiking layer and the running
             sum of every flow head's current (zeros before the first step)
    outputs: the updated membranes and head sums (named <input>_next), then the flow the sums give so far
             (after the last of the T steps it is the model's flow)

Weights and currents go through QuantizeLinear/DequantizeLinear pairs (int8, per channel for
weights, per tensor for currents), which is what PyTorch's fake-quant ops export as. The graph
follows the float fake-quant arithmetic of training (``float_fake_quant``), not the integer one
the model evaluates with: the two differ where a current lies within rounding of a code boundary.
For bit-exact results use the integer export and its reference. Needs the
optional ``onnx`` package to export and ``onnxruntime`` to run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from snn.deploy.fold import CONTEXT, FLOW_HEADS, WIRING, FoldError, layer_shapes
from snn.models.flownet import step_inputs, upsample_flow
from snn.models.integer import INPUT_MAX, RATE_BITS, frame_rates
from snn.quantization.control import activation_quantizers, model_widths, widths_tag
from snn.quantization.weight_quant import weight_codes_and_scale


def _state_names(model: nn.Module) -> list[str]:
    return [f"v_{name}" for name in model.spiking_layers()] + [f"sum_{name}" for name in FLOW_HEADS]


def check_step_export(model: nn.Module) -> None:
    """FoldError unless ``model`` is W8A8 throughout and the onnx package is here (tools/export.py asks
    before it writes anything)."""
    quantizers = [q for _, q in activation_quantizers(model)]
    if model_widths(model) != (8, 8) or any(q.is_binary or q.bit_width != 8 for q in quantizers):
        raise FoldError(f"the ONNX step graph is built for W8A8 models, this one is {widths_tag(*model_widths(model))}")
    if any(getattr(m, "shortcut_before_quant", False) for m in model.modules()):
        raise FoldError("the ONNX step graph adds residual spikes after the quantizer (no shortcut_before_quant)")
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise FoldError("--onnx needs the optional onnx package: python -m pip install onnx onnxruntime") from None


class OneStepNetwork(nn.Module):
    """One SNN time step of a W8A8 EventSNNFlowNetLiteV2 (eval mode), state passed in and out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_step_export(model)
        self.model = model.eval()
        self.layers = list(model.spiking_layers())
        self.time_steps = getattr(model, "time_steps", model.num_bins)
        # Constants of the graph: each layer's (and the context path's) per-channel weight scales and
        # each layer's current step.
        convs = {name: getattr(model, name).conv for name, _, _ in WIRING}
        if model.context is not None:
            convs["context"] = model.context
        with torch.no_grad():
            self.weight_scales = {
                name: weight_codes_and_scale(conv.weight, conv.weight_bits, conv.channel_axis)[1]
                for name, conv in convs.items()
            }
            self.steps = {name: float(getattr(model, name).quant_layer.scale()) for name, _, _ in WIRING}
        self.eval()

    def _weight(self, name: str, conv: nn.Module) -> torch.Tensor:
        """``conv``'s weights fake-quantized per channel with the scales kept under ``name``."""
        scale = self.weight_scales[name]
        zero = torch.zeros(scale.shape, dtype=torch.int32)
        # Codes never reach -128 (max-abs scale), so int8's range gives the same values as [-127, 127].
        return torch.fake_quantize_per_channel_affine(conv.weight, scale.float(), zero, conv.channel_axis, -128, 127)

    def _context(self, spikes: torch.Tensor) -> torch.Tensor:
        """The context path: frame rates of the bottleneck's spikes rounded down to ``RATE_BITS``
        fractional bits, as the model rounds them, through the 1x1 convolution's fake-quantized weights."""
        conv = self.model.context
        rates = (frame_rates(spikes)[..., None, None] / 2**RATE_BITS).to(spikes.dtype)
        return F.conv2d(rates, self._weight("context", conv), conv.bias)

    def train(self, mode: bool = True) -> OneStepNetwork:
        """Always eval: the exporter restores a module's mode afterwards, and training mode would
        put the wrapped model's batch norms and range observers back to work."""
        return super().train(False)

    def _current(self, name: str, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        layer = getattr(self.model, name)
        conv = layer.conv
        w = self._weight(name, conv)
        if isinstance(conv, nn.ConvTranspose2d):
            y = F.conv_transpose2d(x, w, conv.bias, conv.stride, conv.padding, conv.output_padding)
        else:
            y = F.conv2d(x, w, conv.bias, conv.stride, conv.padding, conv.dilation)
        y = getattr(layer, "norm", nn.Identity())(y)
        if context is not None:  # the context path joins before the quantizer
            y = y + context
        q, step = layer.quant_layer, self.steps[name]
        y = torch.clamp(y, -q.qmax * step, q.qmax * step)  # the narrow range [-127, 127] of the model
        return torch.fake_quantize_per_tensor_affine(y, step, 0, -128, 127)

    def forward(self, events_t: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        membranes = dict(zip(self.layers, state[: len(self.layers)], strict=True))
        sums = dict(zip(FLOW_HEADS, state[len(self.layers) :], strict=True))
        outputs = {"events": events_t.clamp(max=INPUT_MAX)}  # the input saturates as the model's does
        for name, inputs, residual in WIRING:
            layer = getattr(self.model, name)
            x = torch.cat([outputs[i] for i in inputs], dim=1)
            context = None
            if name == CONTEXT[1] and self.model.context is not None:
                context = self._context(outputs[CONTEXT[0]])
            current = self._current(name, x, context)
            if name in FLOW_HEADS:
                sums[name] = sums[name] + current
                continue
            if residual:
                current = current + x
            outputs[name], membranes[name] = layer.neuron.single_step(current, membranes[name])
        # The heads' integrators average over the time steps: sum / steps.
        flow = None
        for name in FLOW_HEADS:
            head = sums[name] * (self.model.flow_scale / self.time_steps)
            flow = head if flow is None else upsample_flow(flow) + head
        return (*[membranes[n] for n in self.layers], *[sums[n] for n in FLOW_HEADS], flow)

    def initial_state(self, batch: int, height: int, width: int) -> list[torch.Tensor]:
        """Zeros of the right shapes: the state before the first time bin."""
        shapes = layer_shapes(self.model, height, width)
        return [torch.zeros(batch, *shapes[n]) for n in [*self.layers, *FLOW_HEADS]]


def export_onnx(model: nn.Module, path: str | Path, height: int, width: int) -> OneStepNetwork:
    """Write the one-step graph of a calibrated W8A8 model for [1, C, height, width] inputs."""
    step = OneStepNetwork(model)
    state = step.initial_state(1, height, width)
    events = torch.zeros(1, model.stem.conv.in_channels, height, width)  # what the stem reads per step
    names = _state_names(model)
    # The TorchScript exporter (deprecated since torch 2.9, still shipped) maps the fake-quant ops to
    # QuantizeLinear/DequantizeLinear and needs only the onnx package; the newer exporter also needs
    # onnxscript. Its deprecation warnings say nothing a user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(step, events, state, path, names)
    return step


def _export(step: OneStepNetwork, events: torch.Tensor, state: list[torch.Tensor], path, names: list[str]) -> None:
    torch.onnx.export(
        step,
        (events, *state),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["events_t", *names],
        output_names=[*(f"{n}_next" for n in names), "flow"],
    )


def run_onnx(path: str | Path, step: OneStepNetwork, events: torch.Tensor) -> torch.Tensor:
    """Run the exported graph with onnxruntime over all time steps of [1, T, C, H, W] events,
    carrying the state from step to step; returns the flow after the last step."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state = [s.numpy() for s in step.initial_state(events.shape[0], *events.shape[-2:])]
    names = [i.name for i in session.get_inputs()]
    flow = None
    model = step.model
    steps = step_inputs(events, getattr(model, "bins_per_step", 1), getattr(model, "input_bins", 1))  # stem input
    for t in range(steps.shape[1]):
        feeds = dict(zip(names, [steps[:, t].numpy(), *state], strict=True))
        *state, flow = session.run(None, feeds)
    return torch.from_numpy(flow)
