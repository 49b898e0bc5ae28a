"""Fake quantization and the other PyTorch kernels we call, each behind one small function.

On CUDA the range quantizer calls PyTorch's fused kernel, and a private op (``_foreach_lerp_``)
has a fallback: a torch upgrade that drops or changes one breaks here, in one place that a test
checks against the plain-PyTorch formula. On the CPU, where the kernels measured slower, the
quantizers run as small autograd functions that tests check against the kernels; the learned-step
quantizer is ours on every device (the fused kernel reads its step on the host).
"""

from __future__ import annotations

import torch


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """``clamp(round(x / scale), -qmax, qmax) * scale`` with a straight-through gradient inside the range.

    On CUDA this is PyTorch's fused ``fake_quantize_per_tensor_affine``. On the CPU that kernel took
    5.8 ms for a 3.7 M-element current (2 cores), four times the 1.5 ms of ``ClippedRounding``,
    which gives the same values and gradients bit for bit (a test checks).
    """
    if x.is_cuda:
        zero = torch.zeros((), dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, -qmax, qmax)
    return ClippedRounding.apply(x, scale, qmax)


class ClippedRounding(torch.autograd.Function):
    """PyTorch's per-tensor fake quantization (zero point 0) in four vectorised passes: the code
    ``round(x * (1 / scale))``, the in-range mask saved for backward (one byte per element), the clamp
    and the product. Like the kernel, an input counts as inside when its rounded code is."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
        code = torch.round(x * scale.reciprocal())
        inside = code.abs() <= qmax
        ctx.save_for_backward(inside)
        return code.clamp_(-qmax, qmax).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def learnable_fake_quantize(x: torch.Tensor, step: torch.Tensor, qmax: int, grad_factor: float) -> torch.Tensor:
    """``clamp(round(x / step), -qmax, qmax) * step`` with LSQ gradients (Esser et al. 2019).

    x gets a straight-through gradient inside the range and none outside; ``step`` (a
    positive 0-d tensor) gets the LSQ gradient scaled by ``grad_factor``. On every device this is
    ``LearnedStepRounding``: PyTorch's fused ``_fake_quantize_learnable_per_tensor_affine`` reads
    the step on the host (a GPU sync per quantizer per step), and on the CPU it took 1.5-1.7x as long.
    """
    return LearnedStepRounding.apply(x, step, qmax, grad_factor)


class LearnedStepRounding(torch.autograd.Function):
    """The LSQ quantizer in a few vectorised passes, for the CPU: forward keeps the in-range mask and
    each element's derivative by the step (``code - x/step`` inside, the clamped code outside), so
    backward is a product and a dot product. Same values and x gradients as the kernel, bit for bit;
    the step's gradient differs only by the order of the sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: torch.Tensor, qmax: int, grad_factor: float) -> torch.Tensor:
        v = x * step.reciprocal()
        code = torch.round(v)
        inside = code.abs() <= qmax
        code.clamp_(-qmax, qmax)
        ctx.save_for_backward(inside, torch.where(inside, code - v, code))
        ctx.grad_factor, ctx.step_shape = grad_factor, step.shape
        return code.mul_(step)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inside, by_step = ctx.saved_tensors
        grad_step = torch.dot(grad.reshape(-1), by_step.reshape(-1)) * ctx.grad_factor
        return grad * inside, grad_step.reshape(ctx.step_shape), None, None


def lsq_reference(x: torch.Tensor, step: torch.Tensor, qmax: int, grad_factor: float) -> torch.Tensor:
    """The same quantizer in plain autograd operations (slower: several full-size temporaries).

    As in the fused kernel, an input counts as inside the range when its rounded code is.
    """
    step = step * grad_factor + (step - step * grad_factor).detach()  # value: step; gradient: x grad_factor
    v = x / step
    code = torch.round(v).detach()
    inside = (code >= -qmax) & (code <= qmax)
    # Inside: value code, gradient 1 to x and (code - x/step) to step. Outside: value +-qmax, gradient +-qmax to step.
    v = torch.where(inside, v + (code - v).detach(), torch.clamp(code, -qmax, qmax))
    return v * step


def lerp_all_(ends: list[torch.Tensor], targets: list[torch.Tensor], weight: float) -> None:
    """In place, for every pair: ``end += weight * (target - end)``.

    ``torch._foreach_lerp_`` does it in one fused call; it is private API, hence the loop fallback.
    """
    fused = getattr(torch, "_foreach_lerp_", None)
    if fused is not None:
        fused(ends, targets, weight)
        return
    for end, target in zip(ends, targets, strict=True):
        end.lerp_(target, weight)
