"""A small quantized model whose every layer fires, for the deploy tests."""

import torch

from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.quantization import control


def lively_model(
    weights: int,
    currents: int,
    size: int = 16,
    seed: int = 0,
    current_range: str = "maxabs",
    input_bins: int = 1,
    num_bins: int = 3,
    bins_per_step: int = 1,
    align_current_steps: bool = False,
    progressive: bool = False,
    **model_args,
):
    """A small calibrated quantized model whose every layer fires, and the event windows it was calibrated on.

    ``progressive``: built at W8A8 and switched down 8 -> 4 -> ``weights``/``currents`` with a
    calibration at every width, as a progressive run's bit-width schedule does."""
    torch.manual_seed(seed)
    model = EventSNNFlowNetLiteV2(
        base_ch=4,
        num_bins=num_bins,
        quantize=True,
        bit_width=8 if progressive else weights,
        current_bits=None if progressive or currents == weights else currents,
        binarize=weights == currents == 1 and not progressive,
        learn_scale=True,
        current_range=current_range,
        input_bins=input_bins,
        bins_per_step=bins_per_step,
        align_current_steps=align_current_steps,
        **model_args,
    )
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # trained-looking statistics, currents near threshold
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.8, 1.6)
            m.bias.data.uniform_(0.2, 0.7)
    for head in (model.head1, model.head2, model.head3):
        torch.nn.init.normal_(head.conv.weight, std=0.2)
        torch.nn.init.normal_(head.conv.bias, std=0.1)
    events = torch.poisson(torch.full((2, num_bins, 2, size, size), 1.5))
    with control.calibrating(model):
        model(events)
    if progressive:
        for w, a in ((4, 4), (weights, currents)):
            model.set_bit_width(w, a)
            with control.calibrating(model):
                model(events)
    model.eval()(events)  # seeds the learned steps from the calibrated ranges
    for _, q in control.activation_quantizers(model):
        if q.is_binary:  # +-step must be able to reach the threshold, as training would make it
            q.step.data.fill_(0.8)
    return model, events
