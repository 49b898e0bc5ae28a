import csv
import hashlib
import json
import logging
import shutil

import pytest
import torch

from snn.config import ConfigError
from snn.data.provider import build_dataset
from snn.data.synthetic import generate_dataset
from snn.data.synthetic_config import SyntheticConfig
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.models.checkpoint import load_checkpoint
from snn.training import ladder
from snn.training.ladder import RECORD, STEPS, LadderError, run_ladder
from snn.training.trainer import Trainer
from tests.tool_modules import load_tool

CPU = torch.device("cpu")
NO_CROP = {"crop_size": None}


def _zero_flow_aee(root, split):
    """Mean |gt| over the valid pixels of a split: the AEE of predicting no motion."""
    mags = []
    for s in build_dataset(root, split, 5):
        mag = torch.linalg.vector_norm(s["flow"].double(), dim=0)
        mags.append(mag[(s["valid"][0] > 0.5) & (mag < 400)])
    return float(torch.cat(mags).mean())


def _checksums(folder):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_ladder(tiny_synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder") / "ladder"
    rows = run_ladder(out, str(tiny_synthetic_root), 1, 1, CPU, progressive=True, seed=5, extra=NO_CROP)
    return out, rows


@pytest.mark.slow
def test_ladder_runs_every_step_and_writes_reports(trained_ladder, tiny_synthetic_root):
    out, rows = trained_ladder
    assert [r["step"] for r in rows] == [s.name for s in STEPS]
    widths = [(32, 32), (8, 8), (4, 4), (2, 4), (2, 2), (1, 4), (1, 1), (2, 2)]
    assert [(r["bits"], r["current_bits"]) for r in rows] == widths
    # Every step was trained with the ladder's seed, not its config's, and recorded as finished.
    for step in STEPS:
        assert load_checkpoint(out / step.name / "checkpoints" / "best_model.pth")["config"]["seed"] == 5
        record = json.loads((out / step.name / RECORD).read_text())
        assert record["status"] == "finished" and record["settings"]["seed"] == 5
    zero = _zero_flow_aee(tiny_synthetic_root, "test")
    assert all(r["zero_flow_aee"] == pytest.approx(zero, rel=1e-5) for r in rows)
    sizes = [r["size_mb"] for r in rows[:6]]  # FP32 ... W1A4
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] < rows[6]["size_mb"] <= 1.1 * sizes[-1]  # W1A1's thresholds: at most 10 % more
    for name in ("ladder.md", "ladder.csv", "ladder.png"):
        assert (out / name).stat().st_size > 0
    table = list(csv.DictReader(open(out / "ladder.csv")))
    assert float(table[3]["retention"]) == pytest.approx(rows[0]["aee"] / rows[3]["aee"], rel=1e-3)
    md = (out / "ladder.md").read_text()
    assert "| V2_progressive | W2A2 |" in md
    # What the ladder changed in the guide's configs is printed, not silent.
    assert "- V2_W1A4 (event_snn_lite_1bit.yaml): " in md
    assert "binarize True -> False" in md and "current_bits None -> 4" in md and "num_epochs 50 -> 1" in md
    w1a4 = next(line for line in md.splitlines() if line.startswith("- V2_W1A4 (event_snn_lite_1bit.yaml): "))
    assert "binary_threshold True -> False" in w1a4 and "shortcut_before_quant True -> False" in w1a4
    w1a1 = next(line for line in md.splitlines() if line.startswith("- V2_W1A1 (event_snn_lite_1bit.yaml): "))
    assert "num_epochs 50 -> 1" in w1a1 and "seed 0 -> 5" in w1a1 and "binarize" not in w1a1
    assert "binary_threshold" not in w1a1 and "shortcut" not in w1a1  # the 1-bit config's own devices
    w1a1_config = load_checkpoint(out / "V2_W1A1" / "checkpoints" / "best_model.pth")["config"]
    assert w1a1_config["binary_threshold"] and w1a1_config["shortcut_before_quant"]
    # Firing and SynOps beside the AEE: the lowest rate of each step, and which layers were silent.
    for row, step in zip(table, STEPS, strict=True):  # as an evaluation of the step's checkpoint finds them
        best = out / step.name / "checkpoints" / "best_model.pth"
        activity = evaluate_checkpoint(best, tiny_synthetic_root, "test", progress=False).activity
        assert float(row["min_firing_rate"]) == pytest.approx(min(activity["firing_rates"].values()), rel=1e-5)
        assert float(row["synops_per_sample"]) == pytest.approx(activity["synops_per_sample"], rel=1e-5)
        assert (float(row["min_firing_rate"]) == 0) == bool(row["silent_layers"])
    # Every quantized step also reports what calibration alone gave, before its fine-tune.
    assert table[0]["ptq_aee"] == "nan"
    for row, step in zip(table[1:], STEPS[1:], strict=True):
        ptq = json.loads((out / step.name / RECORD).read_text())["ptq"]["aee"]
        assert float(row["ptq_aee"]) == pytest.approx(ptq, rel=1e-5) and ptq > 0
        assert float(row["ptq_retention"]) == pytest.approx(rows[0]["aee"] / ptq, rel=1e-4)


@pytest.mark.slow
def test_same_settings_reuse_every_step_and_the_report_says_how_they_were_trained(trained_ladder, tiny_synthetic_root):
    out, _ = trained_ladder
    before = _checksums(out / "V2_W4A4")
    rows = run_ladder(out, str(tiny_synthetic_root), 1, 1, CPU, progressive=False, seed=5, extra=NO_CROP)
    assert _checksums(out / "V2_W4A4") == before
    assert all(r["train_minutes"] != r["train_minutes"] for r in rows)  # nan: nothing trained
    md = (out / "ladder.md").read_text()
    assert "Reused steps" in md and "- V2_W4A4: 1 epochs, seed 5" in md and "sha256" in md


@pytest.mark.slow
def test_a_moved_ladder_folder_is_still_reused(trained_ladder, tiny_synthetic_root, tmp_path):
    out, first = trained_ladder
    moved = tmp_path / "elsewhere" / "seed_5"
    shutil.copytree(out, moved)
    rows = run_ladder(moved, str(tiny_synthetic_root), 1, 1, CPU, progressive=False, seed=5, extra=NO_CROP)
    assert all(r["train_minutes"] != r["train_minutes"] for r in rows)  # nan: nothing trained again
    assert [r["aee"] for r in rows] == pytest.approx([r["aee"] for r in first[:7]], rel=1e-6)


@pytest.mark.slow
def test_overrides_of_the_quantized_steps_train_only_the_steps_asked_for(trained_ladder, tiny_synthetic_root, tmp_path):
    out, first = trained_ladder
    trial = tmp_path / "distill"
    for name in ("V2", "V2_W8A8"):  # an earlier ladder's steps, as a distillation trial starts
        shutil.copytree(out / name, trial / name)
    args = (trial, str(tiny_synthetic_root), 1, 1, CPU, False, 5, NO_CROP)
    with pytest.raises(LadderError, match="distill_weight: 0.0 -> 0.5"):  # W8A8 trained without it
        run_ladder(*args, qat_overrides={"distill_weight": 0.5}, last_step="V2_W4A4")
    rows = run_ladder(*args, qat_overrides={"distill_weight": 0.5}, last_step="V2_W4A4", reuse=True)
    assert [r["step"] for r in rows] == ["V2", "V2_W8A8", "V2_W4A4"]
    assert rows[1]["aee"] == pytest.approx(first[1]["aee"], rel=1e-6)  # reused, not retrained
    w4 = load_checkpoint(trial / "V2_W4A4" / "checkpoints" / "best_model.pth")["config"]
    assert w4["distill_weight"] == 0.5
    assert w4["distill_from"] == str(trial / "V2_W8A8" / "checkpoints" / "best_model.pth")
    md = (trial / "ladder.md").read_text()
    changed = {line.split(" (")[0]: line for line in md.splitlines() if line.startswith("- V2_W")}
    assert "distill_weight 0.0 -> 0.5" in changed["- V2_W4A4"]  # the override is printed
    assert "distill_weight" not in changed["- V2_W8A8"]  # reused: what it was trained with
    assert not (trial / "V2_W2A4").exists()
    with pytest.raises(ValueError, match="unknown last step 'W4'"):
        run_ladder(*args, last_step="W4")


@pytest.mark.slow
def test_low_current_overrides_train_only_the_w2a2_and_w1a1_steps(trained_ladder, tiny_synthetic_root, tmp_path):
    out, first = trained_ladder
    trial = tmp_path / "no_threshold"
    for name in ("V2", "V2_W8A8", "V2_W4A4", "V2_W2A4", "V2_W1A4"):  # as a device trial starts
        shutil.copytree(out / name, trial / name)
    args = (trial, str(tiny_synthetic_root), 1, 1, CPU, False, 5, NO_CROP)
    rows = run_ladder(*args, low_overrides={"binary_threshold": False})
    trained = [r["step"] for r in rows if r["train_minutes"] == r["train_minutes"]]
    assert trained == ["V2_W2A2", "V2_W1A1"]  # the others are reused as they were
    for step in trained:
        config = load_checkpoint(trial / step / "checkpoints" / "best_model.pth")["config"]
        assert config["binary_threshold"] is False and config["shortcut_before_quant"] is True
    md = (trial / "ladder.md").read_text()
    assert "binary_threshold True -> False" in next(line for line in md.splitlines() if line.startswith("- V2_W1A1"))
    with pytest.raises(ConfigError, match="binary_treshold"):
        run_ladder(*args, low_overrides={"binary_treshold": False})


def test_a_wrong_quantized_step_override_stops_before_anything_trains(tiny_synthetic_root, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="distil_weight"):
        run_ladder(out, str(tiny_synthetic_root), 1, 1, CPU, False, 5, NO_CROP, qat_overrides={"distil_weight": 1.0})
    assert not out.exists()


@pytest.mark.slow
def test_a_forced_data_format_reaches_every_step_and_its_evaluation(tiny_synthetic_root, tmp_path, monkeypatch):
    import snn.training.ladder as ladder_module

    seen = []
    real = ladder_module.evaluate_checkpoint
    monkeypatch.setattr(ladder_module, "evaluate_checkpoint", lambda *a, **k: seen.append(k) or real(*a, **k))
    out = tmp_path / "forced"
    rows = run_ladder(out, str(tiny_synthetic_root), 1, 1, CPU, False, 5, NO_CROP, last_step="V2_W8A8",
                      data_overrides={"data_format": "blinksim"})  # fmt: skip
    assert [r["step"] for r in rows] == ["V2", "V2_W8A8"]
    for name in ("V2", "V2_W8A8"):
        assert load_checkpoint(out / name / "checkpoints" / "best_model.pth")["config"]["data_format"] == "blinksim"
    formats = [(k.get("data_overrides") or {}).get("data_format") for k in seen]
    assert formats == ["blinksim", "blinksim", "blinksim"]  # FP; W8A8 after calibration only, then fine-tuned


def test_a_format_the_data_root_is_not_in_is_one_line_before_training(tiny_synthetic_root, tmp_path, capsys):
    tool = load_tool("qat_ladder")
    out = tmp_path / "ladder"
    code = tool.main(["--output-dir", str(out), "--data-root", str(tiny_synthetic_root), "--format", "dsec",
                      "--no-unseen"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tiny_synthetic_root) in errors[0] and "DSEC" in errors[0]
    assert not list(out.rglob("*.pth"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "named"), [({"epochs_per_step": 2}, "epochs: 1 -> 2"), ({"seed": 6}, "seed: 5 -> 6")]
)
def test_other_settings_stop_with_an_error_naming_them_and_change_nothing(
    trained_ladder, tiny_synthetic_root, change, named
):
    out, _ = trained_ladder
    args = {"epochs_per_step": 1, "seed": 5, **change}
    before = _checksums(out)
    with pytest.raises(LadderError, match=named.replace("(", r"\(")) as err:
        run_ladder(out, str(tiny_synthetic_root), args["epochs_per_step"], 1, CPU, False, args["seed"], NO_CROP)
    assert "--reuse" in str(err.value)
    assert _checksums(out) == before


@pytest.mark.slow
def test_reuse_flag_reports_mismatched_steps_with_their_recorded_settings(trained_ladder, tiny_synthetic_root):
    out, _ = trained_ladder
    rows = run_ladder(out, str(tiny_synthetic_root), 3, 1, CPU, progressive=False, seed=5, extra=NO_CROP, reuse=True)
    assert len(rows) == 7
    assert "- V2_W2A4: 1 epochs, seed 5" in (out / "ladder.md").read_text()  # what it was, not what was asked


@pytest.mark.slow
def test_checkpoints_without_a_record_are_not_reused_silently(tiny_synthetic_root, tmp_path):
    out = tmp_path / "old"
    fp = out / "V2" / "checkpoints"
    fp.mkdir(parents=True)
    (fp / "best_model.pth").write_bytes(b"from an older version")
    with pytest.raises(LadderError, match=f"no {RECORD}"):
        run_ladder(out, str(tiny_synthetic_root), 1, 1, CPU, progressive=False, extra=NO_CROP)
    assert (fp / "best_model.pth").read_bytes() == b"from an older version"


@pytest.mark.slow
def test_an_interrupted_step_continues_from_its_last_checkpoint(tiny_synthetic_root, tmp_path, monkeypatch, caplog):
    out = tmp_path / "ladder"
    fp = run_ladder(out, str(tiny_synthetic_root), 2, 1, CPU, progressive=False, seed=5, extra=NO_CROP)[0]
    assert fp["step"] == "V2"
    # Interrupt the 2-bit step in its second epoch, as a kill would.
    real = Trainer.train_one_epoch

    def dies_in_2bit_epoch_2(self, epoch):
        if self.checkpoint_dir.parent.name == "V2_W2A4" and epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch)

    for step in ("V2_W2A4", "V2_W2A2", "V2_W1A4", "V2_W1A1"):
        (out / step / RECORD).unlink()
        for f in (out / step).rglob("*"):
            if f.is_file():
                f.unlink()
    monkeypatch.setattr(Trainer, "train_one_epoch", dies_in_2bit_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_ladder(out, str(tiny_synthetic_root), 2, 1, CPU, progressive=False, seed=5, extra=NO_CROP)
    assert json.loads((out / "V2_W2A4" / RECORD).read_text())["status"] == "running"
    assert load_checkpoint(out / "V2_W2A4" / "checkpoints" / "last.pth")["epoch"] == 0
    four_bit = _checksums(out / "V2_W4A4")
    monkeypatch.setattr(Trainer, "train_one_epoch", real)
    caplog.set_level(logging.INFO, logger=ladder.__name__)
    rows = run_ladder(out, str(tiny_synthetic_root), 2, 1, CPU, progressive=False, seed=5, extra=NO_CROP)
    assert "V2_W2A4: continuing the interrupted step" in caplog.text
    assert json.loads((out / "V2_W2A4" / RECORD).read_text())["status"] == "finished"
    epochs = [row["epoch"] for row in csv.DictReader(open(out / "V2_W2A4" / "logs" / "metrics.csv"))]
    assert epochs == ["1", "2"]
    assert _checksums(out / "V2_W4A4") == four_bit
    assert [r["bits"] for r in rows] == [32, 8, 4, 2, 2, 1, 1]


def test_a_config_key_added_since_a_step_trained_counts_only_away_from_its_default():
    from snn.config import load_config
    from snn.training.ladder import settings_of, with_new_defaults

    now = settings_of(load_config(), 8, None)
    old = {**now, "config": {k: v for k, v in now["config"].items() if k not in ("data_format", "mvsec_dt")}}
    assert ladder._differences(with_new_defaults(old, now), now) == []
    other = settings_of(load_config(overrides={"mvsec_dt": 4}), 8, None)
    assert ladder._differences(with_new_defaults(old, other), other) == ["config.mvsec_dt: None -> 4"]


def test_low_steps_take_the_current_width_given_and_name_it():
    steps = ladder.ladder_steps(8)
    names = [s.name for s in steps]
    assert names == ["V2", "V2_W8A8", "V2_W4A4", "V2_W2A8", "V2_W2A2", "V2_W1A8", "V2_W1A1", "V2_progressive"]
    w1 = steps[5]
    off = {"shortcut_before_quant": False, "binary_threshold": False}
    assert w1.start_from == "V2_W2A8" and w1.overrides == {"binarize": False, "current_bits": 8, **off}
    assert steps[4].start_from == "V2_W2A8" and steps[4].overrides == {}
    assert [s.name for s in steps if s.low_currents] == ["V2_W2A2", "V2_W1A1"]
    two = ladder.ladder_steps(2)  # W2A2 is then the low step itself, with the configs' devices
    assert [s.name for s in two if s.low_currents] == ["V2_W2A2", "V2_W1A2", "V2_W1A1"]
    assert len(two) == len(steps) - 1 and two[3].overrides == {"current_bits": 2}
    with pytest.raises(ValueError, match="2..16"):
        ladder.ladder_steps(1)


def test_seeds_summary_gives_mean_and_spread_per_step(tmp_path):
    from snn.evaluation.report import write_seed_reports
    from snn.training.ladder import summarize_seeds

    def ladder(fp, q, ptq, silent=(), minutes=(2.0, 3.0)):
        common = {"parameters": 10, "zero_flow_aee": 2.0, "series": None, "min_firing_rate": 0.0 if silent else 0.01,
                  "silent_layers": list(silent), "synops_per_sample": 1e6, "train_minutes": minutes[0],
                  "reused_minutes": minutes[1]}  # fmt: skip
        return [
            {"step": "V2", "bits": 32, "current_bits": 32, "size_mb": 4.0, "label": "FP32", "aee": fp,
             "retention": 1.0, "ptq_aee": float("nan"), "ptq_retention": float("nan"), **common},
            {"step": "V2_W4A4", "bits": 4, "current_bits": 4, "size_mb": 0.6, "label": "W4A4", "aee": q,
             "retention": fp / q, "ptq_aee": ptq, "ptq_retention": fp / ptq, **common},
        ]  # fmt: skip

    nan = float("nan")
    rows = summarize_seeds(
        [ladder(1.0, 1.25, 2.0), ladder(1.0, 1.0, 2.5, ("enc3",), (nan, 4.0)), ladder(1.0, 1.0, 2.0, ("enc3", "res1"))]
    )
    q = rows[1]
    # The lowest rate of any seed, the layers silent in any, and a reused step's recorded minutes.
    assert q["min_firing_rate"] == 0 and q["silent_layers"] == ["enc3 (2 of 3)", "res1 (1 of 3)"]
    assert q["minutes_mean"] == pytest.approx((2 + 4 + 2) / 3) and q["synops_per_sample_mean"] == 1e6
    assert q["seeds"] == 3 and q["aee_mean"] == pytest.approx(1.25 / 3 + 2 / 3)
    assert q["retention_mean"] == pytest.approx((0.8 + 1 + 1) / 3)
    assert q["retention_std"] == pytest.approx(torch.tensor([0.8, 1.0, 1.0]).std().item())
    assert q["ptq_aee_std"] > 0 and rows[0]["aee_std"] == 0
    write_seed_reports(rows, tmp_path, [0, 1, 2])
    md = (tmp_path / "ladder_seeds.md").read_text()
    assert "| V2_W4A4 | W4A4 | 0.600 | 1.083 ± 0.144 | 0.933 ± 0.115 |" in md and "3 seeds (0, 1, 2)" in md
    assert "| 0.00 (silent: enc3 (2 of 3), res1 (1 of 3)) | 1.00 M | 2.7 ± 1.2 |" in md
    assert (tmp_path / "ladder_seeds.png").stat().st_size > 0
    with pytest.raises(ValueError, match="different steps"):
        summarize_seeds([ladder(1, 1, 1), ladder(1, 1, 1)[:1]])


@pytest.mark.slow
def test_an_unseen_test_set_is_evaluated_for_every_step(trained_ladder, tiny_synthetic_root, tmp_path):
    from snn.evaluation.evaluate import evaluate_checkpoint

    out, _ = trained_ladder
    unseen = tmp_path / "unseen"
    generate_dataset(unseen, SyntheticConfig(height=40, width=40, num_frames=3), 0, 0, 2, seed=9, workers=1,
                     progress=False)  # fmt: skip
    rows = run_ladder(out, str(tiny_synthetic_root), 1, 1, CPU, progressive=False, seed=5, extra=NO_CROP,
                      unseen_root=unseen)  # fmt: skip
    by_hand = evaluate_checkpoint(out / "V2_W2A4" / "checkpoints" / "best_model.pth", unseen, "test", progress=False)
    assert rows[3]["unseen_aee"] == pytest.approx(by_hand.metrics["dense"]["overall"]["aee"], rel=1e-6)
    assert rows[3]["unseen_retention"] == pytest.approx(rows[0]["unseen_aee"] / rows[3]["unseen_aee"])
    assert "unseen set: AEE (retention)" in (out / "ladder.md").read_text()
    assert float(list(csv.DictReader(open(out / "ladder.csv")))[3]["unseen_aee"]) == pytest.approx(
        rows[3]["unseen_aee"], rel=1e-5
    )


def _loud_copy(root, dest, split="test", factor=20):
    """``root`` with every event of ``split`` repeated ``factor`` times: the same scenes and flow,
    ``factor`` times the counts, so that split's currents are far larger than training's."""
    import h5py

    shutil.copytree(root, dest)
    for seq in sorted((dest / split).iterdir()):
        with h5py.File(seq / "events.h5", "r+") as f:
            for key in ("x", "y", "t", "p"):
                data = f["events"][key][:].repeat(factor)
                del f["events"][key]
                f["events"].create_dataset(key, data=data)
            ms = f["events/ms_to_idx"][:] * factor
            del f["events/ms_to_idx"]
            f["events"].create_dataset("ms_to_idx", data=ms)
        with h5py.File(seq / "flow.h5", "r+") as f:
            for key, shift in (("frame_event_start", 0), ("frame_event_end", factor - 1)):
                if f"flow/{key}" in f:
                    data = f[f"flow/{key}"][:] * factor + shift
                    del f[f"flow/{key}"]
                    f["flow"].create_dataset(key, data=data)
    return dest


def _steps(model):
    from snn.quantization.control import activation_quantizers

    return {name: q.step.detach().clone() for name, q in activation_quantizers(model)}


@pytest.mark.slow
def test_learned_steps_are_seeded_from_training_batches_never_from_the_test_split(
    tiny_synthetic_root, tmp_path, monkeypatch
):
    from snn.config import CONFIG_DIR, load_config
    from snn.quantization import control
    from snn.training.run import build_trainer
    from snn.utils.runtime import seed_everything

    loud = _loud_copy(tiny_synthetic_root, tmp_path / "loud")
    fp_cfg = load_config(CONFIG_DIR / "event_snn_lite.yaml", {
        "data_root": str(loud), "dataset": "blinksim", "base_ch": 4, "num_bins": 3,
        "bins_per_step": 1, "num_epochs": 1, "crop_size": 32,
        "image_every": 0,
        "checkpoint_dir": str(tmp_path / "fp" / "ckpt"), "log_dir": str(tmp_path / "fp" / "logs"),
    })  # fmt: skip
    build_trainer(fp_cfg, CPU).fit()
    start = tmp_path / "fp" / "ckpt" / "best_model.pth"

    step = ladder.Step("V2_W4A4", "event_snn_lite_4bit.yaml", "V2")
    cfg = ladder.step_config(step, tmp_path / "ladder", str(loud), 1, 5, NO_CROP)
    assert cfg.learn_scale
    seen = {}
    real_fit = Trainer.fit

    def fit(self):  # what the fine-tune starts from: after calibration and the calibration-only evaluation
        seen.update(_steps(self.model))
        return real_fit(self)

    monkeypatch.setattr(Trainer, "fit", fit)
    _, _, record = ladder.run_step(step, tmp_path / "ladder", cfg, 1, CPU, start)
    assert record["ptq"]["aee"] > 0  # the calibration-only evaluation ran on the (loud) test split
    monkeypatch.setattr(Trainer, "fit", real_fit)

    # The same calibration on the training split alone, without any evaluation.
    alone = ladder.step_config(step, tmp_path / "alone", str(loud), 1, 5, NO_CROP)
    seed_everything(alone.seed)
    trainer = build_trainer(alone, CPU, resume=start, warm_start=True)
    expected = _steps(trainer.model)
    assert seen.keys() == expected.keys() and len(seen) > 5
    different = [name for name in seen if not torch.equal(seen[name], expected[name])]
    assert not different, different

    # The test split really is louder: calibrated on it, the stem's step would be several times larger.
    with control.calibrating(trainer.model):
        for batch in torch.utils.data.DataLoader(build_dataset(loud, "test", 3), batch_size=2):
            trainer.model(batch["events"])
    assert float(trainer.model.stem.quant_layer.step.detach()) > 3 * float(expected["stem.quant_layer"])


def test_evaluating_a_model_whose_learned_steps_were_never_seeded_is_an_error():
    from snn.models.flownet import EventSNNFlowNetLiteV2
    from snn.quantization.quantization_aware import QuantizerStateError

    model = EventSNNFlowNetLiteV2(
        base_ch=4, num_bins=3, bins_per_step=1, quantize=True, bit_width=4, learn_scale=True
    ).eval()
    with pytest.raises(QuantizerStateError, match="calibrate the model on training batches"):
        model(torch.rand(1, 3, 2, 16, 16))


def test_a_ladder_stopped_part_way_reports_the_steps_it_finished(tiny_synthetic_root, tmp_path, monkeypatch):
    """A time limit or a signal that stops the ladder in W4A4 leaves FP and W8A8 in ladder.csv."""
    real = ladder.run_step

    def stopped_in_w4(step, *args, **kwargs):
        if step.name == "V2_W4A4":
            raise KeyboardInterrupt
        return real(step, *args, **kwargs)

    monkeypatch.setattr(ladder, "run_step", stopped_in_w4)
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_ladder(out, str(tiny_synthetic_root), 1, 1, CPU, False, 5, NO_CROP)
    with open(out / "ladder.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["V2", "V2_W8A8"]
    assert float(rows[0]["retention"]) == 1.0 and float(rows[1]["aee"]) > 0
