"""The module tree, walked in ``nn.Module.named_modules``' order without its recursive
generators (a generator per level of nesting, resumed once per module below it: most of
the cost of a walk over a deep model, and an analysis walks the tree several times)."""

from __future__ import annotations

import torch
from torch import nn


def named_modules_of(root: nn.Module, remove_duplicate: bool = True) -> list[tuple[str, nn.Module]]:
    """``list(root.named_modules(remove_duplicate=remove_duplicate))``."""
    found: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    stack = [("", root)]
    while stack:  # depth first, children in registration order
        path, module = stack.pop()
        if remove_duplicate:
            if id(module) in seen:
                continue
            seen.add(id(module))
        found.append((path, module))
        children = [(f"{path}.{name}" if path else name, child)
                    for name, child in module.__dict__["_modules"].items() if child is not None]
        stack.extend(reversed(children))
    return found


def modules_of(root: nn.Module) -> list[nn.Module]:
    """``list(root.modules())``."""
    return [module for _, module in named_modules_of(root)]


def named_tensors_of(root: nn.Module, table: str) -> list[tuple[str, torch.Tensor]]:
    """``list(root.named_parameters())`` (``table="_parameters"``) or ``named_buffers()``
    (``"_buffers"``): each tensor once, under its first name."""
    found: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for path, module in named_modules_of(root):
        for name, tensor in module.__dict__[table].items():
            if tensor is not None and id(tensor) not in seen:
                seen.add(id(tensor))
                found.append((f"{path}.{name}" if path else name, tensor))
    return found
