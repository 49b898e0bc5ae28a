"""Interruptions and bad input, as a user meets them: each run is a real `train.py` process.

A small driver starts train.py in a subprocess and, to inject a fault at a chosen
moment, sends itself a signal (SIGINT, SIGTERM, SIGKILL) from inside the n-th loss
computation or the n-th checkpoint write. Resumed runs must end with weights
bitwise equal to an uninterrupted run's.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    os.chdir({repo!r})
    import torch
    torch.set_num_threads(1)
    mode, at = os.environ.get("FAULT", ""), int(os.environ.get("FAULT_AT", "0"))
    SIGNALS = {{"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "kill": signal.SIGKILL}}
    if mode in SIGNALS:
        import snn.training.trainer as trainer
        real_loss, calls = trainer.multiscale_epe_loss, [0]
        def loss(*args, **kwargs):
            calls[0] += 1
            if calls[0] == at:
                os.kill(os.getpid(), SIGNALS[mode])
            return real_loss(*args, **kwargs)
        trainer.multiscale_epe_loss = loss
    elif mode == "kill_in_save":
        real_save, saves = torch.save, [0]
        def save(obj, f, *args, **kwargs):
            saves[0] += 1
            if saves[0] == at:
                Path(f).write_bytes(b"PK\\x03\\x04 half a checkpoint")
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)
        torch.save = save
    elif mode == "full_disk_in_save":
        import shutil
        real_save, real_usage, saves = torch.save, shutil.disk_usage, [0]
        def save(obj, f, *args, **kwargs):
            if Path(f).name == ".last.pth.tmp":
                saves[0] += 1
                if saves[0] == at:
                    # What a full disk does: part of the file, no space left, torch's error without errno.
                    Path(f).write_bytes(b"PK\\x03\\x04" + bytes(4096))
                    shutil.disk_usage = lambda folder: real_usage(folder)._replace(free=0)
                    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4164 vs 4100")
            return real_save(obj, f, *args, **kwargs)
        torch.save = save
    import train
    sys.exit(train.main(sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    path = tmp_path_factory.mktemp("driver") / "driver.py"
    path.write_text(DRIVER.format(repo=str(REPO)))
    return path


def _tiny_config(path, base, root, extra=""):
    """A tiny CPU run on top of ``base``: 3 epochs of 3 steps, random crops and flips on, weight EMA on."""
    path.write_text(
        f"base: {REPO / 'snn/configs' / base}\n"
        f"data_root: {root}\ndataset: blinksim\n"
        "base_ch: 4\nnum_bins: 3\nbins_per_step: 1\nbatch_size: 4\nnum_epochs: 3\ncrop_size: 16\naugment: true\n"
        "learning_rate: 0.003\nweight_ema: 0.9\nimage_every: 0\n"
        # CPU: some CUDA kernels (bilinear upsampling's backward, cuDNN convolutions) are not
        # deterministic, so two CUDA runs differ in the last bits, interrupted or not.
        "device: cpu\n" + extra
    )
    return path


@pytest.fixture(scope="module")
def config(tiny_synthetic_root, tmp_path_factory):
    return _tiny_config(tmp_path_factory.mktemp("cfg") / "tiny.yaml", "event_snn_lite.yaml", tiny_synthetic_root)


def _train(driver, args, fault="", at=0):
    env = {**os.environ, "FAULT": fault, "FAULT_AT": str(at), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(driver), *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )


def _run_args(config, tmp, name):
    return ["--config", config, "--checkpoint-dir", tmp / name / "ckpt", "--log-dir", tmp / name / "logs"]


def _weights(path):
    """Every tensor a checkpoint holds: the EMA and raw weights (quantizer ranges and learned steps
    among them) and the optimizer's state."""
    ckpt = torch.load(path, weights_only=True)
    optimizer = {
        f"optimizer.{i}.{k}": v
        for i, state in ckpt["optimizer"]["state"].items()
        for k, v in state.items()
        if torch.is_tensor(v)
    }
    return {**{f"ema.{k}": v for k, v in ckpt["state_dict"].items()}, **ckpt["train_state_dict"], **optimizer}


def _assert_bitwise_equal(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differing = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"


def _csv_without_times(path):
    rows = list(csv.DictReader(open(path)))
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def _checksums(*folders):
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def reference(driver, config, tmp_path_factory):
    """The uninterrupted run every resumed one must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    r = _train(driver, _run_args(config, tmp, "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [("sigint", 130), ("sigterm", 143)])
def test_a_signal_saves_prints_the_resume_command_and_the_resume_is_exact(
    driver, config, reference, tmp_path, sig, code
):
    args = _run_args(config, tmp_path, "run")
    r = _train(driver, args, sig, at=5)  # second step of the second epoch
    assert r.returncode == code, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, r.stderr[-2000:]
    assert "epoch 2, step 2" in lines[0]
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[:2] == ["python", "train.py"] and command[-2:] == ["--resume", str(tmp_path / "run/ckpt/last.pth")]
    saved = torch.load(tmp_path / "run/ckpt/last.pth", weights_only=True)
    assert saved["epoch_progress"] == {
        "epoch": 1,
        "batches": 2,
        "loss_sum": pytest.approx(saved["epoch_progress"]["loss_sum"]),
        "count": 8,
    }
    resumed = _train(driver, command[2:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_bitwise_equal(tmp_path / "run/ckpt/last.pth", reference / "ckpt/last.pth")
    _assert_bitwise_equal(tmp_path / "run/ckpt/best_model.pth", reference / "ckpt/best_model.pth")
    assert _csv_without_times(tmp_path / "run/logs/metrics.csv") == _csv_without_times(reference / "logs/metrics.csv")


@pytest.mark.slow
def test_kill_9_during_training_then_resume_is_exact(driver, config, reference, tmp_path):
    args = _run_args(config, tmp_path, "run")
    r = _train(driver, args, "kill", at=8)  # in the third epoch: last.pth holds epoch 2
    assert r.returncode == -9
    assert torch.load(tmp_path / "run/ckpt/last.pth", weights_only=True)["epoch"] == 1
    resumed = _train(driver, ["--resume", tmp_path / "run/ckpt/last.pth"])  # its own config.yaml is found
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_bitwise_equal(tmp_path / "run/ckpt/last.pth", reference / "ckpt/last.pth")
    assert _csv_without_times(tmp_path / "run/logs/metrics.csv") == _csv_without_times(reference / "logs/metrics.csv")


@pytest.fixture(scope="module")
def progressive_config(tiny_synthetic_root, tmp_path_factory):
    """A progressive run with learned steps: 8, 4 and 2 bit in its three epochs."""
    path = tmp_path_factory.mktemp("cfg") / "progressive.yaml"
    schedule = "quantization_schedule: {0: 8, 1: 4, 2: 2}\n"
    return _tiny_config(path, "event_snn_lite_progressive.yaml", tiny_synthetic_root, schedule)


@pytest.fixture(scope="module")
def progressive_reference(driver, progressive_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progressive_reference")
    r = _train(driver, _run_args(progressive_config, tmp, "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "W8A8 -> W4A4" in r.stderr and "W4A4 -> W2A2" in r.stderr
    saved = torch.load(tmp / "run/ckpt/last.pth", weights_only=True)
    assert saved["model_args"]["bit_width"] == 2 and saved["config"]["learn_scale"]
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "at", "code"), [("kill", 8, -9), ("sigint", 5, 130)])
def test_a_progressive_run_interrupted_between_width_switches_resumes_exactly(
    driver, progressive_config, progressive_reference, tmp_path, fault, at, code
):
    """Interrupted in its 4-bit epoch (kill -9: last.pth from the end of it; Ctrl-C: in its middle), the
    run resumes at 4 bit with the saved learned steps, ranges and EMA, and switches to 2 bit after."""
    args = _run_args(progressive_config, tmp_path, "run")
    r = _train(driver, args, fault, at=at)
    assert r.returncode == code, r.stderr[-2000:]
    assert torch.load(tmp_path / "run/ckpt/last.pth", weights_only=True)["model_args"]["bit_width"] == 4
    resumed = _train(driver, ["--resume", tmp_path / "run/ckpt/last.pth"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "W4A4 -> W2A2" in resumed.stderr
    _assert_bitwise_equal(tmp_path / "run/ckpt/last.pth", progressive_reference / "ckpt/last.pth")
    steps = [k for k in _weights(progressive_reference / "ckpt/last.pth") if k.endswith("quant_layer.step")]
    assert len(steps) > 10  # the learned steps were among the tensors compared
    assert _csv_without_times(tmp_path / "run/logs/metrics.csv") == _csv_without_times(
        progressive_reference / "logs/metrics.csv"
    )


@pytest.mark.slow
def test_kill_9_during_a_save_leaves_the_old_file_and_the_next_start_cleans_up(driver, config, reference, tmp_path):
    args = _run_args(config, tmp_path, "run")
    r = _train(driver, args, "kill_in_save", at=3)  # the first checkpoint write of epoch 2
    assert r.returncode == -9
    ckpt = tmp_path / "run/ckpt"
    partial = sorted(p.name for p in ckpt.glob(".*.tmp"))
    assert partial and partial[0] in (".best_model.pth.tmp", ".last.pth.tmp")
    assert torch.load(ckpt / "last.pth", weights_only=True)["epoch"] == 0  # the old one, whole
    resumed = _train(driver, [*args, "--resume", ckpt / "last.pth"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "removing" in resumed.stderr and not list(ckpt.glob(".*.tmp"))
    _assert_bitwise_equal(ckpt / "last.pth", reference / "ckpt/last.pth")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("moved", "resume_from"), [(False, "last.pth"), (False, "best_model.pth"), (True, "best_model.pth")]
)
def test_a_full_disk_during_a_save_is_one_line_keeps_the_old_checkpoint_and_the_run_resumes(
    driver, config, reference, tmp_path, moved, resume_from
):
    args = _run_args(config, tmp_path, "run")
    r = _train(driver, args, "full_disk_in_save", at=2)  # last.pth of epoch 2
    ckpt = tmp_path / "run/ckpt"
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    (line,) = _error_lines(r.stderr)
    assert line.startswith(f"error: {ckpt / 'last.pth'}: could not be written: the disk is full"), line
    assert "the previous last.pth is unchanged" in line and f"--resume {ckpt / 'last.pth'}" in line
    assert not list(ckpt.glob(".*.tmp"))
    assert torch.load(ckpt / "last.pth", weights_only=True)["epoch"] == 0  # epoch 1's, whole
    if moved:  # off the full disk: its config.yaml still names the old folder
        ckpt = ckpt.rename(tmp_path / "elsewhere")
    # Either of the run's own checkpoints continues it (best_model.pth too: it is not another run's).
    resumed = _train(driver, ["--resume", ckpt / resume_from])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming this run from {ckpt / resume_from}" in resumed.stderr
    _assert_bitwise_equal(ckpt / "last.pth", reference / "ckpt/last.pth")
    assert _csv_without_times(tmp_path / "run/logs/metrics.csv") == _csv_without_times(reference / "logs/metrics.csv")


@pytest.mark.slow
def test_resuming_with_another_config_is_refused_and_changes_nothing(driver, config, reference, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("learning_rate: 0.003", "learning_rate: 0.001"))
    before = _checksums(reference)
    r = _train(driver, [*_run_args(other, reference.parent, "run"), "--resume", reference / "ckpt/last.pth"])
    assert r.returncode == 2
    (line,) = _error_lines(r.stderr)
    assert "learning_rate 0.003 -> 0.001" in line and "--allow-config-change" in line
    assert _checksums(reference) == before


@pytest.mark.slow
def test_resuming_a_full_precision_run_with_a_4_bit_config_names_the_keys(driver, config, reference, tmp_path):
    q4 = tmp_path / "q4.yaml"
    q4.write_text(config.read_text() + "quantization_enabled: true\ninitial_bit_width: 4\n")
    before = _checksums(reference)
    r = _train(driver, [*_run_args(q4, reference.parent, "run"), "--resume", reference / "ckpt/last.pth"])
    assert r.returncode == 2
    (line,) = _error_lines(r.stderr)
    assert "quantization_enabled False -> True" in line and "initial_bit_width 8 -> 4" in line
    assert "parameter groups" not in line
    assert _checksums(reference) == before


@pytest.mark.slow
def test_progressive_schedule_that_cannot_fit_the_epochs_is_an_error(driver, tiny_synthetic_root, tmp_path):
    r = _train(
        driver,
        [
            "--config", REPO / "snn/configs/event_snn_lite_progressive.yaml", "--epochs", "2",
            "--data-root", tiny_synthetic_root, "--checkpoint-dir", tmp_path / "ck", "--log-dir", tmp_path / "logs",
        ],
    )  # fmt: skip
    assert r.returncode == 2
    (line,) = _error_lines(r.stderr)
    assert "3 phases" in line and "at least 3 epochs" in line
    assert not (tmp_path / "ck").exists() and not (tmp_path / "logs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
        (["--epochs", "0"], "--epochs must be >= 1 (got 0)"),
    ],
)
def test_bad_flags_blame_the_flag(driver, config, tmp_path, args, expected):
    r = _train(driver, [*_run_args(config, tmp_path, "run"), *args])
    assert r.returncode == 2
    assert _error_lines(r.stderr) == [f"error: {expected}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"just some text\n", "not a PyTorch checkpoint (neither the zip archive torch.save writes nor a pickle)"),
        (b"", "empty file (0 bytes), not a checkpoint"),
        ("truncated", "truncated or corrupt: the zip archive that torch.save writes is incomplete"),
        (
            "pickle",
            "holds code or Python objects that a safe load (weights_only=True) does not run, so we refuse it; "
            "checkpoints of this project hold tensors and plain values only",
        ),
    ],
)
def test_bad_checkpoints_get_a_whole_sentence_that_says_what_is_wrong(
    driver, config, reference, tmp_path, content, expected
):
    bad = tmp_path / "bad.pth"
    if content == "truncated":
        data = (reference / "ckpt/last.pth").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif content == "pickle":
        import argparse

        torch.save({"args": argparse.Namespace(lr=1)}, bad)
    else:
        bad.write_bytes(content)
    r = _train(driver, [*_run_args(config, tmp_path, "run"), "--resume", bad])
    assert r.returncode == 2
    assert _error_lines(r.stderr) == [f"error: {bad}: {expected}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_quantized_checkpoint_resumed_with_a_full_precision_config_is_named_and_leaves_no_folders(
    driver, config, tmp_path
):
    from snn.config import load_config, save_config
    from snn.models.checkpoint import save_checkpoint
    from snn.models.factory import build_model

    q8 = tmp_path / "q8" / "last.pth"  # an untrained W8A8 model stands in for a fine-tune's checkpoint
    cfg = load_config(config, {"quantization_enabled": True, "checkpoint_dir": str(q8.parent)})
    model = build_model(cfg.model, cfg.model_args())
    payload = {"model_name": cfg.model, "model_args": cfg.model_args(), "config": cfg.to_dict(), "epoch": 0}
    save_checkpoint({**payload, "state_dict": model.state_dict(), "optimizer": None}, q8)
    save_config(cfg, q8.parent / "config.yaml")
    r = _train(driver, [*_run_args(config, tmp_path, "run"), "--resume", q8])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = _error_lines(r.stderr)
    assert line.startswith(f"error: {q8}: this is a W8A8 checkpoint (quantized), but this config trains in full")
    assert f"--config {q8.parent / 'config.yaml'}" in line and f"finetune_quantized.py --pretrained {q8}" in line
    assert "quant_layer" not in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_stateful_run_killed_mid_epoch_resumes_exactly(driver, tiny_synthetic_root, tmp_path):
    """state_windows: 2: each sample warms the membranes on the window before it; the warm-up windows
    come from the data, so a resumed run rebuilds exactly the state the uninterrupted one had."""
    config = _tiny_config(tmp_path / "stateful.yaml", "event_snn_lite.yaml", tiny_synthetic_root, "state_windows: 2\n")
    whole = _train(driver, _run_args(config, tmp_path, "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    args = _run_args(config, tmp_path, "run")
    assert _train(driver, args, "kill", at=8).returncode == -9
    resumed = _train(driver, ["--resume", tmp_path / "run/ckpt/last.pth"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_bitwise_equal(tmp_path / "run/ckpt/last.pth", tmp_path / "whole/ckpt/last.pth")
    assert _csv_without_times(tmp_path / "run/logs/metrics.csv") == _csv_without_times(
        tmp_path / "whole/logs/metrics.csv"
    )
