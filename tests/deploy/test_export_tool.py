"""tools/export.py end to end: files, payload line, --verify, and its one-line errors."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from snn.config import load_config
from snn.training.run import build_trainer

CPU = torch.device("cpu")
TOOL = Path(__file__).resolve().parents[2] / "tools" / "export.py"


def _tool():
    spec = importlib.util.spec_from_file_location("_tool_export", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(root, tmp, name, config="snn/configs/event_snn_lite.yaml", resume=None):
    cfg = load_config(
        config,
        {"data_root": str(root), "dataset": "blinksim", "base_ch": 4, "num_bins": 3, "batch_size": 2,
         "num_epochs": 1, "crop_size": 32, "image_every": 0, "calibration_batches": 2,
         "checkpoint_dir": str(tmp / name / "ckpt"), "log_dir": str(tmp / name / "logs")},
    )  # fmt: skip
    build_trainer(cfg, CPU, resume=resume).fit()
    return tmp / name / "ckpt" / "best_model.pth"


@pytest.fixture(scope="module")
def checkpoints(tiny_synthetic_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    fp = _run(tiny_synthetic_root, tmp, "fp")
    w2 = _run(tiny_synthetic_root, tmp, "w2", "snn/configs/event_snn_lite_2bit.yaml", resume=fp)
    return fp, w2, _run(tiny_synthetic_root, tmp, "w8", "snn/configs/event_snn_lite_8bit.yaml", resume=fp)


def test_export_writes_the_files_prints_the_payload_and_verifies(checkpoints, tiny_synthetic_root, tmp_path, capsys):
    export = _tool()

    out = tmp_path / "exp"
    argv = ["--checkpoint", str(checkpoints[1]), "--output-dir", str(out), "--input-size", "32", "32"]
    assert export.main([*argv, "--verify", "--data-root", str(tiny_synthetic_root), "--windows", "3"]) == 0
    printed = capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["size"] == (out / "weights.bin").stat().st_size
    for entry in index["tensors"].values():  # offset, shape, bits and per-channel scales of each tensor
        channels = entry["shape"][1 if entry["layout"] == "IOHW" else 0]
        assert len(entry["scales"]) == channels and entry["bits"] in (2, 8) and entry["offset"] >= 0
    assert f"payload: {index['size']:,} bytes" in printed and "W2A2" in printed
    assert "3 windows: identical spikes" in printed and "PASS" in printed
    network = json.loads((out / "network.json").read_text())
    assert network["widths"] == {"weights": 2, "currents": 2} and network["input"]["height"] == 32
    # A second export into the same folder is refused; --force replaces it.
    assert export.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert export.main([*argv, "--force"]) == 0


def test_export_errors_are_one_line(checkpoints, tmp_path, capsys):
    export = _tool()

    fp, quantized, _ = checkpoints
    assert export.main(["--checkpoint", str(fp), "--output-dir", str(tmp_path / "a")]) == 2
    assert "full-precision" in capsys.readouterr().err
    assert export.main(["--checkpoint", str(quantized), "--output-dir", str(tmp_path / "b"), "--verify"]) == 2
    assert "--verify needs --data-root" in capsys.readouterr().err
    assert export.main(["--checkpoint", str(tmp_path / "none.pth"), "--output-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.pth" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_onnx_step_graph_is_written_and_checked_for_w8a8_only(checkpoints, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (python -m pip install onnx onnxruntime)")
    export = _tool()
    _, w2, w8 = checkpoints
    argv = ["--output-dir", str(tmp_path / "w8"), "--input-size", "32", "32", "--onnx"]
    assert export.main(["--checkpoint", str(w8), *argv]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "w8" / "step.onnx").stat().st_size > 0
    difference = float(printed.split("flow max |diff| ")[1].split(" px")[0])
    assert difference < 1e-3
    assert export.main(["--checkpoint", str(w2), "--output-dir", str(tmp_path / "w2"), "--onnx"]) == 2
    assert "W8A8" in capsys.readouterr().err
