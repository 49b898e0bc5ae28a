"""torch.hub entry points for the shipped models of checkpoints/pretrained/.

    model = torch.hub.load("path/to/this/checkout", "pretrained", "W4A4", source="local")

Variants: FP32, W8A8, W4A4, W2A4, W2A2, W1A4, W1A1 (see checkpoints/pretrained/MODEL_CARD.md).
"""

dependencies = ["torch", "numpy", "yaml"]

from snn.models.zoo import pretrained as _pretrained  # noqa: E402


def pretrained(variant: str = "W4A4", device: str = "cpu"):
    """EventSNNFlowNetLiteV2 at ``variant``'s bit widths, with its shipped weights, in eval mode."""
    return _pretrained(variant, device=device)
