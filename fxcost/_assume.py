"""Completing the analysis of value-dependent code by stated assumptions.

Fake tensors have shapes but no values. Where a model reads a value (``if x.sum() > 0:``,
``n = int(mask.sum())``) or calls an op whose output size depends on values (``nonzero``,
boolean-mask indexing, ``unique``, NMS), fxcost assumes, states the assumption, and goes on:

================================  ===============================================================
what the code does                assumed
================================  ===============================================================
``bool(t)``, ``if t:``            ``True`` (the branch is taken)
``t.item()``, ``int(t)``          bool tensors ``True``; integers: the input size (the largest
                                  size of the model's example inputs); floats ``1.0``
``nonzero``/``argwhere``,         every element is selected: the upper bound of the output size
``torch.where(cond)``,
``masked_select``, ``x[mask]``
``unique``                        one value (every element equal): code that loops over the
                                  values and selects each group then does its per-group work
                                  once on everything, the most that work can be
``bincount``                      ``max(minlength, input size)`` bins
a copy into a slice (``x[a:b] =``)  skipped when bounds and value, both from assumed values,
whose shapes disagree             disagree (it moves data, no arithmetic)
a split whose sizes, from assumed   the dimension split evenly into as many parts (a mixture of
values, do not add up             experts' token counts: its experts' total work is exact)
torchvision ``nms``               every box is kept (the model's own limits, e.g. a detector's
                                  ``post_nms_top_n`` or ``detections_per_img``, then apply)
================================  ===============================================================

``assume={"mynet.py:9": False}`` (the call site, ``file:line``) or a callable overrides a
value; ``strict=True`` raises the clear error instead of assuming.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from ._errors import InvalidInputError, ShapePropagationError

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_FXCOST_DIR = os.path.dirname(__file__) + os.sep
#: A branch assumed taken this many times at one site is a loop that would never end.
LOOP_LIMIT = 1000

#: The keyword names of a split's sizes across ``torch.split``, ``Tensor.split`` and ``split_with_sizes``.
SPLIT_SIZE_NAMES = ("split_size", "split_sizes", "split_size_or_sections")

_VALUE_READS = {"__bool__", "item", "__int__", "__index__", "__float__", "tolist"}


@dataclass(frozen=True)
class Site:
    """Where the code read a value or made a value-dependent call."""

    location: str
    """``file:line`` of the innermost frame outside torch and fxcost (or the graph node)."""
    code: str
    """That line of source."""
    kind: str
    """``branch`` (bool), ``value`` (item/int/float) or ``size`` (an output size)."""
    default: Any
    """What fxcost assumes unless told otherwise."""


def call_site() -> tuple[str, str]:
    """``(file:line, code)`` of the innermost Python frame outside torch and fxcost."""
    import linecache

    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not (path.startswith(_TORCH_DIR) or path.startswith(_FXCOST_DIR) or frame.f_code.co_filename.startswith("<")):
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            return f"{frame.f_code.co_filename}:{frame.f_lineno}", line
        frame = frame.f_back
    return "", ""


class Assumer:
    """Decides, and remembers, every value-dependent assumption of one analysis."""

    def __init__(self, assume: Mapping[str, Any] | Callable[[Site], Any] | None, input_size: int) -> None:
        self.assume = assume
        self.input_size = input_size
        self.counts: dict[tuple[str, str], int] = {}
        self.made: dict[tuple[str, str], tuple[Site, Any, str]] = {}  # (location, what) -> (site, value, what)

    # --- decisions ---------------------------------------------------------------------
    def _decide(self, site: Site) -> Any:
        if callable(self.assume):
            chosen = self.assume(site)
            return site.default if chosen is None else chosen
        for key, value in (self.assume or {}).items():
            if site.location == key or site.location.endswith(os.sep + key) or site.location.endswith("/" + key):
                return value
        return site.default

    def _note(self, site: Site, value: Any, what: str) -> None:
        key = (site.location, what)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.made.setdefault(key, (site, value, what))
        if site.kind == "branch" and value and self.counts[key] > LOOP_LIMIT:
            raise ShapePropagationError(
                f"the value-dependent branch at {site.location} ({site.code}) was assumed True {LOOP_LIMIT} times: "
                f"a loop that only ends on tensor values never ends under that assumption\n"
                f"  fix: pass assume={{{os.path.basename(site.location)!r}: False}} to analyze() "
                "(or a value that ends the loop)")

    # --- value reads -------------------------------------------------------------------
    def handles_read(self, func: Any) -> bool:
        """Whether ``func`` reads a tensor's value (``bool``, ``item``...)."""
        return getattr(func, "__name__", None) in _VALUE_READS

    def read(self, func: Any, tensor: torch.Tensor, where: tuple[str, str]) -> tuple[Any, str]:
        """The assumed result of ``func(tensor)`` and what was assumed, in words (``func``
        None: a value read inside an op, e.g. a tensor used as a Python index: by dtype)."""
        name = func.__name__ if func is not None else None
        if name == "__bool__" or tensor.dtype is torch.bool:  # (name None: a read inside an op, by dtype)
            kind, default = "branch", True
        elif name in ("__int__", "__index__") or not tensor.dtype.is_floating_point:
            kind, default = "value", self.input_size
        else:
            kind, default = "value", 1.0
        site = Site(where[0], where[1], kind, default)
        value = self._decide(site)
        if name == "__bool__":
            value = bool(value)
        elif name in ("__int__", "__index__"):
            value = int(value)
        elif name == "__float__":
            value = float(value)
        if name == "tolist":
            value = _nested(tensor.shape, value)
        what = f"{_READ_WORDS.get(name, name)} of a {tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')} " \
               f"tensor taken as {value!r}"
        self._note(site, value, what)
        return value, what

    def skipped(self, reason: str, where: tuple[str, str]) -> str:
        """Note a copy skipped because values assumed before make its shapes disagree."""
        what = f"copy skipped: the slice and the value copied into it disagree under values assumed before ({reason})"
        self._note(Site(where[0], where[1], "skip", None), None, what)
        return what

    def balanced_split(self, key: str, args: tuple, kwargs: dict, where: tuple[str, str]) -> tuple[list[int], str] | None:
        """Sizes for a split whose sizes, from values assumed before, do not add up to the
        dimension split (a mixture of experts splitting its tokens by the counts its router
        chose): the dimension split evenly into as many parts. Work that is linear in each
        part's size (each expert's matmuls) then adds up to exactly what any real routing
        costs. None when the call is not such a split."""
        sizes = args[1] if len(args) > 1 else next((kwargs[k] for k in SPLIT_SIZE_NAMES if k in kwargs), None)
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        if not isinstance(args[0], torch.Tensor) or not isinstance(sizes, (list, tuple)) or not sizes \
                or not all(isinstance(size, int) for size in sizes) or not isinstance(dim, int):
            return None
        total = args[0].shape[dim]
        if not isinstance(total, int) or sum(sizes) == total:
            return None
        parts = len(sizes)
        balanced = [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
        what = (f"split sizes {list(sizes)} (from values assumed before) do not add up to {total}: "
                f"split evenly into {parts} parts of {balanced[0]}{'' if total % parts == 0 else ' or fewer'}")
        self._note(Site(where[0], where[1], "size", None), balanced, what)
        return balanced, what

    # --- value-dependent sizes -----------------------------------------------------------
    def sized(self, func: Any, args: tuple, kwargs: dict, where: tuple[str, str]) -> tuple[Any, str] | None:
        """The upper-bound result of an aten op whose output size depends on values, or None
        if fxcost knows no bound for it."""
        substitute = _substitutes().get(func)
        result = substitute(self, *args, **kwargs) if substitute is not None else None
        if result is None:
            return None
        result, what = result
        site = Site(where[0], where[1], "size", "upper bound")
        if self.assume is not None and not callable(self.assume) and self._decide(site) != "upper bound":
            raise InvalidInputError(f"assume={{...}} gives {self._decide(site)!r} for {site.location}, which is a "
                                    "value-dependent size: fxcost can only assume its upper bound there")
        self._note(site, "upper bound", what)
        return result, what


_READ_WORDS = {"__bool__": "bool()", "item": ".item()", "__int__": "int()", "__index__": "an index",
               "__float__": "float()", "tolist": ".tolist()", None: "the value"}


def _nested(shape: torch.Size, value: Any) -> Any:
    if not shape:
        return value
    return [_nested(shape[1:], value) for _ in range(shape[0])]


# --- substitutes: every element selected (aten ops) ----------------------------------------

def _all_positions(mask: torch.Tensor) -> list[torch.Tensor]:
    """Index tensors selecting every position of ``mask`` (what ``mask.nonzero(as_tuple=True)``
    gives when all of it is True)."""
    flat = torch.arange(mask.numel(), device=mask.device)
    indices = []
    for size in reversed(mask.shape):
        indices.append(flat % size)
        flat = flat // size
    return list(reversed(indices))


def _nonzero(assumer: Assumer, input: torch.Tensor):
    positions = _all_positions(input)
    result = torch.stack(positions, dim=1) if positions else torch.zeros(1, 0, dtype=torch.long, device=input.device)
    return result, f"nonzero selects all {input.numel()} elements"


def _masked_select(assumer: Assumer, input: torch.Tensor, mask: torch.Tensor):
    count = math.prod(torch.broadcast_shapes(input.shape, mask.shape))
    return torch.empty(count, dtype=input.dtype, device=input.device), f"masked_select keeps all {count} elements"


def _index(assumer: Assumer, input: torch.Tensor, indices: list):
    converted: list = []
    selected = []
    for index in indices:
        if isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8):
            converted.extend(_all_positions(index))
            selected.append(str(index.numel()))
        else:
            converted.append(index)
    if not selected:
        return None
    return torch.ops.aten.index.Tensor(input, converted), f"a boolean mask selects all {' x '.join(selected)} elements"


def _unique_outputs(input: torch.Tensor, shape: tuple, return_inverse: bool, return_counts: bool, inverse_shape):
    return (torch.empty(shape, dtype=input.dtype, device=input.device),
            torch.empty(inverse_shape if return_inverse else (0,), dtype=torch.long, device=input.device),
            torch.empty(shape[0] if return_counts and len(shape) == 1 else (1 if return_counts else 0),
                        dtype=torch.long, device=input.device))


def _unique2(assumer: Assumer, input: torch.Tensor, sorted: bool = True, return_inverse: bool = False,
             return_counts: bool = False):
    return (_unique_outputs(input, (1,), return_inverse, return_counts, input.shape),
            f"unique finds one value in all {input.numel()} elements")


def _unique_dim(assumer: Assumer, input: torch.Tensor, dim: int, sorted: bool = True, return_inverse: bool = False,
                return_counts: bool = False):
    shape = (*input.shape[:dim], 1, *input.shape[dim + 1:])
    outputs = (torch.empty(shape, dtype=input.dtype, device=input.device),
               torch.empty((input.shape[dim],) if return_inverse else (0,), dtype=torch.long, device=input.device),
               torch.empty(1 if return_counts else 0, dtype=torch.long, device=input.device))
    return outputs, f"unique finds one value in all {input.shape[dim]} slices"


def _unique_consecutive(assumer: Assumer, input: torch.Tensor, return_inverse: bool = False,
                        return_counts: bool = False, dim: int | None = None):
    if dim is not None:
        return _unique_dim(assumer, input, dim, True, return_inverse, return_counts)
    return _unique2(assumer, input, True, return_inverse, return_counts)


def _bincount(assumer: Assumer, input: torch.Tensor, weights: torch.Tensor | None = None, minlength: int = 0):
    bins = max(minlength, assumer.input_size)
    dtype = weights.dtype if weights is not None else torch.long
    return torch.zeros(bins, dtype=dtype, device=input.device), f"bincount has {bins} bins (the input size)"


def _nms(assumer: Assumer, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float):
    count = boxes.shape[0]
    return torch.arange(count, device=boxes.device), f"NMS keeps all {count} boxes"


_TABLE: dict[Any, Callable] | None = None


def warns_before_failing(func: Any) -> bool:
    """Whether ``func``'s fake kernel warns before it fails on a value-dependent size
    (torchvision's NMS), so the warning should be silenced: fxcost assumes instead."""
    return _substitutes().get(func) is _nms


def _substitutes() -> dict[Any, Callable]:
    global _TABLE
    if _TABLE is None:
        aten = torch.ops.aten
        table: dict[Any, Callable] = {
            aten.nonzero.default: _nonzero, aten.masked_select.default: _masked_select, aten.index.Tensor: _index,
            aten._unique2.default: _unique2, aten.unique_dim.default: _unique_dim,
            aten.unique_consecutive.default: _unique_consecutive, aten.bincount.default: _bincount,
        }
        try:
            import torchvision  # noqa: F401 - registers torch.ops.torchvision

            table[torch.ops.torchvision.nms.default] = _nms
        except (ImportError, AttributeError):
            pass
        _TABLE = table
    return _TABLE
