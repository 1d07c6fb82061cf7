"""Converted quantized modules (``torch.ao.nn.quantized``): their packed int8 weights have no
fake-tensor kernels, so each is costed as the float module it computes (same shapes and
hyper-parameters, built on the meta device), and its weights are counted at their real size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StandIn:
    """A float module standing in for a quantized one."""

    module: nn.Module
    """The float module (parameters on the meta device)."""
    original: str
    """Qualified class name of the quantized module."""
    weights: tuple[tuple[str, int, int], ...]
    """``(name, elements, bytes)`` of the quantized module's own weights (int8 weight, float bias)."""

    @property
    def numel(self) -> int:
        """Elements of the quantized module's weights."""
        return sum(numel for _, numel, _ in self.weights)

    @property
    def nbytes(self) -> int:
        """Bytes of the quantized module's weights, at their real size."""
        return sum(nbytes for _, _, nbytes in self.weights)


def _with_relu(cls: type[nn.Module]) -> type[nn.Module]:
    """``cls`` followed by ReLU (the float meaning of intrinsic ConvReLU/LinearReLU); defined
    outside torch.nn, so tracing goes through it and its ops keep the module's own path."""

    def forward(self, x):
        return torch.relu(cls.forward(self, x))

    return type(f"{cls.__name__}ReLU", (cls,), {"forward": forward, "__module__": __name__})


_RELU_VARIANTS = {cls: _with_relu(cls) for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)}


def is_quantized_module(module: nn.Module) -> bool:
    """Whether ``module`` is a converted quantized module (FloatFunctional, a float helper
    that lives beside them, is not)."""
    return type(module).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")) and \
        type(module).__name__ != "FloatFunctional"


def _weights(module: nn.Module) -> tuple[tuple[str, int, int], ...]:
    found = []
    for name in ("weight", "bias"):
        getter = getattr(module, name, None)
        value = getter() if callable(getter) else getter
        if isinstance(value, torch.Tensor):
            found.append((name, value.numel(), value.numel() * value.element_size()))
    return tuple(found)


def stand_in(module: nn.Module) -> StandIn | None:
    """The float equivalent of a quantized module, or None when it is not one fxcost knows."""
    import torch.ao.nn.quantized as nnq

    name = type(module).__name__
    original = f"{type(module).__module__}.{type(module).__qualname__}"
    with torch.device("meta"):
        if isinstance(module, (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)):
            cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(module.kernel_size)]
            cls = _RELU_VARIANTS[cls] if name.startswith("ConvReLU") else cls
            float_module = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                               module.padding, module.dilation, module.groups, bias=module.bias() is not None,
                               padding_mode=module.padding_mode)
        elif isinstance(module, nnq.Linear):
            cls = _RELU_VARIANTS[nn.Linear] if name.startswith("LinearReLU") else nn.Linear
            float_module = cls(module.in_features, module.out_features, bias=module.bias() is not None)
        elif isinstance(module, (nnq.Quantize, nnq.DeQuantize)):
            float_module = nn.Identity()
        elif isinstance(module, nnq.QFunctional):
            float_module = nnq.FloatFunctional()
        elif isinstance(module, nnq.Dropout):
            float_module = nn.Dropout(module.p)
        elif isinstance(module, nnq.ReLU6):
            float_module = nn.ReLU6()
        elif isinstance(module, nnq.Hardswish):
            float_module = nn.Hardswish()
        elif isinstance(module, nnq.BatchNorm2d):
            float_module = nn.BatchNorm2d(module.num_features)
        else:
            return None
    float_module.train(module.training)
    return StandIn(float_module, original, _weights(module))
