"""Evaluate flow models over a data split: metrics pooled per sequence and overall, activity, comparisons.

``evaluate_model`` runs any model over a loader. ``evaluate_checkpoint`` and
``compare_checkpoints`` are what tools/evaluate.py and tools/compare_bitwidths.py
call: they rebuild the model from the checkpoint, read the split with the
checkpoint's own data settings (or another config's) and measure firing rates
and SynOps (see ``snn.evaluation.synops``) on the way.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from snn.config import Config, config_from_checkpoint, config_from_dict, load_config
from snn.data.loaders import make_dataset, make_loader, sequences_of
from snn.data.representations import num_input_channels
from snn.evaluation.contrast import FWL_WINDOWS, FlowWarpLoss, WindowSpans
from snn.evaluation.distance import ErrorByDistance
from snn.evaluation.metrics import FlowMetrics, compare_model_outputs, evaluation_mask
from snn.evaluation.predictions import FlowPngWriter
from snn.evaluation.report import comparison_labels
from snn.evaluation.synops import ActivityMonitor
from snn.models.checkpoint import CheckpointError, load_checkpoint, load_model
from snn.models.state import set_stateful, stream_windows, window_keys
from snn.quantization.control import model_bit_width, model_widths
from snn.quantization.size import estimate_model_size

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    masks: Iterable[str] = ("dense",),
    progress: bool = True,
    monitor: ActivityMonitor | None = None,
    on_batch: Callable[[dict, torch.Tensor], None] | None = None,
    stateful: bool = False,
    fwl_windows: int = FWL_WINDOWS,
) -> dict:
    """Returns ``{mask: {"overall": metrics, "sequences": {name: metrics}}, "fwl": {"overall": f,
    "sequences": {name: f}, "windows": fwl_windows}, "samples_per_s": x, "model_samples_per_s": y}``.

    ``fwl`` is the flow warp loss (``snn.evaluation.contrast``), the mean over the windows with events:
    it needs no ground truth, so data without flow labels gets it too. Each window is scored over a span
    of ``fwl_windows`` consecutive windows of its sequence (``WindowSpans``), so the first
    ``fwl_windows - 1`` windows of each sequence get none.

    The overall figures pool every evaluated pixel of the split. ``samples_per_s``
    is end to end (data loading, metrics and activity counting included);
    ``model_samples_per_s`` counts the forward passes alone, less the time the
    hooks of ``monitor`` (an attached ``ActivityMonitor``, if any) spent counting.
    ``on_batch(batch, prediction)``, if given, sees every batch (e.g. a ``FlowPngWriter``).

    ``stateful``: the membranes carry from each window to the next of the same sequence (the
    loader must give each sequence's windows in order, as an evaluation loader does); the state
    starts at rest at the first window of every sequence, and wherever a window does not follow
    the one before it.
    """
    model.eval()
    masks = tuple(masks)
    per_seq = {m: defaultdict(FlowMetrics) for m in masks}
    fwl = defaultdict(FlowWarpLoss)
    spans = WindowSpans(fwl_windows)
    samples, forward_s, t0 = 0, 0.0, time.perf_counter()
    hook_s0 = monitor.hook_seconds if monitor is not None else 0.0
    previous = None  # window_keys of the window whose membranes are carried
    set_stateful(model, stateful)
    try:
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress, dynamic_ncols=True):
            events = batch["events"].to(device)
            t_fwd = time.perf_counter()
            if stateful:
                pred, previous = stream_windows(model, events, window_keys(batch), previous)
                pred = pred.float().cpu()
            else:
                pred = model(events).float().cpu()  # .cpu() waits for the device, so the timing is honest
            forward_s += time.perf_counter() - t_fwd
            samples += len(events)
            if on_batch is not None:
                on_batch(batch, pred)
            per_window = spans.fwl(batch["events"], pred, window_keys(batch))  # for the batch, then by sequence
            for i, name in enumerate(batch["sequence"]):
                fwl[name].add(per_window[i : i + 1])
            for m in masks:
                mask = evaluation_mask(batch["flow"], batch["valid"], batch.get("event_mask"), m)
                for i, name in enumerate(batch["sequence"]):
                    per_seq[m][name].update(pred[i : i + 1], batch["flow"][i : i + 1], mask[i : i + 1])
    finally:
        set_stateful(model, False)
    elapsed = time.perf_counter() - t0
    if monitor is not None:
        forward_s -= monitor.hook_seconds - hook_s0
    result: dict = {
        "samples_per_s": samples / elapsed if elapsed > 0 else float("nan"),
        "model_samples_per_s": samples / forward_s if forward_s > 0 else float("nan"),
    }
    total = FlowWarpLoss()
    for acc in fwl.values():
        total.merge(acc)
    by_sequence = {name: acc.compute() for name, acc in sorted(fwl.items())}
    result["fwl"] = {"overall": total.compute(), "sequences": by_sequence, "windows": fwl_windows}
    for m in masks:
        overall = FlowMetrics()
        for acc in per_seq[m].values():
            overall.merge(acc)
        result[m] = {
            "overall": overall.compute(),
            "sequences": {name: acc.compute() for name, acc in sorted(per_seq[m].items())},
        }
    return result


# ---------------------------------------------------------------- checkpoints


def eval_config(path: str | Path, config_path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """The checkpoint's stored config, or ``config_path`` when given (its data keys are what matter),
    with ``overrides`` (e.g. the data format) on top."""
    cfg = load_config(config_path) if config_path is not None else config_from_checkpoint(load_checkpoint(path), path)
    return config_from_dict({**cfg.to_dict(), **overrides}, f"{path} + overrides") if overrides else cfg


def load_for_evaluation(
    path: str | Path, config_path: str | Path | None, device: torch.device, overrides: dict | None = None
):
    """(model in eval mode, config) for a checkpoint; fails early if the data cannot feed the model."""
    cfg = eval_config(path, config_path, overrides)
    model = load_model(path, device=device)
    channels = num_input_channels(cfg.representation)
    if getattr(model, "in_channels", channels) != channels:
        raise CheckpointError(
            f"{path}: the model takes {model.in_channels} channels per bin, but representation "
            f"{cfg.representation!r} gives {channels} (pass a --config with the right representation)"
        )
    if getattr(model, "num_bins", cfg.num_bins) != cfg.num_bins:
        logger.warning("%s was trained with %d time bins; evaluating with %d", path, model.num_bins, cfg.num_bins)
    return model, cfg


@dataclass
class CheckpointResult:
    """A checkpoint's model facts, metrics (``evaluate_model`` output) and activity summary."""

    checkpoint: str
    model_name: str
    bit_width: int  # the weights'
    current_bits: int
    parameters: int
    model_bytes: int
    num_sequences: int
    num_windows: int
    batch_size: int
    num_bins: int
    representation: str
    metrics: dict
    activity: dict
    stateful: bool = False  # membranes carried through each sequence
    by_distance: list[dict] | None = None  # ErrorByDistance.rows(), when asked for


def evaluate_checkpoint(
    path: str | Path,
    data_root: str | Path,
    split: str = "test",
    config_path: str | Path | None = None,
    masks: Iterable[str] = ("dense",),
    sequences: Sequence[str] | None = None,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    model: nn.Module | None = None,
    data_overrides: dict | None = None,
    predictions_dir: str | Path | None = None,
    stateful: bool | None = None,
    by_distance: bool = False,
    fwl_windows: int = FWL_WINDOWS,
) -> CheckpointResult:
    """Evaluate a checkpoint on a split (``model``: an already loaded copy of it, to avoid reloading;
    ``data_overrides``: config keys such as ``data_format`` that replace the checkpoint's;
    ``predictions_dir``: also write every window's flow there, see ``FlowPngWriter``; ``stateful``:
    carry the membranes through each sequence, see ``evaluate_model``; None: as the model was
    trained, i.e. when its config's ``state_windows`` is above 1); ``by_distance``: also pool the errors
    by distance to the nearest event, see ``ErrorByDistance``; ``fwl_windows``: the span the flow warp
    loss is scored over, see ``evaluate_model``)."""
    device = torch.device(device)
    if model is None:
        model, cfg = load_for_evaluation(path, config_path, device, data_overrides)
    else:
        cfg = eval_config(path, config_path, data_overrides)
    if stateful is None:
        stateful = cfg.state_windows > 1
    dataset = make_dataset(cfg, data_root, split, sequences=sequences)
    loader = make_loader(cfg, dataset, batch_size=batch_size)
    writer = FlowPngWriter(dataset, predictions_dir) if predictions_dir is not None else None
    bands = ErrorByDistance() if by_distance else None
    watchers = [w for w in (writer, bands) if w is not None]

    def on_batch(batch: dict, pred: torch.Tensor) -> None:
        for watch in watchers:
            watch(batch, pred)

    with ActivityMonitor(model) as monitor:
        metrics = evaluate_model(model, loader, device, masks, progress, monitor, on_batch, stateful, fwl_windows)
    size = estimate_model_size(model, verbose=False)
    return CheckpointResult(
        checkpoint=str(path),
        model_name=type(model).__name__,
        bit_width=model_widths(model)[0],
        current_bits=model_widths(model)[1],
        parameters=size["parameters"],
        model_bytes=size["model_bytes"],
        num_sequences=len(sequences_of(dataset)),
        num_windows=len(dataset),
        batch_size=loader.batch_size,
        num_bins=cfg.num_bins,
        representation=cfg.representation,
        metrics=metrics,
        activity=monitor.summary(),
        stateful=stateful,
        by_distance=bands.rows() if bands is not None else None,
    )


def first_windows(dataset: Dataset, n: int) -> torch.Tensor:
    """The event tensors of the first ``n`` windows, stacked [n, T, C, H, W]."""
    n = min(n, len(dataset))
    return torch.stack([dataset[i]["events"] for i in range(n)])


def compare_checkpoints(
    paths: Sequence[str | Path],
    data_root: str | Path,
    split: str = "test",
    num_inputs: int = 8,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    fwl_windows: int = FWL_WINDOWS,
) -> tuple[list[dict], str]:
    """One row per checkpoint (bits, size, dense AEE, retention, output error against FP).

    The reference is the first checkpoint whose model is not quantized (else the
    first given). Returns ``(rows, note)``, ``note`` saying which is the reference.
    """
    if not paths:
        raise ValueError("no checkpoints to compare")
    if num_inputs < 1:
        raise ValueError(f"--num-inputs must be >= 1 (got {num_inputs})")
    device = torch.device(device)
    loaded = [load_for_evaluation(p, None, device) for p in paths]  # fail on a bad file before any work
    ref = next((i for i, (m, _) in enumerate(loaded) if model_bit_width(m) == 32), None)
    note = (
        f"reference: {paths[ref]} (full precision)"
        if ref is not None
        else f"reference: {paths[0]} (no full-precision checkpoint given; the first one stands in)"
    )
    ref = 0 if ref is None else ref
    ref_model, ref_cfg = loaded[ref]
    inputs = first_windows(make_dataset(ref_cfg, data_root, split), num_inputs)
    rows = []
    for i, (path, (model, _)) in enumerate(zip(paths, loaded, strict=True)):
        res = evaluate_checkpoint(
            path,
            data_root,
            split,
            batch_size=batch_size,
            device=device,
            progress=progress,
            model=model,
            fwl_windows=fwl_windows,
        )
        overall = res.metrics["dense"]["overall"]
        if getattr(model, "in_channels", None) == getattr(ref_model, "in_channels", None):
            diff = compare_model_outputs(ref_model, model, inputs)
        else:
            logger.warning("%s takes other inputs than the reference; no output comparison", path)
            diff = {"mae": float("nan"), "mse": float("nan")}
        rows.append(
            {
                "checkpoint": str(path),
                "reference": i == ref,
                "bits": res.bit_width,
                "current_bits": res.current_bits,
                "parameters": res.parameters,
                "size_mb": res.model_bytes / 1e6,
                "aee": overall["aee"],
                "outliers": overall["outliers"],
                "zero_flow_aee": overall["zero_flow_aee"],
                "output_mae": diff["mae"],
                "output_mse": diff["mse"],
                "synops_per_sample": res.activity["synops_per_sample"],
                "fwl": res.metrics["fwl"]["overall"],
                "fwl_windows": res.metrics["fwl"]["windows"],
            }
        )
    ref_aee = rows[ref]["aee"]
    for row, label in zip(rows, comparison_labels(rows), strict=True):
        row["retention"] = ref_aee / row["aee"] if row["aee"] > 0 else float("nan")
        row["label"] = label
    return rows, note
