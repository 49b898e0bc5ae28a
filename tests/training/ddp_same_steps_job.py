"""Run by tests/training/test_distributed.py, under torchrun with 2 ranks of batch 1 or as one process
of batch 2: the same tiny 4-bit QAT run with a weight EMA, for the test to compare the checkpoints.

Batch norm is replaced by the identity here, and only here: PyTorch's SyncBatchNorm (what the
trainer uses on CUDA) has no CPU kernels, and per-rank batch statistics would make the two runs
differ by design. Everything else (the shards, the loss weighting, the quantizer reductions, the
weight EMA, the best-model choice) is the trainer's own.

The steps are range-based: learned steps here get gradients near AdamW's epsilon, where its
update amplifies the last-bit differences of the all-reduce's summation order until the runs
part (measured: equal to 1e-7 for two steps, then apart). That learned steps stay equal across
ranks is the other torchrun test's check.
"""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

nn.BatchNorm2d = lambda channels: nn.Identity()  # noqa: E731  (before the model is built)

from snn.config import DEFAULT_CONFIG, load_config  # noqa: E402
from snn.training.run import build_trainer  # noqa: E402
from snn.utils.distributed import finish, init_from_environment  # noqa: E402
from snn.utils.runtime import seed_everything  # noqa: E402

root, out, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
cfg = load_config(
    DEFAULT_CONFIG,
    {
        "data_root": str(root), "dataset": "blinksim", "base_ch": 4, "num_bins": 3,
        "bins_per_step": 1, "batch_size": batch,
        "num_epochs": 2, "crop_size": 32, "augment": False, "warmup_epochs": 0.0, "weight_ema": 0.9,
        "quantization_enabled": True, "initial_bit_width": 4, "learn_scale": False, "num_workers": 0,
        "checkpoint_dir": str(out / "ckpt"), "log_dir": str(out / "logs"), "device": "cpu",
    },
)  # fmt: skip
device = init_from_environment(torch.device("cpu"))
seed_everything(cfg.seed)  # as train.py does
build_trainer(cfg, device).fit()
finish()
