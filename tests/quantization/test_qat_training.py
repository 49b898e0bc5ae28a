"""QAT wiring: loading checkpoints into quantized models, the schedule, finetune_quantized.py."""

import logging
from pathlib import Path

import pytest
import torch

import finetune_quantized
from snn.config import DEFAULT_CONFIG, load_config
from snn.models.checkpoint import CheckpointError, load_weights, save_checkpoint
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.quantization import control
from snn.quantization.weight_quant import weight_codes_and_scale
from snn.training.run import build_trainer
from snn.utils.quantization_utils import compare_model_outputs, estimate_model_size, load_model

CPU = torch.device("cpu")
SMALL = {"base_ch": 8, "num_bins": 3, "bins_per_step": 1}


def test_loading_fp_into_quantized_reports_only_quant_keys():
    fp = EventSNNFlowNetLiteV2(**SMALL)
    q = EventSNNFlowNetLiteV2(**SMALL, quantize=True, bit_width=4)
    missing = load_weights(q, fp.state_dict(), "fp.pth")
    assert missing and all(".quant_layer." in k for k in missing)
    assert torch.equal(q.enc1.conv.weight, fp.enc1.conv.weight)
    with pytest.raises(CheckpointError, match=r"fp\.pth.*strict-load.*quant_layer"):
        load_weights(q, fp.state_dict(), "fp.pth", strict=True)


def test_another_architecture_is_an_error_naming_the_keys():
    other = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1)
    q = EventSNNFlowNetLiteV2(**SMALL, quantize=True)
    with pytest.raises(CheckpointError, match=r"another architecture.*stem\.conv\.weight"):
        load_weights(q, other.state_dict(), "other.pth")
    state = EventSNNFlowNetLiteV2(**SMALL).state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected extra.weight"):
        load_weights(q, state, "odd.pth")


def test_set_bit_width_keeps_first_and_last_layers_at_8_bits():
    q = EventSNNFlowNetLiteV2(**SMALL, quantize=True, bit_width=8)
    q.set_bit_width(2)
    assert q.enc2.conv.weight_bits == 2 and q.enc2.quant_layer.bit_width == 2
    assert q.stem.conv.weight_bits == 8 and q.head1.quant_layer.bit_width == 8
    free = EventSNNFlowNetLiteV2(**SMALL, quantize=True, first_last_bits=None)
    free.set_bit_width(2)
    assert free.stem.conv.weight_bits == 2


def test_quantized_model_output_differs_by_bit_width_and_size_shrinks():
    torch.manual_seed(0)
    fp = EventSNNFlowNetLiteV2(**SMALL)
    for head in (fp.head1, fp.head2, fp.head3):
        torch.nn.init.normal_(head.conv.weight, std=0.1)
    x = (torch.rand(2, 3, 2, 16, 16) < 0.3).float() * 20  # strong enough to make every layer spike
    errors = {}
    for bits in (8, 4, 2):
        q = EventSNNFlowNetLiteV2(**SMALL, quantize=True, bit_width=bits)
        q.load_state_dict(fp.state_dict(), strict=False)
        with control.calibrating(q), torch.no_grad():
            q(x)
        errors[bits] = compare_model_outputs(fp, q, x)["mae"]
    assert errors[8] < errors[2]
    sizes = estimate_model_size(fp, verbose=False)["bytes"]
    assert sizes[32] > sizes[8] > sizes[4] > sizes[2] > sizes[1]
    assert sizes[32] / sizes[8] == pytest.approx(4.0, rel=0.05)


def _cfg(root, tmp_path, name, config=DEFAULT_CONFIG, **extra):
    values = {
        "data_root": str(root),
        "dataset": "blinksim",
        **SMALL,
        "batch_size": 4,
        "num_epochs": 1,
        "augment": False,
        "crop_size": 32,
        "image_every": 0,
        "calibration_batches": 2,
        "checkpoint_dir": str(tmp_path / name / "ckpt"),
        "log_dir": str(tmp_path / name / "logs"),
    }
    values.update(extra)
    return load_config(config, values)


@pytest.fixture(scope="module")
def fp_checkpoint(tiny_synthetic_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fp")
    build_trainer(_cfg(tiny_synthetic_root, tmp, "fp"), CPU).fit()
    return tmp / "fp" / "ckpt" / "best_model.pth"


def test_progressive_schedule_switches_bits_and_freezes_observers(tiny_synthetic_root, tmp_path, fp_checkpoint, caplog):
    cfg = _cfg(
        tiny_synthetic_root,
        tmp_path,
        "prog",
        "snn/configs/event_snn_lite_progressive.yaml",
        num_epochs=3,
        quantization_schedule={0: 8, 1: 4, 2: 2},
        freeze_observers_epoch=2,
    )
    caplog.set_level(logging.INFO)
    trainer = build_trainer(cfg, CPU, resume=fp_checkpoint)
    assert "warm start" in caplog.text and "no quantizer state" in caplog.text
    assert all(bool(q.initialized) for _, q in control.activation_quantizers(trainer.model))
    trainer.fit()
    assert trainer.model.bit_width == 2 and trainer.model.enc1.quant_layer.bit_width == 2
    assert not trainer.model.enc1.quant_layer.observer_enabled
    assert "W8A8 -> W4A4" in caplog.text and "W4A4 -> W2A2" in caplog.text
    ckpt = torch.load(tmp_path / "prog" / "ckpt" / "last.pth", weights_only=True)
    assert ckpt["model_args"]["bit_width"] == 2
    # Resuming its own last.pth continues at the saved epoch with the saved ranges and width.
    cfg4 = _cfg(
        tiny_synthetic_root,
        tmp_path,
        "prog",
        "snn/configs/event_snn_lite_progressive.yaml",
        num_epochs=4,
        quantization_schedule={0: 8, 1: 4, 2: 2},
        freeze_observers_epoch=2,
    )
    resumed = build_trainer(cfg4, CPU, resume=tmp_path / "prog" / "ckpt" / "last.pth")
    assert resumed.start_epoch == 3 and resumed.model.bit_width == 2
    # The config's weight EMA is on: the raw ranges continue training, the averaged ones are validated.
    assert float(resumed.model.enc1.quant_layer.running_max) == pytest.approx(
        float(ckpt["train_state_dict"]["enc1.quant_layer.running_max"])
    )
    assert float(resumed.ema.module.enc1.quant_layer.running_max) == pytest.approx(
        float(ckpt["state_dict"]["enc1.quant_layer.running_max"])
    )
    assert resumed.ema.module.bit_width == 2
    # The learned steps come back as saved, and stay: the resume does not re-seed them.
    for model, state in ((resumed.model, ckpt["train_state_dict"]), (resumed.ema.module, ckpt["state_dict"])):
        for name, q in control.activation_quantizers(model):
            assert q.learn_scale and q.has_step, name
            assert torch.equal(q.step.detach(), state[f"{name}.step"]), name
    resumed.validate(3)
    assert torch.equal(resumed.model.enc1.quant_layer.step.detach(), ckpt["train_state_dict"]["enc1.quant_layer.step"])


def test_at_a_width_switch_the_ema_takes_the_models_new_steps_instead_of_averaging_across_grids(
    tiny_synthetic_root, tmp_path, fp_checkpoint
):
    extra = {"num_epochs": 2, "quantization_schedule": {0: 8, 1: 4}, "freeze_observers_epoch": None,
             "align_current_steps": False}  # fmt: skip  # the raw learned steps are what this test compares
    cfg = _cfg(tiny_synthetic_root, tmp_path, "switch", "snn/configs/event_snn_lite_progressive.yaml", **extra)
    trainer = build_trainer(cfg, CPU, resume=fp_checkpoint)
    trainer.start_weight_ema()
    trainer.update_quantization(0)
    trainer.train_one_epoch(0)
    q8 = trainer.model.enc1.quant_layer.step.detach().clone()
    trainer.update_quantization(1)  # 8 -> 4 bit
    model = dict(control.activation_quantizers(trainer.model))
    ema = dict(control.activation_quantizers(trainer.ema.module))
    assert float(model["enc1.quant_layer"].step) > 3 * float(q8)  # a 4-bit step is far coarser than an 8-bit one
    for name, q in model.items():
        assert ema[name].bit_width == q.bit_width and ema[name].has_step, name
        for key in control.QUANTIZER_STATE:
            assert torch.equal(getattr(ema[name], key), getattr(q, key)), (name, key)
    trainer.train_one_epoch(1)  # the EMA keeps averaging, now within the 4-bit grid
    for name, q in model.items():
        # Averaged across the grids, an EMA step would sit near the 8-bit one, several times smaller.
        # Within the 4-bit grid it lags the model's by a few percent; dec3's step in this toy model is
        # tiny (under 0.001) and moves about 20 % in the epoch.
        assert float(ema[name].step) == pytest.approx(float(q.step), rel=0.25), name


def test_a_learned_binary_step_gets_the_lsq_gradient_scale():
    from snn.quantization.quantization_aware import QuantizationAwareLayer

    torch.manual_seed(0)
    x = torch.randn(4, 3, 10, 10, requires_grad=True)
    q = QuantizationAwareLayer(bit_width=1, learn_scale=True).train()
    out = q(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    per_sample = 3 * 10 * 10
    expected = (grad * torch.where(x >= 0, 1.0, -1.0)).sum() / per_sample**0.5  # qmax = 1
    assert float(q.step.grad) == pytest.approx(float(expected), rel=1e-5)
    four = QuantizationAwareLayer(bit_width=4, learn_scale=True).train()
    four(x).backward(grad)
    # The same scale as the other widths: their step gradients are of one order, not 10^2 apart.
    assert abs(float(q.step.grad)) < 30 * abs(float(four.step.grad))


def test_finetune_script_end_to_end_and_errors(tiny_synthetic_root, tmp_path, fp_checkpoint, capsys):
    out = tmp_path / "q4"
    config = tmp_path / "tiny_4bit.yaml"  # the 4-bit config without its 48x48 training crops
    config.write_text(f"base: {Path('snn/configs/event_snn_lite_4bit.yaml').resolve()}\ncrop_size: 32\n")
    argv = [
        "--config",
        str(config),
        "--pretrained",
        str(fp_checkpoint),
        "--checkpoint-dir",
        str(out / "ckpt"),
        "--log-dir",
        str(out / "logs"),
        "--data-root",
        str(tiny_synthetic_root),
        "--epochs",
        "1",
        "--batch-size",
        "4",
    ]
    assert finetune_quantized.main(argv) == 0
    model = load_model(out / "ckpt" / "best_model.pth")
    assert model.bit_width == 4 and model.enc1.conv.weight_bits == 4
    assert model.stem.conv.weight.shape[0] == 8  # architecture taken from the pretrained model
    # A missing checkpoint and strict loading of an FP checkpoint: one line, exit 2, nothing written.
    assert finetune_quantized.main(argv[:3] + [str(tmp_path / "nope.pth")] + argv[4:5] + [str(tmp_path / "x")]) == 2
    assert "nope.pth: checkpoint file not found" in capsys.readouterr().err
    strict = (
        argv[:5]
        + [str(tmp_path / "s" / "ckpt"), "--log-dir", str(tmp_path / "s" / "logs")]
        + argv[8:]
        + ["--strict-load"]
    )
    assert finetune_quantized.main(strict) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quant_layer" in err[0]
    assert not (tmp_path / "s").exists()  # refused at start-up: not even empty folders
    # The refusal to overwrite a finished run gives a hint that works, and --resume continues it.
    assert finetune_quantized.main(argv) == 2
    err = capsys.readouterr().err
    assert f"Resume it with --resume {out / 'ckpt' / 'last.pth'}" in err
    assert finetune_quantized.main(["--resume", str(out / "ckpt" / "last.pth"), "--epochs", "2"]) == 0
    assert load_model(out / "ckpt" / "last.pth").bit_width == 4
    assert torch.load(out / "ckpt" / "last.pth", weights_only=True)["epoch"] == 1  # one more epoch, not a new run
    # A fresh checkpoint folder but the old log folder: no --resume hint to a file that does not exist.
    other = argv[:5] + [str(tmp_path / "new" / "ckpt")] + argv[6:]
    assert finetune_quantized.main(other) == 2
    err = capsys.readouterr().err
    assert "metrics.csv already exists" in err and "--resume" not in err and "Choose another" in err


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    save_checkpoint(
        {
            "model_name": "EventSNNFlowNetLiteV2",
            "model_args": SMALL,
            "config": {},
            "state_dict": EventSNNFlowNetLiteV2(**SMALL).state_dict(),
        },
        bad,
    )
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="bad.pth: truncated or corrupt"):
        load_model(bad)


def test_export_lists_integer_codes_and_scales_that_rebuild_the_weights(tmp_path):
    import json

    from snn.quantization.weight_quant import fake_quantize_weight
    from snn.utils.quantization_utils import export_quantized_model_info

    q = EventSNNFlowNetLiteV2(**SMALL, quantize=True, bit_width=4)
    q.set_bit_width(2)
    export_quantized_model_info(q, tmp_path / "info.json", include_weights=True)
    info = json.loads((tmp_path / "info.json").read_text())
    layers = {layer["name"]: layer for layer in info["layers"]}
    enc2 = layers["enc2.conv"]
    assert enc2["weight_bits"] == 2 and layers["stem.conv"]["weight_bits"] == 8
    codes = torch.tensor(enc2["weight_codes"], dtype=torch.float32)
    assert set(codes.unique().tolist()) <= {-1.0, 0.0, 1.0}
    rebuilt = codes * torch.tensor(enc2["weight_scales"]).view(-1, 1, 1, 1)
    torch.testing.assert_close(rebuilt, fake_quantize_weight(q.enc2.conv.weight, 2).detach())
    assert enc2["activation"]["bits"] == 2
    assert "calibrate" in info["network_error"]  # no ranges yet: no folded description
    with control.calibrating(q):
        q((torch.rand(1, 3, 2, 16, 16) < 0.3).float())
    info = export_quantized_model_info(q, tmp_path / "info.json", input_size=(16, 16))
    # This untrained model's deeper layers never fired in calibration: their steps are at the floor.
    assert "32 bits" in info["network_error"] and "never fired" in info["network_error"]
    from tests.deploy.lively import lively_model

    q, _ = lively_model(2, 2)
    info = export_quantized_model_info(q, tmp_path / "info.json", input_size=(16, 16))
    from snn.deploy.fold import fold_network

    assert info["network"] == json.loads(json.dumps(fold_network(q, 16, 16)[0]))
    assert json.loads((tmp_path / "info.json").read_text())["network"]["layers"][3]["name"] == "enc3"


def test_a_best_checkpoint_of_another_bit_width_is_kept_not_overwritten(tmp_path):
    from snn.models.checkpoint import keep_best_of_other_width

    path = tmp_path / "best_model.pth"
    q4 = {**SMALL, "quantize": True, "bit_width": 4}
    save_checkpoint({"model_name": "EventSNNFlowNetLiteV2", "model_args": q4, "config": {}, "state_dict": {}}, path)
    before = path.read_bytes()
    keep_best_of_other_width(path, (4, 4))  # same widths: replaced in place later, nothing to keep
    assert path.read_bytes() == before and not (tmp_path / "best_model_4bit.pth").exists()
    keep_best_of_other_width(path, (8, 8))
    assert (tmp_path / "best_model_4bit.pth").read_bytes() == before and not path.exists()


def test_weight_and_current_bits_are_set_independently():
    """W1A4: binary per-channel weight codes, currents on a 4-bit grid; edge layers stay at 8."""
    torch.manual_seed(0)
    model = EventSNNFlowNetLiteV2(**SMALL, quantize=True, bit_width=1, current_bits=4).train()
    assert control.model_widths(model) == (1, 4)
    codes, _ = weight_codes_and_scale(model.enc2.conv.weight, model.enc2.conv.weight_bits)
    assert model.enc2.conv.weight_bits == 1 and set(codes.unique().tolist()) == {-1.0, 1.0}
    q = model.enc2.quant_layer
    assert q.bit_width == 4 and not q.is_binary
    current = q(torch.randn(20000) * 3)
    steps = (current / q.scale()).round()
    assert torch.allclose(current / q.scale(), steps, atol=1e-4) and len(steps.unique()) == 15  # -7..7
    assert model.stem.conv.weight_bits == 8 and model.head1.quant_layer.bit_width == 8
    model.set_bit_width(2, current_bits=8)
    assert (model.enc2.conv.weight_bits, model.enc2.quant_layer.bit_width) == (2, 8)
    assert control.model_widths(model) == (2, 8)
    model.set_bit_width(4)  # one width for both again
    assert (model.enc2.conv.weight_bits, model.enc2.quant_layer.bit_width) == (4, 4)


def test_config_gives_weight_and_current_bits_per_epoch(tmp_path):
    from snn.config import CONFIG_DIR, ConfigError

    cfg = load_config(CONFIG_DIR / "event_snn_lite_2bit.yaml", {"current_bits": 4})
    assert cfg.widths_at(0) == (2, 4) and cfg.model_args()["current_bits"] == 4
    assert load_config(CONFIG_DIR / "event_snn_lite_2bit.yaml").model_args()["current_bits"] is None  # = weights
    prog = load_config(CONFIG_DIR / "event_snn_lite_progressive.yaml", {"quantization_schedule": {0: 8, 2: "W2A4"}})
    assert [prog.widths_at(e) for e in (0, 1, 2, 5)] == [(8, 8), (8, 8), (2, 4), (2, 4)]
    assert load_config(CONFIG_DIR / "event_snn_lite_1bit.yaml").widths_at(0) == (1, 1)  # binarize: W1A1
    with pytest.raises(ConfigError, match=r"quantization_schedule\[2\].*'W2'"):
        load_config(CONFIG_DIR / "event_snn_lite_progressive.yaml", {"quantization_schedule": {0: 8, 2: "W2"}})
    with pytest.raises(ConfigError, match="current_bits.*binarize"):
        load_config(CONFIG_DIR / "event_snn_lite_1bit.yaml", {"current_bits": 4})


def test_a_resumed_weight_and_current_schedule_restores_both_widths(tiny_synthetic_root, tmp_path, fp_checkpoint):
    extra = {"num_epochs": 2, "quantization_schedule": {0: 8, 1: "W2A4"}, "freeze_observers_epoch": None}
    cfg = _cfg(tiny_synthetic_root, tmp_path, "wa", "snn/configs/event_snn_lite_progressive.yaml", **extra)
    trainer = build_trainer(cfg, CPU, resume=fp_checkpoint)
    trainer.fit()
    assert control.model_widths(trainer.model) == (2, 4)
    assert (tmp_path / "wa" / "ckpt" / "best_model_W2A4.pth").exists()
    cfg3 = _cfg(tiny_synthetic_root, tmp_path, "wa", "snn/configs/event_snn_lite_progressive.yaml", **{
        **extra, "num_epochs": 3})  # fmt: skip
    resumed = build_trainer(cfg3, CPU, resume=tmp_path / "wa" / "ckpt" / "last.pth")
    assert resumed.start_epoch == 2
    for model in (resumed.model, resumed.ema.module):
        assert control.model_widths(model) == (2, 4)
        assert (model.enc1.conv.weight_bits, model.enc1.quant_layer.bit_width) == (2, 4)
        assert (model.stem.conv.weight_bits, model.stem.quant_layer.bit_width) == (8, 8)


def test_distillation_takes_the_start_checkpoint_as_teacher_and_keeps_it_on_resume(
    tiny_synthetic_root, tmp_path, fp_checkpoint
):
    from snn.training.run import RunDirError

    cfg = _cfg(tiny_synthetic_root, tmp_path, "kd", "snn/configs/event_snn_lite_4bit.yaml", num_epochs=1,
               distill_weight=0.5)  # fmt: skip
    trainer = build_trainer(cfg, CPU, resume=fp_checkpoint)
    assert trainer.cfg.distill_from == str(fp_checkpoint)
    assert control.model_widths(trainer.teacher) == (32, 32) and not trainer.teacher.training
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    trainer.fit()
    saved = torch.load(tmp_path / "kd" / "ckpt" / "last.pth", weights_only=True)
    assert saved["config"]["distill_from"] == str(fp_checkpoint)
    resumed = build_trainer(
        _cfg(
            tiny_synthetic_root,
            tmp_path,
            "kd",
            "snn/configs/event_snn_lite_4bit.yaml",
            num_epochs=2,
            distill_weight=0.5,
            distill_from=str(fp_checkpoint),
        ),  # fmt: skip
        CPU,
        resume=tmp_path / "kd" / "ckpt" / "last.pth",
    )
    assert resumed.teacher is not None and resumed.start_epoch == 1
    scratch = _cfg(tiny_synthetic_root, tmp_path, "kd0", distill_weight=0.5)
    with pytest.raises(RunDirError, match="needs a teacher"):
        build_trainer(scratch, CPU)


def test_the_firing_rate_term_sees_every_layer_only_when_weighted(tiny_synthetic_root, tmp_path, fp_checkpoint,
                                                                  monkeypatch):  # fmt: skip
    from snn.training import trainer as trainer_module

    calls = []
    real = trainer_module.firing_rate_penalty

    def spy(rates, low, high):
        calls.append((set(rates), low, high, all(r.requires_grad for r in rates.values())))
        return real(rates, low, high)

    monkeypatch.setattr(trainer_module, "firing_rate_penalty", spy)
    one_bit = "snn/configs/event_snn_lite_1bit.yaml"
    off = build_trainer(_cfg(tiny_synthetic_root, tmp_path, "off", one_bit), CPU, resume=fp_checkpoint)
    off.fit()
    assert calls == []
    cfg = _cfg(tiny_synthetic_root, tmp_path, "alive", one_bit, firing_rate_weight=0.5, firing_rate_band=[0.02, 0.4])
    trainer = build_trainer(cfg, CPU, resume=fp_checkpoint)
    trainer.fit()
    assert len(calls) == len(trainer.train_loader)
    assert all(call == (set(trainer.model.spiking_layers()), 0.02, 0.4, True) for call in calls)
