"""One run over several processes: torchrun or SLURM's srun, with PyTorch's DistributedDataParallel.

The rules every rank follows:

- The process group comes from the environment: torchrun's ``RANK``, ``WORLD_SIZE`` and
  ``LOCAL_RANK``, or SLURM's ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID`` (the job
  script exports ``MASTER_ADDR`` and ``MASTER_PORT``). NCCL on CUDA, Gloo on CPU.
- Every rank draws the same seeded order of each epoch; rank r takes every W-th key from
  position r, and the last ``len % W`` keys are left out so that all ranks take the same
  number of steps. The global batch is ``batch_size`` x W.
- Rank 0 alone writes checkpoints, CSV rows and TensorBoard logs, and logs below warnings
  (``snn.utils.runtime.setup_logging``); its first line says how the run is spread (``describe_run``).
- A quantizer's observation of a batch is reduced over the ranks before its moving average:
  the least minimum, the largest maximum, the mean of the mean |x|; a learned step starts from
  the mean over ranks of its first batch's mean |x|. So every rank holds the same ranges and
  steps, and gradients (averaged by DDP) keep the learned steps the same.
- The flow loss is each rank's mean over its valid pixels weighted by its share of all ranks'
  valid pixels (``global_share``), so DDP's averaged gradient is the one of the global batch.
- On CUDA the batch norms are synchronised (SyncBatchNorm); on CPUs they are per rank.
- Every rank validates the whole validation split, so each takes the same best-model decision.

With synchronised batch norm, a run of W ranks of ``batch_size`` takes the steps one process would
take with ``W x batch_size`` up to the order of float sums (a test checks this on CPU with batch
norm removed). Learned steps can amplify those last-bit differences over many steps. The
firing-rate penalty is the one exception, computed from each rank's own rates.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def launched_ranks() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) that torchrun or srun gave this process, else None."""
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0"))
    return None


def init_from_environment(device: torch.device) -> torch.device:
    """Join the process group the launcher set up (if any); returns this rank's device."""
    ranks = launched_ranks()
    if ranks is None or (dist.is_available() and dist.is_initialized()):
        return device
    rank, size, local = ranks
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size)
    return device


def describe_run(batch_size: int) -> str | None:
    """The line that opens a distributed run's log: backend, processes, batch per process and global,
    which rank writes; None in a single process."""
    rank, size = world()
    if size == 1:
        return None
    backend = dist.get_backend()
    devices = "one GPU each" if backend == "nccl" else "on CPU"
    return (
        f"distributed: {backend} backend, {size} processes ({devices}), batch {batch_size} per process, "
        f"{batch_size * size} global; rank 0 writes the checkpoints, metrics.csv and TensorBoard and logs, "
        f"the other ranks log warnings and errors only"
    )


def reduce_observation(lo: torch.Tensor, hi: torch.Tensor, absmean: torch.Tensor):
    """A batch's (min, max, mean |x|) over every rank; unchanged in a single process."""
    _, size = world()
    if size == 1:
        return lo, hi, absmean
    extremes = torch.stack([-lo, hi]).float()
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    return -extremes[0], extremes[1], mean_over_ranks(absmean)


def _summed(value: torch.Tensor) -> torch.Tensor:
    """A detached float32 copy of ``value`` summed over the ranks (in a process group)."""
    total = value.detach().float().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """A tensor's mean over the ranks; unchanged in a single process."""
    size = world()[1]
    if size == 1:
        return value
    return _summed(value) / size


def global_share(count: torch.Tensor) -> torch.Tensor | float:
    """W * max(count, 1) / max(sum of count over the ranks, 1); 1 in a single process.

    A rank's mean over its own ``count`` items (valid pixels), times this, is its part of the
    mean over every rank's items, once DDP averages the gradients over the W ranks: the gradient
    one process would take over the whole global batch, however the valid pixels fall.
    """
    size = world()[1]
    if size == 1:
        return 1.0
    return size * count.detach().float().clamp_min(1.0) / _summed(count).clamp_min(1.0)


def sum_over_ranks(*values: float) -> list[float]:
    """Each value summed over the ranks (as float64)."""
    if world()[1] == 1:
        return list(values)
    cuda = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    t = torch.tensor(values, dtype=torch.float64, device=f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


class _SilentWriter:
    """Takes every SummaryWriter call and writes nothing: the TensorBoard writer of ranks other than 0."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


SILENT_WRITER = _SilentWriter()


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if world()[1] > 1:
        dist.barrier()


def finish() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class MultiscaleForward(nn.Module):
    """What DDP wraps for training: its forward is the model's multi-scale pass (DDP averages the
    gradients of what its own forward ran)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_multiscale(x)


def wrap_for_training(model: nn.Module, device: torch.device):
    """``model.forward_multiscale``, through DistributedDataParallel when several processes run.

    On CUDA the batch norms become PyTorch's SyncBatchNorm (in place: the parameters and buffers
    stay the same objects, so the optimizer and checkpoints do not notice), which normalises with
    the statistics of the global batch. It has no CPU kernels: on CPUs each rank's batch norm uses
    its own batch."""
    if world()[1] == 1:
        return model.forward_multiscale
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Unused parameters exist by design (a quantizer's learned step when learn_scale is off).
    return nn.parallel.DistributedDataParallel(
        MultiscaleForward(model), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )  # fmt: skip
