"""Mixed precision: convolutions under autocast, neurons and quantizers in float32."""

import math

import pytest
import torch

from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.training.precision import Precision

CPU = torch.device("cpu")


def test_under_bf16_autocast_the_convolutions_run_in_bf16_and_neurons_and_quantizers_in_float32(monkeypatch):
    from snn.models import neurons

    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=2, quantize=True, bit_width=4).eval()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)  # returns nothing: the output stays as it is

        return hook

    layer = model.enc1
    layer.conv.register_forward_hook(record("conv"))
    layer.quant_layer.register_forward_hook(record("quant"))
    layer.neuron.register_forward_hook(record("spikes"))
    membranes = []  # the dtype each neuron's membrane arithmetic runs in
    fused = neurons.LIFSequence.apply
    monkeypatch.setattr(neurons.LIFSequence, "apply", lambda x, *a: membranes.append(x.dtype) or fused(x, *a))
    x = (torch.rand(1, 2, 2, 16, 16) > 0.7).float()
    with Precision("bf16", CPU).autocast():
        flow = model(x)
    assert seen == {"conv": torch.bfloat16, "quant": torch.float32, "spikes": torch.float32}
    assert membranes and set(membranes) == {torch.float32} and flow.dtype == torch.float32


def test_fp16_needs_cuda_and_an_unknown_mode_is_named():
    with pytest.raises(ValueError, match="use amp bf16"):
        Precision("fp16", CPU)
    with pytest.raises(ValueError, match="amp must be one of"):
        Precision("fp8", CPU)


@pytest.mark.slow
def test_a_bf16_run_trains_and_resumes_with_its_settings(tiny_synthetic_root, tmp_path):
    from snn.config import DEFAULT_CONFIG, load_config
    from snn.training.run import build_trainer

    values = {"data_root": str(tiny_synthetic_root), "dataset": "blinksim", "base_ch": 4, "num_bins": 3,
              "batch_size": 4, "num_epochs": 1, "crop_size": 32, "augment": False, "amp": "bf16",
              "checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "logs")}  # fmt: skip
    trainer = build_trainer(load_config(DEFAULT_CONFIG, values), CPU)
    assert math.isfinite(trainer.fit())
    saved = torch.load(tmp_path / "ckpt" / "last.pth", weights_only=False)
    assert saved["config"]["amp"] == "bf16" and saved["grad_scaler"] == {}
