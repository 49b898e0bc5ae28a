"""save_checkpoint when the write fails: the partial file goes, the previous checkpoint stays, the reason is named."""

import errno
from pathlib import Path

import pytest
import torch

from snn.models.checkpoint import CheckpointWriteError, save_checkpoint

PAYLOAD = {"model_name": "m", "model_args": {}, "config": {}, "state_dict": {"w": torch.ones(3)}}


def _failing_save(exc):
    def save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04" + bytes(100))  # part of the file, as a failed write leaves it
        raise exc

    return save


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full (no space left on device)"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "the disk quota is exceeded"),
        # torch's own error carries no errno; with free space left it is reported as it is.
        (
            RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
            "the write failed (RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598)",
        ),
    ],
)
def test_a_failed_write_removes_its_partial_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, exc, reason):
    path = tmp_path / "last.pth"
    save_checkpoint({**PAYLOAD, "epoch": 1}, path)
    monkeypatch.setattr(torch, "save", _failing_save(exc))
    with pytest.raises(CheckpointWriteError) as raised:
        save_checkpoint({**PAYLOAD, "epoch": 2}, path)
    assert str(raised.value) == f"{path}: could not be written: {reason}; the previous last.pth is unchanged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_torchs_error_on_a_full_disk_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    import shutil

    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: real_usage(folder)._replace(free=512))
    monkeypatch.setattr(torch, "save", _failing_save(RuntimeError("[enforce fail at inline_container.cc:672]")))
    with pytest.raises(CheckpointWriteError, match=r"best_model\.pth: could not be written: the disk is full "
                       r"\(512 bytes free in .*\); no best_model\.pth was written"):  # fmt: skip
        save_checkpoint(PAYLOAD, tmp_path / "best_model.pth")
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_from_before_bins_per_step_loads_as_one_step_per_bin(tmp_path):
    from snn.config import config_from_checkpoint, load_config
    from snn.models.checkpoint import load_checkpoint, load_model
    from snn.models.flownet import EventSNNFlowNetLiteV2

    old = EventSNNFlowNetLiteV2(base_ch=4, bins_per_step=1, global_context=False).eval()
    args = {"base_ch": 4}  # what such a checkpoint stored: neither bins_per_step nor global_context existed
    config = load_config(overrides={"base_ch": 4}).to_dict()
    del config["bins_per_step"], config["global_context"]
    save_checkpoint({"model_name": "EventSNNFlowNetLiteV2", "model_args": args, "config": config,
                     "state_dict": old.state_dict()}, tmp_path / "old.pth")  # fmt: skip
    model = load_model(tmp_path / "old.pth")
    assert model.time_steps == 5 and model.stem.conv.in_channels == 2
    x = torch.poisson(torch.full((1, 5, 2, 16, 16), 1.0))
    with torch.no_grad():
        assert torch.equal(model(x), old(x))
    old_config = config_from_checkpoint(load_checkpoint(tmp_path / "old.pth"), tmp_path / "old.pth")
    assert old_config.bins_per_step == 1 and not old_config.global_context and model.context is None
    # Today's default runs the window in one step: the stem reads its five bins as ten channels.
    assert EventSNNFlowNetLiteV2(base_ch=4).stem.conv.in_channels == 10
