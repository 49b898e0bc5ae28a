import csv

import pytest
import torch

from snn.config import DEFAULT_CONFIG, load_config
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.models.checkpoint import load_checkpoint
from snn.training.run import RunDirError, build_trainer
from snn.utils.runtime import seed_everything

CPU = torch.device("cpu")


def _cfg(root, tmp_path, **extra):
    values = {
        "data_root": str(root),
        "dataset": "blinksim",
        "base_ch": 8,
        "num_bins": 3,
        "bins_per_step": 1,
        "batch_size": 4,
        "num_epochs": 2,
        "learning_rate": 3e-3,
        "warmup_epochs": 0.0,
        "augment": False,
        "crop_size": 32,  # the whole 32x32 frame of the tiny dataset
        "image_every": 1,
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "log_dir": str(tmp_path / "logs"),
    }
    values.update(extra)
    return load_config(DEFAULT_CONFIG, values)


@pytest.mark.slow
def test_short_training_run_lowers_the_loss(tiny_synthetic_root, tmp_path):
    seed_everything(0)
    cfg = _cfg(tiny_synthetic_root, tmp_path, num_epochs=14, lr_schedule="constant")
    trainer = build_trainer(cfg, CPU)
    first = trainer.train_one_epoch(0)
    trainer.fit()
    rows = list(csv.DictReader(open(tmp_path / "logs" / "metrics.csv")))
    last = float(rows[-1]["train_loss"])
    assert last < 0.8 * first, (first, last)
    # The network fits what it trained on: well below the zero-flow AEE on the training windows.
    # (One 4-window validation sequence is too small to show learning: it passes or fails with the shuffle.)
    train = evaluate_checkpoint(tmp_path / "ckpt" / "last.pth", tiny_synthetic_root, "train", progress=False)
    overall = train.metrics["dense"]["overall"]
    assert overall["aee"] < 0.7 * overall["zero_flow_aee"], overall


def test_checkpoints_rebuild_the_model_and_load_weights_only(tiny_synthetic_root, tmp_path):
    seed_everything(0)
    cfg = _cfg(tiny_synthetic_root, tmp_path, num_epochs=1)
    build_trainer(cfg, CPU).fit()
    for name in ("last.pth", "best_model.pth"):
        ckpt = torch.load(tmp_path / "ckpt" / name, weights_only=True)  # no code can run
        assert ckpt["model_args"]["base_ch"] == 8
        assert ckpt["config"]["num_bins"] == 3
    assert (tmp_path / "ckpt" / "config.yaml").exists()
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert not list((tmp_path / "ckpt").glob(".*.tmp"))


def test_resume_restores_epoch_optimizer_and_rng(tiny_synthetic_root, tmp_path):
    seed_everything(0)
    cfg = _cfg(tiny_synthetic_root, tmp_path, num_epochs=1)
    first = build_trainer(cfg, CPU)
    first.fit()
    saved = load_checkpoint(tmp_path / "ckpt" / "last.pth")

    torch.manual_seed(123)  # scramble: resume must restore the saved RNG state
    cfg2 = _cfg(tiny_synthetic_root, tmp_path, num_epochs=2)
    resumed = build_trainer(cfg2, CPU, resume=tmp_path / "ckpt" / "last.pth")
    assert resumed.start_epoch == 1
    assert resumed.global_step == saved["global_step"] > 0
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    state = resumed.optimizer.state_dict()["state"]
    assert torch.equal(state[0]["exp_avg"], saved["optimizer"]["state"][0]["exp_avg"])
    resumed.fit()
    assert load_checkpoint(tmp_path / "ckpt" / "last.pth")["epoch"] == 1


def test_warm_start_from_another_runs_checkpoint_starts_at_epoch_zero(tiny_synthetic_root, tmp_path):
    build_trainer(_cfg(tiny_synthetic_root, tmp_path, num_epochs=1), CPU).fit()
    other = _cfg(tiny_synthetic_root, tmp_path, checkpoint_dir=str(tmp_path / "ckpt2"), log_dir=str(tmp_path / "logs2"))
    trainer = build_trainer(other, CPU, resume=tmp_path / "ckpt" / "best_model.pth")
    assert trainer.start_epoch == 0 and trainer.global_step == 0
    ref = torch.load(tmp_path / "ckpt" / "best_model.pth", weights_only=True)["state_dict"]
    assert torch.equal(trainer.model.state_dict()["stem.conv.weight"], ref["stem.conv.weight"])


def test_fresh_run_refuses_to_overwrite_another_run(tiny_synthetic_root, tmp_path):
    build_trainer(_cfg(tiny_synthetic_root, tmp_path, num_epochs=1), CPU).fit()
    before = (tmp_path / "ckpt" / "last.pth").read_bytes()
    with pytest.raises(RunDirError, match="last.pth already exists"):
        build_trainer(_cfg(tiny_synthetic_root, tmp_path, num_epochs=1), CPU)
    assert (tmp_path / "ckpt" / "last.pth").read_bytes() == before


def test_weight_ema_update_warms_up_then_uses_the_decay():
    from snn.training.weight_ema import warmup_ema_fn

    update = warmup_ema_fn(0.99)
    avg, cur = [torch.tensor([0.0])], [torch.tensor([10.0])]
    update(avg, cur, torch.tensor(0))  # decay min(0.99, 1/10) = 0.1: mostly the new weights
    assert avg[0].item() == pytest.approx(9.0)
    update(avg, [torch.tensor([0.0])], torch.tensor(10_000))  # decay 0.99 once warmed up
    assert avg[0].item() == pytest.approx(0.99 * 9.0)
    counters = [torch.tensor([3])]
    update(counters, [torch.tensor([7])], torch.tensor(5))  # integer buffers are copied
    assert counters[0].item() == 7


def test_weight_ema_is_validated_saved_and_resumed(tiny_synthetic_root, tmp_path):
    seed_everything(0)
    first = build_trainer(_cfg(tiny_synthetic_root, tmp_path, num_epochs=1, weight_ema=0.9), CPU)
    first.fit()
    saved = load_checkpoint(tmp_path / "ckpt" / "last.pth")
    key = "enc1.conv.weight"
    assert not torch.equal(saved["state_dict"][key], saved["train_state_dict"][key])
    assert torch.equal(saved["state_dict"][key], first.ema.module.state_dict()[key])

    resumed = build_trainer(
        _cfg(tiny_synthetic_root, tmp_path, num_epochs=2, weight_ema=0.9), CPU, resume=tmp_path / "ckpt" / "last.pth"
    )
    assert torch.equal(resumed.model.state_dict()[key], saved["train_state_dict"][key])
    assert torch.equal(resumed.ema.module.state_dict()[key], saved["state_dict"][key])

    other = _cfg(tiny_synthetic_root, tmp_path, checkpoint_dir=str(tmp_path / "ckpt2"), log_dir=str(tmp_path / "logs2"))
    warm = build_trainer(other, CPU, resume=tmp_path / "ckpt" / "last.pth")
    assert torch.equal(warm.model.state_dict()[key], saved["state_dict"][key])  # the EMA weights


def test_frames_the_network_cannot_take_fail_before_training(tmp_path):
    from snn.data.errors import DatasetFormatError
    from snn.data.synthetic import generate_dataset
    from snn.data.synthetic_config import SyntheticConfig

    root = tmp_path / "odd"
    generate_dataset(root, SyntheticConfig(height=36, width=32, num_frames=3), 1, 1, 1, workers=1, progress=False)
    from snn.config import config_from_dict

    # Whole 36x32 frames (no crop: an explicit None, which load_config's overrides would skip) cannot be trained on.
    whole = config_from_dict({**_cfg(root, tmp_path, num_epochs=1).to_dict(), "crop_size": None}, "no crop")
    with pytest.raises(DatasetFormatError, match=r"train/seq_0000: frames are 36x32 .* divisible by 8"):
        build_trainer(whole, CPU)
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "logs").exists()
    build_trainer(_cfg(root, tmp_path, num_epochs=1), CPU)  # 32x32 crops train; the 36x32 val frames are padded
    big_crop = _cfg(root, tmp_path, num_epochs=1, crop_size=40)
    with pytest.raises(DatasetFormatError, match=r"train/seq_0000: frames are 36x32, smaller than the 40x40"):
        build_trainer(big_crop, CPU)


def test_a_crop_larger_than_the_frames_names_crop_size_and_a_value_that_fits(tiny_synthetic_root, tmp_path):
    from snn.data.errors import DatasetFormatError

    cfg = _cfg(tiny_synthetic_root, tmp_path, crop_size=48)  # the default config's crop on 32x32 frames
    with pytest.raises(DatasetFormatError) as err:
        build_trainer(cfg, CPU)
    message = str(err.value)
    assert "frames are 32x32, smaller than the 48x48 training crop (config key crop_size)" in message
    assert message.endswith(
        "use a smaller one such as --set crop_size=32 or --set crop_size=null to train on whole frames"
    )
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "logs").exists()
    build_trainer(_cfg(tiny_synthetic_root, tmp_path, crop_size=32), CPU)  # the value it suggests trains


def _untrained_checkpoint(root, tmp_path, name, with_config=True, **extra):
    """A checkpoint of an untrained model of ``_cfg(**extra)`` in tmp_path/name (no training: cheap)."""
    from snn.config import save_config
    from snn.models.checkpoint import save_checkpoint
    from snn.models.factory import build_model

    cfg = _cfg(root, tmp_path, checkpoint_dir=str(tmp_path / name), **extra)
    model = build_model(cfg.model, cfg.model_args())
    path = tmp_path / name / "best_model.pth"
    payload = {"model_name": cfg.model, "model_args": cfg.model_args(), "config": cfg.to_dict()}
    save_checkpoint({**payload, "state_dict": model.state_dict(), "epoch": 0, "optimizer": None}, path)
    if with_config:
        save_config(cfg, tmp_path / name / "config.yaml")
    return path


@pytest.mark.parametrize(
    ("widths", "tag", "with_config"),
    [({"initial_bit_width": 8}, "W8A8", True), ({"initial_bit_width": 2, "current_bits": 4}, "W2A4", False)],
)
def test_a_quantized_checkpoint_into_a_full_precision_config_says_what_it_is(
    tiny_synthetic_root, tmp_path, widths, tag, with_config
):
    from snn.models.checkpoint import CheckpointError

    q = _untrained_checkpoint(tiny_synthetic_root, tmp_path, "q", with_config, quantization_enabled=True, **widths)
    with pytest.raises(CheckpointError) as err:
        build_trainer(_cfg(tiny_synthetic_root, tmp_path), CPU, resume=q)  # another run's: a warm start
    config = f"--config {q.parent / 'config.yaml'}" if with_config else "the config it was trained with"
    assert str(err.value) == (
        f"{q}: this is a {tag} checkpoint (quantized), but this config trains in full precision "
        f"(quantization_enabled: false); resume it with its own config ({config}), or start from its weights "
        f"with finetune_quantized.py --pretrained {q} and a quantized --config"
    )
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"amp": "fp16"}, "amp fp16 needs a CUDA device"),  # refused when the trainer is made
        ({"distill_weight": 1.0, "distill_from": "no/teacher.pth"}, "no/teacher.pth: checkpoint file not found"),
    ],
)
def test_a_start_refused_late_in_build_trainer_leaves_no_folders(tiny_synthetic_root, tmp_path, extra, expected):
    with pytest.raises(ValueError, match=expected):
        build_trainer(_cfg(tiny_synthetic_root, tmp_path, **extra), CPU)
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "logs").exists()


def test_a_warm_start_into_a_quantized_model_makes_its_folders_only_when_it_has_started(tiny_synthetic_root, tmp_path):
    # Calibration and the width switch run before the folders exist; TensorBoard waits for fit().
    fp = _untrained_checkpoint(tiny_synthetic_root, tmp_path, "fp")
    cfg = _cfg(tiny_synthetic_root, tmp_path, quantization_enabled=True, initial_bit_width=4, calibration_batches=1)
    trainer = build_trainer(cfg, CPU, resume=fp)
    assert trainer.quantized and (tmp_path / "ckpt" / "config.yaml").is_file()
    assert list((tmp_path / "logs").iterdir()) == []  # no event file before training


def test_resuming_with_more_epochs_than_the_cosine_schedule_says_how_the_lr_changes(
    tiny_synthetic_root, tmp_path, caplog
):
    import logging

    seed_everything(0)
    build_trainer(_cfg(tiny_synthetic_root, tmp_path, num_epochs=2), CPU).fit()
    last = tmp_path / "ckpt" / "last.pth"
    with caplog.at_level(logging.WARNING, logger="snn.training.trainer"):
        build_trainer(_cfg(tiny_synthetic_root, tmp_path, num_epochs=2), CPU, resume=last)  # its own budget
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="snn.training.trainer"):
        trainer = build_trainer(_cfg(tiny_synthetic_root, tmp_path, num_epochs=4), CPU, resume=last)
    (record,) = caplog.records
    low = 3e-3 * 0.02  # learning_rate x min_lr_ratio: where the 2-epoch cosine ended
    factor = trainer.scheduler.lr_lambdas[0](trainer.scheduler.last_epoch)
    assert 0.4 < factor < 0.6  # half-way down the refitted cosine: a real jump up from the minimum
    assert record.getMessage() == (
        "this run's cosine LR schedule was made for 2 epochs and had ended at its minimum; with num_epochs 4 "
        f"it is refitted to 4 epochs, so the LR goes from {low:.3g} to {3e-3 * factor:.3g} at epoch 3 and "
        f"decays to {low:.3g} by epoch 4"
    )


@pytest.mark.parametrize("log_every", [1, 1000])
def test_a_loss_that_turns_nan_stops_the_run_before_any_checkpoint(
    tiny_synthetic_root, tmp_path, monkeypatch, log_every
):
    """The loss is read on the host only every log_every steps and at the epoch's end, so a NaN is
    caught there at the latest, before the epoch's checkpoints are written."""
    import snn.training.trainer as trainer_module

    real = trainer_module.multiscale_epe_loss
    calls = []

    def turns_nan(*args):
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(trainer_module, "multiscale_epe_loss", turns_nan)
    seed_everything(0)
    trainer = build_trainer(_cfg(tiny_synthetic_root, tmp_path, num_epochs=1, batch_size=1, log_every=log_every), CPU)
    with pytest.raises(FloatingPointError, match=r"loss became nan by epoch 1, step \d+"):
        trainer.fit()
    assert len(calls) == (2 if log_every == 1 else len(trainer.train_loader))
    assert not (tmp_path / "ckpt" / "last.pth").exists() and not (tmp_path / "ckpt" / "best_model.pth").exists()


def _norm_statistics(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}


@pytest.mark.parametrize("frozen", [False, True])
def test_freeze_norm_stats_keeps_the_batch_norm_statistics_while_weights_learn(tiny_synthetic_root, tmp_path, frozen):
    seed_everything(0)
    trainer = build_trainer(_cfg(tiny_synthetic_root, tmp_path, freeze_norm_stats=frozen), CPU)
    stats, weight = _norm_statistics(trainer.model), trainer.model.stem.conv.weight.detach().clone()
    trainer.train_one_epoch(0)
    after = _norm_statistics(trainer.model)
    assert stats and not torch.equal(trainer.model.stem.conv.weight, weight)  # it trained
    same = all(torch.equal(stats[k], after[k]) for k in stats)
    assert same == frozen
    assert trainer.model.training  # only the batch norms are held in eval mode


def test_freeze_norm_stats_epoch_lets_the_statistics_move_until_that_epoch(tiny_synthetic_root, tmp_path, caplog):
    import logging

    seed_everything(0)
    trainer = build_trainer(_cfg(tiny_synthetic_root, tmp_path, freeze_norm_stats_epoch=1), CPU)
    start = _norm_statistics(trainer.model)
    trainer.train_one_epoch(0)
    after_first = _norm_statistics(trainer.model)
    assert any(not torch.equal(start[k], after_first[k]) for k in start)  # epoch 1 still estimates them
    weight = trainer.model.stem.conv.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="snn.training.trainer"):
        trainer.train_one_epoch(1)
    after_second = _norm_statistics(trainer.model)
    assert all(torch.equal(after_first[k], after_second[k]) for k in start)
    assert not torch.equal(trainer.model.stem.conv.weight, weight)  # while the weights still learn
    assert "epoch 2: batch-norm statistics frozen" in caplog.text


@pytest.mark.parametrize("key", ["freeze_norm_stats_epoch", "freeze_observers_epoch"])
def test_a_negative_freeze_epoch_is_a_config_error(key):
    from snn.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=f"key '{key}' must be an epoch >= 0 or null, got -1"):
        config_from_dict({key: -1}, "x.yaml")


@pytest.mark.parametrize("batches", [0, 1])
def test_a_warm_start_at_the_same_widths_keeps_the_quantizer_state_only_without_calibration(
    tiny_synthetic_root, tmp_path, batches, caplog
):
    import logging

    from snn.models.checkpoint import save_checkpoint

    seed_everything(0)
    fp = _untrained_checkpoint(tiny_synthetic_root, tmp_path, "fp")
    w4 = dict(quantization_enabled=True, initial_bit_width=4, learn_scale=True)
    first = build_trainer(_cfg(tiny_synthetic_root, tmp_path, calibration_batches=1, **w4), CPU, resume=fp)
    # Move every step off its calibrated value, as fine-tuning does, so that a recalibration shows.
    with torch.no_grad():
        for name, p in first.model.named_parameters():
            if name.endswith("quant_layer.step"):
                p.mul_(3.0)
    state = {k: v.clone() for k, v in first.model.state_dict().items() if "quant_layer" in k}
    q = tmp_path / "q" / "best_model.pth"
    payload = torch.load(fp, weights_only=True)
    save_checkpoint({**payload, "model_args": first.model_args, "state_dict": first.model.state_dict()}, q)
    cfg = _cfg(
        tiny_synthetic_root, tmp_path, checkpoint_dir=str(tmp_path / "ckpt2"), log_dir=str(tmp_path / "logs2"),
        calibration_batches=batches, **w4,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="snn.training.trainer"):
        again = build_trainer(cfg, CPU, resume=q).model.state_dict()
    kept = all(torch.equal(again[k], v) for k, v in state.items())
    assert kept == (batches == 0)
    said = any("quantizer ranges and steps of" in r.getMessage() for r in caplog.records)
    assert said == kept
