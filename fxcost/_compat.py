"""Every private or unstable torch API fxcost relies on, in one place.

A torch release that moves one of these breaks this file only. Everything else in fxcost
imports the names below instead of reaching into ``torch._*`` itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.fx.immutable_collections as _immutable
from torch._subclasses.fake_tensor import (  # noqa: F401 - re-exported
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
)
from torch.overrides import TorchFunctionMode  # noqa: F401 - re-exported
from torch.utils import _pytree as pytree  # noqa: F401 - re-exported
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: F401 - re-exported

#: fx containers handed to targets as arguments; real code may mutate its arguments.
IMMUTABLE_LIST = _immutable.immutable_list
IMMUTABLE_DICT = _immutable.immutable_dict

#: The logger fake tensors report kernel failures to (fxcost re-raises them with context).
FAKE_TENSOR_LOGGER = "torch._subclasses.fake_tensor"


def new_fake_mode() -> FakeTensorMode:
    """A fake-tensor mode that also accepts real tensors (constants of the model)."""
    return FakeTensorMode(allow_non_fake_inputs=True)


def fake_from_meta(fake_mode: FakeTensorMode, tensor: torch.Tensor, device: torch.device,
                   parameter: bool = False) -> torch.Tensor:
    """A fake tensor of ``tensor``'s sizes, strides and dtype on ``device``, built without
    dispatch (call it outside the fake mode). ``parameter`` marks it as an ``nn.Parameter``
    would, without the dispatched ``detach()`` that ``nn.Parameter(fake)`` costs."""
    meta = torch.empty_strided(tuple(tensor.shape), tuple(tensor.stride()), dtype=tensor.dtype, device="meta")
    fake = fake_mode.fake_tensor_converter.from_meta_and_device(fake_mode, meta, device)
    if parameter:
        fake._is_param = True
    return fake


def storage_key(tensor: torch.Tensor) -> int:
    """Identity of ``tensor``'s storage: equal for a tensor and all its views."""
    return tensor.untyped_storage()._cdata


def key_of_storage(storage: torch.UntypedStorage) -> int:
    """Identity of a storage object (what :func:`storage_key` gives for its tensors)."""
    return storage._cdata


def module_stack(node: fx.Node) -> dict[str, tuple[str, Any]]:
    """``{key: (module path, module class)}`` of the modules active when ``node`` was traced,
    outermost first (fx records it in ``node.meta``)."""
    return node.meta.get("nn_module_stack") or {}


def is_data_dependent(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is a fake-tensor failure on a value-dependent op."""
    while error is not None:
        if isinstance(error, (DataDependentOutputException, DynamicOutputShapeException)):
            return True
        error = error.__cause__ or error.__context__
    return False


def register_global_module_hooks(pre_hook, hook) -> list[Any]:
    """Forward pre-hook and forward hook on every module call (handles to remove)."""
    from torch.nn.modules import module as module_module

    return [
        module_module.register_module_forward_pre_hook(pre_hook),
        module_module.register_module_forward_hook(hook, with_kwargs=True, always_call=True),
    ]
