"""Turning the user's example input into fake tensors bound to the graph's placeholders."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from ._errors import InvalidInputError
from ._fake_model import fake_like


def _is_shape(value: Any) -> bool:
    return isinstance(value, torch.Size) or (
        isinstance(value, (tuple, list)) and len(value) > 0 and all(type(v) is int for v in value)
    )


def split_example_input(example_input: Any) -> tuple[tuple, dict]:
    """``example_input`` as positional and keyword arguments.

    A tensor is one positional argument; a tuple/list is the positional arguments; a dict
    is keyword arguments; a shape (``(1, 3, 224, 224)`` or ``torch.Size``) stands for a
    float32 tensor of that shape, also as an element of a tuple/list or a dict value (and a
    ``torch.Size`` anywhere, e.g. in a list argument).
    """
    if example_input is None:
        raise InvalidInputError("example_input is None: pass a tensor, a shape such as (1, 3, 224, 224), a tuple of arguments or a dict of keyword arguments")
    if isinstance(example_input, torch.Tensor) or _is_shape(example_input):
        return (example_input,), {}
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input), {}
    if isinstance(example_input, dict):
        for key in example_input:
            if not isinstance(key, str):
                raise InvalidInputError(f"keyword-argument dict has a non-string key {key!r}: use the forward() parameter names as keys")
        return (), dict(example_input)
    raise InvalidInputError(
        f"example_input of type {type(example_input).__name__} is not supported: pass a tensor, a shape "
        "such as (1, 3, 224, 224), a tuple of positional arguments or a dict of keyword arguments"
    )


def input_device(args: tuple, kwargs: dict) -> torch.device:
    """The device the analysis runs on: the first input tensor's, or CPU for ``meta``/none."""
    for leaf in pytree.tree_leaves((args, kwargs)):
        if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta":
            return leaf.device
    return torch.device("cpu")


def fake_arguments(args: tuple, kwargs: dict, device: torch.device) -> tuple[tuple, dict]:
    """Replace every tensor (and every shape shorthand at the top level) by a fake tensor.

    Call inside the active ``FakeTensorMode``. The inputs' data are never read.
    """
    def convert(value: Any) -> Any:
        if isinstance(value, torch.Size):  # unambiguous at any depth, unlike a tuple of ints
            return torch.empty(tuple(value), dtype=torch.float32, device=device)
        if isinstance(value, torch.Tensor):
            if value.is_quantized:  # what a quantized model receives: only its shape matters
                return torch.empty(tuple(value.shape), dtype=torch.float32, device=device)
            return fake_like(value, device)
        return value

    def top(value: Any) -> Any:
        if _is_shape(value):
            shape = tuple(value)
            if any(size < 0 for size in shape):
                raise InvalidInputError(f"input shape {shape} has a negative size")
            return torch.empty(shape, dtype=torch.float32, device=device)
        return pytree.tree_map(convert, value, is_leaf=lambda v: isinstance(v, torch.Size))

    return tuple(top(a) for a in args), {k: top(v) for k, v in kwargs.items()}


def bind_placeholders(gm: fx.GraphModule, args: tuple, kwargs: dict, model_name: str,
                      names: list[str] | None = None) -> list[Any]:
    """Order ``args``/``kwargs`` as the graph's placeholders, or explain the mismatch.

    ``names`` are the forward's parameter names, one per placeholder (fx may rename
    placeholders, e.g. for concrete arguments); by default the placeholders' own names.
    """
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    if names is None or len(names) != len(placeholders):
        names = [str(node.target).lstrip("*") for node in placeholders]
    if len(args) > len(placeholders):
        raise InvalidInputError(
            f"{model_name}.forward() takes {len(placeholders)} input(s) ({', '.join(names) or 'none'}) "
            f"but the example input has {len(args)} positional argument(s)"
        )
    unknown = sorted(set(kwargs) - set(names[len(args):]))
    if unknown:
        raise InvalidInputError(
            f"{model_name}.forward() has no parameter {', '.join(map(repr, unknown))}; "
            f"its inputs are: {', '.join(names) or 'none'}"
        )
    bound = list(args)
    for node, name in zip(placeholders[len(args):], names[len(args):]):
        if name in kwargs:
            bound.append(kwargs[name])
        elif node.args:
            bound.append(node.args[0])
        else:
            raise InvalidInputError(
                f"{model_name}.forward() needs argument '{name}', which the example input does not give"
            )
    return bound
