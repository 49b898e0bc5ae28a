"""Random weights for the tiny models of the tests."""

from __future__ import annotations

from torch import nn


def make_spiking(model: nn.Module) -> nn.Module:
    """Draw the weights large enough that every layer spikes (an untrained net of a tiny width is
    silent) and the flow heads non-zero (they start at zero flow), in place; the torch seed decides."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=0.5)
    for head in (model.head1, model.head2, model.head3):
        nn.init.normal_(head.conv.weight, std=0.3)
    return model
