"""A quantized model's forward and backward read no tensor value on the host: on a GPU every such
read (bool, float, item) waits for the device, once per quantizer per step. (The integer evaluation
folds the model's constants on the host once per pass, before it queues any convolution.)"""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from snn.config import CONFIG_DIR, load_config
from snn.models.factory import build_model
from snn.models.flownet import float_fake_quant
from snn.quantization.quantization_aware import QuantizationAwareLayer, QuantizerStateError
from snn.training.run import build_trainer

HOST_READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist"}


class HostReads(TorchFunctionMode):
    """Records every host read of a tensor, but for those in ``host_tensors`` (kept on the host anyway)."""

    def __init__(self, host_tensors=()):
        super().__init__()
        self.seen = []
        self.host_ids = {id(t) for t in host_tensors}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in HOST_READS and not (args and id(args[0]) in self.host_ids):
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
        with torch.no_grad(), float_fake_quant(model):
            model(x)
    assert reads.seen == []
    # The integer evaluation reads the folded constants once per pass, before any convolution is queued.
    folded = model.fold_layers()
    with HostReads() as reads, torch.no_grad():
        model.integer_plan = lambda: folded
        model(x)
    assert reads.seen == []


def test_the_recorder_sees_a_host_read():
    with HostReads() as reads:
        bool(torch.tensor(True))
    assert reads.seen == ["__bool__"]


def test_a_loaded_state_without_a_range_is_an_error_in_eval_and_observed_again_in_training():
    q = QuantizationAwareLayer(bit_width=4)
    q.train()
    q(torch.full((10,), 2.0))
    assert q.has_range and float(q.running_max) == 2.0
    fresh = QuantizationAwareLayer(bit_width=4).state_dict()  # initialized False
    q.load_state_dict(fresh)
    q.eval()
    with pytest.raises(QuantizerStateError, match="no observed range: calibrate"):
        q(torch.full((10,), 3.0))  # an evaluation never takes its range from the data it scores
    assert not q.has_range
    q.train()
    q(torch.full((10,), 3.0))  # a training pass sets it
    assert float(q.running_max) == 3.0
    q.eval()
    q(torch.full((10,), 5.0))  # known now: eval passes leave it
    assert float(q.running_max) == 3.0


class _Batches:
    """A loader over batches read beforehand, so that only the training step itself is watched."""

    sampler = None

    def __init__(self, batches, batch_size):
        self.batches, self.batch_size = batches, batch_size

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def test_the_host_reads_of_a_training_epoch_do_not_grow_with_its_steps(tiny_synthetic_root, tmp_path):
    """The trainer's QAT step (learned steps, weight EMA, clipping, the scheduler) reads nothing on the
    host: an epoch of 4 steps reads exactly what an epoch of 2 does (the end-of-epoch loss and checks)."""
    cfg = load_config(
        CONFIG_DIR / "event_snn_lite_4bit.yaml",
        {
            "data_root": str(tiny_synthetic_root), "dataset": "blinksim", "base_ch": 4, "num_bins": 3,
            "bins_per_step": 1,
            "batch_size": 2, "crop_size": 16, "image_every": 0, "log_every": 10_000, "calibration_batches": 0,
            "checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "logs"), "device": "cpu",
        },
    )  # fmt: skip
    trainer = build_trainer(cfg, torch.device("cpu"))
    assert trainer.quantized and trainer.cfg.learn_scale and trainer.cfg.weight_ema > 0
    trainer.start_weight_ema()
    batches = list(trainer.train_loader)[:4]
    trainer.global_step = 1  # past the logged step 0
    trainer.train_loader = _Batches(batches[:1], 2)
    trainer.train_one_epoch(0)  # the first step sets ranges and learned steps (one read each, once)
    # AdamW keeps its step counts on the host (a tensor on the CPU also when training on a GPU, unless
    # capturable), so reading them costs no device sync.
    counters = [state["step"] for state in trainer.optimizer.state.values()]
    seen = []
    for n in (2, 4):
        trainer.train_loader = _Batches(batches[:n], 2)
        with HostReads(counters) as reads:
            trainer.train_one_epoch(0)
        seen.append(reads.seen)
    assert trainer.ema.n_averaged == 7
    assert seen[0] == seen[1], seen
