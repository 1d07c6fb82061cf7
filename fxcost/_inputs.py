"""Turning the user's example input into fake tensors bound to the graph's placeholders."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.fx as fx

from ._compat import has_forward_hooks, pytree, storage_key, take_forward_hooks
from ._errors import InvalidInputError


def fake_like(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor with ``tensor``'s sizes, strides and dtype on ``device``; data never read.

    Must be called inside the active ``FakeTensorMode`` so the result is fake.
    """
    return torch.empty_strided(tuple(tensor.shape), tuple(tensor.stride()), dtype=tensor.dtype, device=device)


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

    Call inside the active ``FakeTensorMode``. The inputs' data are never read. Tensors that
    share a storage (the same tensor passed twice, views of one tensor) share one fake storage.
    """
    tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and not t.is_quantized]
    counts: dict[int, int] = {}
    for tensor in {id(t): t for t in tensors}.values():
        counts[storage_key(tensor)] = counts.get(storage_key(tensor), 0) + 1
    bases: dict[int, torch.Tensor] = {}
    made: dict[int, torch.Tensor] = {}  # the same tensor passed twice is one fake tensor

    def convert(value: Any) -> Any:
        if isinstance(value, torch.Size):  # unambiguous at any depth, unlike a tuple of ints
            return torch.empty(tuple(value), dtype=torch.float32, device=device)
        if isinstance(value, torch.Tensor):
            if value.is_quantized:  # what a quantized model receives: only its shape matters
                return torch.empty(tuple(value.shape), dtype=torch.float32, device=device)
            if id(value) in made:
                return made[id(value)]
            key = storage_key(value)
            if counts.get(key, 0) < 2:
                made[id(value)] = fake_like(value, device)
            else:
                if key not in bases:
                    bases[key] = torch.empty(value.untyped_storage().nbytes(), dtype=torch.uint8, device=device)
                made[id(value)] = torch.empty(0, dtype=value.dtype, device=device).set_(
                    bases[key].untyped_storage(), value.storage_offset(), value.shape, value.stride())
            return made[id(value)]
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


def forward_parameters(module: torch.nn.Module) -> list:
    """The ``inspect.Parameter``s of ``module.forward`` ([] when it has no signature)."""
    try:
        return list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return []


def parameter_names(module: torch.nn.Module) -> list[str] | None:
    """Names of ``module.forward``'s parameters, ``*args``/``**kwargs`` left out."""
    parameters = forward_parameters(module)
    if not parameters and not callable(getattr(module, "forward", None)):
        return None
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def constant_arguments(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Forward parameters the example input gives as plain Python values (ints, floats,
    bools, strings, None) or leaves at a default of None/True/False: traced as those
    constants, so ``range(n)`` or ``if mask is not None:`` follow the real call."""
    if isinstance(module, fx.GraphModule):
        return {}
    constants = {}
    for index, parameter in enumerate(forward_parameters(module)):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if index < len(args) or parameter.name in kwargs:
            value = args[index] if index < len(args) else kwargs[parameter.name]
            if value is None or isinstance(value, (bool, int, float, str)):
                constants[parameter.name] = value
        elif parameter.default is not parameter.empty and (parameter.default is None or isinstance(parameter.default, bool)):
            constants[parameter.name] = parameter.default
    return constants


class _Captured(Exception):
    pass


def inputs_of(root: torch.nn.Module, path: str, args: tuple, kwargs: dict, fake_mode) -> tuple[tuple, dict]:
    """The (fake) arguments module ``path`` of ``root`` receives on its first call while
    ``root`` runs on ``args``/``kwargs``, as positional and keyword arguments of its forward."""
    target = root.get_submodule(path)
    captured: list[tuple[tuple, dict]] = []

    def hook(module, hook_args, hook_kwargs):
        captured.append((hook_args, hook_kwargs))
        raise _Captured

    handle = target.register_forward_pre_hook(hook, with_kwargs=True)  # on the mirror, not the user's model
    try:
        with fake_mode, torch.no_grad():
            root(*args, **kwargs)
    except _Captured:
        pass
    except Exception as error:  # noqa: BLE001 - translated into one clear error
        raise InvalidInputError(f"running the model to find the input of {path!r} failed: "
                                f"{type(error).__name__}: {error}") from error
    finally:
        handle.remove()
    if not captured:
        raise InvalidInputError(f"module {path!r} is never called by the model's forward on this input")
    return captured[0]


def run_with_hooks(module: torch.nn.Module, forward: Any, pre: list, post: list, args: tuple, kwargs: dict) -> Any:
    """``forward(*args, **kwargs)`` between ``module``'s forward pre-hooks and forward hooks,
    as ``nn.Module.__call__`` runs them (``[(hook, with_kwargs)]``)."""
    for hook, with_kwargs in pre:
        if with_kwargs:
            result = hook(module, args, kwargs)
            if result is not None:
                args, kwargs = result
        else:
            result = hook(module, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
    output = forward(*args, **kwargs)
    for hook, with_kwargs in post:
        result = hook(module, args, kwargs, output) if with_kwargs else hook(module, args, output)
        if result is not None:
            output = result
    return output


def explicit_forward(root: torch.nn.Module, args: tuple, kwargs: dict, name: str,
                     traced: bool = True) -> tuple[tuple, dict]:
    """Give the mirror ``root`` a forward with one named parameter per tensor argument the
    example input passes, when its own forward cannot be used as it is: it takes
    ``*args``/``**kwargs`` (the example's extra positional arguments become ``args_0``,
    ``args_1``..., its unknown keys go to ``**kwargs``), or, when ``root`` is ``traced``
    (fx traces the class's forward, not ``__call__``), it was assigned per instance or the
    model has forward hooks (then run around it, as ``__call__`` would). Non-tensor arguments
    become constants. Returns the arguments for the new forward (all by keyword); the
    original ones when nothing needs changing. ``root`` must be fxcost's own mirror."""
    forward = root.forward
    parameters = forward_parameters(root)
    variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)
    if not (variadic or (traced and ("forward" in root.__dict__ or has_forward_hooks(root)))):
        return args, kwargs
    try:
        bound = inspect.signature(forward).bind(*args, **kwargs)
    except TypeError as error:
        names = ", ".join(p.name for p in parameters) or "none"
        raise InvalidInputError(f"{name}.forward() does not accept the example input ({error}); "
                                f"its parameters are: {names}") from None
    positional: list[tuple[str, Any]] = []  # (placeholder name, value), passed in order
    keywords: dict[str, tuple[str, Any]] = {}  # keyword -> (placeholder name, value)
    in_order = True  # every earlier parameter was given: this one can go by position (as callers do)
    for parameter in parameters:
        if parameter.name not in bound.arguments:
            in_order = False  # left to its default
            continue
        value = bound.arguments[parameter.name]
        if parameter.kind is parameter.VAR_POSITIONAL:
            positional += [(f"{parameter.name}_{i}", v) for i, v in enumerate(value)]
        elif parameter.kind is parameter.VAR_KEYWORD:
            keywords.update({key: (key, v) for key, v in value.items()})
        elif parameter.kind is parameter.KEYWORD_ONLY or not in_order:
            keywords[parameter.name] = (parameter.name, value)
        else:
            positional.append((parameter.name, value))
    takes_tensors = lambda v: any(isinstance(t, torch.Tensor) for t in pytree.tree_leaves(v))  # noqa: E731
    inputs = [(n, v) for n, v in (*positional, *keywords.values()) if takes_tensors(v)]
    constants = {n: v for n, v in (*positional, *keywords.values()) if not takes_tensors(v)}
    source = (f"def forward(self, {', '.join(n for n, _ in inputs)}):\n"
              f"    given = {{{', '.join(f'{n!r}: {n}' for n, _ in inputs)}}}\n"
              f"    return _call(self, given)\n")
    pre, post = take_forward_hooks(root) if traced else ([], [])
    original = root.__dict__.pop("forward", None) or type(root).forward.__get__(root)

    def _call(module, given):
        values = {**constants, **given}
        call_args = tuple(values[n] for n, _ in positional)
        call_kwargs = {key: values[n] for key, (n, _) in keywords.items()}
        return run_with_hooks(module, original, pre, post, call_args, call_kwargs)

    namespace: dict[str, Any] = {}
    exec(compile(source, f"<fxcost forward of {name}>", "exec"), {"_call": _call}, namespace)  # noqa: S102
    cls = type(root)
    root.__class__ = type(cls.__name__, (cls,), {"forward": namespace["forward"], "__module__": cls.__module__,
                                                 "__qualname__": cls.__qualname__})
    return (), {n: v for n, v in inputs}
