"""A quantized model's forward and backward read no tensor value on the host: on a GPU every such
read (bool, float, item) waits for the device, once per quantizer per step."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from snn.config import CONFIG_DIR, load_config
from snn.models.factory import build_model
from snn.quantization.quantization_aware import QuantizationAwareLayer

HOST_READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist"}


class HostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in HOST_READS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "config",
    ["event_snn_lite_8bit.yaml", "event_snn_lite_4bit.yaml", "event_snn_lite_2bit.yaml", "event_snn_lite_1bit.yaml"],
)
def test_a_quantized_training_step_and_an_eval_pass_read_nothing_on_the_host(config):
    cfg = load_config(CONFIG_DIR / config)
    model = build_model(cfg.model, cfg.model_args())
    x = torch.rand(1, cfg.num_bins, 2, 16, 16)
    model.train()
    model.forward_multiscale(x)  # the first pass sets ranges and learned steps
    with HostReads() as reads:
        sum(p.sum() for p in model.forward_multiscale(x)).backward()
        model.eval()
        with torch.no_grad():
            model(x)
    assert reads.seen == []


def test_the_recorder_sees_a_host_read():
    with HostReads() as reads:
        bool(torch.tensor(True))
    assert reads.seen == ["__bool__"]


def test_a_loaded_state_without_a_range_is_observed_again_in_eval():
    q = QuantizationAwareLayer(bit_width=4)
    q.train()
    q(torch.full((10,), 2.0))
    assert q.has_range and float(q.running_max) == 2.0
    fresh = QuantizationAwareLayer(bit_width=4).state_dict()  # initialized False
    q.load_state_dict(fresh)
    q.eval()
    q(torch.full((10,), 3.0))  # no range known: this pass sets it, eval mode or not
    assert float(q.running_max) == 3.0
    q(torch.full((10,), 5.0))  # known now: eval passes leave it
    assert float(q.running_max) == 3.0
