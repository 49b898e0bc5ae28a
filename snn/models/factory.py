"""Build models by name from plain constructor arguments (as stored in checkpoints)."""

from __future__ import annotations

from typing import Any

from torch import nn

from snn.models.flownet import EventSNNFlowNetLiteV2

MODELS = {"EventSNNFlowNetLiteV2": EventSNNFlowNetLiteV2}


def build_model(name: str, model_args: dict[str, Any], **extra: Any) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](**model_args, **extra)
