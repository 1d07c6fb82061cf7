"""The mirror: a stand-in for the user's model whose parameters and buffers are fake tensors.

The mirror copies the module tree shallowly, so tracing and shape propagation can run (and
even mutate buffers, as BatchNorm does in training, or register hooks) without touching the
user's modules, reading their weights or materialising ``meta`` tensors.
"""

from __future__ import annotations

import types
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._compat import FakeFactory
from ._errors import InvalidModelError
from ._quantized import StandIn, is_quantized_module, stand_in

#: Per-module hook tables: the mirror gets its own copies, so hooks registered on it
#: never reach the user's modules.
_HOOK_TABLES = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
                "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
                "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")

_HOOK_TABLE_NAMES = frozenset(_HOOK_TABLES)
_CONTAINERS = frozenset({dict, list, set})
_REPLACED = frozenset({"_parameters", "_buffers", "_modules"})  # (the mirror sets its own)


@dataclass
class Mirror:
    """The stand-in module plus the way back to the user's parameter names."""

    module: nn.Module
    """Root of the mirrored module tree (fake parameters, same module paths)."""
    names: dict[int, str] = field(default_factory=dict)
    """``id()`` of every fake parameter/buffer -> its qualified name in the user's model."""
    stand_ins: dict[str, StandIn] = field(default_factory=dict)
    """Module path -> the float module standing in for a converted quantized module there."""
    prefix: str = ""
    """Path of :attr:`module` in the user's model (set by :meth:`narrow`)."""

    def narrow(self, path: str) -> "Mirror":
        """The mirror of the submodule at ``path``: names and stand-in paths become relative."""
        start = path + "."
        return Mirror(
            self.module.get_submodule(path),
            {key: name[len(start):] for key, name in self.names.items() if name.startswith(start)},
            {p[len(start):]: s for p, s in self.stand_ins.items() if p.startswith(start)},
            self.prefix + start,
        )


def mirror_model(model: nn.Module, fake_mode, device: torch.device, training: bool | None,
                 exclude: tuple[str, ...] = (), grads: bool = False) -> Mirror:
    """Mirror ``model`` with fake tensors of ``fake_mode`` (call it outside that mode).

    ``training`` is the flag every module gets (None: each keeps its own); with ``grads``,
    fake parameters require gradients where the user's do. Shared submodules
    and tied parameters stay shared in the mirror. Modules at the paths in ``exclude`` are
    replaced by ``nn.Identity`` in the mirror.
    """
    names: dict[int, str] = {}
    tensors: dict[int, torch.Tensor] = {}
    modules: dict[int, nn.Module] = {}
    stand_ins: dict[str, StandIn] = {}
    containers: dict[int, object] = {}  # user's dicts/lists/sets -> the mirror's copies
    elsewhere: list[tuple[nn.Module, str]] = []  # (clone, attribute) that may hold modules outside _modules
    factory = FakeFactory(fake_mode, device)

    def mirror_tensor(value, qualified: str, is_param: bool):
        if value is None:
            return None
        key = id(value)
        if key not in tensors:
            fake = factory.like(value, parameter=is_param)
            if grads and is_param and value.requires_grad:
                fake.requires_grad_(True)
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
        clone = shallow_copy(module, containers, elsewhere)
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
        if training is not None:
            state["training"] = training
        return clone

    root = mirror(model, "")
    for clone, name in elsewhere:
        _point_at_mirrors(clone, name, modules)
    for path in exclude:
        owner_path, _, name = path.rpartition(".")
        owner = root.get_submodule(owner_path) if owner_path else root
        owner.__dict__["_modules"] = {**owner._modules, name: nn.Identity()}
    mirror = None  # (the recursive closure refers to itself: unbound, it and the tables go by refcount)
    return Mirror(root, names, stand_ins)


def _point_at_mirrors(clone: nn.Module, name: str, modules: dict[int, nn.Module]) -> None:
    """Modules a module also keeps outside its registered children (``self.blocks = [...]``
    beside ``add_module``, as UperNet's pyramid pooling does) are the user's: make the clone
    keep their mirrors instead, so its forward never runs the user's modules. Lists and dicts
    are the clone's own copies already (:func:`shallow_copy`), so they are changed in place
    (two modules sharing one keep sharing it)."""
    def swap(value: Any) -> Any:
        return modules.get(id(value), value) if isinstance(value, nn.Module) else value

    state = clone.__dict__
    value = state[name]
    kind = type(value)
    if kind is list:
        value[:] = [swap(v) for v in value]
    elif kind is dict:
        value.update({k: swap(v) for k, v in value.items() if isinstance(v, nn.Module)})
    elif kind is tuple:
        state[name] = tuple(swap(v) for v in value)
    else:
        state[name] = swap(value)


#: Attribute types that hold no module, container or method: left as they are (fast path).
_PLAIN = frozenset({bool, int, float, str, type(None), torch.dtype, torch.device, torch.Size})


def shallow_copy(module: nn.Module, containers: dict[int, object] | None = None,
                 elsewhere: list[tuple[nn.Module, str]] | None = None) -> nn.Module:
    """A new module object of the same class sharing ``module``'s attributes, except its
    hook tables, which are its own; plain dicts, lists and sets, which are copies (a forward
    may fill a cache: timm's LeViT stores tensors in ``attention_bias_cache``; ``containers``
    keeps one copy of a container two modules share); and methods bound to it per instance
    (``self.forward = self.forward_fast``), which are bound to the copy. ``elsewhere`` gets
    ``(copy, attribute)`` for every attribute that is or may hold a module outside the
    registered children (a module, a list, a dict, a tuple with a module in it)."""
    containers = {} if containers is None else containers
    clone = object.__new__(type(module))
    state = clone.__dict__
    state.update(module.__dict__)
    for name, value in module.__dict__.items():
        kind = type(value)
        if kind in _PLAIN:
            continue
        if name in _HOOK_TABLE_NAMES:
            if isinstance(value, dict):
                state[name] = OrderedDict(value)
        elif name in _REPLACED:
            continue
        elif kind in _CONTAINERS:
            copied = containers.get(id(value))
            state[name] = copied if copied is not None else containers.setdefault(id(value), value.copy())
            if elsewhere is not None and kind is not set and value:
                elsewhere.append((clone, name))
        elif kind is types.MethodType and value.__self__ is module:
            state[name] = types.MethodType(value.__func__, clone)
        elif elsewhere is not None and (isinstance(value, nn.Module) or (
                kind is tuple and any(isinstance(v, nn.Module) for v in value))):
            elsewhere.append((clone, name))
    return clone
