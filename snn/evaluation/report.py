"""Text tables, JSON and CSV of evaluation and bit-width comparison results (plots: ``snn.evaluation.plots``)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from snn.evaluation.metrics import METRIC_KEYS
from snn.evaluation.plots import plot_aee_vs_size
from snn.quantization.control import widths_tag

MASK_LABELS = {
    "dense": "dense mask: valid ground truth",
    "sparse": "sparse mask: valid ground truth with at least one event in the window",
}
_COLUMNS = (
    ("aee", "AEE", "{:.3f}"),
    ("outliers", "outliers %", "{:.2f}"),
    ("1pe", "1PE %", "{:.2f}"),
    ("2pe", "2PE %", "{:.2f}"),
    ("3pe", "3PE %", "{:.2f}"),
    ("zero_flow_aee", "zero-flow AEE", "{:.3f}"),
    ("num_pixels", "pixels", "{:,}"),
)


def bits_label(bits: int, current_bits: int | None = None) -> str:
    """'FP32', or weights and currents as 'W4A4', 'W1A4' (``current_bits`` None: the weights')."""
    return widths_tag(bits, bits if current_bits is None else current_bits)


def human(n: float) -> str:
    """1234567 -> '1.23 M'."""
    if not math.isfinite(n):
        return "n/a"
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned numbers."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt.format(value)


def metrics_table(mask_result: dict) -> str:
    """Per-sequence rows and a pooled ``overall`` row of ``{"overall": m, "sequences": {name: m}}``."""
    header = ["sequence", *[label for _, label, _ in _COLUMNS]]
    rows = [[name, *[_cell(m[k], fmt) for k, _, fmt in _COLUMNS]] for name, m in mask_result["sequences"].items()]
    rows.append(["overall", *[_cell(mask_result["overall"][k], fmt) for k, _, fmt in _COLUMNS]])
    lines = _table(header, rows).splitlines()
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def activity_table(activity: dict) -> str:
    """Firing rate, SynOps and dense MACs per layer (per sample), with totals."""
    rates, synops, macs = activity["firing_rates"], activity["synops_per_layer"], activity["dense_macs_per_layer"]
    layers = list(dict.fromkeys([*synops, *rates]))
    rows = [
        [
            name,
            _cell(100 * rates[name], "{:.2f}") if name in rates else "-",
            human(synops.get(name, float("nan"))),
            human(macs.get(name, float("nan"))),
        ]
        for name in layers
    ]
    rows.append(["total", "-", human(activity["synops_per_sample"]), human(activity["dense_macs_per_sample"])])
    lines = _table(["layer", "firing rate %", "SynOps/sample", "dense MACs/sample"], rows).splitlines()
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def evaluation_report(res, masks: tuple[str, ...], data_root: str, split: str, device: str = "cpu") -> str:
    """What tools/evaluate.py prints for a ``CheckpointResult``."""
    act = res.activity
    ratio = act["synops_per_sample"] / act["dense_macs_per_sample"] if act["dense_macs_per_sample"] else float("nan")
    mean_rate = (sum(act["firing_rates"].values()) / len(act["firing_rates"])) if act["firing_rates"] else float("nan")
    out = [
        f"checkpoint  {res.checkpoint}",
        f"model       {res.model_name}, {bits_label(res.bit_width, res.current_bits)}"
        f"{' (full precision)' if res.bit_width >= 32 else ' (weight bits W, current bits A)'}, "
        f"{res.parameters:,} parameters, {res.model_bytes / 1e6:.3f} MB",
        f"data        {data_root}, {split} split: {res.num_sequences} sequences, {res.num_windows} windows, "
        f"{res.num_bins} bins ({res.representation}), "
        + ("stateful: membranes carried through each sequence" if res.stateful else "every window from rest"),
        f"activity    firing rate {100 * mean_rate:.2f} % (mean of {len(act['firing_rates'])} spiking layers), "
        f"{human(act['synops_per_sample'])} SynOps per sample ({100 * ratio:.1f} % of the dense MACs)",
        "",
        activity_table(act),
    ]
    for m in masks:
        out += ["", MASK_LABELS[m], metrics_table(res.metrics[m])]
    if "fwl" in res.metrics:
        out += ["", fwl_line(res.metrics["fwl"])]
    out += [
        "",
        f"throughput  {res.metrics['samples_per_s']:.1f} samples/s end to end, "
        f"{res.metrics['model_samples_per_s']:.1f} samples/s in the model (batch {res.batch_size}, {device})",
    ]
    return "\n".join(out)


def fwl_line(fwl: dict) -> str:
    """The flow warp loss, with what it means (it needs no ground truth) and the span it was scored over."""
    windows = fwl.get("windows", 1)
    if not math.isfinite(fwl["overall"]):
        short = f" (no window has {windows - 1} before it in its sequence: try --fwl-windows 1)" if windows > 1 else ""
        return f"flow warp loss (FWL): none, no window with events{short}"
    span = (
        f"each window with the {windows - 1} before it, along each one's own predicted flow,"
        if windows > 1
        else "each window alone,"
    )
    return (
        f"flow warp loss (FWL) {fwl['overall']:.3f}: {span} the variance of the events warped along the flow over "
        "that of the events as they are (1: no sharper than zero flow; higher is better; no ground truth needed)"
    )


def _finite(x):
    """JSON has no NaN: an empty mask's figures become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


def _metrics_json(m: dict) -> dict:
    return {k: (int(m[k]) if k == "num_pixels" else float(m[k])) for k in METRIC_KEYS}


def evaluation_json(res, masks: tuple[str, ...], data_root: str, split: str, device: str = "cpu") -> dict:
    """The --output document: everything ``evaluation_report`` prints, as plain values.

    ``{"checkpoint", "bit_width", "model", "data", "activity", "throughput", <mask>: {"overall",
    "sequences"} for each evaluated mask}``; figures of an empty mask are null.
    """
    act = res.activity
    rates = act["firing_rates"]
    doc = {
        "checkpoint": res.checkpoint,
        "bit_width": res.bit_width,
        "current_bits": res.current_bits,
        "model": {
            "name": res.model_name,
            "bit_width": res.bit_width,
            "current_bits": res.current_bits,
            "parameters": res.parameters,
            "size_bytes": res.model_bytes,
        },
        "data": {
            "data_root": str(data_root),
            "split": split,
            "num_sequences": res.num_sequences,
            "num_windows": res.num_windows,
            "num_bins": res.num_bins,
            "representation": res.representation,
            "stateful": res.stateful,
        },
        "activity": {
            "mean_firing_rate": sum(rates.values()) / len(rates) if rates else float("nan"),
            "firing_rates": rates,
            "synops_per_sample": act["synops_per_sample"],
            "synops_per_layer": act["synops_per_layer"],
            "dense_macs_per_sample": act["dense_macs_per_sample"],
            "dense_macs_per_layer": act["dense_macs_per_layer"],
        },
        "throughput": {
            "samples_per_s": res.metrics["samples_per_s"],
            "model_samples_per_s": res.metrics["model_samples_per_s"],
            "batch_size": res.batch_size,
            "device": device,
        },
    }
    for m in masks:
        doc[m] = {
            "overall": _metrics_json(res.metrics[m]["overall"]),
            "sequences": {name: _metrics_json(v) for name, v in res.metrics[m]["sequences"].items()},
        }
    if "fwl" in res.metrics:
        doc["fwl"] = res.metrics["fwl"]
    if getattr(res, "by_distance", None) is not None:
        doc["by_distance"] = res.by_distance
    return _finite(doc)


def check_writable(path: str | Path) -> None:
    """Fail now, not after a long run, if ``path`` cannot be written (a folder, no permission, ...)."""
    path = Path(path)
    if path.is_dir():
        raise OSError(f"{path}: is a directory; --output takes a file name, e.g. {path / 'results.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"{path}: cannot write there ({exc.strerror or exc})") from None


def write_json(doc: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------- bit-width tables (comparison, ladder)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table of pre-formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(rows: list[dict], fields: list[str], path: str | Path) -> None:
    """One line per row with the given columns (empty where a row lacks one); floats to 6 significant
    digits, other keys ignored."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r[k]) for k in fields if k in r})


def _csv_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return " ".join(map(str, value)) if isinstance(value, list) else value


# The columns every bit-width table has, between its own first and last ones.
BITWIDTH_FIELDS = ["bits", "current_bits", "parameters", "size_mb", "aee", "outliers", "zero_flow_aee", "retention"]
COMPARE_FIELDS = ["checkpoint", "reference", *BITWIDTH_FIELDS, "output_mae", "output_mse", "synops_per_sample", "fwl"]


def comparison_markdown(rows: list[dict], note: str) -> str:
    header = [
        "checkpoint",
        "bits",
        "parameters",
        "size (MB)",
        "AEE",
        "outliers (%)",
        "retention (AEE_fp / AEE_q)",
        "output MAE",
        "output MSE",
        "SynOps/sample",
        "FWL",
    ]
    cells = [
        [
            r["checkpoint"] + (" (reference)" if r["reference"] else ""),
            bits_label(r["bits"], r["current_bits"]),
            f"{r['parameters']:,}",
            f"{r['size_mb']:.3f}",
            _cell(r["aee"], "{:.3f}"),
            _cell(r["outliers"], "{:.2f}"),
            _cell(r["retention"], "{:.3f}"),
            _cell(r["output_mae"], "{:.4f}"),
            _cell(r["output_mse"], "{:.5f}"),
            human(r["synops_per_sample"]),
            _cell(r["fwl"], "{:.3f}"),
        ]
        for r in rows
    ]
    zero = rows[0]["zero_flow_aee"] if rows else float("nan")
    note = f"{note}. Zero-flow AEE of the split: {_cell(zero, '{:.3f}')} px (dense mask)."
    agreement = fwl_aee_agreement(rows)
    if math.isfinite(agreement):
        note += (
            f" FWL (flow warp loss over spans of {rows[0].get('fwl_windows', 1)} windows, no ground truth needed; "
            "higher is better) ranks the checkpoints as AEE does "
            f"with Spearman's rho = {agreement:.2f} (1: the same order)."
        )
    return markdown_table(header, cells) + "\n\n" + note + "\n"


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (tied values share their mean rank)."""
    if len(a) != len(b) or len(a) < 2:
        return float("nan")

    def ranks(values: list[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = values.argsort(kind="stable")
        r = np.empty(len(values))
        r[order] = np.arange(len(values), dtype=float)
        for v in np.unique(values):  # ties: the mean of their ranks
            r[values == v] = r[values == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def fwl_aee_agreement(rows: list[dict]) -> float:
    """Spearman's rho between FWL and minus AEE over the rows where both are finite (NaN under three):
    1 when the label-free metric ranks the models exactly as the ground truth does."""
    pairs = [(r["fwl"], -r["aee"]) for r in rows if math.isfinite(r["fwl"]) and math.isfinite(r["aee"])]
    if len(pairs) < 3:
        return float("nan")
    return spearman([f for f, _ in pairs], [a for _, a in pairs])


def write_comparison_csv(rows: list[dict], path: str | Path) -> None:
    write_csv(rows, COMPARE_FIELDS, path)


def comparison_labels(rows: list[dict]) -> list[str]:
    """Point labels of compared checkpoints: the bit width, plus the path where two share a width."""
    names = short_labels([r["checkpoint"] for r in rows])
    labels = [bits_label(r["bits"], r["current_bits"]) for r in rows]
    return [
        label + (f" ({name})" if labels.count(label) > 1 else "") for label, name in zip(labels, names, strict=True)
    ]


LADDER_FIELDS = [
    "step", *BITWIDTH_FIELDS, "ptq_aee", "ptq_retention", "unseen_aee", "unseen_zero_flow_aee", "unseen_retention",
    "min_firing_rate", "silent_layers", "synops_per_sample", "train_minutes",
]  # fmt: skip


def _ptq(row: dict) -> str:
    """The post-training (calibration-only) figure of a quantized step: what the fine-tune started from."""
    aee = row.get("ptq_aee", float("nan"))
    return "-" if not math.isfinite(aee) else f"{aee:.3f} ({row['ptq_retention']:.3f})"


def _minutes(value: float) -> str:
    return "reused" if math.isnan(value) else f"{value:.1f}"


def ladder_markdown(rows: list[dict]) -> str:
    header = [
        "step",
        "bits",
        "parameters",
        "size (MB)",
        "test AEE",
        "outliers (%)",
        "zero-flow AEE",
        "retention (AEE_fp / AEE_q)",
        "calibration only: AEE (retention)",
        "lowest firing rate (%)",
        "SynOps/sample",
        "train (min)",
    ]
    unseen = all("unseen_aee" in r for r in rows)
    if unseen:
        header.insert(-1, "unseen set: AEE (retention)")
    cells = [
        [
            r["step"],
            bits_label(r["bits"], r["current_bits"]),
            f"{r['parameters']:,}",
            f"{r['size_mb']:.3f}",
            f"{r['aee']:.3f}",
            f"{r['outliers']:.2f}",
            f"{r['zero_flow_aee']:.3f}",
            f"{r['retention']:.3f}",
            _ptq(r),
            _firing(r),
            human(r["synops_per_sample"]) if "synops_per_sample" in r else "-",
            *([f"{r['unseen_aee']:.3f} ({r['unseen_retention']:.3f})"] if unseen else []),
            _minutes(r["train_minutes"]),
        ]
        for r in rows
    ]
    note = ""
    if unseen:
        note = (
            f"\nUnseen set: a test set no step trained on (zero-flow AEE {rows[0]['unseen_zero_flow_aee']:.3f} px); "
            "retention there is the full-precision step's AEE on it over the step's.\n"
        )
    return markdown_table(header, cells) + "\n" + note + _override_notes(rows) + _reused_notes(rows)


def _firing(row: dict) -> str:
    """The least active spiking layer's rate, and the silent ones by name."""
    if "min_firing_rate" not in row:
        return "-"
    silent = row.get("silent_layers") or []
    return f"{100 * row['min_firing_rate']:.2f}" + (f" (silent: {', '.join(silent)})" if silent else "")


def _override_notes(rows: list[dict]) -> str:
    lines = [f"- {r['step']} ({r['config']}): {'; '.join(r['overrides'])}" for r in rows if r.get("overrides")]
    return "\nWhat the ladder changed in each step's config:\n\n" + "\n".join(lines) + "\n" if lines else ""


def _reused_notes(rows: list[dict]) -> str:
    """For every step this call did not train: the settings it was trained with, from its record."""
    notes = []
    for r in rows:
        if not math.isnan(r["train_minutes"]):
            continue
        settings = r.get("reused_settings")
        if not settings:
            notes.append(f"- {r['step']}: no record of its settings (trained by an older version)")
            continue
        if "checkpoint" in settings:  # a given checkpoint stood in for the step
            notes.append(
                f"- {r['step']}: the given checkpoint {settings['checkpoint']} (sha256 {settings['sha256'][:12]})"
            )
            continue
        cfg = settings.get("config", {})
        start = settings.get("start_from") or {}
        minutes = r.get("reused_minutes")
        notes.append(
            f"- {r['step']}: {settings.get('epochs')} epochs, seed {settings.get('seed')}, "
            f"data {settings.get('data_root')}, learning rate {cfg.get('learning_rate')}, "
            f"batch {cfg.get('batch_size')}, crop {cfg.get('crop_size')}"
            + (f", from {start.get('path')} (sha256 {str(start.get('sha256'))[:12]})" if start else ", from scratch")
            + (f"; took {minutes:.1f} min" if isinstance(minutes, (int, float)) else "")
        )
    if not notes:
        return ""
    return (
        "\nReused steps (trained by an earlier call), with the settings they were trained with:\n\n"
        + "\n".join(notes)
        + "\n"
    )


def write_ladder_reports(rows: list[dict], output_dir: Path) -> None:
    """ladder.csv, ladder.md and ladder.png (each row also needs ``label`` and ``series`` for the plot)."""
    write_csv(rows, LADDER_FIELDS, output_dir / "ladder.csv")
    (output_dir / "ladder.md").write_text(ladder_markdown(rows))
    plot_aee_vs_size(rows, output_dir / "ladder.png", title="EventSNNFlowNetLiteV2: test AEE against size")


SEED_SUMMARY_FIELDS = [
    "step", "bits", "current_bits", "parameters", "size_mb", "zero_flow_aee", "seeds",
    "aee_mean", "aee_std", "retention_mean", "retention_std",
    "ptq_aee_mean", "ptq_aee_std", "ptq_retention_mean", "ptq_retention_std",
    "unseen_aee_mean", "unseen_aee_std", "unseen_retention_mean", "unseen_retention_std",
    "min_firing_rate", "silent_layers", "synops_per_sample_mean", "minutes_mean", "minutes_std",
]  # fmt: skip


def _mean_std(row: dict, key: str, fmt: str = "{:.3f}") -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return "-" if not math.isfinite(mean) else f"{fmt.format(mean)} ± {fmt.format(std)}"


def write_seed_reports(rows: list[dict], output_dir: Path, seeds: list[int]) -> None:
    """ladder_seeds.csv/.md/.png: each step's mean ± standard deviation over the seeds' ladders."""
    write_csv(rows, SEED_SUMMARY_FIELDS, output_dir / "ladder_seeds.csv")
    header = ["step", "bits", "size (MB)", "test AEE", "retention", "calibration only: retention",
              "unseen set: retention", "lowest firing rate (%)", "SynOps/sample", "train (min)"]  # fmt: skip
    cells = [
        [r["step"], bits_label(r["bits"], r["current_bits"]), f"{r['size_mb']:.3f}", _mean_std(r, "aee"),
         _mean_std(r, "retention"), _mean_std(r, "ptq_retention"), _mean_std(r, "unseen_retention"), _firing(r),
         human(r["synops_per_sample_mean"]) if math.isfinite(r["synops_per_sample_mean"]) else "-",
         _mean_std(r, "minutes", "{:.1f}")]
        for r in rows
    ]  # fmt: skip
    note = (
        f"\nMean ± standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))}); one ladder per seed. "
        "Lowest firing rate: the least active spiking layer in any seed (silent layers: in how many seeds); "
        "SynOps: the mean over seeds; train: minutes per seed.\n"
    )
    (output_dir / "ladder_seeds.md").write_text(markdown_table(header, cells) + "\n" + note)
    plot_aee_vs_size(rows, output_dir / "ladder_seeds.png", title=f"Test AEE against size, mean of {len(seeds)} seeds")


def short_labels(paths: list[str]) -> list[str]:
    """Paths without the folders and file name they all share: a/V2_8bit/c/best.pth -> V2_8bit."""
    parts = [Path(p).parts for p in paths]
    if len(parts) < 2:
        return [Path(p).name for p in paths]
    pre = 0
    while all(len(p) > pre + 1 for p in parts) and len({p[pre] for p in parts}) == 1:
        pre += 1
    post = 0
    while all(len(p) > pre + post + 1 for p in parts) and len({p[-1 - post] for p in parts}) == 1:
        post += 1
    return [str(Path(*p[pre : len(p) - post])) for p in parts]
