"""Evaluate a flow model over a data split, pooled per sequence and overall."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from snn.evaluation.metrics import FlowMetrics, evaluation_mask


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    masks: Iterable[str] = ("dense",),
    progress: bool = True,
) -> dict:
    """Returns ``{mask: {"overall": metrics, "sequences": {name: metrics}}, "samples_per_s": x}``.

    The overall figures pool every evaluated pixel of the split.
    """
    model.eval()
    masks = tuple(masks)
    per_seq = {m: defaultdict(FlowMetrics) for m in masks}
    samples, t0 = 0, time.perf_counter()
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        events = batch["events"].to(device)
        pred = model(events).float().cpu()
        samples += len(events)
        for m in masks:
            mask = evaluation_mask(batch["flow"], batch["valid"], batch.get("event_mask"), m)
            for i, name in enumerate(batch["sequence"]):
                per_seq[m][name].update(pred[i : i + 1], batch["flow"][i : i + 1], mask[i : i + 1])
    elapsed = time.perf_counter() - t0
    result: dict = {"samples_per_s": samples / elapsed if elapsed > 0 else float("nan")}
    for m in masks:
        overall = FlowMetrics()
        for acc in per_seq[m].values():
            overall.merge(acc)
        result[m] = {
            "overall": overall.compute(),
            "sequences": {name: acc.compute() for name, acc in sorted(per_seq[m].items())},
        }
    return result
