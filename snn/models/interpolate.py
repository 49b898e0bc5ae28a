"""Weights between two checkpoints of one model: a trained model and the same model adapted to new data.

Adapting a model to a new domain moves it away from what it knew. Averaging the weights of the
model before and after, ``(1 - alpha) * start + alpha * end``, keeps much of both (Wortsman et al.
2022, "robust fine-tuning"), and the fraction ``alpha`` sets the trade: 0 is the start, 1 the
adapted model. Every floating-point tensor of the state dict is averaged, batch-norm statistics
included; integer buffers (batch counts) are taken from the end. So is a quantized model's quantizer
state (learned steps, ranges): a step defines what each integer code of a current means, and an
adaptation at W4A4 can move it several-fold (up to 75x, on a flow head), so that a step halfway
between two grids suits neither model's weights. Averaged steps broke a W4A4 model at alpha 0.5
(AEE 2.3 px on a test split where both ends scored under 1.92). With the end's steps two of three
seeds moved smoothly from one end to the other, and the third still scored worse than both ends at
0.5 (README, "Averaging the weights"). Alpha 0 is the start itself, its quantizer state included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from snn.models.checkpoint import QUANT_KEY_MARK, CheckpointError, load_checkpoint, load_weights
from snn.models.factory import build_model

# What an interpolated checkpoint keeps of the end's (no optimizer or resume state: it was never trained).
KEPT_KEYS = ("model_name", "model_args", "config")


def check_interpolable(start: dict[str, Any], end: dict[str, Any], start_path: Path, end_path: Path) -> None:
    """A CheckpointError naming both files unless the two hold the same model (name, arguments, tensors)."""
    where = f"{start_path} and {end_path}"
    if start["model_name"] != end["model_name"]:
        raise CheckpointError(f"{where}: different models ({start['model_name']} and {end['model_name']})")
    a, b = start["model_args"], end["model_args"]
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        shown = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in differ[:4])
        raise CheckpointError(f"{where}: the models are built differently ({shown})")
    sa, sb = start["state_dict"], end["state_dict"]
    if set(sa) != set(sb):
        only = sorted(set(sa) ^ set(sb))
        raise CheckpointError(f"{where}: the state dicts hold different tensors, e.g. {only[0]}")
    shapes = [k for k in sa if sa[k].shape != sb[k].shape]
    if shapes:
        raise CheckpointError(
            f"{where}: {shapes[0]} has shape {list(sa[shapes[0]].shape)} vs {list(sb[shapes[0]].shape)}"
        )


def interpolate_state(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float) -> dict:
    """``(1 - alpha) * start + alpha * end`` for every floating-point tensor but the quantizers'; the
    end's for those and for integer buffers. At ``alpha`` 0, the start itself, quantizer state included."""
    if alpha == 0:
        return {key: value.clone() for key, value in start.items()}
    out = {}
    for key, b in end.items():
        if b.is_floating_point() and QUANT_KEY_MARK not in key:
            out[key] = torch.lerp(start[key].float(), b.float(), alpha).to(b.dtype)
        else:
            out[key] = b.clone()
    return out


class Interpolation:
    """Two compatible checkpoints, loaded once; ``checkpoint(alpha)`` and ``model(alpha)`` between them."""

    def __init__(self, start_path: str | Path, end_path: str | Path):
        self.start_path, self.end_path = Path(start_path), Path(end_path)
        self.start = load_checkpoint(self.start_path)
        self.end = load_checkpoint(self.end_path)
        check_interpolable(self.start, self.end, self.start_path, self.end_path)

    def checkpoint(self, alpha: float) -> dict[str, Any]:
        """A checkpoint of the model at ``alpha`` (0: start, 1: end) that records where it came from."""
        payload = {k: self.end[k] for k in KEPT_KEYS}
        payload["state_dict"] = interpolate_state(self.start["state_dict"], self.end["state_dict"], alpha)
        payload["interpolation"] = {"start": str(self.start_path), "end": str(self.end_path), "alpha": float(alpha)}
        return payload

    def model(self, alpha: float, device: str | torch.device = "cpu") -> nn.Module:
        """The model at ``alpha``, in eval mode."""
        model = build_model(self.end["model_name"], self.end["model_args"])
        state = interpolate_state(self.start["state_dict"], self.end["state_dict"], alpha)
        load_weights(model, state, self.end_path, strict=True)
        return model.to(device).eval()


def largest_within(alphas: list[float], aees: list[float], start_aee: float, max_loss: float) -> float:
    """The largest ``alpha`` whose AEE is at most ``(1 + max_loss)`` times the start's (0 when none is)."""
    kept = [a for a, aee in zip(alphas, aees, strict=True) if aee <= (1.0 + max_loss) * start_aee]
    return max(kept, default=0.0)
