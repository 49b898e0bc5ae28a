"""Switch the quantizers of a whole model (bit width, observers, calibration) through their own methods."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from snn.quantization.quantization_aware import QuantizationAwareLayer, check_bit_width
from snn.quantization.weight_quant import _WeightQuantMixin


def activation_quantizers(model: nn.Module) -> Iterator[tuple[str, QuantizationAwareLayer]]:
    for name, m in model.named_modules():
        if isinstance(m, QuantizationAwareLayer):
            yield name, m


def weight_quantized_convs(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if isinstance(m, _WeightQuantMixin):
            yield name, m


def is_quantized(model: nn.Module) -> bool:
    return any(True for _ in activation_quantizers(model)) or any(True for _ in weight_quantized_convs(model))


def model_widths(model: nn.Module) -> tuple[int, int]:
    """(weight bits, current bits) a model runs at: (32, 32) when nothing in it is quantized.

    The one answer to "how many bits is this model" for reports, sizes and the trainer
    (pinned edge layers may keep more bits; see ``layer_bits``).
    """
    if not is_quantized(model):
        return 32, 32
    weights = int(getattr(model, "bit_width", 32))
    return weights, int(getattr(model, "current_bits", weights))


def model_bit_width(model: nn.Module) -> int:
    """The weight bit width (what the model's size follows); 32 when nothing is quantized."""
    return model_widths(model)[0]


def widths_tag(weight_bits: int, current_bits: int) -> str:
    """'W4A8' (weights W bits, currents A bits), 'FP32' when not quantized."""
    return "FP32" if weight_bits >= 32 else f"W{weight_bits}A{current_bits}"


def layer_bits(name: str, bit_width: int, pinned: dict[str, int] | None) -> int:
    """Bits of module ``name`` when the model runs at ``bit_width``: pinned prefixes keep their floor."""
    floors = [b for prefix, b in (pinned or {}).items() if name == prefix or name.startswith(prefix + ".")]
    return max([bit_width, *floors])


def set_bit_width(
    model: nn.Module, bit_width: int, pinned: dict[str, int] | None = None, current_bits: int | None = None
) -> None:
    """Weights to ``bit_width``, current quantizers to ``current_bits`` (None: the same);
    modules under a pinned prefix keep at least its bits."""
    check_bit_width(bit_width)
    currents = bit_width if current_bits is None else check_bit_width(current_bits)
    for name, q in activation_quantizers(model):
        q.set_bit_width(layer_bits(name, currents, pinned))
    for name, conv in weight_quantized_convs(model):
        conv.set_bit_width(layer_bits(name, bit_width, pinned))


QUANTIZER_STATE = ("running_min", "running_max", "running_absmean", "initialized", "step", "step_initialized")


@torch.no_grad()
def copy_quantizer_state(source: nn.Module, target: nn.Module) -> None:
    """Give ``target``'s quantizers ``source``'s widths, ranges and steps (two copies of one model)."""
    theirs = dict(activation_quantizers(source))
    ours = dict(activation_quantizers(target))
    if theirs.keys() != ours.keys():
        raise ValueError("the two models have different current quantizers")
    for name, q in ours.items():
        src = theirs[name]
        q.set_bit_width(src.bit_width)
        for key in QUANTIZER_STATE:
            getattr(q, key).copy_(getattr(src, key))
        q._range_known = q._step_known = False  # the copied buffers decide
    for (_, conv), (_, src) in zip(weight_quantized_convs(target), weight_quantized_convs(source), strict=True):
        conv.set_bit_width(src.weight_bits)
    for attr in ("bit_width", "current_bits"):
        if hasattr(source, attr):
            setattr(target, attr, getattr(source, attr))


def freeze_observers(model: nn.Module, frozen: bool = True) -> None:
    for _, q in activation_quantizers(model):
        q.freeze_observer(frozen)


def weight_quantization_error(model: nn.Module) -> torch.Tensor:
    """Sum over quantized convolutions of their relative squared weight error."""
    terms = [conv.weight_quant_error() for _, conv in weight_quantized_convs(model)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


@contextlib.contextmanager
def calibrating(model: nn.Module):
    """Inside, the model runs in eval mode and every quantizer's range is the plain mean of the passes seen."""
    layers = [q for _, q in activation_quantizers(model)]
    was_training = model.training
    model.eval()
    for q in layers:
        q.start_calibration()
    try:
        yield
    finally:
        for q in layers:
            q.end_calibration()
        model.train(was_training)


def range_statistics(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per-layer observed ranges and scales, for logging."""
    return {
        name: {
            "min": float(q.running_min),
            "max": float(q.running_max),
            "scale": float(q.scale().detach()),
            "bits": q.bit_width,
        }
        for name, q in activation_quantizers(model)
    }
