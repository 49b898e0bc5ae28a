"""Checkpoints: save, load safely, move weights into a model, rebuild the model alone.

A checkpoint is a dict of tensors and plain Python values only, so it loads
with ``torch.load(..., weights_only=True)``:

    {"format_version": 1, "model_name": str, "model_args": dict, "config": dict,
     "state_dict": {...}, "epoch": int, "best_val_aee": float, "val_metrics": dict,
     "optimizer": dict | None, "scheduler": dict | None, "rng": dict | None,
     "train_state_dict": {...}  # only with weight_ema: the raw weights; state_dict is the EMA}

A shipped pretrained model (``snn.models.zoo``) keeps its quantized convolutions' weights as
``"weight_codes": {key: {"codes": int8, "scale": float32, "axis": int}}`` instead; loading puts
``codes * scale`` back into the state_dict.

Writes go to a temporary file that is then renamed, so a crash never leaves
a half-written checkpoint behind; a write that fails (a full disk, most often)
removes its temporary file and raises ``CheckpointWriteError``. This module sits below training and
evaluation: both load through it, and whether a load continues a run or
starts a new one is decided once, where a training run is assembled.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snn.models.factory import build_model
from snn.quantization.weight_quant import channel_view

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model_name", "model_args", "config", "state_dict")
QUANT_KEY_MARK = "quant_layer."


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit; the message names the file."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, most often); the file it would replace is unchanged."""


# Less free space than this after a failed write: the disk filled up. torch.save reports a full
# disk as a RuntimeError ("[enforce fail at inline_container.cc:...] unexpected pos ...") without errno.
FULL_DISK_BYTES = 1 << 20


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write ``path`` through a temporary file; on failure remove that file and raise CheckpointWriteError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        problem = _write_problem(exc, path.parent)  # measured before the partial file frees its space
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
        raise CheckpointWriteError(f"{path}: could not be written: {problem}; {kept}") from None


def _write_problem(exc: BaseException, folder: Path) -> str:
    """Why a checkpoint write failed, in a few words."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return "the disk is full (no space left on device)"
    if code == errno.EDQUOT:
        return "the disk quota is exceeded"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < FULL_DISK_BYTES:
        return f"the disk is full ({free:,} bytes free in {folder})"
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return f"the write failed ({type(exc).__name__}: {reason})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load safely (``weights_only=True``) and check the keys every tool relies on."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code in it, not a torch file, ...
        raise CheckpointError(f"{path}: {_load_problem(path, exc)}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this project (top level is not a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    if "weight_codes" in ckpt:  # a shipped model (snn.models.zoo): weights stored as codes and scales
        expand_weight_codes(ckpt, path)
    return with_legacy_defaults(ckpt)


# Keys whose default changed: a checkpoint written before the key existed was built with the old value.
LEGACY_DEFAULTS = {"bins_per_step": 1, "global_context": False}


def with_legacy_defaults(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Fill keys that older checkpoints lack with the value those checkpoints were trained with, in place.

    Empty model_args meant every default of its day, so it is filled; an empty config means none was
    stored (hand-made checkpoints), and it stays empty so that readers still see that.
    """
    for stored in (ckpt["model_args"], ckpt["config"] or None):
        if isinstance(stored, dict):
            for key, value in LEGACY_DEFAULTS.items():
                stored.setdefault(key, value)
    return ckpt


def expand_weight_codes(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """Put the weights of a shipped checkpoint's ``weight_codes`` (int8 codes, per-channel scales)
    back into its state_dict, in place."""
    try:
        for key, entry in ckpt.pop("weight_codes").items():
            scale = channel_view(entry["scale"].float(), int(entry["axis"]), entry["codes"].dim())
            ckpt["state_dict"][key] = entry["codes"].float() * scale
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: damaged weight_codes ({type(exc).__name__}: {exc})") from None
    return ckpt


def _load_problem(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` refused ``path``, in a sentence (torch's own messages run to many lines)."""
    if path.stat().st_size == 0:
        return "empty file (0 bytes), not a checkpoint"
    with path.open("rb") as f:
        head = f.read(4)
    is_zip = zipfile.is_zipfile(path)
    if head.startswith(b"PK") and not is_zip:
        return "truncated or corrupt: the zip archive that torch.save writes is incomplete"
    if not is_zip and not head.startswith(b"\x80"):
        return "not a PyTorch checkpoint (neither the zip archive torch.save writes nor a pickle)"
    if isinstance(exc, pickle.UnpicklingError) or "weights only" in str(exc).lower():
        return (
            "holds code or Python objects that a safe load (weights_only=True) does not run, so we refuse it; "
            "checkpoints of this project hold tensors and plain values only"
        )
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return f"not a loadable checkpoint ({type(exc).__name__}: {reason})"


def checkpoint_widths(ckpt: dict[str, Any]) -> tuple[int, int]:
    """(weight bits, current bits) of the model a checkpoint holds: (32, 32) unless it was quantized."""
    args = ckpt["model_args"]
    if not args.get("quantize"):
        return 32, 32
    if args.get("binarize"):
        return 1, 1
    weights = int(args.get("bit_width", 8))
    current = args.get("current_bits")  # older checkpoints: currents had the weights' width
    return weights, weights if current is None else int(current)


def phase_name(weight_bits: int, current_bits: int) -> str:
    """'4bit' when weights and currents share a width, else 'W2A4' (names best_model_<...>.pth)."""
    return f"{weight_bits}bit" if weight_bits == current_bits else f"W{weight_bits}A{current_bits}"


def keep_best_of_other_width(path: Path, widths: tuple[int, int]) -> None:
    """Before a best checkpoint at ``widths`` replaces ``path``: an existing one of other widths
    is kept as ``best_model_<phase>.pth`` beside it (never overwritten, never lost)."""
    if not path.exists():
        return
    try:
        old = checkpoint_widths(load_checkpoint(path))
    except CheckpointError:
        return  # not ours or unreadable: replaced as before
    if old == tuple(widths):
        return
    kept = path.with_name(f"{path.stem}_{phase_name(*old)}{path.suffix}")
    if not kept.exists():
        os.replace(path, kept)
        logger.warning("%s held a %s model; kept as %s before a %s one replaces it", path, phase_name(*old), kept,
                       phase_name(*widths))  # fmt: skip


def load_weights(
    model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path, strict: bool = False
) -> list[str]:
    """Load weights; return the quantizer keys the checkpoint lacked.

    Missing ``quant_layer.*`` entries are expected when a full-precision (or
    older) checkpoint is loaded into a quantized model: calibration fills them.
    Anything else that does not fit, or with ``strict`` any missing or
    unexpected key, is a CheckpointError naming the keys.
    """
    own = model.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(
            f"{path}: another architecture: {len(mismatched)} tensor(s) differ in shape, e.g. {k} "
            f"{list(state_dict[k].shape)} in the file vs {list(own[k].shape)} in the model "
            f"({_few(mismatched)})"
        )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    quant_missing = [k for k in missing if QUANT_KEY_MARK in k]
    other_missing = [k for k in missing if QUANT_KEY_MARK not in k]
    if unexpected or other_missing or (strict and missing):
        raise CheckpointError(
            f"{path}: does not fit this model{' (--strict-load)' if strict else ''}: "
            f"missing {_few(missing if strict else other_missing)}; unexpected {_few(unexpected)}"
        )
    model.load_state_dict(state_dict, strict=False)
    return quant_missing


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_model(
    path: str | Path,
    quantize: bool | None = None,
    bit_width: int | None = None,
    device: str | torch.device = "cpu",
    current_bits: int | None = None,
) -> nn.Module:
    """Rebuild a model from a checkpoint alone, in eval mode.

    ``quantize=False`` gives the full-precision network (a quantized checkpoint's
    latent FP32 weights); ``bit_width`` quantizes the weights at that width and the
    currents at ``current_bits`` (None: the same); ranges missing from the checkpoint are
    taken from the first batch the model sees.
    """
    ckpt = load_checkpoint(path, map_location=device)
    args = dict(ckpt["model_args"])
    if bit_width is not None:
        args["quantize"], args["bit_width"], args["binarize"] = True, bit_width, False
        args["current_bits"] = current_bits
    elif quantize is not None:
        args["quantize"] = quantize
    model = build_model(ckpt["model_name"], args)
    state = ckpt["state_dict"]
    if not args.get("quantize"):
        state = {k: v for k, v in state.items() if QUANT_KEY_MARK not in k}
    missing = load_weights(model, state, path)
    if missing:
        logger.warning("%s: no quantizer ranges stored; they will be set by the first batch", path)
    return model.to(device).eval()
