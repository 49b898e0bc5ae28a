"""Run by tests/training/test_distributed.py under torchrun: train a tiny QAT config, then each rank
saves its quantizer ranges (this helper's own output, beside the run's) for the test to compare."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from snn.config import DEFAULT_CONFIG, load_config  # noqa: E402
from snn.training.run import build_trainer  # noqa: E402
from snn.utils.distributed import finish, init_from_environment, world  # noqa: E402

root, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = load_config(
    DEFAULT_CONFIG,
    {
        "data_root": str(root), "dataset": "blinksim", "base_ch": 4, "num_bins": 3, "bins_per_step": 1, "batch_size": 1,
        "num_epochs": 2, "crop_size": 32, "augment": False, "warmup_epochs": 0.0, "image_every": 1,
        "quantization_enabled": True, "initial_bit_width": 4, "learn_scale": True,
        "checkpoint_dir": str(out / "ckpt"), "log_dir": str(out / "logs"), "device": "cpu",
    },
)  # fmt: skip
device = init_from_environment(torch.device("cpu"))
trainer = build_trainer(cfg, device)
trainer.fit()
rank = world()[0]
ranges = {k: v for k, v in trainer.model.state_dict().items() if "quant_layer" in k}
torch.save({"ranges": ranges, "steps": trainer.global_step}, out / f"rank_{rank}.pt")
finish()
