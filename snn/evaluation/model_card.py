"""Ship a full-precision model and its quantization ladder as ``checkpoints/pretrained/`` with a model card.

``ship_pretrained`` packs each checkpoint (``snn.models.zoo.compact_checkpoint``), evaluates the
packed file itself on the test split, and writes ``card.json`` (the figures a test reproduces)
and ``MODEL_CARD.md`` (the same figures with the data, commands and seeds that made them).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from snn.data.synthetic_config import SyntheticDataset
from snn.data.synthetic_scene import UNIT_RANGE
from snn.evaluation.evaluate import evaluate_checkpoint
from snn.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snn.models.zoo import VARIANTS, compact_checkpoint

logger = logging.getLogger(__name__)

MAX_TOTAL_MB = 20.0  # what the repository may carry in pretrained weights


def ladder_checkpoints(fp_checkpoint: Path, ladder_dir: Path) -> dict[str, Path]:
    """Variant -> checkpoint: the FP one, then ``<ladder_dir>/V2_<variant>/checkpoints/best_model.pth``
    as ``tools/qat_ladder.py`` writes them; a missing one is a CheckpointError naming it."""
    paths = {"FP32": fp_checkpoint}
    for variant in VARIANTS[1:]:
        paths[variant] = ladder_dir / f"V2_{variant}" / "checkpoints" / "best_model.pth"
    for path in paths.values():
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
    return paths


def ship_pretrained(
    sources: dict[str, Path],
    output_dir: Path,
    data_root: Path,
    commands: dict[str, str],
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Pack, evaluate and describe every variant in ``sources``; returns the card's dict.

    Files are written beside their final names and renamed at the end, so an interrupted or
    failed run leaves an earlier set of shipped models as it was.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    card: dict[str, Any] = {"data_root": str(data_root), "split": "test", "mask": "dense", "models": {}}
    staged = []
    for variant, source in sources.items():
        ckpt = load_checkpoint(source)
        card.setdefault("data", data_description(ckpt["config"]))  # what the first model was trained on
        tmp = output_dir / f".{variant}.pth.new"
        save_checkpoint(compact_checkpoint(ckpt), tmp)
        staged.append((tmp, output_dir / f"{variant}.pth"))
        result = evaluate_checkpoint(tmp, data_root, "test", masks=("dense", "sparse"), device=device,
                                     progress=progress)  # fmt: skip
        dense, sparse = (result.metrics[m]["overall"] for m in ("dense", "sparse"))
        cfg = ckpt["config"]
        card["models"][variant] = {
            "file": f"{variant}.pth",
            "source": str(source),
            "bits": [result.bit_width, result.current_bits],
            "parameters": result.parameters,
            "file_mb": round(tmp.stat().st_size / 1e6, 3),
            "seed": cfg.get("seed"),
            "epochs": cfg.get("num_epochs"),
            "test_aee": dense["aee"],
            "zero_flow_aee": dense["zero_flow_aee"],
            "ratio": dense["aee"] / dense["zero_flow_aee"],
            "sparse_aee": sparse["aee"],
            "sparse_ratio": sparse["aee"] / sparse["zero_flow_aee"],
            "windows": result.num_windows,
            "stateful": result.stateful,
        }
        logger.info("%s: test AEE %.4f px (%.3f of zero flow)", variant, dense["aee"], card["models"][variant]["ratio"])
    fp = card["models"].get("FP32")
    for entry in card["models"].values():
        entry["retention"] = fp["test_aee"] / entry["test_aee"] if fp else None
    total = sum(m["file_mb"] for m in card["models"].values())
    if total > MAX_TOTAL_MB:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise ValueError(f"{output_dir}: the models take {total:.1f} MB, above the {MAX_TOTAL_MB:.0f} MB allowed")
    card["total_mb"] = round(total, 3)
    card["commands"] = commands
    for tmp, final in staged:
        os.replace(tmp, final)
    (output_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (output_dir / "MODEL_CARD.md").write_text(card_markdown(card))
    return card


def data_description(config: dict[str, Any]) -> str:
    """What the first model was trained on, in a sentence, from its stored config."""
    if config.get("dataset") != "synthetic":
        return f"Trained on {config.get('dataset')} data from `{config.get('data_root')}`."
    syn = SyntheticDataset.from_dict(config.get("synthetic") or {})
    scene = syn.scene
    photos = f", photo backgrounds {list(scene.background_photos)}" if scene.background_photos else ""
    low, high = scene.scene_scale
    scale = f", each drawn at a scale of {low:g} to {high:g}" if (low, high) != UNIT_RANGE else ""
    windows = syn.num_train * (scene.num_frames - 1)
    samples = config.get("epoch_samples")
    epochs = (
        f" (epochs of {samples} of the {windows} training windows)" if samples is not None and samples < windows else ""
    )
    return (
        f"Trained on the built-in synthetic dataset (`{config.get('data_root')}`, generated on first use): "
        f"{syn.num_train} training, {syn.num_val} validation and {syn.num_test} test sequences of "
        f"{scene.height}x{scene.width} pixels{scale}, {scene.num_frames - 1} windows each{epochs}, "
        f"generator seed {syn.seed}"
        f"{photos}; {config.get('crop_size')}x{config.get('crop_size')} training crops."
    )


def card_markdown(card: dict[str, Any]) -> str:
    models = card["models"]
    any_model = next(iter(models.values()))
    lines = [
        "# Pretrained EventSNNFlowNetLiteV2 models",
        "",
        'Load one with `snn.models.pretrained("W4A4")`, `torch.hub.load("<this checkout>", "pretrained", '
        '"W4A4", source="local")`, or give `pretrained:W4A4` to any tool\'s `--checkpoint`.',
        "Quantized files hold their weights as int8 codes with per-channel scales; loading restores",
        "exactly the weights their fake-quant forward used.",
        "",
        "## Data",
        "",
        card["data"],
        f"Figures: the test split of `{card['data_root']}` ({any_model['windows']} windows), dense mask",
        "(every pixel with ground truth) unless marked sparse (pixels with an event); ratio is AEE over the AEE of",
        "predicting zero flow; retention is the FP32 AEE over the model's. One seed of each step. The quantized",
        "models are scored in the 32-bit integer arithmetic of their export (docs/hardware.md), as they evaluate.",
        "",
        "| model | bits W/A | file MB | test AEE px | ratio | sparse ratio | retention | seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, m in models.items():
        bits = "32/32" if m["bits"][0] == 32 else f"{m['bits'][0]}/{m['bits'][1]}"
        retention = "" if m["retention"] is None else f"{m['retention']:.3f}"
        lines.append(
            f"| {variant} | {bits} | {m['file_mb']:.2f} | {m['test_aee']:.4f} | {m['ratio']:.3f} | "
            f"{m['sparse_ratio']:.3f} | {retention} | {m['seed']} |"
        )
    lines += ["", f"Total {card['total_mb']:.1f} MB."]
    worse = [variant for variant, m in models.items() if m["ratio"] >= 1]
    if worse:
        note = "no better than predicting zero flow; shipped to show what the width costs"
        lines += ["", f"{' and '.join(worse)}: {note}."]
    lines += ["", "## How they were made", ""]
    lines += [f"- {variant}: `{command}`" for variant, command in card["commands"].items()]
    lines += [
        "",
        "`tests/models/test_zoo.py` evaluates every file here on the test split and checks it against",
        "`card.json`; `python tools/ship_pretrained.py` rebuilds this folder from new checkpoints.",
        "",
    ]
    return "\n".join(lines)
