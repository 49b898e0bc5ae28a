"""tools/export.py end to end: files, payload line, --verify, and its one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from snn.config import load_config
from snn.data.synthetic import generate_dataset
from snn.data.synthetic_config import SyntheticConfig
from snn.models.checkpoint import save_checkpoint
from snn.training.run import build_trainer
from tests.tool_modules import load_tool

CPU = torch.device("cpu")


def _run(root, tmp, name, config="snn/configs/event_snn_lite.yaml", resume=None):
    cfg = load_config(
        config,
        {"data_root": str(root), "dataset": "blinksim", "base_ch": 4, "num_bins": 3,
         "bins_per_step": 1, "batch_size": 2,
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
    export = load_tool("export")

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
    export = load_tool("export")

    fp, quantized, _ = checkpoints
    assert export.main(["--checkpoint", str(fp), "--output-dir", str(tmp_path / "a")]) == 2
    assert "full-precision" in capsys.readouterr().err
    assert export.main(["--checkpoint", str(quantized), "--output-dir", str(tmp_path / "b"), "--verify"]) == 2
    assert "--verify and --vectors need --data-root" in capsys.readouterr().err
    assert export.main(["--checkpoint", str(quantized), "--output-dir", str(tmp_path / "b"), "--vectors", "2"]) == 2
    assert "--verify and --vectors need --data-root" in capsys.readouterr().err
    assert export.main(["--checkpoint", str(tmp_path / "none.pth"), "--output-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.pth" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_onnx_step_graph_is_written_and_checked_for_w8a8_only(checkpoints, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (python -m pip install onnx onnxruntime)")
    export = load_tool("export")
    _, w2, w8 = checkpoints
    argv = ["--output-dir", str(tmp_path / "w8"), "--input-size", "32", "32", "--onnx"]
    assert export.main(["--checkpoint", str(w8), *argv]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "w8" / "step.onnx").stat().st_size > 0
    difference = float(printed.split("flow max |diff| ")[1].split(" px")[0])
    assert difference < 1e-3
    assert export.main(["--checkpoint", str(w2), "--output-dir", str(tmp_path / "w2"), "--onnx"]) == 2
    assert "W8A8" in capsys.readouterr().err


def _with_config(checkpoint, path, **changes):
    """A copy of ``checkpoint`` whose stored config has ``changes``."""
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"] = {**ckpt["config"], **changes}
    save_checkpoint(ckpt, path)
    return path


def test_the_input_size_is_that_of_the_data_not_of_the_unused_synthetic_settings(checkpoints, tmp_path, capsys):
    export = load_tool("export")
    _, w2, _ = checkpoints
    trained_on = torch.load(w2, weights_only=True)["config"]
    assert trained_on["synthetic"]["height"] == 64  # the config's synthetic section, unused here

    def size(out):
        return json.loads((out / "network.json").read_text())["input"]

    # By default: the frames of the data root the checkpoint was trained on (32x32).
    assert export.main(["--checkpoint", str(w2), "--output-dir", str(tmp_path / "a")]) == 0
    assert size(tmp_path / "a")["height"] == size(tmp_path / "a")["width"] == 32
    assert f"input size 32x32, from the frames of {trained_on['data_root']} (test split)" in capsys.readouterr().out
    # --data-root (what --verify runs) gives its own frames' size; --input-size overrides both.
    other = tmp_path / "other"
    generate_dataset(other, SyntheticConfig(height=48, width=40, num_frames=3), 1, 1, 1, seed=0, workers=1,
                     progress=False)  # fmt: skip
    assert export.main(["--checkpoint", str(w2), "--output-dir", str(tmp_path / "b"), "--data-root", str(other)]) == 0
    assert (size(tmp_path / "b")["height"], size(tmp_path / "b")["width"]) == (48, 40)
    argv = ["--checkpoint", str(w2), "--output-dir", str(tmp_path / "c"), "--input-size", "16", "24"]
    assert export.main([*argv, "--data-root", str(other)]) == 0
    assert (size(tmp_path / "c")["height"], size(tmp_path / "c")["width"]) == (16, 24)
    capsys.readouterr()
    # A data root that is not here: the size is asked for, nothing is written.
    gone = _with_config(w2, tmp_path / "gone.pth", data_root=str(tmp_path / "elsewhere"))
    assert export.main(["--checkpoint", str(gone), "--output-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {gone}: was trained on {tmp_path / 'elsewhere'}, which is not here")
    assert "pass --input-size H W" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()
    # Synthetic data that is not generated here: the size its settings generate.
    synthetic = _with_config(gone, tmp_path / "synthetic.pth", dataset="synthetic")
    assert export.main(["--checkpoint", str(synthetic), "--output-dir", str(tmp_path / "e")]) == 0
    assert size(tmp_path / "e")["height"] == 64


@pytest.fixture(scope="module")
def w1a1(checkpoints, tiny_synthetic_root, tmp_path_factory):
    return _run(tiny_synthetic_root, tmp_path_factory.mktemp("w1"), "w1", "snn/configs/event_snn_lite_1bit.yaml",
                resume=checkpoints[0])  # fmt: skip


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    return err.strip()


def test_onnx_of_a_model_that_is_not_w8a8_is_refused_before_anything_is_written(w1a1, tmp_path, capsys):
    out = tmp_path / "w1"
    argv = ["--checkpoint", str(w1a1), "--output-dir", str(out), "--input-size", "32", "32", "--onnx"]
    assert load_tool("export").main(argv) == 2
    line = _one_error_line(capsys)
    assert line == f"error: {w1a1}: the ONNX step graph is built for W8A8 models, this one is W1A1"
    assert not out.exists()


@pytest.mark.parametrize("target", ["device", "file", "inside a file"])
def test_an_output_dir_that_cannot_be_a_folder_says_why(checkpoints, tmp_path, capsys, target):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    if target == "device":
        out, expected = Path("/dev/full"), "/dev/full: --output-dir is a character device, not a folder"
        if not out.exists():
            pytest.skip("no /dev/full here")
    elif target == "file":
        out, expected = blocker, f"{blocker}: --output-dir is a file, not a folder"
    else:
        out = blocker / "sub"
        expected = f"{out}: --output-dir cannot be made: {blocker} is a file, not a folder"
    argv = ["--checkpoint", str(checkpoints[1]), "--output-dir", str(out), "--input-size", "32", "32"]
    assert load_tool("export").main(argv) == 2
    assert _one_error_line(capsys) == f"error: {expected}"
    assert blocker.read_text() == "keep me"


def test_an_input_size_whose_buffers_do_not_fit_is_refused_before_allocating(checkpoints, tmp_path, capsys):
    import snn.deploy.pipeline as pipeline

    out = tmp_path / "huge"
    argv = ["--checkpoint", str(checkpoints[1]), "--output-dir", str(out), "--input-size", "100000", "100000"]
    assert load_tool("export").main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: input size 100000x100000 (from --input-size): its forward pass needs about ")
    assert "GiB of memory available here" in line
    assert not out.exists()
    # The estimate against what the machine has: 32x32 fits in 1 GiB, not in 1 MiB.
    model = pipeline.load_model(checkpoints[1])
    assert 2**20 < pipeline.forward_bytes(model, 32, 32) < 2**30


def _read_hex(path, bits, signed):
    values = np.array([int(line, 16) for line in path.read_text().split()], dtype=np.int64)
    return np.where(values >= 2 ** (bits - 1), values - 2**bits, values) if signed else values


def test_golden_vectors_hold_what_the_model_computes_in_hex_and_npz(checkpoints, tiny_synthetic_root, tmp_path, capsys):
    export = load_tool("export")
    out = tmp_path / "exp"
    argv = ["--checkpoint", str(checkpoints[2]), "--output-dir", str(out), "--input-size", "32", "32"]
    assert export.main([*argv, "--vectors", "2", "--data-root", str(tiny_synthetic_root)]) == 0
    printed = capsys.readouterr().out
    assert "| total |" in printed and "wrote golden vectors of 2 windows" in printed
    manifest = json.loads((out / "vectors" / "manifest.json").read_text())
    assert manifest["windows"] == 2
    arrays = {entry["name"]: entry for entry in manifest["arrays"]}
    assert {"input", "stem.current", "stem.membrane", "stem.spikes", "head1.code_sum"} <= set(arrays)
    for window in range(2):
        folder = out / "vectors" / f"window_{window:03d}"
        stored = np.load(folder / "vectors.npz")
        for name, entry in arrays.items():
            from_hex = _read_hex(folder / f"{name}.hex", entry["bits"], entry["signed"])
            assert np.array_equal(from_hex.reshape(entry["shape"]), stored[name]), name
    # The vectors are the model's own values: its spikes and flow codes on the first test window.
    from snn.config import config_from_checkpoint
    from snn.data.loaders import make_dataset
    from snn.deploy.verify import torch_spikes_and_flow
    from snn.models.checkpoint import load_checkpoint, load_model

    model = load_model(checkpoints[2])
    cfg = config_from_checkpoint(load_checkpoint(checkpoints[2]), checkpoints[2])
    events = make_dataset(cfg, tiny_synthetic_root, "test")[0]["events"][None]
    codes = {}
    _, spikes = torch_spikes_and_flow(model, events, codes)
    first = np.load(out / "vectors" / "window_000" / "vectors.npz")
    assert np.array_equal(first["dec1.spikes"], spikes["dec1"][:, 0])
    assert np.array_equal(first["head1.code_sum"], codes["head1"][0])
