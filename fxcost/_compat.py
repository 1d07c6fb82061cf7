"""Every touch point with private or unstable torch APIs used by the graph passes.

A torch release that moves one of these breaks this file only.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: F401 - re-exported
from torch.multiprocessing.reductions import StorageWeakRef

#: ``node.meta`` key under which ``torch.fx`` records the modules a node was traced inside.
_MODULE_STACK = "nn_module_stack"


def module_path(node: fx.Node) -> str:
    """Path of the module that owns ``node``: its target for ``call_module``, else the
    innermost module it was traced inside ('' for the root)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get(_MODULE_STACK) or {}
    return next(reversed(stack.values()))[0] if stack else ""


def storage_key(tensor: torch.Tensor) -> int:
    """Identity of ``tensor``'s storage: equal for a tensor and its views (fake tensors too)."""
    return StorageWeakRef(tensor.untyped_storage()).cdata


def tensor_version(tensor: torch.Tensor) -> int:
    """The version counter of ``tensor``: it moves when the tensor (or a view of it) is written in place."""
    return tensor._version
