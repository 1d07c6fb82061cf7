"""A stand-in for the user's model whose parameters and buffers are fake tensors.

The stand-in mirrors the module tree with shallow copies, so tracing and shape
propagation can run (and even mutate buffers, as BatchNorm does in training) without
touching the user's modules, reading their weights or materialising ``meta`` tensors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ._errors import InvalidModelError
from ._quantized import StandIn, is_quantized_module, stand_in


@dataclass
class FakeModel:
    """The stand-in module plus the way back to the user's parameter names."""

    module: nn.Module
    """Root of the mirrored module tree (fake parameters, same module paths)."""
    names: dict[int, str] = field(default_factory=dict)
    """``id()`` of every fake parameter/buffer -> its qualified name in the user's model."""
    stand_ins: dict[str, StandIn] = field(default_factory=dict)
    """Module path -> the float module standing in for a converted quantized module there."""


def fake_like(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor with ``tensor``'s sizes, strides and dtype on ``device``; data never read.

    Must be called inside the active ``FakeTensorMode`` so the result is fake.
    """
    return torch.empty_strided(tuple(tensor.shape), tuple(tensor.stride()), dtype=tensor.dtype, device=device)


def _fake_from_meta(fake_mode, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Like :func:`fake_like`, built from a meta tensor without dispatch (call it outside
    the fake mode: the meta tensor must be a plain one)."""
    meta = torch.empty_strided(tuple(tensor.shape), tuple(tensor.stride()), dtype=tensor.dtype, device="meta")
    return fake_mode.fake_tensor_converter.from_meta_and_device(fake_mode, meta, device)


def fake_model(model: nn.Module, fake_mode, device: torch.device, mode: str | None,
               exclude: tuple[str, ...] = ()) -> FakeModel:
    """Mirror ``model`` with fake tensors of ``fake_mode`` (call it outside that mode).

    ``mode`` is ``"eval"``, ``"train"`` or ``None`` (keep each module's own flag).
    Shared submodules and tied parameters stay shared in the mirror. Modules at the paths
    in ``exclude`` are replaced by ``nn.Identity`` in the mirror.
    """
    names: dict[int, str] = {}
    tensors: dict[int, torch.Tensor] = {}
    modules: dict[int, nn.Module] = {}
    stand_ins: dict[str, StandIn] = {}

    def mirror_tensor(value, qualified: str, is_param: bool):
        if value is None:
            return None
        key = id(value)
        if key not in tensors:
            fake = _fake_from_meta(fake_mode, value, device)
            if is_param:
                # what nn.Parameter() does to a tensor subclass, minus its dispatched detach()
                fake._is_param = True
            tensors[key] = fake
            names[id(fake)] = qualified
        return tensors[key]

    def mirror(module: nn.Module, prefix: str) -> nn.Module:
        if id(module) in modules:
            return modules[id(module)]
        if is_quantized_module(module):
            replacement = stand_in(module)
            if replacement is None:
                raise InvalidModelError(
                    f"module '{prefix.rstrip('.')}' ({type(module).__name__}) is a converted quantized module "
                    "fxcost has no float equivalent for: analyse the float model before conversion "
                    "(torchvision: quantize=False) with memory=fxcost.MemoryOptions(activation_dtype=torch.int8, "
                    "weight_dtype=torch.int8)"
                )
            stand_ins[prefix.rstrip(".")] = replacement
            clone = mirror(replacement.module, prefix)
            modules[id(module)] = clone
            return clone
        clone = copy.copy(module)
        modules[id(module)] = clone
        state = clone.__dict__
        state["_parameters"] = {
            name: mirror_tensor(p, prefix + name, True) for name, p in module._parameters.items()
        }
        state["_buffers"] = {
            name: mirror_tensor(b, prefix + name, False) for name, b in module._buffers.items()
        }
        state["_modules"] = {
            name: None if child is None else mirror(child, f"{prefix}{name}.")
            for name, child in module._modules.items()
        }
        if mode is not None:
            state["training"] = mode == "train"
        return clone

    root = mirror(model, "")
    for path in exclude:
        owner_path, _, name = path.rpartition(".")
        owner = root.get_submodule(owner_path) if owner_path else root
        owner.__dict__["_modules"] = {**owner._modules, name: nn.Identity()}
    return FakeModel(root, names, stand_ins)
