"""Spiking flow networks: ``from snn.models import EventSNNFlowNetLiteV2, build_model``."""

from snn.models.factory import MODELS, build_model
from snn.models.flownet import EventSNNFlowNetLiteV2

__all__ = ["MODELS", "EventSNNFlowNetLiteV2", "build_model"]
