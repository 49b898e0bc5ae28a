"""The command-line tools: documented flags, end-to-end runs on tiny data, error exits."""

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from snn.config import DEFAULT_CONFIG, load_config
from snn.data.dsec import decode_flow_png
from snn.data.provider import build_dataset
from snn.evaluation.metrics import METRIC_KEYS
from snn.models.checkpoint import save_checkpoint
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.state import carrying_state, reset_state
from snn.quantization import control
from snn.utils.quantization_utils import load_model
from tests.data.dsec_files import write_dsec_root, write_dsec_test_release
from tests.data.mvsec_files import write_mvsec_root
from tests.tiny_models import make_spiking
from tests.tool_modules import load_tool

REPO = Path(__file__).resolve().parents[2]

# The flags README.md and QAT_GUIDE.md use: renaming one must fail here, not in a reader's shell.
DOCUMENTED_FLAGS = {
    "tools/evaluate.py": [
        "--stateful",
        "--by-distance",
        "--fwl-windows",
        "--checkpoint",
        "--config",
        "--data-root",
        "--split",
        "--sequence",
        "--mask",
        "--output",
        "--batch-size",
        "--device",
        "--format",
        "--mvsec-dt",
        "dense",
        "sparse",
        "both",
    ],
    "tools/visualize_predictions.py": [
        "--checkpoint",
        "--config",
        "--data-root",
        "--split",
        "--sequence",
        "--output-dir",
        "--frames",
        "--video",
        "--gif",
        "--arrows",
        "--max-flow",
    ],
    "tools/compare_bitwidths.py": [
        "--checkpoints",
        "--data-root",
        "--split",
        "--output-dir",
        "--num-inputs",
        "--fwl-windows",
    ],
    "tools/qat_ladder.py": [
        "--output-dir",
        "--data-root",
        "--epochs-per-step",
        "--fp-epochs",
        "--no-progressive",
        "--device",
        "--seed",
        "--fp-checkpoint",
        "--reuse",
        "--seeds",
        "--unseen-root",
        "--no-unseen",
        "--low-current-bits",
        "--set",
        "--last-step",
        "--format",
        "--mvsec-dt",
    ],
    "tools/make_synthetic_dataset.py": ["--output", "--num-train", "--height", "--width", "--force"],
    "tools/interpolate_weights.py": ["--start", "--end", "--out", "--alpha", "--data-root", "--split", "--max-loss"],
    "train.py": [
        "--config",
        "--data-root",
        "--epochs",
        "--batch-size",
        "--device",
        "--seed",
        "--checkpoint-dir",
        "--log-dir",
        "--resume",
        "--allow-config-change",
        "--set",
    ],
    "tools/contrast_landscape.py": [
        "--data-root",
        "--split",
        "--windows",
        "--smoothness",
        "--steps",
        "--spans",
        "--tiles",
        "--tile-limit",
        "--tile-step",
    ],
    "finetune_quantized.py": [
        "--config",
        "--pretrained",
        "--checkpoint-dir",
        "--log-dir",
        "--strict-load",
        "--resume",
        "--allow-config-change",
        "--data-root",
        "--epochs",
        "--batch-size",
        "--device",
        "--seed",
        "--set",
    ],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine OpenMP threads that wait for one
    another make these runs a hundred times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(DOCUMENTED_FLAGS))
def test_help_lists_the_documented_flags(script):
    r = _run(script, "--help")
    assert r.returncode == 0, r.stderr
    missing = [flag for flag in DOCUMENTED_FLAGS[script] if flag not in r.stdout]
    assert not missing, f"{script} --help lacks {missing}"


# ---------------------------------------------------------------- tiny checkpoints


def _config(root, **extra):
    return load_config(
        DEFAULT_CONFIG,
        {"base_ch": 4, "num_bins": 5, "data_root": str(root), "dataset": "blinksim", "batch_size": 3, **extra},
    )


def _save(model, cfg, path):
    save_checkpoint(
        {
            "model_name": "EventSNNFlowNetLiteV2",
            "model_args": cfg.model_args(),
            "config": cfg.to_dict(),
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def checkpoints(tiny_synthetic_root, tmp_path_factory):
    """A full-precision checkpoint with random weights and a 4-bit copy of it whose quantizer ranges
    are calibrated on one batch. The weights are drawn large enough that every layer spikes (an
    untrained net of this width is silent) and the flow heads non-zero (they start at zero flow)."""
    out = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    cfg = _config(tiny_synthetic_root)
    model = EventSNNFlowNetLiteV2(**cfg.model_args()).eval()
    make_spiking(model)
    fp = _save(model, cfg, out / "fp" / "best_model.pth")
    cfg_q = _config(tiny_synthetic_root, quantization_enabled=True, initial_bit_width=4)
    model_q = EventSNNFlowNetLiteV2(**cfg_q.model_args()).eval()
    model_q.load_state_dict(model.state_dict(), strict=False)
    ds = build_dataset(tiny_synthetic_root, "train", 5)
    with control.calibrating(model_q), torch.no_grad():  # ranges from three training windows
        model_q(torch.stack([ds[i]["events"] for i in range(3)]))
    q4 = _save(model_q, cfg_q, out / "q4" / "best_model.pth")
    return {"fp": fp, "q4": q4}


def _pooled_by_hand(ckpt, root, split, sparse, names=None):
    """The metrics of docs/formats.md section 5, pooled over every pixel of the split, without FlowMetrics."""
    model = load_model(ckpt)
    epes, mags = [], []
    with torch.no_grad():
        for s in build_dataset(root, split, 5, names=names):
            pred = model(s["events"][None])[0].double()
            gt = s["flow"].double()
            mask = (s["valid"][0] > 0.5) & (torch.linalg.vector_norm(gt, dim=0) < 400)
            if sparse:
                mask &= s["event_mask"][0] > 0
            epes.append(torch.linalg.vector_norm(pred - gt, dim=0)[mask])
            mags.append(torch.linalg.vector_norm(gt, dim=0)[mask])
    epe, mag = torch.cat(epes), torch.cat(mags)
    return {
        "aee": float(epe.mean()),
        "outliers": 100 * float(((epe > 3) & (epe > 0.05 * mag)).double().mean()),
        "1pe": 100 * float((epe > 1).double().mean()),
        "2pe": 100 * float((epe > 2).double().mean()),
        "3pe": 100 * float((epe > 3).double().mean()),
        "zero_flow_aee": float(mag.mean()),
        "num_pixels": len(epe),
    }


# ---------------------------------------------------------------- evaluate.py


def test_evaluate_both_masks_json_shape_and_pooled_overall(checkpoints, tiny_synthetic_root, tmp_path, capsys):
    out = tmp_path / "res.json"
    rc = load_tool("evaluate").main(
        [
            "--checkpoint",
            str(checkpoints["fp"]),
            "--data-root",
            str(tiny_synthetic_root),
            "--split",
            "train",
            "--mask",
            "both",
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for text in (
        "FP32 (full precision)",
        "parameters",
        "SynOps",
        "firing rate",
        "overall",
        "zero-flow AEE",
        "samples/s",
        "seq_0002",
        "sparse mask",
        "flow warp loss (FWL)",
    ):
        assert text in printed
    doc = json.loads(out.read_text())
    assert set(doc) == {
        "checkpoint", "bit_width", "current_bits", "model", "data", "activity", "throughput", "dense", "sparse", "fwl"
    }  # fmt: skip
    assert doc["fwl"]["overall"] > 0 and set(doc["fwl"]["sequences"]) == set(doc["dense"]["sequences"])
    assert doc["fwl"]["windows"] == 3 and "each window with the 2 before it" in printed
    assert (doc["bit_width"], doc["checkpoint"]) == (32, str(checkpoints["fp"]))
    # What the tool prints is in the file too.
    n_params = sum(p.numel() for p in load_model(checkpoints["fp"]).parameters())
    assert doc["model"]["parameters"] == n_params and f"{n_params:,} parameters" in printed
    assert f"{doc['model']['size_bytes'] / 1e6:.3f} MB" in printed
    assert (doc["data"]["split"], doc["data"]["num_sequences"], doc["data"]["num_windows"]) == ("train", 3, 12)
    rates = doc["activity"]["firing_rates"]
    assert set(rates) >= {"stem", "enc1", "dec1"} and all(0 <= r <= 1 for r in rates.values())
    assert f"firing rate {100 * doc['activity']['mean_firing_rate']:.2f} %" in printed
    assert doc["activity"]["synops_per_sample"] == pytest.approx(sum(doc["activity"]["synops_per_layer"].values()))
    assert f"{doc['throughput']['samples_per_s']:.1f} samples/s end to end" in printed
    for mask in ("dense", "sparse"):
        d = doc[mask]
        assert set(d) == {"overall", "sequences"}
        assert set(d["sequences"]) == {"seq_0000", "seq_0001", "seq_0002"}
        for m in (d["overall"], *d["sequences"].values()):
            assert set(m) == set(METRIC_KEYS) and isinstance(m["num_pixels"], int)
        assert sum(m["num_pixels"] for m in d["sequences"].values()) == d["overall"]["num_pixels"]
        expected = _pooled_by_hand(checkpoints["fp"], tiny_synthetic_root, "train", sparse=mask == "sparse")
        assert d["overall"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert 0 < d["overall"]["aee"] and 0 <= d["overall"]["1pe"] <= 100
    assert doc["sparse"]["overall"]["num_pixels"] < doc["dense"]["overall"]["num_pixels"]


def test_the_fwl_span_is_a_flag_and_a_span_longer_than_every_sequence_scores_none(
    checkpoints, tiny_synthetic_root, tmp_path, capsys
):
    def fwl(windows: str) -> tuple[int, dict | None, str]:
        out = tmp_path / f"fwl_{windows}.json"
        args = ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(tiny_synthetic_root), "--split", "train"]
        rc = load_tool("evaluate").main([*args, "--fwl-windows", windows, "--output", str(out), "--device", "cpu"])
        printed = capsys.readouterr()
        return rc, json.loads(out.read_text())["fwl"] if out.exists() else None, printed.out + printed.err

    _, one, _ = fwl("1")
    _, two, _ = fwl("2")
    assert one["windows"] == 1 and two["windows"] == 2 and one["overall"] != pytest.approx(two["overall"])
    rc, five, printed = fwl("5")  # the sequences have 4 windows each
    assert rc == 0 and five["overall"] is None and "no window has 4 before it in its sequence" in printed
    rc, none, printed = fwl("0")
    assert rc == 2 and none is None and printed.strip() == "error: --fwl-windows must be >= 1 (got 0)"


def test_errors_by_distance_split_the_dense_aee_and_begin_with_the_sparse_one(
    checkpoints, tiny_synthetic_root, tmp_path, capsys
):
    out = tmp_path / "res.json"
    args = ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(tiny_synthetic_root), "--split", "train"]
    assert load_tool("evaluate").main([*args, "--mask", "both", "--by-distance", "--output", str(out)]) == 0
    assert "Dense errors by distance to the nearest event" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    bands = doc["by_distance"]
    assert bands[0]["band"] == "0-1" and bands[0]["aee"] == pytest.approx(doc["sparse"]["overall"]["aee"], rel=1e-5)
    assert sum(b["share"] for b in bands) == pytest.approx(1)
    pooled = sum(b["share"] * b["aee"] for b in bands)
    assert pooled == pytest.approx(doc["dense"]["overall"]["aee"], rel=1e-5)


def _stateful_aee_by_hand(ckpt, root, split, reset_per_sequence=True):
    """Dense AEE with membranes carried window to window, at rest at each sequence's start (or only once)."""
    model = load_model(ckpt)
    epes = []
    with torch.no_grad(), carrying_state(model):
        for s in build_dataset(root, split, 5, names=None).datasets:
            if reset_per_sequence:
                reset_state(model)
            for i in range(len(s)):
                w = s[i]
                pred = model(w["events"][None])[0].double()
                gt = w["flow"].double()
                mask = (w["valid"][0] > 0.5) & (torch.linalg.vector_norm(gt, dim=0) < 400)
                epes.append(torch.linalg.vector_norm(pred - gt, dim=0)[mask])
    return float(torch.cat(epes).mean())


def test_evaluate_stateful_carries_membranes_through_each_sequence_and_never_into_the_next(
    checkpoints, tiny_synthetic_root, tmp_path
):
    runs = {}
    for name, extra in (("stateless", []), ("stateful", ["--stateful"])):
        out = tmp_path / f"{name}.json"
        args = ["--checkpoint", checkpoints["fp"], "--data-root", tiny_synthetic_root, "--split", "train"]
        assert load_tool("evaluate").main([*map(str, args), "--output", str(out), *extra]) == 0
        runs[name] = json.loads(out.read_text())
    stateful = runs["stateful"]["dense"]["overall"]["aee"]
    assert runs["stateful"]["data"]["stateful"] is True and runs["stateless"]["data"]["stateful"] is False
    # batches of 3 over sequences of 4 windows: the resets must follow the sequences, not the batches
    assert stateful == pytest.approx(_stateful_aee_by_hand(checkpoints["fp"], tiny_synthetic_root, "train"), rel=1e-6)
    leaking = _stateful_aee_by_hand(checkpoints["fp"], tiny_synthetic_root, "train", reset_per_sequence=False)
    assert abs(leaking - stateful) > 1e-4 and abs(runs["stateless"]["dense"]["overall"]["aee"] - stateful) > 1e-4


def test_a_model_trained_with_state_is_evaluated_with_state_unless_told_otherwise(
    checkpoints, tiny_synthetic_root, tmp_path
):
    ckpt = torch.load(checkpoints["fp"], weights_only=True)
    ckpt["config"]["state_windows"] = 2
    path = tmp_path / "stateful.pth"
    torch.save(ckpt, path)
    modes = {}
    for flag in ([], ["--stateless"], ["--stateful"]):
        out = tmp_path / f"{'default' if not flag else flag[0]}.json"
        args = ["--checkpoint", path, "--data-root", tiny_synthetic_root, "--split", "train", "--output", out]
        assert load_tool("evaluate").main([*map(str, args), *flag]) == 0
        modes[tuple(flag)] = json.loads(out.read_text())["data"]["stateful"]
    assert modes == {(): True, ("--stateless",): False, ("--stateful",): True}


def test_evaluate_one_mask_one_sequence_quantized(checkpoints, tiny_synthetic_root, tmp_path):
    out = tmp_path / "res.json"
    rc = load_tool("evaluate").main(
        [
            "--checkpoint",
            str(checkpoints["q4"]),
            "--data-root",
            str(tiny_synthetic_root),
            "--split",
            "train",
            "--sequence",
            "seq_0001",
            "--mask",
            "sparse",
            "--output",
            str(out),
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert (doc["bit_width"], doc["current_bits"]) == (4, 4) and "dense" not in doc
    assert (doc["throughput"]["batch_size"], doc["data"]["num_sequences"]) == (2, 1)
    d = doc["sparse"]
    assert list(d["sequences"]) == ["seq_0001"]
    expected = _pooled_by_hand(checkpoints["q4"], tiny_synthetic_root, "train", sparse=True, names=["seq_0001"])
    assert d["overall"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    other = _pooled_by_hand(checkpoints["q4"], tiny_synthetic_root, "train", sparse=True, names=["seq_0000"])
    assert d["overall"]["num_pixels"] != other["num_pixels"] or d["overall"]["aee"] != other["aee"]


def _rewrite_events(seq_dir, change):
    """Rewrite a tiny-root sequence's events.h5 as ``change`` says; time-sliced from then on (no frame indices)."""
    import h5py

    with h5py.File(seq_dir / "events.h5", "a") as f:
        t = f["events/t"][:]
        del f["events/ms_to_idx"]
        if change == "emptied":
            for name in ("x", "y", "t", "p"):
                dtype = f[f"events/{name}"].dtype
                del f[f"events/{name}"]
                f[f"events/{name}"] = np.zeros(0, dtype)
        elif change == "t_offset":
            f["t_offset"] = np.int64(10**9)  # an offset the windows' times do not share
        else:  # "nanoseconds": a time unit 1000 times too fine
            del f["events/t"]
            f["events/t"] = t * 1000
    with h5py.File(seq_dir / "flow.h5", "a") as f:
        del f["flow/frame_event_start"], f["flow/frame_event_end"]


def test_a_split_whose_windows_hold_no_events_is_warned_about_per_sequence_and_split(
    checkpoints, tiny_synthetic_root, tmp_path, capsys, caplog
):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(tiny_synthetic_root, root)
    changes = {"seq_0000": "emptied", "seq_0001": "t_offset", "seq_0002": "nanoseconds"}
    for name, change in changes.items():
        _rewrite_events(root / "train" / name, change)
    argv = ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(root), "--split", "train", "--device", "cpu"]
    with caplog.at_level(logging.WARNING):
        assert load_tool("evaluate").main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lines = {}
    for name in changes:
        [lines[name]] = [m for m in warned if m.startswith(f"{root / 'train' / name}: 0 of ")]
        assert lines[name].endswith("the network sees no input in this sequence")
    assert "0 of 0 events fall in its 4 windows" in lines["seq_0000"] and "events.h5 holds none" in lines["seq_0000"]
    for name in ("seq_0001", "seq_0002"):  # the events' times beside the windows', and the likely cause
        assert "us; the events at " in lines[name] and "a wrong time unit or t_offset?" in lines[name]
    assert "the events at 1000" in lines["seq_0001"]  # shifted by the t_offset
    [split] = [m for m in warned if "holds an event" in m]
    assert split.startswith(f"{root / 'train'}: none of the ") and "the train split has no input" in split
    # The other splits are as generated: no warning about them.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load_tool("evaluate").main([*argv[:4], "--split", "test", "--device", "cpu"]) == 0
    assert not [r for r in caplog.records if "events fall" in r.getMessage() or "holds an event" in r.getMessage()]


@pytest.mark.parametrize("target", ["folder", "unwritable"])
def test_evaluate_output_that_cannot_be_written_fails_before_evaluating(
    checkpoints, tiny_synthetic_root, tmp_path, capsys, target
):
    if target == "folder":
        out = tmp_path / "results"
        out.mkdir()
    else:
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        out = blocker / "sub" / "res.json"  # a folder cannot be made inside a file
    rc = load_tool("evaluate").main(
        ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(tiny_synthetic_root), "--output", str(out)]
    )
    assert rc == 2
    captured = capsys.readouterr()
    assert "overall" not in captured.out  # nothing was evaluated
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(out) in errors[0]


def test_evaluate_on_a_dsec_release_pads_its_frames_and_reports_the_zero_flow_baseline(checkpoints, tmp_path):
    root = write_dsec_root(tmp_path / "DSEC")  # 8x12 frames: the width is padded to 16 and cropped back
    out = tmp_path / "dsec.json"
    args = ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(root), "--split", "train"]
    assert load_tool("evaluate").main([*args, "--output", str(out), "--device", "cpu"]) == 0
    overall = json.loads(out.read_text())["dense"]["overall"]
    flows = [decode_flow_png(p) for p in sorted(root.glob("train_optical_flow/*/flow/forward/*.png"))]
    magnitudes = np.concatenate([np.linalg.norm(uv, axis=0)[valid] for uv, valid in flows])
    assert overall["zero_flow_aee"] == pytest.approx(magnitudes.mean(), rel=1e-6)
    assert np.isfinite(overall["aee"]) and overall["num_pixels"] == magnitudes.size


def test_a_dsec_test_release_is_evaluated_by_writing_upload_pngs_named_by_file_index(checkpoints, tmp_path, capsys):
    root = write_dsec_test_release(tmp_path / "DSEC")
    out = tmp_path / "upload"
    args = ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(root), "--split", "test"]
    assert load_tool("evaluate").main([*args, "--predictions", str(out), "--device", "cpu"]) == 0
    assert "wrote 2 flow PNGs" in capsys.readouterr().out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["zurich_city_01_a/000820.png", "zurich_city_01_a/000840.png"]
    model = load_model(checkpoints["fp"]).eval()
    sample = build_dataset(root, "test", 5)[1]
    with torch.no_grad():
        want = model(sample["events"][None])[0].numpy()
    got, valid = decode_flow_png(out / written[1])
    assert valid.all() and np.abs(got - want).max() <= 0.5 / 128 + 1e-6
    # The folder now holds predictions: a second run does not write over them.
    assert load_tool("evaluate").main([*args, "--predictions", str(out), "--device", "cpu"]) == 2
    assert "already holds files" in capsys.readouterr().err


def test_evaluate_on_mvsec_with_the_dt4_protocol_reports_dense_and_sparse_baselines(checkpoints, tmp_path):
    from snn.data.mvsec import MvsecSequence

    root = write_mvsec_root(tmp_path / "MVSEC")  # 6x10 frames: padded and cropped back
    out = tmp_path / "mvsec.json"
    args = ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(root), "--format", "mvsec", "--mvsec-dt", "4"]
    assert load_tool("evaluate").main([*args, "--mask", "both", "--output", str(out), "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    seq = MvsecSequence(root / "indoor_flying1_data.hdf5", root / "indoor_flying1_gt_flow_dist.npz", dt=4)
    samples = [seq[i] for i in range(len(seq))]
    for mask, with_events in (("dense", False), ("sparse", True)):
        keep = [(s["valid"] * (s["event_mask"] if with_events else 1))[0] > 0 for s in samples]
        magnitudes = torch.cat([s["flow"].norm(dim=0)[k] for s, k in zip(samples, keep, strict=True)])
        overall = result[mask]["overall"]
        assert overall["num_pixels"] == magnitudes.numel() > 0
        assert overall["zero_flow_aee"] == pytest.approx(float(magnitudes.double().mean()), rel=1e-6)
    assert result["sparse"]["overall"]["num_pixels"] < result["dense"]["overall"]["num_pixels"]


def test_missing_checkpoint_is_one_line_and_exit_2(tiny_synthetic_root):
    r = _run("tools/evaluate.py", "--checkpoint", "no/such/model.pth", "--data-root", tiny_synthetic_root)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no/such/model.pth" in lines[0]


def _error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    return errors[0]


def test_data_root_without_the_split_is_an_error(checkpoints, tiny_synthetic_root, tmp_path, capsys):
    root = tmp_path / "only_train"
    root.mkdir()
    (root / "train").symlink_to(tiny_synthetic_root / "train", target_is_directory=True)
    rc = load_tool("evaluate").main(
        ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(root), "--split", "test", "--device", "cpu"]
    )
    assert rc == 2
    line = _error_line(capsys)
    assert str(root) in line and line.endswith("; this root has the train split: use --split train")


def test_a_dsec_release_without_a_test_split_suggests_split_train(checkpoints, tmp_path, capsys):
    root = write_dsec_root(tmp_path / "DSEC")  # the release's shape: train_events/ and train_optical_flow/ only
    rc = load_tool("evaluate").main(
        ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(root), "--device", "cpu"]
    )
    assert rc == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: {root / 'test_events'}: does not exist: a DSEC test split needs test_events/")
    assert line.endswith("; this root has the train split: use --split train")


def test_corrupt_checkpoint_and_wrong_representation_are_errors(checkpoints, tiny_synthetic_root, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    evaluate = load_tool("evaluate")
    assert evaluate.main(["--checkpoint", str(bad), "--data-root", str(tiny_synthetic_root)]) == 2
    assert "bad.pth" in _error_line(capsys)
    voxel = tmp_path / "voxel.yaml"
    voxel.write_text("base_ch: 4\nrepresentation: voxel\n")
    assert (
        evaluate.main(
            [
                "--checkpoint",
                str(checkpoints["fp"]),
                "--config",
                str(voxel),
                "--data-root",
                str(tiny_synthetic_root),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "representation" in _error_line(capsys)


# ---------------------------------------------------------------- visualize_predictions.py


def _windows_1_2(checkpoints, root, out):
    """visualize_predictions.py flags for windows 1 and 2 of the first test sequence, on the CPU."""
    return ["--checkpoint", str(checkpoints["fp"]), "--data-root", str(root), "--split", "test",
            "--sequence", "seq_0000", "--frames", "1:3", "--output-dir", str(out), "--device", "cpu"]  # fmt: skip


def test_visualize_writes_pictures_and_a_video(checkpoints, tiny_synthetic_root, tmp_path, capsys):
    out = tmp_path / "vis"
    rc = load_tool("visualize_predictions").main(
        _windows_1_2(checkpoints, tiny_synthetic_root, out) + ["--arrows", "--video"]
    )
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["seq_0000_00001.png", "seq_0000_00002.png"]
    img = cv2.imread(str(pngs[0]))
    assert img.shape[0] > 32 * 4 and img.shape[1] > 4 * 32 * 4  # panels upscaled from 32x32
    video = cv2.VideoCapture(str(out / "seq_0000.mp4"))
    assert video.isOpened() and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    video.release()
    assert f"wrote {out / 'seq_0000.mp4'}" in capsys.readouterr().out
    assert not (out / "seq_0000.gif").exists()


def test_visualize_writes_a_gif_with_the_video(checkpoints, tiny_synthetic_root, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "vis"
    rc = load_tool("visualize_predictions").main(
        _windows_1_2(checkpoints, tiny_synthetic_root, out) + ["--video", "--gif", "--fps", "4"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("seq_0000.mp4", "seq_0000.gif"):  # the printout names every file written
        assert f"wrote {out / name}" in printed
    assert "seq_0000_00001.png .. seq_0000_00002.png" in printed
    png = cv2.imread(str(out / "seq_0000_00001.png"))
    with Image.open(out / "seq_0000.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 2
        assert gif.size == (png.shape[1], png.shape[0])
        assert gif.info["duration"] == 250 and gif.info["loop"] == 0
        gif.seek(1)
        assert gif.size == (png.shape[1], png.shape[0])


def test_visualize_unknown_sequence_lists_the_available_ones(checkpoints, tiny_synthetic_root, tmp_path, capsys):
    rc = load_tool("visualize_predictions").main(
        [
            "--checkpoint",
            str(checkpoints["fp"]),
            "--data-root",
            str(tiny_synthetic_root),
            "--sequence",
            "seq_9999",
            "--output-dir",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2
    line = _error_line(capsys)
    assert "seq_9999" in line and "available: seq_0000" in line
    assert not list(tmp_path.glob("*.png"))


# ---------------------------------------------------------------- compare_bitwidths.py


def test_compare_uses_the_full_precision_checkpoint_as_reference(checkpoints, tiny_synthetic_root, tmp_path):
    out = tmp_path / "cmp"
    rc = load_tool("compare_bitwidths").main(
        [
            "--checkpoints",
            str(checkpoints["q4"]),
            str(checkpoints["fp"]),
            "--data-root",
            str(tiny_synthetic_root),
            "--split",
            "train",
            "--output-dir",
            str(out),
            "--num-inputs",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [int(r["bits"]) for r in rows] == [4, 32]
    q, fp = rows
    assert (q["reference"], fp["reference"]) == ("False", "True")
    # The output error against the reference, by hand on the same first two windows.
    windows = torch.stack([build_dataset(tiny_synthetic_root, "train", 5)[i]["events"] for i in range(2)])
    with torch.no_grad():
        diff = load_model(checkpoints["q4"])(windows) - load_model(checkpoints["fp"])(windows)
    assert float(q["output_mae"]) == pytest.approx(float(diff.abs().mean()), rel=1e-4)
    assert float(q["output_mse"]) == pytest.approx(float((diff**2).mean()), rel=1e-4)
    assert float(q["output_mae"]) > 0
    assert float(q["retention"]) == pytest.approx(float(fp["aee"]) / float(q["aee"]), rel=1e-4)
    assert float(q["size_mb"]) < float(fp["size_mb"])
    expected = _pooled_by_hand(checkpoints["fp"], tiny_synthetic_root, "train", sparse=False)
    assert float(fp["aee"]) == pytest.approx(expected["aee"], rel=1e-4)
    md = (out / "compare.md").read_text()
    assert "FP32" in md and "W4A4" in md and f"reference: {checkpoints['fp']} (full precision)" in md
    assert cv2.imread(str(out / "compare.png")) is not None
    assert float(fp["fwl"]) > 0 and "| FWL |" in md
    assert "Spearman" not in md  # two checkpoints are too few to rank


def test_compare_without_full_precision_says_which_stands_in(checkpoints, tiny_synthetic_root, tmp_path):
    out = tmp_path / "cmp"
    rc = load_tool("compare_bitwidths").main(
        [
            "--checkpoints",
            str(checkpoints["q4"]),
            "--data-root",
            str(tiny_synthetic_root),
            "--split",
            "test",
            "--output-dir",
            str(out),
            "--num-inputs",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert "no full-precision checkpoint given" in (out / "compare.md").read_text()


@pytest.mark.parametrize(
    ("setting", "named"),
    [("distill_weight", "expected KEY=VALUE"), ("=1", "expected KEY=VALUE"), ("learn_scale=[1", "not valid YAML")],
)
def test_a_malformed_ladder_override_is_one_line_before_anything_runs(setting, named, tmp_path, capsys):
    out = tmp_path / "ladder"
    assert load_tool("qat_ladder").main(["--output-dir", str(out), "--no-unseen", "--set", setting]) == 2
    line = _error_line(capsys)
    assert named in line and setting in line
    assert not out.exists()


def test_ladder_overrides_are_read_as_yaml_values():
    parse = load_tool("qat_ladder").parse_overrides
    assert parse(["distill_weight=1.0", "learn_scale=true", "crop_size=null"]) == {
        "distill_weight": 1.0,
        "learn_scale": True,
        "crop_size": None,
    }
