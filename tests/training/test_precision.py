"""Mixed precision: convolutions under autocast, neurons and quantizers in float32."""

import math

import pytest
import torch

from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.training.precision import Precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("quantize", [False, True])
def test_under_bf16_autocast_only_unquantized_convolutions_run_in_bf16(monkeypatch, quantize):
    """bf16 speeds up a full-precision network; a quantized current is computed in float32, since a
    bfloat16 one would put 8-bit codes 64-127 on a grid of 0.5."""
    from snn.models import neurons

    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=2, bins_per_step=1, quantize=quantize, bit_width=8)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)  # returns nothing: the output stays as it is

        return hook

    layer = model.enc1
    layer.conv.register_forward_hook(record("conv"))
    model.head1.conv.register_forward_hook(record("head"))
    layer.neuron.register_forward_hook(record("spikes"))
    membranes = []  # the dtype each neuron's membrane arithmetic runs in
    fused = neurons.LIFSequence.apply
    monkeypatch.setattr(neurons.LIFSequence, "apply", lambda x, *a: membranes.append(x.dtype) or fused(x, *a))
    x = (torch.rand(1, 2, 2, 16, 16) > 0.7).float()
    with Precision("bf16", CPU).autocast():
        flow = model.forward_multiscale(x)[0]  # training mode: the quantizers observe this batch
    conv = torch.float32 if quantize else torch.bfloat16
    assert seen == {"conv": conv, "head": conv, "spikes": torch.float32}
    assert membranes and set(membranes) == {torch.float32} and flow.dtype == torch.float32


def test_a_bf16_current_would_round_8_bit_codes_differently():
    """Why the float32 current: in bfloat16, currents that map to codes 64-127 lose their odd codes."""
    codes = torch.arange(64, 128, dtype=torch.float32)
    current = codes + 0.3  # at a step of 1: the codes 64..127, each 0.3 above
    assert torch.equal(torch.round(current), codes)
    in_bf16 = current.bfloat16().float()
    assert torch.equal(in_bf16 * 2, torch.round(in_bf16 * 2))  # a grid of 0.5 code
    assert (torch.round(in_bf16) != codes).sum() >= 16


def test_fp16_needs_cuda_and_an_unknown_mode_is_named():
    with pytest.raises(ValueError, match="use amp bf16"):
        Precision("fp16", CPU)
    with pytest.raises(ValueError, match="amp must be one of"):
        Precision("fp8", CPU)


@pytest.mark.slow
def test_a_bf16_run_trains_and_resumes_with_its_settings(tiny_synthetic_root, tmp_path):
    from snn.config import DEFAULT_CONFIG, load_config
    from snn.training.run import build_trainer, run_precision

    values = {"data_root": str(tiny_synthetic_root), "dataset": "blinksim", "base_ch": 4, "num_bins": 3,
              "bins_per_step": 1,
              "batch_size": 4, "num_epochs": 1, "crop_size": 32, "augment": False, "amp": "bf16",
              "checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "logs")}  # fmt: skip
    trainer = build_trainer(load_config(DEFAULT_CONFIG, values), CPU)
    assert run_precision(trainer) == "full-precision with bf16 autocast"
    assert math.isfinite(trainer.fit())
    saved = torch.load(tmp_path / "ckpt" / "last.pth", weights_only=False)
    assert saved["config"]["amp"] == "bf16" and saved["grad_scaler"] == {}


def test_the_grad_scaler_of_an_older_torch_is_the_cuda_one(monkeypatch):
    """torch.amp.GradScaler came with torch 2.3; the requirements allow 2.1."""
    from snn.training import precision

    made = []
    monkeypatch.delattr(torch.amp, "GradScaler", raising=False)
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", lambda *a, **k: made.append(a) or "cuda scaler")
    assert precision.grad_scaler(torch.device("cuda")) == "cuda scaler" and made == [()]


def test_a_quantized_run_says_that_amp_leaves_its_currents_in_float32(tiny_synthetic_root, tmp_path):
    from snn.config import CONFIG_DIR, load_config
    from snn.training.run import build_trainer, run_precision

    values = {"data_root": str(tiny_synthetic_root), "dataset": "blinksim", "base_ch": 4, "num_bins": 3,
              "bins_per_step": 1,
              "crop_size": 32, "checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "logs")}  # fmt: skip
    cfg = load_config(CONFIG_DIR / "event_snn_lite_4bit.yaml", {**values, "amp": "bf16"})
    assert (
        run_precision(build_trainer(cfg, CPU)) == "W4A4 (--amp bf16 unused: quantized currents are computed in float32)"
    )


def test_quantized_currents_set_tf32_aside_on_cuda_only():
    from snn.utils.runtime import ieee_float32_convolutions

    cudnn = torch.backends.cudnn
    assert cudnn.allow_tf32  # PyTorch's default
    with ieee_float32_convolutions("cuda"):
        assert not cudnn.allow_tf32
    with ieee_float32_convolutions("cpu"):
        assert cudnn.allow_tf32
    with pytest.raises(KeyError), ieee_float32_convolutions("cuda"):
        raise KeyError
    assert cudnn.allow_tf32
