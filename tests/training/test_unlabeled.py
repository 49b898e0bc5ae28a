"""Learning from events without labels: the contrast loss in the trainer, data roots without flow."""

from __future__ import annotations

import math
import shutil

import h5py
import numpy as np
import pytest
import torch

from snn.config import DEFAULT_CONFIG, ConfigError, load_config
from snn.data.blinksim import detect_layout
from snn.data.errors import DatasetFormatError
from snn.data.provider import build_dataset
from snn.evaluation.contrast import contrast_loss
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.training.run import build_trainer, train_and_test
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
        "num_epochs": 1,
        "warmup_epochs": 0.0,
        "augment": False,
        "crop_size": 32,
        "image_every": 0,
        "device": "cpu",
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "log_dir": str(tmp_path / "logs"),
    }
    values.update(extra)
    return load_config(DEFAULT_CONFIG, values)


@pytest.fixture
def events_only_root(tiny_synthetic_root, tmp_path):
    """The tiny set's splits with each sequence's events.h5 alone: no flow, no config.yaml."""
    root = tmp_path / "unlabeled"
    for seq in sorted(tiny_synthetic_root.glob("*/seq_*")):
        target = root / seq.parent.name / seq.name
        target.mkdir(parents=True)
        shutil.copy(seq / "events.h5", target / "events.h5")
    return root


def test_a_folder_of_events_without_flow_reads_as_unlabeled_windows(tiny_synthetic_root, events_only_root):
    seq = events_only_root / "train" / "seq_0000"
    assert detect_layout(seq) == "events only"
    data = build_dataset(events_only_root, "train")
    labelled = build_dataset(tiny_synthetic_root, "train")
    sample = data[1]
    assert sample["events"].shape == labelled[1]["events"].shape  # the size from the events, 1/30 s windows
    assert sample["events"].sum() > 0 and sample["valid"].sum() == 0
    assert not any(s.has_ground_truth for s in data.datasets)
    # config.yaml sets the window length: at 60 fps twice the windows.
    (seq / "config.yaml").write_text("fps: 60\nheight: 32\nwidth: 32\n")
    assert len(build_dataset(events_only_root, "train", names=["seq_0000"])) == 2 * len(labelled.datasets[0])


def test_a_plain_events_file_with_x_y_t_p_at_its_root_reads_too(tmp_path):
    seq = tmp_path / "recording"
    seq.mkdir()
    rng = np.random.default_rng(0)
    n = 5000
    with h5py.File(seq / "events.h5", "w") as f:
        f["x"], f["y"] = rng.integers(0, 40, n).astype(np.uint16), rng.integers(0, 24, n).astype(np.uint16)
        f["t"] = np.sort(rng.integers(0, 200_000, n))
        f["p"] = rng.integers(0, 2, n).astype(np.uint8)
    data = build_dataset(tmp_path, "test")
    assert (data.datasets[0].height, data.datasets[0].width) == (24, 40)
    assert sum(float(data[i]["events"].sum()) for i in range(len(data))) > 0.9 * n


def test_a_labelled_sequence_whose_flow_is_broken_stays_an_error(tmp_path):
    seq = tmp_path / "seq"
    (seq / "forward_flow").mkdir(parents=True)  # layout A's folder, without its maps
    with h5py.File(seq / "events.h5", "w") as f:
        for name in ("x", "y", "t", "p"):
            f[f"events/{name}"] = np.zeros(3, np.int64)
    with pytest.raises(DatasetFormatError, match="matches no BlinkSim layout"):
        detect_layout(seq)


def test_supervised_training_on_data_without_labels_is_a_clear_error(events_only_root, tmp_path):
    with pytest.raises(DatasetFormatError, match="no flow labels.*loss: contrast"):
        build_trainer(_cfg(events_only_root, tmp_path), CPU)
    assert not (tmp_path / "ckpt").exists()  # nothing written


@pytest.mark.slow
def test_a_data_root_without_flow_trains_and_evaluates(events_only_root, tmp_path):
    seed_everything(0)
    summary = train_and_test(_cfg(events_only_root, tmp_path, loss="contrast", num_epochs=2))
    assert "best validation FWL" in summary and "test FWL" in summary and "no ground truth" in summary
    result = evaluate_checkpoint(tmp_path / "ckpt" / "best_model.pth", events_only_root, "test", progress=False)
    assert result.metrics["dense"]["overall"]["num_pixels"] == 0
    assert np.isfinite(result.metrics["fwl"]["overall"])
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith("val_fwl")


def _batch(root):
    data = build_dataset(root, "train", num_bins=3)
    samples = [data[i] for i in range(4)]
    return {k: torch.stack([s[k] for s in samples]) for k in ("events", "flow", "valid")}


def test_the_contrast_loss_never_reads_the_labels_and_both_mixes_the_terms(tiny_synthetic_root, tmp_path):
    batch = _batch(tiny_synthetic_root)
    preds = [torch.randn(4, 2, 32, 32), torch.randn(4, 2, 16, 16), torch.randn(4, 2, 8, 8)]
    cfg = _cfg(tiny_synthetic_root, tmp_path, loss="contrast", smoothness_weight=0.0, scale_weights=[1.0, 0, 0])
    trainer = build_trainer(cfg, CPU)
    loss, logged, terms = trainer.learning_loss(preds, batch)
    garbled = {**batch, "flow": torch.full_like(batch["flow"], float("nan"))}
    assert torch.equal(trainer.learning_loss(preds, garbled)[0], loss) and set(terms) == {"contrast_loss"}
    assert loss.item() == pytest.approx(contrast_loss(batch["events"], preds[0]).item())
    trainer.cfg = _cfg(tiny_synthetic_root, tmp_path, loss="both", flow_loss_weight=0.5, contrast_loss_weight=2.0)
    _, logged, terms = trainer.learning_loss(preds, batch)
    assert set(terms) == {"flow_loss", "contrast_loss"}
    assert logged.item() == pytest.approx(terms["flow_loss"].item() + terms["contrast_loss"].item())


def test_a_contrast_run_picks_its_best_model_by_the_flow_warp_loss(tiny_synthetic_root, tmp_path):
    trainer = build_trainer(_cfg(tiny_synthetic_root, tmp_path, loss="contrast"), CPU)
    trainer.best_val_aee, trainer.best_val_fwl = 1.0, 1.2
    assert not trainer.improves({"aee": 0.5, "fwl": 1.1})  # a better AEE does not count: labels unread
    assert trainer.improves({"aee": 2.0, "fwl": 1.3})
    trainer.cfg = _cfg(tiny_synthetic_root, tmp_path)  # supervised: by AEE, or by FWL without ground truth
    assert trainer.improves({"aee": 0.5, "fwl": 1.1}) and not trainer.improves({"aee": 2.0, "fwl": 1.3})
    assert trainer.improves({"aee": float("nan"), "fwl": 1.3})


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("loss", "photometric", "must be one of supervised, contrast, both"),
        ("smoothness_weight", -1, "must be a finite number >= 0"),
        ("divergence_weight", -0.5, "must be a finite number >= 0"),
        ("contrast_windows", 0, "must be > 0"),
        ("contrast_flow", "linear", "must be one of constant, chained"),
    ],
)
def test_bad_loss_keys_name_the_key(key, value, problem):
    with pytest.raises(ConfigError, match=f"'{key}' {problem}"):
        load_config(DEFAULT_CONFIG, {key: value})


def test_contrast_windows_without_a_contrast_loss_is_refused():
    with pytest.raises(ConfigError, match="'contrast_windows' is 3, but loss is 'supervised'"):
        load_config(DEFAULT_CONFIG, {"contrast_windows": 3})


def test_chained_contrast_needs_windows_before_and_no_carried_state():
    with pytest.raises(ConfigError, match="'contrast_flow' is 'chained', which needs contrast_windows >= 2"):
        load_config(DEFAULT_CONFIG, {"loss": "contrast", "contrast_flow": "chained"})
    with pytest.raises(ConfigError, match="state_windows: 1, got 2"):
        load_config(
            DEFAULT_CONFIG, {"loss": "contrast", "contrast_flow": "chained", "contrast_windows": 2, "state_windows": 2}
        )


def test_chained_contrast_runs_the_network_on_every_window_and_warps_along_each_flow(tiny_synthetic_root, tmp_path):
    chained = {"loss": "contrast", "contrast_windows": 2, "contrast_flow": "chained", "smoothness_weight": 0.0}
    cfg = _cfg(tiny_synthetic_root, tmp_path, **chained)
    cfg.scale_weights = [1.0, 0.0, 0.0]
    trainer = build_trainer(cfg, CPU)
    batch = next(iter(trainer.train_loader))
    events = batch["events"]
    model = trainer.model.eval()
    with torch.no_grad():
        flows = trainer._forward_windows(events)
        assert flows[0].shape == (len(events), 2, 2, 32, 32)
        assert torch.allclose(flows[0][:, 0], model(events[:, : cfg.num_bins]), atol=1e-5)  # each window alone
        assert torch.allclose(flows[0][:, 1], model(events[:, cfg.num_bins :]), atol=1e-5)
    n = len(events)
    window_preds = [torch.randn(n, 2, 2, 32, 32), torch.zeros(n, 2, 2, 16, 16), torch.zeros(n, 2, 2, 8, 8)]
    preds = [p[:, -1] for p in window_preds]
    loss, _, _ = trainer.learning_loss(preds, batch, window_preds)
    assert loss.item() == pytest.approx(contrast_loss(events, window_preds[0], num_bins=cfg.num_bins).item())
    assert loss.item() != pytest.approx(trainer.learning_loss(preds, batch)[0].item())  # not the constant warp
    model.train()
    seed_everything(0)
    assert math.isfinite(trainer.train_one_epoch(0))


def test_contrast_windows_give_the_loss_the_windows_before_and_the_network_its_own(tiny_synthetic_root, tmp_path):
    cfg = _cfg(tiny_synthetic_root, tmp_path, loss="contrast", contrast_windows=2, smoothness_weight=0.0)
    cfg.scale_weights = [1.0, 0.0, 0.0]
    trainer = build_trainer(cfg, CPU)
    batch = next(iter(trainer.train_loader))
    events = batch["events"]
    assert events.shape[1] == 2 * cfg.num_bins and events[:, : cfg.num_bins].sum() > 0  # the window before
    model = trainer.model.eval()
    with torch.no_grad():
        seen = trainer._forward_history(model, model, events)
        assert torch.equal(seen, model(events[:, -cfg.num_bins :]))  # stateless: its own window alone
    n = len(events)
    preds = [torch.randn(n, 2, 32, 32), torch.zeros(n, 2, 16, 16), torch.zeros(n, 2, 8, 8)]
    loss, _, _ = trainer.learning_loss(preds, batch)
    both = contrast_loss(events, preds[0], num_bins=cfg.num_bins)
    assert loss.item() == pytest.approx(both.item())
    assert loss.item() != pytest.approx(contrast_loss(events[:, -cfg.num_bins :], preds[0]).item())
