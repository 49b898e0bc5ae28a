"""Spiking flow networks: ``from snn.models import EventSNNFlowNetLiteV2, build_model, pretrained``."""

from snn.models.factory import MODELS, build_model
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.zoo import VARIANTS, pretrained

__all__ = ["MODELS", "VARIANTS", "EventSNNFlowNetLiteV2", "build_model", "pretrained"]
