"""CUDA paths: they run where a GPU is present and are skipped elsewhere (CI has none)."""

import copy
import math

import pytest
import torch

from snn.config import CONFIG_DIR, DEFAULT_CONFIG, load_config
from snn.models.factory import build_model
from snn.models.flownet import EventSNNFlowNetLiteV2, float_fake_quant
from snn.quantization.torch_ops import fake_quantize, learnable_fake_quantize
from snn.training.run import build_trainer
from snn.utils.runtime import seed_everything

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _currents(model, x):
    """Every quantized convolution's input and output in one eval pass."""
    seen, hooks = {}, []
    for name, module in model.named_modules():
        if name.endswith(".conv") and hasattr(module, "weight_bits"):
            record = lambda m, i, o, name=name: seen.setdefault(name, (i[0], o)) and None  # noqa: E731  None: o stays
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_a_quantized_current_on_cuda_is_float32_not_tf32():
    """cuDNN may convolve in TF32 by default on Ampere and newer; a quantized current must not, or it
    rounds to other codes than the integer network. Each layer gets the same input on both devices,
    so its current may differ only by the order of float32 sums."""
    seed_everything(0)
    model = EventSNNFlowNetLiteV2(quantize=True, bit_width=8)
    x = torch.poisson(torch.full((1, model.num_bins, 2, 64, 64), 0.8))
    model.forward_multiscale(x)  # the first training pass sets ranges and learned steps
    model.eval()
    on_gpu = copy.deepcopy(model).to(CUDA)
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default, which the quantized layers set aside
    with float_fake_quant(on_gpu):  # the float currents of training (an integer pass has none)
        gpu = _currents(on_gpu, x.to(CUDA))
    assert torch.backends.cudnn.allow_tf32  # and restore
    modules = dict(model.named_modules())
    assert len(gpu) >= 10
    for name, (inputs, output) in gpu.items():
        with torch.no_grad():
            want = modules[name](inputs.cpu())
        assert (output.cpu() - want).abs().max() <= 1e-5 * want.abs().max(), name


@pytest.mark.parametrize("qmax", [127, 7, 1])
def test_the_fake_quantizers_agree_between_cpu_and_cuda(qmax):
    x = torch.randn(4, 8, 16, 16) * 3
    scale = torch.tensor(0.37)
    for device in ("cpu", "cuda"):
        xi = x.clone().to(device).requires_grad_()
        step = scale.clone().to(device).requires_grad_()
        ranged = fake_quantize(xi, scale.to(device), qmax)
        learned = learnable_fake_quantize(xi, step, qmax, 0.1)
        (ranged.sum() + (learned * learned).sum()).backward()
        if device == "cpu":
            want = (ranged.detach(), learned.detach(), xi.grad, step.grad)
    got = (ranged.detach().cpu(), learned.detach().cpu(), xi.grad.cpu(), step.grad.cpu())
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    torch.testing.assert_close(got[3], want[3], rtol=1e-5, atol=1e-6)  # a sum in another order


@pytest.mark.parametrize(
    "config",
    ["event_snn_lite_8bit.yaml", "event_snn_lite_4bit.yaml", "event_snn_lite_2bit.yaml", "event_snn_lite_1bit.yaml"],
)
def test_a_quantized_training_step_does_not_wait_for_the_gpu(config):
    """CUDA's own sync detector: no op in forward or backward copies a value to the host."""
    cfg = load_config(CONFIG_DIR / config)
    model = build_model(cfg.model, cfg.model_args()).to(CUDA)
    x = torch.rand(2, cfg.num_bins, 2, 32, 32, device=CUDA)
    model.forward_multiscale(x)  # the first pass sets ranges and learned steps
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sum(p.sum() for p in model.forward_multiscale(x)).backward()
        model.eval()
        with torch.no_grad(), float_fake_quant(model):
            model(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # The integer evaluation reads its folded constants on the host once per pass, before it queues
    # any convolution; the pass itself waits for nothing.
    folded = model.fold_layers()
    model.integer_plan = lambda: folded
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            model(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_sync_detector_sees_a_host_read():
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError):
            torch.ones((), device=CUDA).item()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _tiny_run(root, tmp_path, **extra) -> dict:
    """Config overrides of a two-epoch run on the tiny dataset."""
    return {"data_root": str(root), "dataset": "blinksim", "base_ch": 8, "num_bins": 3, "bins_per_step": 1,
            "batch_size": 4, "num_epochs": 2, "crop_size": 32, "augment": False,
            "checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "logs"), **extra}  # fmt: skip


@pytest.mark.parametrize(("amp", "scaler_saved"), [("none", False), ("bf16", False), ("fp16", True)])
def test_a_short_run_trains_on_cuda_under_each_precision(tiny_synthetic_root, tmp_path, amp, scaler_saved):
    seed_everything(0)
    trainer = build_trainer(load_config(DEFAULT_CONFIG, _tiny_run(tiny_synthetic_root, tmp_path, amp=amp)), CUDA)
    assert math.isfinite(trainer.fit())
    saved = torch.load(tmp_path / "ckpt" / "last.pth", weights_only=False, map_location="cpu")
    assert saved["epoch"] == 1  # epochs count from 0
    assert bool(saved["grad_scaler"]) == scaler_saved
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_a_quantized_run_trains_on_cuda(tiny_synthetic_root, tmp_path):
    seed_everything(0)
    cfg = load_config(CONFIG_DIR / "event_snn_lite_4bit.yaml", _tiny_run(tiny_synthetic_root, tmp_path))
    trainer = build_trainer(cfg, CUDA)
    assert math.isfinite(trainer.fit())
