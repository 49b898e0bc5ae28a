"""Optical-flow metrics as the event-flow benchmarks compute them.

- AEE: mean end-point error ||pred - gt||_2 over the evaluated pixels.
- Outliers (KITTI rule): EPE > 3 px and EPE > 5 % of ||gt||.
- NPE: share of pixels with EPE > N px, N = 1, 2, 3.
- zero-flow AEE: the AEE of predicting 0 everywhere, i.e. mean ||gt||.

Masks: "dense" evaluates valid ground truth; "sparse" also needs at least one
event at the pixel. Pixels with ||gt|| >= ``max_flow`` are dropped (BlinkFlow).
Sums are pooled over all pixels seen, so an overall figure is not a mean of
per-sequence means. Percentages are in 0..100.
"""

from __future__ import annotations

import torch
from torch import nn

MASKS = ("dense", "sparse")
METRIC_KEYS = ("aee", "outliers", "1pe", "2pe", "3pe", "zero_flow_aee", "num_pixels")


def evaluation_mask(
    gt: torch.Tensor,
    valid: torch.Tensor,
    event_mask: torch.Tensor | None = None,
    mask: str = "dense",
    max_flow: float = 400.0,
) -> torch.Tensor:
    """Boolean [B, H, W] mask of the pixels to evaluate."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS} (got {mask!r})")
    m = valid[:, 0] > 0.5
    m &= torch.linalg.vector_norm(gt, dim=1) < max_flow
    if mask == "sparse":
        if event_mask is None:
            raise ValueError("the sparse mask needs the event mask of the input window")
        m &= event_mask[:, 0] > 0
    return m


class FlowMetrics:
    """Accumulates pooled flow-error sums over batches; ``compute()`` gives the figures."""

    def __init__(self) -> None:
        self.sums = {"epe": 0.0, "outliers": 0.0, "1pe": 0.0, "2pe": 0.0, "3pe": 0.0, "gt": 0.0}
        self.num_pixels = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> None:
        """pred, gt: [B, 2, H, W]; mask: boolean [B, H, W]."""
        pred = pred.detach().double()
        gt = gt.detach().double()
        epe = torch.linalg.vector_norm(pred - gt, dim=1)[mask]
        mag = torch.linalg.vector_norm(gt, dim=1)[mask]
        self.sums["epe"] += float(epe.sum())
        self.sums["gt"] += float(mag.sum())
        self.sums["outliers"] += float(((epe > 3.0) & (epe > 0.05 * mag)).sum())
        for n in (1, 2, 3):
            self.sums[f"{n}pe"] += float((epe > n).sum())
        self.num_pixels += int(mask.sum())

    def merge(self, other: FlowMetrics) -> None:
        for k in self.sums:
            self.sums[k] += other.sums[k]
        self.num_pixels += other.num_pixels

    def compute(self) -> dict[str, float | int]:
        n = self.num_pixels
        if n == 0:
            nan = float("nan")
            return {**{k: nan for k in METRIC_KEYS[:-1]}, "num_pixels": 0}
        return {
            "aee": self.sums["epe"] / n,
            "outliers": 100.0 * self.sums["outliers"] / n,
            "1pe": 100.0 * self.sums["1pe"] / n,
            "2pe": 100.0 * self.sums["2pe"] / n,
            "3pe": 100.0 * self.sums["3pe"] / n,
            "zero_flow_aee": self.sums["gt"] / n,
            "num_pixels": n,
        }


@torch.no_grad()
def compare_model_outputs(model_a: nn.Module, model_b: nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    """Mean absolute, mean squared and largest absolute difference of two models' flows."""
    model_a.eval()
    model_b.eval()
    a = model_a(inputs.to(next(model_a.parameters()).device)).float().cpu()
    b = model_b(inputs.to(next(model_b.parameters()).device)).float().cpu()
    diff = a - b
    return {"mae": float(diff.abs().mean()), "mse": float((diff**2).mean()), "max_abs": float(diff.abs().max())}
