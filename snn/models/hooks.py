"""Capture what named submodules output during a forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def capturing_outputs(modules: dict[str, nn.Module], keep: Callable[[torch.Tensor], Any]) -> Iterator[dict[str, Any]]:
    """Inside, every forward pass of ``modules[name]`` stores ``keep(output)`` under ``name`` in the
    yielded dict (the last pass wins); the hooks are gone on leaving."""
    captured: dict[str, Any] = {}
    handles = [
        module.register_forward_hook(lambda _m, _in, out, name=name: captured.__setitem__(name, keep(out)))
        for name, module in modules.items()
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
