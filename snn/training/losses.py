"""Training losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def masked_epe(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean end-point error over valid pixels. pred, gt: [B,2,H,W]; valid: [B,1,H,W]."""
    if pred.shape[-2:] != gt.shape[-2:]:
        # Coarse predictions are in full-resolution pixels: only resample them.
        pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    # The small epsilon keeps the gradient of the norm finite at zero error.
    epe = torch.sqrt(((pred - gt) ** 2).sum(dim=1, keepdim=True) + 1e-8)
    mask = valid.to(epe.dtype)
    return (epe * mask).sum() / mask.sum().clamp_min(1.0)


def multiscale_epe_loss(
    preds: Sequence[torch.Tensor],
    gt: torch.Tensor,
    valid: torch.Tensor,
    weights: Sequence[float],
) -> torch.Tensor:
    """Weighted sum of masked EPEs, finest prediction first."""
    if len(weights) < len(preds):
        raise ValueError(f"{len(preds)} flow scales but only {len(weights)} scale weights")
    return sum(w * masked_epe(p, gt, valid) for p, w in zip(preds, weights, strict=False))


def distillation_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """Weighted mean EPE between the student's and the teacher's flow at every scale, finest first.

    The teacher's flow is a label at every pixel, those without events or valid ground truth too.
    """
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student scales but {len(teacher)} teacher scales")
    if len(weights) < len(student):
        raise ValueError(f"{len(student)} flow scales but only {len(weights)} scale weights")
    return sum(
        w * masked_epe(s, t.detach(), torch.ones_like(t[:, :1]))
        for s, t, w in zip(student, teacher, weights, strict=False)
    )
