"""The QAT ladder: FP -> 8 -> 4 -> 2 -> 1 bit (each from the previous) and a progressive run.

Every step trains into ``<output>/<name>/`` and is evaluated on the test split;
a step whose ``best_model.pth`` already exists is reused, so an interrupted
ladder continues where it stopped. The reports (table, CSV, plot) are written
by ``snn.evaluation.report``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from snn.config import CONFIG_DIR, config_from_dict, data_root_overrides, load_config
from snn.data.loaders import prepare_data_root
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.evaluation.report import bits_label, write_ladder_reports
from snn.training.run import build_trainer
from snn.utils.runtime import seed_everything

logger = logging.getLogger(__name__)


@dataclass
class Step:
    name: str
    config: str
    start_from: str | None  # name of the step whose best checkpoint this one starts from
    progressive: bool = False


STEPS = (
    Step("V2", "event_snn_lite.yaml", None),
    Step("V2_8bit", "event_snn_lite_8bit.yaml", "V2"),
    Step("V2_4bit", "event_snn_lite_4bit.yaml", "V2_8bit"),
    Step("V2_2bit", "event_snn_lite_2bit.yaml", "V2_4bit"),
    Step("V2_1bit", "event_snn_lite_1bit.yaml", "V2_2bit"),
    Step("V2_progressive", "event_snn_lite_progressive.yaml", "V2", progressive=True),
)


def step_overrides(step: Step, output_dir: Path, data_root: str | None, epochs: int, seed: int | None) -> dict:
    """The config keys the ladder sets for ``step`` on top of its YAML (None values keep the YAML's)."""
    out = output_dir / step.name
    overrides = {
        "checkpoint_dir": str(out / "checkpoints"),
        "log_dir": str(out / "logs"),
        "num_epochs": epochs,
        "seed": seed,
        **data_root_overrides(data_root),
    }
    if step.progressive:
        # The schedule keeps its shape: equal thirds at 8, 4 and 2 bit.
        third = max(1, epochs // 3)
        overrides["quantization_schedule"] = {0: 8, third: 4, 2 * third: 2}
    return overrides


def run_step(
    step: Step,
    output_dir: Path,
    data_root: str | None,
    epochs: int,
    device: torch.device,
    seed: int | None = None,
    extra: dict | None = None,
) -> tuple[Path, float]:
    """Train one step (unless done); returns its best checkpoint and the minutes it took."""
    best = output_dir / step.name / "checkpoints" / "best_model.pth"
    if best.exists():
        logger.info("%s: reusing %s", step.name, best)
        return best, float("nan")
    cfg = load_config(CONFIG_DIR / step.config, step_overrides(step, output_dir, data_root, epochs, seed))
    if extra:  # applied after loading, so that an explicit None (e.g. no crop) counts
        cfg = config_from_dict({**cfg.to_dict(), **extra}, f"{step.config} + ladder overrides")
    resume = output_dir / step.start_from / "checkpoints" / "best_model.pth" if step.start_from else None
    logger.info("%s: %d epochs from %s, seed %d", step.name, epochs, resume or "scratch", cfg.seed)
    t0 = time.time()
    seed_everything(cfg.seed)
    trainer = build_trainer(cfg, device, resume=resume, warm_start=True if resume else None)
    trainer.fit()
    return best, (time.time() - t0) / 60


def run_ladder(
    output_dir: Path,
    data_root: str | None,
    epochs_per_step: int,
    fp_epochs: int | None,
    device: torch.device,
    progressive: bool = True,
    seed: int | None = None,
    extra: dict | None = None,
) -> list[dict]:
    """Train (or reuse) every step, evaluate each on the test split, write the reports.

    ``seed`` replaces every step's config seed (None: each config's own); ``extra``
    overrides config keys of every step (e.g. ``{"crop_size": None}``).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    base = load_config(CONFIG_DIR / STEPS[0].config, data_root_overrides(data_root))
    prepare_data_root(base)  # the synthetic set may be needed before any step trains
    if fp_epochs is None:
        fp_epochs = base.num_epochs
    rows = []
    for step in STEPS:
        if step.progressive and not progressive:
            continue
        epochs = fp_epochs if step.start_from is None else epochs_per_step * (3 if step.progressive else 1)
        best, minutes = run_step(step, output_dir, data_root, epochs, device, seed=seed, extra=extra)
        result = evaluate_checkpoint(best, base.data_root, "test", device=device, progress=False)
        test = result.metrics["dense"]["overall"]
        rows.append(
            {
                "step": step.name,
                "bits": result.bit_width,
                "parameters": result.parameters,
                "size_mb": result.model_bytes / 1e6,
                "aee": test["aee"],
                "outliers": test["outliers"],
                "zero_flow_aee": test["zero_flow_aee"],
                "train_minutes": minutes,
                "label": bits_label(result.bit_width) + (" (progressive)" if step.progressive else ""),
                "series": "progressive" if step.progressive else None,
            }
        )
        logger.info("%s: test AEE %.3f (zero-flow %.3f)", step.name, test["aee"], test["zero_flow_aee"])
    fp_aee = rows[0]["aee"]
    for row in rows:
        row["retention"] = fp_aee / row["aee"]
    write_ladder_reports(rows, output_dir)
    return rows
