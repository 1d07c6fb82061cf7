"""Convolutions and pools evaluated on one spatial patch of their input.

Each is a subclass of the torch module it stands for (so cost rules and memory options see a
``Conv2d``/``MaxPool2d``/``AvgPool2d``), shares that module's parameters, and takes the
padding as an argument: ``forward(x, pads)`` pads the patch only where it touches the border
of the whole feature map (``pads = (left, right, top, bottom)`` as in ``F.pad``) and then
slides the window without padding, so a patch computes exactly the outputs of the whole map
at its position. ``forward(x)`` without ``pads`` is the original module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_MODULE_STATE = frozenset(vars(nn.Module()))  # what nn.Module.__init__ sets: hooks, parameters...


def _adopt(cls: type[nn.Module], original: nn.Module) -> nn.Module:
    """An instance of ``cls`` with ``original``'s settings and the very same parameters and
    buffers (``original`` is not modified; its hooks are not carried over)."""
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    for name, value in vars(original).items():
        if name not in _MODULE_STATE:
            object.__setattr__(module, name, value)
    module.training = original.training
    for name, parameter in original.named_parameters(recurse=False):
        module.register_parameter(name, parameter)
    if getattr(original, "bias", False) is None:
        module.register_parameter("bias", None)
    for name, buffer in original.named_buffers(recurse=False):
        module.register_buffer(name, buffer)
    return module


def _pad(x: torch.Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    return F.pad(x, pads, value=value) if any(pads) else x


class PatchConv2d(nn.Conv2d):
    """``nn.Conv2d`` on one patch: zero padding only at the feature map's border."""

    @classmethod
    def of(cls, conv: nn.Conv2d) -> "PatchConv2d":
        """The patch version of ``conv``, sharing its weight and bias."""
        return _adopt(cls, conv)

    def forward(self, x: torch.Tensor, pads: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        if pads is None:
            return super().forward(x)
        return F.conv2d(_pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class PatchMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` on one patch: ``-inf`` padding only at the feature map's border
    (also where a ``ceil_mode`` window runs past it)."""

    @classmethod
    def of(cls, pool: nn.MaxPool2d) -> "PatchMaxPool2d":
        """The patch version of ``pool``."""
        return _adopt(cls, pool)

    def forward(self, x: torch.Tensor, pads: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        if pads is None:
            return super().forward(x)
        return F.max_pool2d(_pad(x, pads, float("-inf")), self.kernel_size, self.stride, 0, self.dilation)


class PatchAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` on one patch. Where a window of the patch is cut by the border, the
    divisor of each output position is passed in ``divisor`` as per-row and per-column
    factors (their product is what ``avg_pool2d`` divides by at that position of the whole map)."""

    @classmethod
    def of(cls, pool: nn.AvgPool2d) -> "PatchAvgPool2d":
        """The patch version of ``pool``."""
        return _adopt(cls, pool)

    def forward(self, x: torch.Tensor, pads: tuple[int, int, int, int] | None = None,
                divisor: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> torch.Tensor:
        if pads is None:
            return super().forward(x)
        x = _pad(x, pads)
        if divisor is None:
            return F.avg_pool2d(x, self.kernel_size, self.stride, 0, False, True, self.divisor_override)
        total = F.avg_pool2d(x, self.kernel_size, self.stride, 0, False, True, divisor_override=1)
        rows, cols = divisor
        return total / (x.new_tensor(rows)[:, None] * x.new_tensor(cols)[None, :])
