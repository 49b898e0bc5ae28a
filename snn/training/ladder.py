"""The QAT ladder: FP -> 8 -> 4 -> 2 -> 1 bit (each from the previous) and a progressive run.

Every step trains into ``<output>/<name>/`` and is evaluated on the test split;
a step whose ``best_model.pth`` already exists is reused, so an interrupted
ladder continues where it stopped.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from snn.config import CONFIG_DIR, config_from_dict, load_config
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.training.run import build_trainer, prepare_data_root
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
CSV_FIELDS = ["step", "bits", "parameters", "size_mb", "aee", "outliers", "zero_flow_aee", "retention", "train_minutes"]


def run_step(
    step: Step,
    output_dir: Path,
    data_root: str | None,
    epochs: int,
    device: torch.device,
    config_dir: Path = CONFIG_DIR,
    extra: dict | None = None,
) -> tuple[Path, float]:
    """Train one step (unless done); returns its best checkpoint and the minutes it took."""
    out = output_dir / step.name
    best = out / "checkpoints" / "best_model.pth"
    if best.exists():
        logger.info("%s: reusing %s", step.name, best)
        return best, float("nan")
    overrides = {"checkpoint_dir": str(out / "checkpoints"), "log_dir": str(out / "logs"), "num_epochs": epochs}
    if data_root is not None:
        overrides.update(data_root=data_root, dataset="blinksim")
    if step.progressive:
        # The schedule keeps its shape: equal thirds at 8, 4 and 2 bit.
        third = max(1, epochs // 3)
        overrides["quantization_schedule"] = {0: 8, third: 4, 2 * third: 2}
    cfg = load_config(config_dir / step.config, overrides)
    if extra:  # applied after loading, so that an explicit None (e.g. no crop) counts
        cfg = config_from_dict({**cfg.to_dict(), **extra}, f"{step.config} + ladder overrides")
    resume = output_dir / step.start_from / "checkpoints" / "best_model.pth" if step.start_from else None
    logger.info("%s: %d epochs from %s", step.name, epochs, resume or "scratch")
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
    extra: dict | None = None,
) -> list[dict]:
    """Train (or reuse) every step, evaluate each on the test split, write the reports.

    ``extra`` overrides config keys of every step (e.g. ``{"crop_size": None}``).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    base = load_config(
        CONFIG_DIR / STEPS[0].config, {"data_root": data_root, "dataset": "blinksim"} if data_root else None
    )
    prepare_data_root(base)  # the synthetic set may be needed before any step trains
    if fp_epochs is None:
        fp_epochs = base.num_epochs
    rows = []
    for step in STEPS:
        if step.progressive and not progressive:
            continue
        epochs = fp_epochs if step.start_from is None else epochs_per_step * (3 if step.progressive else 1)
        best, minutes = run_step(step, output_dir, data_root, epochs, device, extra=extra)
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
            }
        )
        logger.info("%s: test AEE %.3f (zero-flow %.3f)", step.name, test["aee"], test["zero_flow_aee"])
    fp_aee = rows[0]["aee"]
    for row in rows:
        row["retention"] = fp_aee / row["aee"]
    write_reports(rows, output_dir)
    return rows


def write_reports(rows: list[dict], output_dir: Path) -> None:
    with open(output_dir / "ladder.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    lines = [
        "| step | bits | parameters | size (MB) | test AEE | outliers (%) | zero-flow AEE | "
        "retention (AEE_fp / AEE_q) | train (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {'FP32' if r['bits'] == 32 else r['bits']} | {r['parameters']:,} | "
            f"{r['size_mb']:.3f} | {r['aee']:.3f} | {r['outliers']:.2f} | {r['zero_flow_aee']:.3f} | "
            f"{r['retention']:.3f} | {_minutes(r['train_minutes'])} |"
        )
    (output_dir / "ladder.md").write_text("\n".join(lines) + "\n")
    plot_aee_vs_size(rows, output_dir / "ladder.png")


def _minutes(value: float) -> str:
    return "reused" if math.isnan(value) else f"{value:.1f}"


def plot_aee_vs_size(rows: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ladder = [r for r in rows if "progressive" not in r["step"]]
    ax.plot([r["size_mb"] for r in ladder], [r["aee"] for r in ladder], "o-", color="tab:blue", label="ladder")
    for r in rows:
        label = "FP32" if r["bits"] == 32 else f"{r['bits']} bit"
        marker = "s" if "progressive" in r["step"] else "o"
        ax.scatter(r["size_mb"], r["aee"], marker=marker, color="tab:orange" if marker == "s" else "tab:blue")
        ax.annotate(
            label + (" (progressive)" if marker == "s" else ""),
            (r["size_mb"], r["aee"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    ax.axhline(rows[0]["zero_flow_aee"], color="gray", ls="--", lw=1, label="zero flow")
    ax.set_xscale("log")
    # Label the sizes themselves: log-scale minor ticks in scientific notation overlap.
    sizes = sorted({round(r["size_mb"], 3) for r in rows})
    ax.set_xticks(sizes, [f"{v:g}" for v in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("model size (MB, log scale)")
    ax.set_ylabel("test AEE (px)")
    ax.set_title("EventSNNFlowNetLiteV2: accuracy against size")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
