import csv

import pytest
import torch

from snn.quantization.ladder import STEPS, run_ladder


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
        extra={"crop_size": None},
    )
    assert [r["step"] for r in rows] == [s.name for s in STEPS]
    assert [r["bits"] for r in rows] == [32, 8, 4, 2, 1, 2]
    assert rows[0]["retention"] == pytest.approx(1.0)
    sizes = [r["size_mb"] for r in rows[:5]]
    assert sizes == sorted(sizes, reverse=True)
    for name in ("ladder.md", "ladder.csv", "ladder.png"):
        assert (out / name).stat().st_size > 0
    table = list(csv.DictReader(open(out / "ladder.csv")))
    assert float(table[3]["retention"]) == pytest.approx(rows[0]["aee"] / rows[3]["aee"], rel=1e-3)
    # A second call reuses the trained steps instead of training again.
    before = (out / "V2_4bit" / "checkpoints" / "best_model.pth").stat().st_mtime_ns
    run_ladder(out, str(tiny_synthetic_root), 1, 1, torch.device("cpu"), progressive=False, extra={"crop_size": None})
    assert (out / "V2_4bit" / "checkpoints" / "best_model.pth").stat().st_mtime_ns == before
