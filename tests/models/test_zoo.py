"""Shipped pretrained models: packing round trip, names, torch.hub, and the model card's figures."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snn.cli import checkpoint_arg
from snn.config import DEFAULT_CONFIG, load_config
from snn.data.loaders import prepare_synthetic_set
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.evaluation.model_card import data_description
from snn.models import VARIANTS, pretrained
from snn.models.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.zoo import PRETRAINED_DIR, compact_checkpoint, pretrained_path

REPO = Path(__file__).resolve().parents[2]
MAX_PARAMETERS = 1_200_000
MAX_TOTAL_MB = 20.0
# The card's AEE, recomputed: the same files, data and batches, so only float reduction order
# (thread counts) may move it; a wrong or damaged model is off by far more.
AEE_TOLERANCE_PX = 1e-3


def _quantized(bit_width, current_bits=None, binarize=False):
    torch.manual_seed(0)
    args = {"base_ch": 4, "num_bins": 3, "bins_per_step": 1, "quantize": True, "bit_width": bit_width,
            "current_bits": current_bits, "binarize": binarize, "learn_scale": True,
            "global_context": True}  # fmt: skip
    model = EventSNNFlowNetLiteV2(**args)
    for p in model.parameters():  # heads start at zero; give every layer weights worth packing
        p.data.normal_(0, 0.3)
    x = (torch.rand(2, 3, 2, 16, 16) < 0.3).float()
    model.train()
    model(x)  # sets the current quantizers' ranges and steps
    model.eval()
    return model, args, x


@pytest.mark.parametrize("widths", [(8, None, False), (4, None, False), (2, 4, False), (1, 4, False), (1, None, True)])
def test_packed_checkpoint_gives_the_same_flow_and_is_smaller(tmp_path, widths):
    model, args, x = _quantized(*widths)
    ckpt = {"model_name": "EventSNNFlowNetLiteV2", "model_args": args, "config": {}, "state_dict": model.state_dict()}
    save_checkpoint(ckpt, tmp_path / "full.pth")
    save_checkpoint(compact_checkpoint(ckpt), tmp_path / "packed.pth")
    packed = torch.load(tmp_path / "packed.pth", weights_only=True)
    assert all(v["codes"].dtype == torch.int8 for v in packed["weight_codes"].values())
    assert "enc1.conv.weight" not in packed["state_dict"]
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "full.pth")(x), load_model(tmp_path / "packed.pth")(x))
    assert (tmp_path / "packed.pth").stat().st_size < (tmp_path / "full.pth").stat().st_size


def test_damaged_weight_codes_name_the_file(tmp_path):
    model, args, _ = _quantized(4)
    ckpt = {"model_name": "EventSNNFlowNetLiteV2", "model_args": args, "config": {}, "state_dict": model.state_dict()}
    packed = compact_checkpoint(ckpt)
    del packed["weight_codes"]["enc1.conv.weight"]["scale"]
    save_checkpoint(packed, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth: damaged weight_codes"):
        load_checkpoint(tmp_path / "bad.pth")


def test_checkpoint_arg_resolves_shipped_names_and_passes_paths():
    assert checkpoint_arg("runs/a.pth") == Path("runs/a.pth")
    assert checkpoint_arg("pretrained:w4a4") == PRETRAINED_DIR / "W4A4.pth"
    with pytest.raises(argparse.ArgumentTypeError, match="no pretrained model 'W3A3'"):
        checkpoint_arg("pretrained:W3A3")
    with pytest.raises(CheckpointError, match="pretrained model not found"):
        pretrained_path("W4A4", folder=REPO / "no_such_folder")


def _card():
    return json.loads((PRETRAINED_DIR / "card.json").read_text())


def test_every_variant_is_shipped_within_the_size_and_parameter_bounds():
    card = _card()
    assert list(card["models"]) == list(VARIANTS)
    total = sum((PRETRAINED_DIR / m["file"]).stat().st_size for m in card["models"].values()) / 1e6
    assert total <= MAX_TOTAL_MB
    for variant, entry in card["models"].items():
        model = pretrained(variant)
        assert sum(p.numel() for p in model.parameters()) <= MAX_PARAMETERS
        weight_bits, current_bits = entry["bits"]
        if weight_bits < 32:
            assert (model.bit_width, model.current_bits) == (weight_bits, current_bits)
        else:
            assert not model.quantize


def test_torch_hub_loads_a_shipped_model_from_the_checkout():
    model = torch.hub.load(str(REPO), "pretrained", "W4A4", source="local")
    assert (model.bit_width, model.current_bits) == (4, 4)
    assert not model.training


def test_evaluate_tool_takes_a_shipped_model_by_name(tiny_synthetic_root, tmp_path):
    out = tmp_path / "w4a4.json"
    args = ["tools/evaluate.py", "--checkpoint", "pretrained:W4A4", "--data-root", tiny_synthetic_root, "--output", out]
    r = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["model"]["bit_width"] == 4
    r = subprocess.run([sys.executable, "tools/evaluate.py", "--checkpoint", "pretrained:W9", "--data-root", "x"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "no pretrained model 'W9'" in r.stderr


def test_card_reports_the_default_runs_data():
    # The card's figures are on the test split python train.py generates; the fixture below rebuilds it.
    assert _card()["data_root"] == load_config(DEFAULT_CONFIG).data_root


@pytest.fixture(scope="module")
def default_test_split(tmp_path_factory):
    """The test split of the synthetic dataset as ``python train.py`` generates it (the card's data);
    a split's sequences do not depend on the sizes of the others, so the training split is left out."""
    spec = dataclasses.replace(load_config(DEFAULT_CONFIG).synthetic, num_train=0, num_val=0)
    return prepare_synthetic_set(tmp_path_factory.mktemp("zoo") / "synthetic", spec)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_model_reproduces_its_card(default_test_split, variant):
    entry = _card()["models"][variant]
    result = evaluate_checkpoint(pretrained_path(variant), default_test_split, "test", progress=False)
    overall = result.metrics["dense"]["overall"]
    assert result.num_windows == entry["windows"]
    assert overall["zero_flow_aee"] == pytest.approx(entry["zero_flow_aee"], abs=1e-6)
    assert overall["aee"] == pytest.approx(entry["test_aee"], abs=AEE_TOLERANCE_PX)


def test_card_data_sentence_names_the_scene_scale():
    cfg = load_config(DEFAULT_CONFIG).to_dict()
    sentence = data_description(cfg)
    assert "`data/synthetic_s12`" in sentence and "each drawn at a scale of 1 to 2," in sentence
    plain = data_description({**cfg, "synthetic": {"num_train": 256}})
    assert "drawn at a scale" not in plain and "256 training" in plain
