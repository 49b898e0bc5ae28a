"""tools/flow_quality.py: seeds trained as train.py would, scored on every test set, reused when finished."""

from __future__ import annotations

import json
import math
import shutil

import pytest

import snn.benchmarks.flow_quality as fq
from snn.config import CONFIG_DIR, config_from_dict, load_config
from snn.evaluation.evaluate import evaluate_checkpoint
from tests.tool_modules import load_tool

tool = load_tool("flow_quality")

TINY = {
    "base_ch": 4,
    "num_bins": 3,
    "bins_per_step": 1,
    "batch_size": 4,
    "num_epochs": 1,
    "crop_size": 16,
    "image_every": 0,
    "device": "cpu",
    "dataset": "blinksim",
}


@pytest.fixture(scope="module")
def trained(tiny_synthetic_root, tmp_path_factory):
    cfg = load_config(CONFIG_DIR / "event_snn_lite.yaml", {**TINY, "data_root": str(tiny_synthetic_root)})
    out = tmp_path_factory.mktemp("flow_quality")
    rows = fq.run_flow_quality(cfg, [0, 1], out, "cpu", {"yardstick": tiny_synthetic_root}, "tiny")
    return cfg, out, rows


def test_each_seed_is_trained_with_its_own_seed_and_scored_on_every_set(trained, tiny_synthetic_root):
    cfg, out, rows = trained
    assert [r["seed"] for r in rows] == [0, 1]
    for row in rows:
        saved = (out / f"seed_{row['seed']}" / "checkpoints" / "config.yaml").read_text()
        assert f"seed: {row['seed']}" in saved
        best = out / f"seed_{row['seed']}" / "checkpoints" / "best_model.pth"
        dense = evaluate_checkpoint(best, tiny_synthetic_root, "test", masks=("dense",), progress=False)
        m = dense.metrics["dense"]["overall"]
        assert row["yardstick_dense_aee"] == pytest.approx(m["aee"])
        assert row["yardstick_dense_ratio"] == pytest.approx(m["aee"] / m["zero_flow_aee"])
        assert row["yardstick_sparse_ratio"] != row["yardstick_dense_ratio"] and row["resumed"] is False
        assert "test_dense_aee" not in row  # the recipe trains on the yardstick's root: no second column
    assert rows[0]["yardstick_dense_aee"] != rows[1]["yardstick_dense_aee"]  # two seeds, two models


def test_the_report_gives_mean_and_spread_over_the_seeds(trained):
    _, out, rows = trained
    report = (out / "flow_quality.md").read_text()
    values = [r["yardstick_dense_ratio"] for r in rows]
    mean = sum(values) / 2
    std = math.sqrt(sum((v - mean) ** 2 for v in values))  # n - 1 = 1
    assert f"{mean:.3f} ± {std:.3f}" in report
    assert "mean ± std (2)" in report and "yardstick sparse" in report
    assert (out / "flow_quality.csv").read_text().splitlines()[0].startswith("seed,train_minutes")


def test_a_finished_seed_is_reused_and_an_interrupted_one_resumed(trained, tmp_path, monkeypatch):
    cfg, out, rows = trained
    calls = []
    monkeypatch.setattr(fq, "train_and_test", lambda c, resume=None: calls.append((c.seed, resume)))
    assert fq.run_flow_quality(cfg, [0, 1], out, "cpu", {"yardstick": cfg.data_root}, "tiny") == rows
    assert calls == []
    # seed 1 interrupted: its result is gone, its last.pth is there
    (out / "seed_1" / "result.json").unlink()
    monkeypatch.setattr(fq, "score", lambda *a: {"yardstick_dense_ratio": 0.5})
    fq.run_seed(cfg, 1, out, {}, "cpu")
    assert calls == [(1, out / "seed_1" / "checkpoints" / "last.pth")]
    assert json.loads((out / "seed_1" / "result.json").read_text())["resumed"] is True


def test_a_resumed_seed_reports_no_training_time():
    def row(seed, minutes, resumed):
        ratios = {f"yardstick_{m}_{k}": 1.0 for m in fq.MASKS for k in ("aee", "zero_flow_aee", "ratio")}
        return {"seed": seed, "train_minutes": minutes, "resumed": resumed, **ratios}

    report = fq.report_markdown([row(0, 0.2, True), row(1, 20.0, False), row(2, 22.0, False)], "t", ["yardstick"])
    lines = report.splitlines()
    assert next(x for x in lines if x.startswith("| 0 |")).endswith("| resumed |")
    assert next(x for x in lines if x.startswith("| mean")).endswith("| 21.0 |")  # the fresh seeds only


def test_a_bad_set_value_is_one_line_before_anything_trains(tmp_path, capsys):
    assert tool.main(["--output-dir", str(tmp_path / "out"), "--set", "crop_size=-3", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "crop_size" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_recipe_on_another_data_root_is_also_scored_on_its_own_test_split(trained, tiny_synthetic_root, tmp_path):
    cfg, _, _ = trained
    other = tmp_path / "other"
    shutil.copytree(tiny_synthetic_root, other)
    seen = {}

    def fake_seed(cfg, seed, output_dir, roots, device):
        seen.update(roots)
        return {
            "seed": seed,
            "train_minutes": 1.0,
            **{f"{n}_{m}_{k}": 1.0 for n in roots for m in fq.MASKS for k in ("aee", "zero_flow_aee", "ratio")},
        }

    recipe = config_from_dict({**cfg.to_dict(), "data_root": str(other)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fq, "run_seed", fake_seed)
        fq.run_flow_quality(recipe, [0], tmp_path / "out", "cpu", {"yardstick": tiny_synthetic_root}, "other")
    assert seen == {"test": other, "yardstick": tiny_synthetic_root}
    assert "| test dense | yardstick dense |" in (tmp_path / "out" / "flow_quality.md").read_text()


def test_a_missing_data_root_is_one_line_before_any_set_is_generated_or_folder_made(tmp_path, capsys):
    args = ["--output-dir", tmp_path / "out", "--seeds", "0", "--set", f"data_root={tmp_path / 'nowhere'}"]
    args += ["--set", "dataset=blinksim", "--yardstick-root", tmp_path / "yard", "--unseen-root", tmp_path / "unseen"]
    assert tool.main([*map(str, args), "--natural-root", str(tmp_path / "natural")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and "does not exist" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_set_null_is_a_value_as_in_train_py(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(tool, "run_flow_quality", lambda cfg, *a: seen.setdefault("cfg", cfg))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "flow_quality.md").write_text("report")
    assert tool.main(["--output-dir", str(tmp_path / "out"), "--seeds", "0", "--set", "crop_size=null"]) == 0
    assert seen["cfg"].crop_size is None
