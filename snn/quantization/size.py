"""How many bytes a (quantized) model takes to store, at each bit width."""

from __future__ import annotations

from typing import Any

from torch import nn

from snn.quantization import control

SIZE_BIT_WIDTHS = (32, 8, 4, 2, 1)
FLOAT_BYTES = 4


def conv_layers(model: nn.Module):
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            yield name, m


def _layer_bits(model: nn.Module, name: str, bits: int) -> int:
    """Bits of a layer when the model runs at ``bits`` (pinned edge layers keep their floor)."""
    if bits >= 32:
        return 32
    return control.layer_bits(name, bits, getattr(model, "pinned", None))


def estimate_model_size(model: nn.Module, bit_widths=SIZE_BIT_WIDTHS, verbose: bool = True) -> dict[str, Any]:
    """Storage size at FP32 and at each bit width, and at the model's own bit width.

    Counted: convolution weights at their bit width (the stem and flow heads
    at no less than their pinned width), one FP32 scale per output channel,
    biases and batch-norm parameters at FP32 (they fold into a per-channel
    scale and bias), and one FP32 scale per activation quantizer.
    """
    weights = {name: m for name, m in conv_layers(model)}
    n_weights = sum(m.weight.numel() for m in weights.values())
    n_params = sum(p.numel() for p in model.parameters())
    n_channels = sum(m.weight.shape[1 if isinstance(m, nn.ConvTranspose2d) else 0] for m in weights.values())
    weight_ids = {id(m.weight) for m in weights.values()}
    quant_ids = {id(q.step) for _, q in control.activation_quantizers(model)}
    n_other = sum(p.numel() for p in model.parameters() if id(p) not in weight_ids | quant_ids)
    n_act_scales = len(weights)  # one quantizer follows every convolution

    def size(bits: int) -> int:
        total = n_other * FLOAT_BYTES
        for name, m in weights.items():
            total += m.weight.numel() * _layer_bits(model, name, bits) / 8
        if bits < 32:
            total += (n_channels + n_act_scales) * FLOAT_BYTES
        return int(round(total))

    sizes = {b: size(b) for b in bit_widths}
    own = control.model_bit_width(model)
    result = {
        "parameters": n_params,
        "weight_parameters": n_weights,
        "bytes": sizes,
        "bit_width": own,
        "model_bytes": size(own),
    }
    if verbose:
        print(f"parameters: {n_params:,} ({n_weights:,} in convolution weights)")
        for b in bit_widths:
            label = "FP32" if b >= 32 else f"{b}-bit"
            print(f"  {label:>6}: {sizes[b] / 1e6:6.3f} MB  ({sizes[bit_widths[0]] / sizes[b]:4.1f}x smaller)")
    return result
