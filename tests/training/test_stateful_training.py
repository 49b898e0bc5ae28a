"""state_windows: training samples carry the windows before them, whose membranes warm up the last one."""

from __future__ import annotations

import pytest
import torch

from snn.config import load_config
from snn.data.loaders import make_dataset
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.state import carrying_state, forward_with_history
from snn.training.run import build_trainer


def _cfg(root, **extra):
    base = {
        "dataset": "blinksim",
        "data_root": str(root),
        "base_ch": 4,
        "num_bins": 3,
        "bins_per_step": 1,
        "batch_size": 2,
    }
    return load_config(settings={**base, **extra})


def test_a_sample_holds_the_windows_before_it_oldest_first(tiny_synthetic_root):
    plain = make_dataset(_cfg(tiny_synthetic_root), tiny_synthetic_root, "train")
    cfg = _cfg(tiny_synthetic_root, state_windows=3, crop_size=None, augment=False)
    history = make_dataset(cfg, tiny_synthetic_root, "train", train=True)
    first, later = plain[0], plain[2]
    assert later["index"] == 2 and first["index"] == 0
    events = history[(2, 0, 0)]["events"]
    assert events.shape[0] == 9
    assert torch.equal(events, torch.cat([plain[0]["events"], plain[1]["events"], plain[2]["events"]]))
    start = history[(0, 0, 0)]["events"]  # the sequence's first window: nothing before it
    assert torch.equal(start[:6], torch.zeros_like(start[:6])) and torch.equal(start[6:], first["events"])
    # the second sequence's first window takes nothing from the end of the first sequence
    second = next(i for i in range(len(plain)) if plain[i]["index"] == 0 and i > 0)
    assert not history[(second, 0, 0)]["events"][:6].any()


def test_history_windows_are_cropped_and_flipped_with_their_sample(tiny_synthetic_root):
    cfg = _cfg(tiny_synthetic_root, state_windows=2, crop_size=16)
    history = make_dataset(cfg, tiny_synthetic_root, "train", train=True)
    sample = history[(3, 12345, 0)]
    assert sample["events"].shape[-2:] == (16, 16) == sample["flow"].shape[-2:]
    # the same key without history gives the same crop and flips of the last window
    alone = make_dataset(_cfg(tiny_synthetic_root, crop_size=16), tiny_synthetic_root, "train", train=True)[
        (3, 12345, 0)
    ]
    assert torch.equal(sample["events"][3:], alone["events"]) and torch.equal(sample["flow"], alone["flow"])


def test_forward_with_history_is_the_last_window_of_a_stateful_stream():
    torch.manual_seed(0)
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1)
    for head in (model.head1, model.head2, model.head3):
        torch.nn.init.normal_(head.conv.weight, std=0.3)
    x = torch.poisson(torch.full((2, 6, 2, 16, 16), 0.6)).requires_grad_()
    out = forward_with_history(model.forward_multiscale, model, x, 3)
    out[0].sum().backward()
    assert x.grad[:, :3].abs().sum() == 0 and x.grad[:, 3:].abs().sum() > 0  # no gradient into the warm-up
    model.eval()
    with torch.no_grad(), carrying_state(model):
        model(x[:, :3])
        expected = model(x[:, 3:])
        assert torch.allclose(forward_with_history(model, model, x.detach(), 3), expected)
    assert not any(n.stateful for n in model.modules() if hasattr(n, "stateful"))
    with pytest.raises(ValueError, match="not whole windows"):
        forward_with_history(model, model, x[:, :5].detach(), 3)


def test_a_stateful_run_validates_each_sequence_in_order_with_its_state(tiny_synthetic_root, tmp_path):
    extra = {"num_epochs": 1, "crop_size": 16, "device": "cpu", "image_every": 0, "weight_ema": 0.0}
    folders = {"checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "logs")}
    trainer = build_trainer(_cfg(tiny_synthetic_root, state_windows=2, **extra, **folders), torch.device("cpu"))
    for head in (trainer.model.head1, trainer.model.head2, trainer.model.head3):
        torch.nn.init.normal_(head.conv.weight, std=0.3)
    stateful = trainer.validate(0)
    trainer.cfg = _cfg(tiny_synthetic_root, state_windows=1, **extra, **folders)
    stateless = trainer.validate(0)
    assert stateful["aee"] != pytest.approx(stateless["aee"], rel=1e-6)
    assert not any(n.stateful for n in trainer.model.modules() if hasattr(n, "stateful"))
