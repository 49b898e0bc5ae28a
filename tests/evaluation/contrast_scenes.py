"""Small event scenes with a known flow, shared by the contrast-loss tests."""

from __future__ import annotations

import torch


def turning_dot() -> tuple[torch.Tensor, torch.Tensor]:
    """Two windows of two bins each: a dot at 4 px a window along x in the first, along y in the second,
    at (x, y) = (10, 10) at time 0 (between them). Events [1, 4, 2, 20, 20], flows [1, 2, 2, 20, 20]."""
    events = torch.zeros(1, 4, 2, 20, 20)
    for k, (x, y) in enumerate([(7, 10), (9, 10), (10, 11), (10, 13)]):  # at t = -0.75, -0.25, 0.25, 0.75
        events[0, k, 0, y, x] = 1.0
    flows = torch.zeros(1, 2, 2, 20, 20)
    flows[0, 0, 0], flows[0, 1, 1] = 4.0, 4.0
    return events, flows
