import csv
import hashlib
import json
import logging

import pytest
import torch

from snn.data.provider import build_dataset
from snn.models.checkpoint import load_checkpoint
from snn.training import ladder
from snn.training.ladder import RECORD, STEPS, LadderError, run_ladder
from snn.training.trainer import Trainer

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
    assert [r["bits"] for r in rows] == [32, 8, 4, 2, 1, 2]
    # Every step was trained with the ladder's seed, not its config's, and recorded as finished.
    for step in STEPS:
        assert load_checkpoint(out / step.name / "checkpoints" / "best_model.pth")["config"]["seed"] == 5
        record = json.loads((out / step.name / RECORD).read_text())
        assert record["status"] == "finished" and record["settings"]["seed"] == 5
    zero = _zero_flow_aee(tiny_synthetic_root, "test")
    assert all(r["zero_flow_aee"] == pytest.approx(zero, rel=1e-5) for r in rows)
    sizes = [r["size_mb"] for r in rows[:5]]
    assert sizes == sorted(sizes, reverse=True)
    for name in ("ladder.md", "ladder.csv", "ladder.png"):
        assert (out / name).stat().st_size > 0
    table = list(csv.DictReader(open(out / "ladder.csv")))
    assert float(table[3]["retention"]) == pytest.approx(rows[0]["aee"] / rows[3]["aee"], rel=1e-3)
    assert "| V2_progressive | 2 bit |" in (out / "ladder.md").read_text()


@pytest.mark.slow
def test_same_settings_reuse_every_step_and_the_report_says_how_they_were_trained(trained_ladder, tiny_synthetic_root):
    out, _ = trained_ladder
    before = _checksums(out / "V2_4bit")
    rows = run_ladder(out, str(tiny_synthetic_root), 1, 1, CPU, progressive=False, seed=5, extra=NO_CROP)
    assert _checksums(out / "V2_4bit") == before
    assert all(r["train_minutes"] != r["train_minutes"] for r in rows)  # nan: nothing trained
    md = (out / "ladder.md").read_text()
    assert "Reused steps" in md and "- V2_4bit: 1 epochs, seed 5" in md and "sha256" in md


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
    assert len(rows) == 5
    assert "- V2_2bit: 1 epochs, seed 5" in (out / "ladder.md").read_text()  # what it was, not what was asked


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
        if self.checkpoint_dir.parent.name == "V2_2bit" and epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch)

    for step in ("V2_2bit", "V2_1bit"):
        (out / step / RECORD).unlink()
        for f in (out / step).rglob("*"):
            if f.is_file():
                f.unlink()
    monkeypatch.setattr(Trainer, "train_one_epoch", dies_in_2bit_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_ladder(out, str(tiny_synthetic_root), 2, 1, CPU, progressive=False, seed=5, extra=NO_CROP)
    assert json.loads((out / "V2_2bit" / RECORD).read_text())["status"] == "running"
    assert load_checkpoint(out / "V2_2bit" / "checkpoints" / "last.pth")["epoch"] == 0
    four_bit = _checksums(out / "V2_4bit")
    monkeypatch.setattr(Trainer, "train_one_epoch", real)
    caplog.set_level(logging.INFO, logger=ladder.__name__)
    rows = run_ladder(out, str(tiny_synthetic_root), 2, 1, CPU, progressive=False, seed=5, extra=NO_CROP)
    assert "V2_2bit: continuing the interrupted step" in caplog.text
    assert json.loads((out / "V2_2bit" / RECORD).read_text())["status"] == "finished"
    epochs = [row["epoch"] for row in csv.DictReader(open(out / "V2_2bit" / "logs" / "metrics.csv"))]
    assert epochs == ["1", "2"]
    assert _checksums(out / "V2_4bit") == four_bit
    assert [r["bits"] for r in rows] == [32, 8, 4, 2, 1]
