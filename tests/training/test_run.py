"""Assembling a run: what a run started from a checkpoint takes from it."""

from pathlib import Path

from snn.config import DEFAULT_CONFIG, load_config
from snn.training.run import adopt_architecture


def test_a_run_from_a_checkpoint_takes_its_input_bins_and_leak():
    cfg = load_config(DEFAULT_CONFIG, {"initial_bit_width": 4})
    ckpt = {"model_args": {"input_bins": 3, "learn_leak": True, "bit_width": 8}, "config": {}}
    adopted = adopt_architecture(cfg, ckpt, Path("fp.pth"))
    assert (adopted.input_bins, adopted.learn_leak) == (3, True)
    assert adopted.initial_bit_width == 4  # quantization stays the config's
    assert (cfg.input_bins, cfg.learn_leak) == (1, False)  # the config itself is left as it was


def test_a_run_from_a_checkpoint_takes_its_dilation_and_head_input():
    cfg = load_config(DEFAULT_CONFIG, {"initial_bit_width": 4})
    ckpt = {"model_args": {"bottleneck_dilation": [2, 4], "head_input": "current"}, "config": {}}
    adopted = adopt_architecture(cfg, ckpt, Path("fp.pth"))
    assert adopted.bottleneck_dilation == [2, 4] and adopted.model_args()["head_input"] == "current"
