"""Functions the runnable graphs fxcost builds call at run time (graph node targets).

A graph replayed from captured code (see :mod:`fxcost._replay`) carries the sizes that code
computed from the example input as constants, so it checks its inputs against the example's
(:func:`expect_input`, :func:`expect_constant`) and rebuilds structured return values
(:func:`rebuild_output`) from their tensors.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.fx

from ._compat import pytree
from ._errors import InvalidInputError


def expect_input(value: Any, shape: tuple, dtype: torch.dtype, name: str) -> Any:
    """``value``, after checking it is a tensor of ``shape`` and ``dtype`` (what the graph
    was built for)."""
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape) or value.dtype != dtype:
        got = (f"a {tuple(value.shape)} {value.dtype} tensor" if isinstance(value, torch.Tensor)
               else f"{type(value).__name__} {value!r}")
        raise InvalidInputError(
            f"input '{name}' is {got}, but this graph was built for a {tuple(shape)} {dtype} tensor: code fxcost "
            "captured computed sizes from the example input; build the graph again with an example of this shape")
    return value


@torch.fx.node.has_side_effect
def expect_constant(value: Any, expected: Any, name: str) -> None:
    """Check that a non-tensor input has the value the graph was built for."""
    if value is not expected and value != expected:
        raise InvalidInputError(
            f"input '{name}' is {value!r}, but this graph was built for {name}={expected!r}: the code fxcost "
            "captured followed that value; build the graph again with an example giving this value")


@functools.lru_cache(maxsize=None)
def _spec(dumped: str) -> Any:
    return pytree.treespec_loads(dumped)


def rebuild_output(dumped_spec: str, *leaves: Any) -> Any:
    """The structured value (tuple, dict, a model-output class...) of the serialised pytree
    spec ``dumped_spec`` with ``leaves``."""
    return pytree.tree_unflatten(list(leaves), _spec(dumped_spec))


def dump_spec(spec: Any) -> str | None:
    """``spec`` serialised for :func:`rebuild_output` (None if a type in it cannot be)."""
    try:
        dumped = pytree.treespec_dumps(spec)
        _spec(dumped)
    except Exception:  # noqa: BLE001 - a type pytree cannot serialise: the caller says why it gives up
        return None
    return dumped
