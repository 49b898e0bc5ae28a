"""Flow error by distance to the nearest event: where the network must fill in flow from edges.

A pixel's distance is the Euclidean distance (in pixels) to the nearest pixel with an event in its
window (the reader's ``event_mask``); distance 0 is the sparse mask. Each band pools the dense
mask's pixels whose distance lies in [low, high): AEE, zero-flow AEE, their ratio, and the mean
length of the predicted flow over that of the true flow, which tells a flow that fades toward zero
away from the edges (a ratio well below 1) from one that points the wrong way.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from snn.evaluation.metrics import evaluation_mask

BAND_EDGES = (0.0, 1.0, 3.0, 6.0, 12.0, 24.0)  # px; the last band is open above


def distance_to_events(event_mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] event mask -> [B, H, W] Euclidean distance of each pixel to the nearest event
    (0 on events; a window without events gets infinity everywhere)."""
    out = torch.empty(event_mask.shape[0], *event_mask.shape[-2:])
    for i, m in enumerate(event_mask[:, 0].cpu().numpy() > 0):
        if not m.any():
            out[i] = float("inf")
            continue
        out[i] = torch.from_numpy(cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE))
    return out


class ErrorByDistance:
    """Pools flow errors by distance band; call it with every (batch, prediction) of an evaluation
    (it is an ``on_batch`` of ``evaluate_model``)."""

    def __init__(self, edges: Sequence[float] = BAND_EDGES) -> None:
        self.edges = tuple(float(e) for e in edges)
        if (
            not self.edges
            or self.edges[0] != 0
            or any(b <= a for a, b in zip(self.edges[:-1], self.edges[1:], strict=True))
        ):
            raise ValueError(f"band edges must rise from 0 (got {edges!r})")
        # per band: pixels, sum of errors, sum of true lengths, sum of predicted lengths
        self.sums = np.zeros((len(self.edges), 4))

    def __call__(self, batch: dict, pred: torch.Tensor) -> None:
        gt = batch["flow"].to(pred)
        dense = evaluation_mask(batch["flow"], batch["valid"], mask="dense")
        dist = distance_to_events(batch["event_mask"])
        err = torch.linalg.vector_norm(pred - gt, dim=1)
        true_len = torch.linalg.vector_norm(gt, dim=1)
        pred_len = torch.linalg.vector_norm(pred, dim=1)
        bounds = (*self.edges, float("inf"))
        for k in range(len(self.edges)):
            m = dense & (dist >= bounds[k]) & (dist < bounds[k + 1])
            self.sums[k] += [int(m.sum()), float(err[m].sum()), float(true_len[m].sum()), float(pred_len[m].sum())]

    def rows(self) -> list[dict]:
        """One dict per band with pixels: band, share of the pixels, aee, zero_flow_aee, ratio, length_ratio."""
        total = self.sums[:, 0].sum()
        bounds = (*self.edges, float("inf"))
        rows = []
        for k, (n, err, true_len, pred_len) in enumerate(self.sums):
            if n == 0:
                continue
            high = "" if bounds[k + 1] == float("inf") else f"{bounds[k + 1]:g}"
            rows.append(
                {
                    "band": f"{bounds[k]:g}-{high}",
                    "share": n / total,
                    "aee": err / n,
                    "zero_flow_aee": true_len / n,
                    "ratio": err / true_len if true_len > 0 else float("nan"),
                    "length_ratio": pred_len / true_len if true_len > 0 else float("nan"),
                }
            )
        return rows

    def table(self) -> str:
        return self.format(self.rows())

    @staticmethod
    def format(rows: list[dict]) -> str:
        """``rows()`` as a Markdown table."""
        lines = [
            "| px to nearest event | share of pixels | AEE | zero-flow AEE | ratio | predicted / true length |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['band']} | {r['share']:.3f} | {r['aee']:.3f} | {r['zero_flow_aee']:.3f} | "
                f"{r['ratio']:.3f} | {r['length_ratio']:.3f} |"
            )
        return "\n".join(lines)
