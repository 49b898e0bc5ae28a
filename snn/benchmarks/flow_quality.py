"""How well a full-precision training recipe estimates flow, over seeds and three test sets.

Each seed trains the recipe (a config plus ``--set`` overrides) as ``python train.py`` does, into
``<output>/seed_<S>/``, and its best checkpoint is scored on:

- ``yardstick``: the test split of the built-in synthetic set at the generator's own settings
  (``data/synthetic``, the data of the defaults before the scaled scenes), which stays fixed
  whatever a recipe trains on;
- ``test``: the recipe's own test split, where its data root is another one;
- ``unseen``: ``UNSEEN_TEST_SET``, new scenes at 128x128 that no recipe trains on;
- ``natural``: ``NATURAL_TEST_SET``, photographs under camera motion at 320x320.

The figure of merit is the AEE ratio to zero flow (the AEE of predicting no motion), under the
dense and the sparse mask. A finished seed is reused (its ``result.json``); an interrupted one is
resumed from its ``last.pth``, so a long benchmark can be run a seed at a time.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from snn.config import Config, config_from_dict
from snn.data.loaders import make_dataset, prepare_data_root, prepare_synthetic_set
from snn.data.synthetic import DEFAULT_ROOT
from snn.data.synthetic_config import NATURAL_TEST_SET, UNSEEN_TEST_SET, SyntheticDataset
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.evaluation.report import markdown_table, write_csv
from snn.training.run import train_and_test

MASKS = ("dense", "sparse")
DEFAULT_TEST_ROOTS = {
    "yardstick": DEFAULT_ROOT,
    "unseen": Path("data/synthetic_unseen"),
    "natural": Path("data/natural_photos"),
}

# What each named set is, generated on first use: the yardstick is the built-in set at the
# generator's own settings (what ``python train.py`` generated before the scaled scenes).
TEST_SETS = {"yardstick": SyntheticDataset(), "unseen": UNSEEN_TEST_SET, "natural": NATURAL_TEST_SET}


def seed_config(cfg: Config, seed: int, output_dir: Path) -> Config:
    """``cfg`` with its seed and its run folders under ``output_dir/seed_<seed>``."""
    run = output_dir / f"seed_{seed}"
    values = {**cfg.to_dict(), "seed": seed, "checkpoint_dir": str(run / "checkpoints"), "log_dir": str(run / "logs")}
    return config_from_dict(values, f"the recipe's config (seed {seed})")


def score(checkpoint: Path, roots: dict[str, Path], device: torch.device) -> dict[str, float]:
    """AEE, zero-flow AEE and their ratio on each test set, dense and sparse (keys ``<set>_<mask>_...``)."""
    out: dict[str, float] = {}
    for name, root in roots.items():
        res = evaluate_checkpoint(checkpoint, root, "test", masks=MASKS, device=device, progress=False)
        for mask in MASKS:
            m = res.metrics[mask]["overall"]
            out[f"{name}_{mask}_aee"] = m["aee"]
            out[f"{name}_{mask}_zero_flow_aee"] = m["zero_flow_aee"]
            out[f"{name}_{mask}_ratio"] = m["aee"] / m["zero_flow_aee"]
    return out


def run_seed(cfg: Config, seed: int, output_dir: Path, roots: dict[str, Path], device: torch.device) -> dict:
    """Train (or reuse, or resume) one seed and score it; the row is also saved as ``result.json``."""
    run_cfg = seed_config(cfg, seed, output_dir)
    folder = output_dir / f"seed_{seed}"
    record = folder / "result.json"
    if record.is_file():
        return json.loads(record.read_text())
    last = Path(run_cfg.checkpoint_dir) / "last.pth"
    resumed = last.is_file()
    start = time.perf_counter()
    train_and_test(run_cfg, resume=last if resumed else None)
    minutes = (time.perf_counter() - start) / 60
    best = Path(run_cfg.checkpoint_dir) / "best_model.pth"
    row = {"seed": seed, "train_minutes": minutes, "resumed": resumed, **score(best, roots, device)}
    record.write_text(json.dumps(row, indent=1))
    return row


def summarize(rows: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation (0 for one seed) of every numeric column but the seed."""
    keys = [k for k, v in rows[0].items() if k != "seed" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for key in keys:
        values = [float(r[key]) for r in rows]
        out[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def report_markdown(rows: Sequence[dict], title: str, set_names: Sequence[str]) -> str:
    """Per-seed rows and the mean ± std, as AEE ratios to zero flow (dense / sparse)."""
    header = ["seed", *[f"{name} dense" for name in set_names], *[f"{name} sparse" for name in set_names], "minutes"]

    def line(label, get):
        ratios = [get(f"{n}_{mask}_ratio") for mask in MASKS for n in set_names]
        return [label, *ratios, get("train_minutes")]

    def seed_cell(r, k):
        if k != "train_minutes":
            return f"{r[k]:.3f}"
        # A resumed seed's wall time covers only what ran after the resume: not a training time.
        return "resumed" if r.get("resumed") else f"{r[k]:.1f}"

    body = [line(str(r["seed"]), lambda k, r=r: seed_cell(r, k)) for r in rows]
    stats = summarize(rows)
    fresh = [r["train_minutes"] for r in rows if not r.get("resumed")]
    minutes = f"{statistics.fmean(fresh):.1f}" if fresh else "-"
    body.append(
        line(
            f"mean ± std ({len(rows)})",
            lambda k: f"{stats[k][0]:.3f} ± {stats[k][1]:.3f}" if k != "train_minutes" else minutes,
        )
    )
    aee = ", ".join(
        f"{n} {stats[f'{n}_dense_aee'][0]:.3f} px of {stats[f'{n}_dense_zero_flow_aee'][0]:.3f}" for n in set_names
    )
    return (
        f"# {title}\n\nAEE over zero-flow AEE (lower is better), dense and sparse masks.\n"
        f"Mean dense AEE: {aee}.\n\n{markdown_table(header, body)}\n"
    )


def run_flow_quality(
    cfg: Config,
    seeds: Sequence[int],
    output_dir: Path,
    device: torch.device,
    test_roots: dict[str, Path] | None = None,
    title: str = "flow quality",
) -> list[dict]:
    """Every seed of the recipe ``cfg``, then ``flow_quality.md`` and ``.csv`` in ``output_dir``.

    ``test_roots`` names the test sets (default ``DEFAULT_TEST_ROOTS``; the named ones there are
    generated on first use); the recipe's own test split is added as ``test`` unless it is one of them.
    """
    # The recipe's own data first: a missing or unreadable root fails before any set is generated
    # or any folder made.
    own = prepare_data_root(cfg)
    make_dataset(cfg, own, "test")
    roots = {}
    for name, root in (DEFAULT_TEST_ROOTS if test_roots is None else test_roots).items():
        roots[name] = prepare_synthetic_set(root, TEST_SETS[name]) if name in TEST_SETS else Path(root)
    if own.resolve() not in {root.resolve() for root in roots.values()}:
        roots = {"test": own, **roots}
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_seed(cfg, seed, output_dir, roots, device) for seed in seeds]
    (output_dir / "flow_quality.md").write_text(report_markdown(rows, title, list(roots)))
    write_csv(rows, list(rows[0]), output_dir / "flow_quality.csv")
    return rows
