import csv

import pytest
import torch

from snn.data.provider import build_dataset
from snn.models.checkpoint import load_checkpoint
from snn.training.ladder import STEPS, run_ladder


def _zero_flow_aee(root, split):
    """Mean |gt| over the valid pixels of a split: the AEE of predicting no motion."""
    mags = []
    for s in build_dataset(root, split, 5):
        mag = torch.linalg.vector_norm(s["flow"].double(), dim=0)
        mags.append(mag[(s["valid"][0] > 0.5) & (mag < 400)])
    return float(torch.cat(mags).mean())


@pytest.mark.slow
def test_ladder_runs_every_step_and_writes_reports(tiny_synthetic_root, tmp_path):
    out = tmp_path / "ladder"
    rows = run_ladder(
        out,
        str(tiny_synthetic_root),
        epochs_per_step=1,
        fp_epochs=1,
        device=torch.device("cpu"),
        progressive=True,
        seed=5,
        extra={"crop_size": None},
    )
    assert [r["step"] for r in rows] == [s.name for s in STEPS]
    assert [r["bits"] for r in rows] == [32, 8, 4, 2, 1, 2]
    # Every step was trained with the ladder's seed, not its config's.
    for step in STEPS:
        assert load_checkpoint(out / step.name / "checkpoints" / "best_model.pth")["config"]["seed"] == 5
    zero = _zero_flow_aee(tiny_synthetic_root, "test")
    assert all(r["zero_flow_aee"] == pytest.approx(zero, rel=1e-5) for r in rows)
    sizes = [r["size_mb"] for r in rows[:5]]
    assert sizes == sorted(sizes, reverse=True)
    for name in ("ladder.md", "ladder.csv", "ladder.png"):
        assert (out / name).stat().st_size > 0
    table = list(csv.DictReader(open(out / "ladder.csv")))
    assert float(table[3]["retention"]) == pytest.approx(rows[0]["aee"] / rows[3]["aee"], rel=1e-3)
    assert "| V2_progressive | 2 bit |" in (out / "ladder.md").read_text()
    # A second call reuses the trained steps instead of training again.
    before = (out / "V2_4bit" / "checkpoints" / "best_model.pth").stat().st_mtime_ns
    run_ladder(out, str(tiny_synthetic_root), 1, 1, torch.device("cpu"), progressive=False, extra={"crop_size": None})
    assert (out / "V2_4bit" / "checkpoints" / "best_model.pth").stat().st_mtime_ns == before
    assert "reused" in (out / "ladder.md").read_text()
