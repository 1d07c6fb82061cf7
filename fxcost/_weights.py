"""What the model's parameters and buffers amount to: who reads them, their totals, and the
memory they take."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
from torch import nn

from ._compat import module_tensors, storage_key
from ._quantized import StandIn
from ._records import NodeCost
from ._walk import named_tensors_of


def module_weights(module: nn.Module) -> list[tuple[torch.Tensor, bool]]:
    """``(tensor, is_parameter)`` for every parameter and buffer of ``module``."""
    return module_tensors(module)


class WeightIndex:
    """Parameters and buffers of the (fake) model, found by identity or by storage, and the
    parameters already counted (a shared parameter counts once, at its first use)."""

    def __init__(self, gm: fx.GraphModule, param_names: dict[int, str]) -> None:
        self.names = param_names
        self.used: set[str] = set()
        self.by_storage: dict[int, tuple[torch.Tensor, bool]] = {}
        for tensor, is_param in module_tensors(gm):
            self.by_storage.setdefault(storage_key(tensor), (tensor, is_param))

    def account(self, tensors: list[tuple[torch.Tensor, bool]]) -> tuple[int, int, int]:
        """``(params, param_bytes, weight_bytes)`` of a node reading ``tensors``
        (``(tensor, is_parameter)``); parameters count at their first use."""
        params = param_bytes = weight_bytes = 0
        for tensor, is_param in {id(t): (t, p) for t, p in tensors}.values():
            nbytes = tensor.numel() * tensor.element_size()
            weight_bytes += nbytes
            name = self.names.get(id(tensor))
            if is_param and name is not None and name not in self.used:
                self.used.add(name)
                params += tensor.numel()
                param_bytes += nbytes
        return params, param_bytes, weight_bytes


@dataclass(frozen=True)
class ParameterTotals:
    """The model's parameters and buffers, counted once each."""

    params: int
    """Unique parameters (packed quantized weights included)."""
    trainable_params: int
    """Of those, the ones with ``requires_grad``."""
    param_bytes: int
    """Bytes of all unique parameters."""
    buffer_bytes: int
    """Bytes of all unique buffers."""
    unused_params: tuple[str, ...]
    """Names of the parameters no node reads."""
    unused_param_count: int
    """Elements of those."""


@dataclass(frozen=True)
class NamedWeights:
    """A model's parameters and buffers by qualified name (each tensor once), outside
    excluded modules: one walk of the module tree for every total taken of them."""

    parameters: tuple[tuple[str, torch.Tensor], ...]
    buffers: tuple[tuple[str, torch.Tensor], ...]

    @classmethod
    def of(cls, model: nn.Module, excluded: Callable[[str], bool]) -> "NamedWeights":
        return cls(tuple((n, p) for n, p in named_tensors_of(model, "_parameters") if not excluded(n)),
                   tuple((n, b) for n, b in named_tensors_of(model, "_buffers") if not excluded(n)))


def parameter_totals(weights: NamedWeights, used: set[str], excluded: Callable[[str], bool],
                     stand_ins: dict[str, StandIn]) -> ParameterTotals:
    """Totals over the parameters in ``weights``; ``used`` names the ones some node reads;
    quantized stand-ins (outside excluded modules) count their packed weights at their real size."""
    params = trainable = param_bytes = unused_count = 0
    unused: list[str] = []
    for path, replacement in stand_ins.items():  # packed weights are not nn.Parameters
        if not excluded(path):
            params += replacement.numel
            param_bytes += replacement.nbytes
    for name, p in weights.parameters:
        params += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        param_bytes += p.numel() * p.element_size()
        if name not in used:
            unused.append(name)
            unused_count += p.numel()
    buffer_bytes = sum(b.numel() * b.element_size() for name, b in weights.buffers)
    return ParameterTotals(params, trainable, param_bytes, buffer_bytes, tuple(unused), unused_count)


def weight_memory(weights: NamedWeights, dtype: torch.dtype | None, excluded: Callable[[str], bool],
                  stand_ins: dict[str, StandIn]) -> int:
    """Bytes of all parameters and buffers in ``weights`` (floating-point ones at ``dtype``
    when given) and of stand-ins' packed weights outside excluded modules."""
    unique = {id(t): t for name, t in (*weights.parameters, *weights.buffers)}
    return sum(
        t.numel() * (dtype.itemsize if dtype is not None and t.dtype.is_floating_point else t.element_size())
        for t in unique.values()
    ) + sum(s.nbytes for path, s in stand_ins.items() if not excluded(path))  # packed weights, at real size


def real_weight_sizes(nodes: list[NodeCost], stand_ins: dict[str, StandIn]) -> list[NodeCost]:
    """Rows of quantized modules read their real (int8) weights, not the float stand-in's."""
    if not stand_ins:
        return nodes
    real = {path: s.nbytes for path, s in stand_ins.items()}
    return [dataclasses.replace(n, weight_bytes=real[n.module_path], param_bytes=real[n.module_path] if n.params else 0)
            if n.module_path in real and n.weight_bytes else n for n in nodes]  # one weight-reading node per module
