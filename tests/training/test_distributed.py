"""torchrun / DDP on CPU (Gloo): shards of each epoch, one writer, the same quantizer ranges everywhere."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snn.data.provider import build_dataset
from snn.data.sampling import EpochSampler


def test_ranks_take_disjoint_equal_shares_of_the_same_order():
    alone = EpochSampler(11, seed=3)
    alone.set_epoch(2)
    order = alone.keys()
    shards = []
    for rank in range(3):
        sampler = EpochSampler(11, seed=3, rank=rank, world=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert [len(s) for s in shards] == [3, 3, 3]  # 11 // 3 each; the last 2 keys are left out
    assert sorted(k for s in shards for k in s) == sorted(order[:9])
    assert shards[1] == order[1:9:3]
    with pytest.raises(ValueError, match="rank 3 outside a world of 3"):
        EpochSampler(11, seed=3, rank=3, world=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_one_writer_same_ranges(tiny_synthetic_root, tmp_path):
    job = Path(__file__).with_name("ddp_job.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(job), str(tiny_synthetic_root), str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 0 alone wrote: one TensorBoard file, one CSV row per epoch, the checkpoints.
    assert len(list((tmp_path / "logs").glob("events.out.tfevents.*"))) == 1
    rows = (tmp_path / "logs" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"best_model.pth", "last.pth", "config.yaml"}
    # Each rank took half the batches, and both hold the same quantizer ranges and learned steps.
    r0, r1 = (torch.load(tmp_path / f"rank_{r}.pt") for r in (0, 1))
    windows = len(build_dataset(tiny_synthetic_root, "train", 3))
    assert r0["steps"] == r1["steps"] == 2 * (windows // 2)  # 2 epochs of half the windows, batch 1
    assert r0["ranges"].keys() == r1["ranges"].keys() and r0["ranges"]
    for key, value in r0["ranges"].items():
        assert torch.equal(value, r1["ranges"][key]), key


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four samples; the first two have most of the valid pixels, the last two few."""
    g = torch.Generator().manual_seed(1)
    x, gt = torch.randn(4, 2, 6, 6, generator=g), torch.randn(4, 2, 6, 6, generator=g)
    valid = torch.zeros(4, 1, 6, 6, dtype=torch.bool)
    valid[:2, :, :5] = True
    valid[2:, :, :1, :2] = True
    return x, gt, valid


def _ddp_gradients(rank: int, world_size: int, init_file: str, out: str, weighted: bool) -> None:
    import torch.distributed as dist

    from snn.training.losses import masked_epe
    from snn.utils.distributed import global_share

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(2, 2, 3, padding=1)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    x, gt, valid = (t[2 * rank : 2 * rank + 2] for t in _global_batch())
    loss = masked_epe(ddp(x), gt, valid)
    if weighted:
        loss = loss * global_share(valid.sum())
    loss.backward()
    if rank == 0:
        torch.save([p.grad for p in model.parameters()], out)
    dist.barrier()  # neither leaves while the other still talks to it
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: gloo's threads sometimes abort it ("terminate called
    # without an active exception", SIGABRT) after all the work is done and saved.
    os._exit(0)


@pytest.mark.parametrize("weighted", [True, False])
def test_ranks_weighted_by_their_share_of_valid_pixels_step_as_one_process_would(tmp_path, weighted):
    from snn.training.losses import masked_epe

    out = tmp_path / "grads.pt"
    torch.multiprocessing.spawn(
        _ddp_gradients, args=(2, str(tmp_path / "init"), str(out), weighted), nprocs=2, join=True
    )
    torch.manual_seed(0)
    alone = torch.nn.Conv2d(2, 2, 3, padding=1)
    x, gt, valid = _global_batch()
    masked_epe(alone(x), gt, valid).backward()
    same = all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(torch.load(out), alone.parameters(), strict=True))
    # Without the weights, DDP averages two means over 20 and 2 valid pixels: not the mean over all 22.
    assert same == weighted


@pytest.mark.slow
def test_two_ranks_save_the_checkpoints_one_process_of_their_global_batch_saves(tiny_synthetic_root, tmp_path):
    job = str(Path(__file__).with_name("ddp_same_steps_job.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port()), job, str(tiny_synthetic_root), str(tmp_path / "ddp"), "1"],
        "one": [sys.executable, job, str(tiny_synthetic_root), str(tmp_path / "one"), "2"],
    }  # fmt: skip
    for cmd in runs.values():
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("best_model.pth", "last.pth"):
        ddp, one = (torch.load(tmp_path / run / "ckpt" / name, weights_only=False) for run in ("ddp", "one"))
        assert (ddp["epoch"], ddp["global_step"]) == (one["epoch"], one["global_step"])
        assert ddp["best_val_aee"] == pytest.approx(one["best_val_aee"], rel=1e-6)
        # state_dict: the weight EMA (what is validated and saved); train_state_dict: the raw weights.
        for key in ("state_dict", "train_state_dict"):
            assert ddp[key].keys() == one[key].keys()
            for k, v in ddp[key].items():
                if v.is_floating_point():
                    torch.testing.assert_close(v, one[key][k], rtol=1e-5, atol=1e-6, msg=f"{name} {key} {k}")


@pytest.mark.slow
def test_torchrun_train_py_says_how_the_run_is_spread_and_only_rank_0_logs(tiny_synthetic_root, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"base: {repo / 'snn/configs/event_snn_lite.yaml'}\ndata_root: {tiny_synthetic_root}\ndataset: blinksim\n"
        "base_ch: 4\nnum_bins: 3\n"
        "bins_per_step: 1\nbatch_size: 2\nnum_epochs: 1\ncrop_size: 16\nimage_every: 0\ndevice: cpu\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(repo / "train.py"), "--config", str(config), "--checkpoint-dir", str(tmp_path / "ckpt"),
           "--log-dir", str(tmp_path / "logs")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [line for line in done.stderr.splitlines() if " INFO " in line]
    # Rank 0 alone logs: each line once, and each says whose it is.
    assert len([line for line in logged if "epoch 1/1  loss" in line]) == 1
    assert len([line for line in logged if "snn.training.run: data: " in line]) == 1
    assert all(" rank 0 INFO " in line for line in logged)
    # The first line says the backend, the processes, the batch per process and in all, and who writes.
    assert logged[0].split(" ", 1)[1] == (
        "rank 0 INFO snn.training.run: distributed: gloo backend, 2 processes (on CPU), batch 2 per process, "
        "4 global; rank 0 writes the checkpoints, metrics.csv and TensorBoard and logs, the other ranks log "
        "warnings and errors only"
    )
    assert done.stdout.count("test AEE") == 1
