"""The QAT ladder: FP -> 8 -> 4 -> 2 -> 1 bit (each from the previous) and a progressive run.

Every step trains into ``<output>/<name>/`` and is evaluated on the test split. Beside
its checkpoints each step keeps ``ladder_step.json``: the settings it was trained with
(its resolved config, epochs, data root, seed, and a hash of the checkpoint it started
from) and whether it finished. A later call reuses a step only when it finished with
the same settings, continues a half-finished one from its own ``last.pth``, and stops
with an error naming what differs otherwise (``reuse=True`` reports such steps as they
are, with the settings they were trained with). Each quantized step is also evaluated
right after calibration, before its fine-tune (post-training quantization), and, given
an unseen data root, on that root's test split. ``run_ladder_seeds`` repeats the ladder
per seed and reports mean and spread. The reports (table, CSV, plot) are written by
``snn.evaluation.report``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from snn.config import CONFIG_DIR, Config, config_from_dict, data_root_overrides, load_config
from snn.data.loaders import prepare_data_root
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.evaluation.report import bits_label, write_ladder_reports, write_seed_reports
from snn.training.run import build_trainer
from snn.utils.runtime import seed_everything

logger = logging.getLogger(__name__)

RECORD = "ladder_step.json"
FOLDERS = ("checkpoint_dir", "log_dir")


class LadderError(ValueError):
    """A step's folder holds results that do not match the command; the message says what differs."""


@dataclass
class Step:
    name: str
    config: str
    start_from: str | None  # name of the step whose best checkpoint this one starts from
    progressive: bool = False
    overrides: dict = field(default_factory=dict)  # the ladder's changes to the config (printed)
    low_currents: bool = False  # a 2- or 1-bit current step (W2A2, W1A1): ``low_overrides`` apply


# The 2- and 1-bit configs switch these on for their own W2A2 and W1A1; the W2A<a> and W1A<a> steps,
# whose currents are wide enough without them, run as they were measured before they existed.
LOW_CURRENT_DEVICES = {"shortcut_before_quant": False, "binary_threshold": False}


def ladder_steps(low_current_bits: int = 4) -> tuple[Step, ...]:
    """FP -> W8A8 -> W4A4 -> W2A<a> -> W2A2, W2A<a> -> W1A<a> -> W1A1 (the guide's binarize), and the
    progressive run.

    The 2- and 1-bit weights first keep ``low_current_bits``-bit currents (the current is an
    accumulator sum on integer hardware); W2A2 and W1A1 then take the currents down from there with
    the 2- and 1-bit configs' own devices (see ``LOW_CURRENT_DEVICES``).
    """
    a = low_current_bits
    if not 2 <= a <= 16:
        raise ValueError(f"the low steps' current bits must lie in 2..16, got {a}")
    w2a2 = [] if a == 2 else [Step("V2_W2A2", "event_snn_lite_2bit.yaml", f"V2_W2A{a}", low_currents=True)]
    wide = LOW_CURRENT_DEVICES if a > 2 else {}
    return (
        Step("V2", "event_snn_lite.yaml", None),
        Step("V2_W8A8", "event_snn_lite_8bit.yaml", "V2"),
        Step("V2_W4A4", "event_snn_lite_4bit.yaml", "V2_W8A8"),
        Step(
            f"V2_W2A{a}",
            "event_snn_lite_2bit.yaml",
            "V2_W4A4",
            overrides={"current_bits": a, **wide},
            low_currents=a == 2,
        ),
        *w2a2,
        Step(
            f"V2_W1A{a}",
            "event_snn_lite_1bit.yaml",
            f"V2_W2A{a}",
            overrides={"binarize": False, "current_bits": a, **wide},
            low_currents=a == 2,
        ),
        Step("V2_W1A1", "event_snn_lite_1bit.yaml", f"V2_W1A{a}", low_currents=True),
        Step("V2_progressive", "event_snn_lite_progressive.yaml", "V2", progressive=True),
    )


STEPS = ladder_steps()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def step_config(step: Step, output_dir: Path, data_root: str | None, epochs: int, seed: int | None, extra: dict | None):
    """The step's resolved config: its YAML, the ladder's folders, epochs (a schedule scaled to them), seed,
    the step's own overrides, then ``extra``."""
    out = output_dir / step.name
    overrides = {
        "checkpoint_dir": str(out / "checkpoints"),
        "log_dir": str(out / "logs"),
        "num_epochs": epochs,
        "seed": seed,
        **data_root_overrides(data_root),
    }
    cfg = load_config(CONFIG_DIR / step.config, overrides)
    changes = {**step.overrides, **(extra or {})}
    if changes:  # applied after loading, so that an explicit None (e.g. no crop) counts
        cfg = config_from_dict({**cfg.to_dict(), **changes}, f"{step.config} + ladder overrides")
    return cfg


def overridden(step: Step, cfg: Config | dict) -> list[str]:
    """``key: yaml value -> ladder value`` for every key the ladder changed (folders aside); ``cfg`` is the
    step's config, or the one a reused step's record holds."""
    own = _json(load_config(CONFIG_DIR / step.config).to_dict())
    new = _json(cfg if isinstance(cfg, dict) else cfg.to_dict())
    return [f"{k} {own[k]!r} -> {new[k]!r}" for k in own if k in new and own[k] != new[k] and k not in FOLDERS]


def _read_record(folder: Path) -> dict | None:
    path = folder / RECORD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LadderError(f"{path}: unreadable step record ({exc})") from None


def _write_record(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / RECORD)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def settings_of(cfg: Config, epochs: int, start: Path | None) -> dict[str, Any]:
    """What decides a step's result: its whole config and the exact checkpoint it started from."""
    return {
        "epochs": epochs,
        "data_root": str(Path(cfg.data_root).resolve()),
        "seed": cfg.seed,
        "config": _json(cfg.to_dict()),
        "start_from": None if start is None else {"path": str(start), "sha256": sha256(start)},
    }


# Where a step writes decides nothing about its result: a ladder folder moved elsewhere is still reused.
PLACE_KEYS = (("config", "checkpoint_dir"), ("config", "log_dir"), ("start_from", "path"))


def comparable(settings: dict) -> dict:
    """``settings`` without the output folders and the start checkpoint's path (its sha256 stays)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in settings.items()}
    for outer, inner in PLACE_KEYS:
        if isinstance(out.get(outer), dict):
            out[outer].pop(inner, None)
    return out


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def with_new_defaults(recorded: dict, settings: dict) -> dict:
    """``recorded`` plus the config keys a newer version added, where ``settings`` holds them at
    their defaults: a key that did not exist when the step trained, left at its default, changes
    nothing the step did. (At any other value it stays a difference.)"""
    defaults = _json(Config().to_dict())
    old, new = dict(recorded.get("config") or {}), settings.get("config") or {}
    if not old:
        return recorded
    for key, value in new.items():
        if key not in old and key in defaults and value == defaults[key]:
            old[key] = value
    return {**recorded, "config": old}


def run_step(
    step: Step,
    output_dir: Path,
    cfg: Config,
    epochs: int,
    device: torch.device,
    start: Path | None = None,
    reuse: bool = False,
) -> tuple[Path, float, dict | None]:
    """Train one step (``cfg``: its resolved config, see ``step_config``) unless it finished with the
    same settings; continue it if it was interrupted.

    Returns its best checkpoint, the minutes this call spent training (nan: reused) and its record
    (settings, status, minutes, and the calibration-only test AEE of a quantized step as "ptq").
    """
    folder = output_dir / step.name
    best = folder / "checkpoints" / "best_model.pth"
    last = folder / "checkpoints" / "last.pth"
    settings = settings_of(cfg, epochs, start)
    record = _read_record(folder)
    if record is None and (best.exists() or last.exists()):
        if reuse and best.exists():
            logger.warning("%s: reusing %s, which has no record of its settings", step.name, best)
            return best, float("nan"), {"settings": None, "status": "unknown"}
        raise LadderError(
            f"{folder}: holds checkpoints but no {RECORD} (made by an older version?), so nothing says how they "
            f"were trained; use another --output-dir, remove the folder, or pass --reuse to report them as they are"
        )
    if record is not None:
        recorded = with_new_defaults(record.get("settings") or {}, settings)
        differs = _differences(comparable(recorded), comparable(settings))
        finished = record.get("status") == "finished" and best.exists()
        if differs and not (reuse and finished):
            shown = "; ".join(differs[:6]) + (f"; and {len(differs) - 6} more" if len(differs) > 6 else "")
            raise LadderError(
                f"{folder}: this step was trained with other settings than the command's ({shown}); use another "
                f"--output-dir, remove the folder, or pass --reuse to report the finished step as it is"
            )
        if finished:
            logger.info(
                "%s: finished earlier with %s settings; reusing %s", step.name, "other" if differs else "the same", best
            )
            return best, float("nan"), record
    resume, warm, ptq = start, True, None
    if record is not None and last.exists():
        resume, warm, ptq = last, None, record.get("ptq")  # a half-finished step continues from its last.pth
        logger.info("%s: continuing the interrupted step from %s", step.name, last)
    elif record is not None:  # killed before its first last.pth: start it over
        for leftover in (best, folder / "logs" / "metrics.csv"):
            leftover.unlink(missing_ok=True)
    _write_record(folder, {"settings": settings, "status": "running", "ptq": ptq})
    logger.info("%s: %d epochs from %s, seed %d", step.name, epochs, resume or "scratch", cfg.seed)
    t0 = time.time()
    seed_everything(cfg.seed)
    trainer = build_trainer(cfg, device, resume=resume, warm_start=warm if resume is not None else None)
    if warm and start is not None and trainer.quantized:
        # What calibration alone gives (post-training quantization), before any fine-tuning.
        calibrated = evaluate_checkpoint(
            start, cfg.data_root, "test", device=device, progress=False, model=trainer.model,
            data_overrides={"data_format": cfg.data_format, "mvsec_dt": cfg.mvsec_dt},  # read as the step reads it
        )  # fmt: skip
        ptq = {"aee": calibrated.metrics["dense"]["overall"]["aee"]}
        logger.info("%s: calibration only (no fine-tuning): test AEE %.3f", step.name, ptq["aee"])
        _write_record(folder, {"settings": settings, "status": "running", "ptq": ptq})
    trainer.fit()
    minutes = (time.time() - t0) / 60
    record = {"settings": settings, "status": "finished", "train_minutes": minutes, "ptq": ptq}
    _write_record(folder, record)
    return best, minutes, record


def run_ladder(
    output_dir: Path,
    data_root: str | None,
    epochs_per_step: int,
    fp_epochs: int | None,
    device: torch.device,
    progressive: bool = True,
    seed: int | None = None,
    extra: dict | None = None,
    fp_checkpoint: Path | None = None,
    reuse: bool = False,
    unseen_root: str | Path | None = None,
    low_current_bits: int = 4,
    qat_overrides: dict | None = None,
    last_step: str | None = None,
    data_overrides: dict | None = None,
    low_overrides: dict | None = None,
) -> list[dict]:
    """Train (or reuse) every step, evaluate each on the test split, write the reports.

    With ``unseen_root`` every step is also evaluated on that data root's test split (a set no
    step trained on, e.g. ``UNSEEN_TEST_SET``), reported as ``unseen_aee`` and ``unseen_retention``.

    ``low_current_bits`` is the current width of the W2 and W1 steps (see ``ladder_steps``).
    ``seed`` replaces every step's config seed (None: each config's own); ``extra``
    overrides config keys of every step (e.g. ``{"crop_size": None}``); ``fp_checkpoint``
    stands in for the full-precision step (e.g. the checkpoint of ``python train.py``).
    ``qat_overrides`` overrides config keys of the quantized steps only (e.g. ``{"distill_weight": 1.0}``,
    which needs a start checkpoint as teacher); ``low_overrides`` those of the 2- and 1-bit current steps
    (W2A2, W1A1) only, after ``qat_overrides`` (trials of their devices, e.g. ``{"binary_threshold": False}``);
    ``last_step`` ends the ladder after that step.
    ``data_overrides`` (``data_format``, ``mvsec_dt``) say how ``data_root`` is read, by every step and
    its evaluation; the unseen root is always detected by its files.
    """
    steps = ladder_steps(low_current_bits)
    names = [s.name for s in steps]
    if last_step is not None and last_step not in names:
        raise ValueError(f"unknown last step {last_step!r}; the steps are {', '.join(names)}")
    data_overrides = data_overrides or {}
    if qat_overrides or low_overrides:  # a wrong key or value stops here, not after the FP step has trained
        low = next(s for s in steps if s.low_currents)
        step_config(low, output_dir, data_root, epochs_per_step, seed, {**(extra or {}), **(qat_overrides or {}),
                                                                         **(low_overrides or {})})  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    base = load_config(CONFIG_DIR / STEPS[0].config, {**data_root_overrides(data_root), **data_overrides})
    prepare_data_root(base)  # the synthetic set may be needed before any step trains
    if fp_epochs is None:
        fp_epochs = base.num_epochs
    rows, bests = [], {}
    for step in steps[: names.index(last_step) + 1] if last_step else steps:
        if step.progressive and not progressive:
            continue
        changes = []
        if step.start_from is None and fp_checkpoint is not None:
            best, minutes = Path(fp_checkpoint), float("nan")
            record = {"settings": {"checkpoint": str(fp_checkpoint), "sha256": sha256(Path(fp_checkpoint))}}
        else:
            epochs = fp_epochs if step.start_from is None else epochs_per_step * (3 if step.progressive else 1)
            start = bests.get(step.start_from)
            changed = {**(extra or {}), **data_overrides, **((qat_overrides or {}) if step.start_from else {})}
            if step.low_currents:
                changed.update(low_overrides or {})
            cfg = step_config(step, output_dir, data_root, epochs, seed, changed)
            changes = overridden(step, cfg)
            logger.info("%s: %s, ladder overrides: %s", step.name, step.config, "; ".join(changes) or "none")
            best, minutes, record = run_step(step, output_dir, cfg, epochs, device, start, reuse)
            recorded = (record.get("settings") or {}).get("config")
            if math.isnan(minutes) and recorded:  # reused: what its own training changed, not this call
                changes = overridden(step, _json(recorded))
        bests[step.name] = best
        result = evaluate_checkpoint(
            best, base.data_root, "test", device=device, progress=False, data_overrides=data_overrides or None
        )
        test = result.metrics["dense"]["overall"]
        rows.append(
            {
                "step": step.name,
                "bits": result.bit_width,
                "current_bits": result.current_bits,
                "parameters": result.parameters,
                "size_mb": result.model_bytes / 1e6,
                "aee": test["aee"],
                "outliers": test["outliers"],
                "zero_flow_aee": test["zero_flow_aee"],
                "train_minutes": minutes,
                "label": bits_label(result.bit_width, result.current_bits)
                + (" (progressive)" if step.progressive else ""),
                "series": "progressive" if step.progressive else None,
                "reused_settings": record.get("settings"),
                "reused_minutes": record.get("train_minutes"),
                "ptq_aee": (record.get("ptq") or {}).get("aee", float("nan")),
                "config": step.config,
                "overrides": changes,
                "min_firing_rate": min(result.activity["firing_rates"].values()),
                "silent_layers": [k for k, r in result.activity["firing_rates"].items() if r == 0],
                "synops_per_sample": result.activity["synops_per_sample"],
            }
        )
        if unseen_root is not None:
            other = evaluate_checkpoint(
                best, unseen_root, "test", device=device, progress=False, data_overrides={"data_format": "auto"}
            )
            rows[-1]["unseen_aee"] = other.metrics["dense"]["overall"]["aee"]
            rows[-1]["unseen_zero_flow_aee"] = other.metrics["dense"]["overall"]["zero_flow_aee"]
        logger.info("%s: test AEE %.3f (zero-flow %.3f)", step.name, test["aee"], test["zero_flow_aee"])
        _add_retention(rows)
        if math.isfinite(minutes):  # trained now: a ladder stopped later still reports it
            write_ladder_reports(rows, output_dir)
    write_ladder_reports(rows, output_dir)
    return rows


def _add_retention(rows: list[dict]) -> None:
    """Each row's AEE (calibration-only and unseen too, where present) against the first row's."""
    fp = rows[0]
    for row in rows:
        row["retention"] = fp["aee"] / row["aee"]
        row["ptq_retention"] = fp["aee"] / row["ptq_aee"]
        if "unseen_aee" in fp:
            row["unseen_retention"] = fp["unseen_aee"] / row["unseen_aee"]


SEED_FIELDS = (
    "aee", "retention", "ptq_aee", "ptq_retention", "unseen_aee", "unseen_retention", "synops_per_sample", "minutes"
)  # fmt: skip


def _minutes(row: dict) -> float:
    """The minutes the step trained: this call's, or, for a reused step, its record's."""
    if math.isfinite(row.get("train_minutes", float("nan"))):
        return row["train_minutes"]
    recorded = row.get("reused_minutes")
    return float(recorded) if isinstance(recorded, (int, float)) else float("nan")


def summarize_seeds(per_seed: list[list[dict]]) -> list[dict]:
    """One row per step over several seeds' ladders: mean and standard deviation (ddof 1) of the
    AEE, the retention, the calibration-only figures, SynOps and training minutes; the lowest
    firing rate of any seed and the layers silent in any seed (with how many seeds); the step's
    other facts from the first seed."""
    steps = [r["step"] for r in per_seed[0]]
    if any([r["step"] for r in rows] != steps for rows in per_seed):
        raise ValueError("the seeds' ladders ran different steps")
    summary = []
    for i, first in enumerate(per_seed[0]):
        row = {k: first[k] for k in ("step", "bits", "current_bits", "parameters", "size_mb", "zero_flow_aee")}
        row.update(label=first["label"], series=first["series"], seeds=len(per_seed))
        for key in SEED_FIELDS:
            got = [_minutes(rows[i]) if key == "minutes" else rows[i].get(key, float("nan")) for rows in per_seed]
            values = torch.tensor(got, dtype=torch.float64)
            row[f"{key}_mean"] = float(values.mean())
            row[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
        row["min_firing_rate"] = min(rows[i].get("min_firing_rate", float("nan")) for rows in per_seed)
        silent = [name for rows in per_seed for name in rows[i].get("silent_layers") or []]
        row["silent_layers"] = [f"{name} ({silent.count(name)} of {len(per_seed)})" for name in sorted(set(silent))]
        row["aee"] = row["aee_mean"]  # what the plot draws
        summary.append(row)
    return summary


def run_ladder_seeds(output_dir: Path, seeds: list[int], **kwargs) -> list[dict]:
    """The ladder once per seed (into ``<output>/seed_<s>/``), then the mean and spread over seeds
    in ``<output>/ladder_seeds.md``, ``.csv`` and ``.png``."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds has repeats: {seeds}")
    per_seed = [run_ladder(output_dir / f"seed_{s}", seed=s, **kwargs) for s in seeds]
    summary = summarize_seeds(per_seed)
    write_seed_reports(summary, output_dir, seeds)
    return summary
