"""Weights between a model and its adapted copy: the arithmetic, the checks, and tools/interpolate_weights.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snn.config import DEFAULT_CONFIG, load_config
from snn.models.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.interpolate import Interpolation, check_interpolable, interpolate_state, largest_within
from snn.quantization import control
from tests.tiny_models import make_spiking
from tests.tool_modules import load_tool


def _save(root, path, seed, **extra):
    """A tiny checkpoint with random weights large enough that every layer spikes and the heads move."""
    cfg = load_config(DEFAULT_CONFIG, {"base_ch": 4, "num_bins": 5, "data_root": str(root), "dataset": "blinksim",
                                       "batch_size": 3, **extra})  # fmt: skip
    torch.manual_seed(seed)
    model = EventSNNFlowNetLiteV2(**cfg.model_args()).eval()
    make_spiking(model)
    for m in model.modules():  # distinct batch-norm statistics, so that they are averaged too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.num_batches_tracked.fill_(seed + 1)
    save_checkpoint({"model_name": "EventSNNFlowNetLiteV2", "model_args": cfg.model_args(), "config": cfg.to_dict(),
                     "state_dict": model.state_dict()}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def pair(tiny_synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("interp")
    return _save(tiny_synthetic_root, out / "start.pth", 0), _save(tiny_synthetic_root, out / "end.pth", 1)


def test_state_is_start_end_and_their_mean(pair):
    start, end = (load_checkpoint(p)["state_dict"] for p in pair)
    mid = interpolate_state(start, end, 0.5)
    key = "enc1.conv.weight"
    assert not torch.equal(start[key], end[key])
    assert torch.allclose(mid[key], (start[key] + end[key]) / 2)
    assert all(torch.equal(interpolate_state(start, end, 0.0)[k], v) for k, v in start.items() if v.is_floating_point())
    assert all(torch.equal(interpolate_state(start, end, 1.0)[k], v) for k, v in end.items())
    batches = [k for k in end if k.endswith("num_batches_tracked")]
    assert batches and all(torch.equal(mid[k], end[k]) for k in batches)  # integers are not averaged
    running = [k for k in end if k.endswith("running_mean")]
    assert torch.allclose(mid[running[0]], (start[running[0]] + end[running[0]]) / 2)


def test_quantizer_state_comes_from_the_end(tiny_synthetic_root, tmp_path):
    """Steps and ranges are not averaged: a step halfway between two grids suits neither model."""
    start_path = _save(tiny_synthetic_root, tmp_path / "q_start.pth", 0, quantization_enabled=True, initial_bit_width=4)
    ckpt = load_checkpoint(start_path)
    model = EventSNNFlowNetLiteV2(**ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"], strict=False)
    x = (torch.rand(2, 5, 2, 32, 32) < 0.2).float()
    with control.calibrating(model), torch.no_grad():
        model(x)
    ckpt["state_dict"] = model.state_dict()
    save_checkpoint(ckpt, start_path)
    end = {
        k: v * 3 if k.endswith("quant_layer.step") or k.endswith("conv.weight") else v
        for k, v in ckpt["state_dict"].items()
    }
    save_checkpoint({**ckpt, "state_dict": end}, tmp_path / "q_end.pth")
    mid = Interpolation(start_path, tmp_path / "q_end.pth").checkpoint(0.5)["state_dict"]
    steps = [k for k in end if k.endswith("quant_layer.step")]
    assert steps and all(torch.equal(mid[k], end[k]) for k in steps)
    at_start = Interpolation(start_path, tmp_path / "q_end.pth").checkpoint(0.0)["state_dict"]
    assert all(torch.equal(at_start[k], v) for k, v in ckpt["state_dict"].items())  # alpha 0: the start itself
    assert torch.allclose(mid["enc1.conv.weight"], 2 * ckpt["state_dict"]["enc1.conv.weight"])
    with torch.no_grad():
        assert torch.isfinite(Interpolation(start_path, tmp_path / "q_end.pth").model(0.5)(x)).all()


def test_the_model_at_the_ends_is_the_checkpoint(pair, tiny_synthetic_root):
    interp = Interpolation(*pair)
    x = (torch.rand(2, 5, 2, 32, 32) < 0.2).float()
    with torch.no_grad():
        flows = {a: interp.model(a)(x) for a in (0.0, 0.5, 1.0)}
        assert torch.equal(flows[0.0], load_model(pair[0])(x))
        assert torch.equal(flows[1.0], load_model(pair[1])(x))
    assert not torch.equal(flows[0.5], flows[0.0]) and not torch.equal(flows[0.5], flows[1.0])
    ckpt = interp.checkpoint(0.25)
    assert ckpt["interpolation"]["alpha"] == 0.25 and ckpt["interpolation"]["start"] == str(pair[0])


def test_different_models_are_refused_naming_both_files(pair, tiny_synthetic_root, tmp_path):
    wide = _save(tiny_synthetic_root, tmp_path / "wide.pth", 2, base_ch=8)
    with pytest.raises(
        CheckpointError, match=r"start\.pth and .*wide\.pth: the models are built differently \(base_ch"
    ):
        Interpolation(pair[0], wide)
    a, b = load_checkpoint(pair[0]), load_checkpoint(pair[1])
    del b["state_dict"]["enc1.conv.weight"]
    with pytest.raises(CheckpointError, match="different tensors, e.g. enc1.conv.weight"):
        check_interpolable(a, b, pair[0], pair[1])


def test_largest_alpha_within_the_bound():
    alphas = [0.2, 0.4, 0.6, 0.8, 1.0]
    assert largest_within(alphas, [1.00, 1.01, 1.04, 1.06, 1.10], 1.0, 0.05) == 0.6
    assert largest_within(alphas, [1.00, 1.01, 1.04, 1.06, 1.10], 1.0, 0.0) == 0.2
    assert largest_within(alphas, [1.2] * 5, 1.0, 0.05) == 0.0  # none within: keep the start
    assert largest_within(alphas, [1.2, 1.0, 1.2, 1.0, 1.2], 1.0, 0.05) == 0.8  # not the first break


def test_tool_writes_one_alpha_and_never_overwrites(pair, tmp_path, capsys):
    tool = load_tool("interpolate_weights")
    out = tmp_path / "mid.pth"
    assert tool.main(["--start", str(pair[0]), "--end", str(pair[1]), "--alpha", "0.3", "--out", str(out)]) == 0
    written = load_checkpoint(out)
    assert written["interpolation"]["alpha"] == pytest.approx(0.3)
    assert torch.allclose(written["state_dict"]["enc1.conv.weight"],
                          Interpolation(*pair).checkpoint(0.3)["state_dict"]["enc1.conv.weight"])  # fmt: skip
    before = out.read_bytes()
    assert tool.main(["--start", str(pair[0]), "--end", str(pair[1]), "--alpha", "0.6", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_tool_chooses_on_labelled_data(pair, tiny_synthetic_root, tmp_path, capsys):
    tool = load_tool("interpolate_weights")
    out = tmp_path / "chosen.pth"
    args = ["--start", str(pair[0]), "--end", str(pair[1]), "--data-root", str(tiny_synthetic_root),
            "--alpha", "0.5", "1.0", "--out", str(out)]  # fmt: skip
    assert tool.main([*args, "--max-loss", "1000"]) == 0  # every alpha within: the largest
    assert "<- chosen" in capsys.readouterr().out
    record = load_checkpoint(out)["interpolation"]
    assert record["alpha"] == 1.0 and record["chosen_on"]["split"] == "val"
    aee = dict(map(tuple, record["chosen_on"]["aee"]))
    assert set(aee) == {0.0, 0.5, 1.0} and len(set(aee.values())) == 3  # three different models scored
    strict = tmp_path / "strict.pth"
    assert tool.main([*args[:-1], str(strict), "--max-loss", "0"]) == 0  # only what is no worse than the start
    expected = largest_within([0.5, 1.0], [aee[0.5], aee[1.0]], aee[0.0], 0.0)
    assert load_checkpoint(strict)["interpolation"]["alpha"] == expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alpha", "1.5"], "between 0 and 1"),
        ([], "give exactly one --alpha"),
        (["--alpha", "0.2", "0.4"], "exactly one"),
    ],
)
def test_tool_refuses_bad_alphas(pair, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        load_tool("interpolate_weights").main(
            ["--start", str(pair[0]), "--end", str(pair[1]), "--out", str(tmp_path / "x.pth"), *extra]
        )
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_tool_refuses_a_missing_checkpoint_in_one_line(pair, tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    code = load_tool("interpolate_weights").main(
        ["--start", str(missing), "--end", str(pair[1]), "--alpha", "0.5", "--out", str(tmp_path / "o.pth")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "nope.pth: checkpoint file not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.pth").exists()
