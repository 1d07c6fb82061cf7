"""Facts about one graph node, each answered in one place: which module it belongs to, what
it calls, the module it runs, the attribute it fetches."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._compat import module_stack

#: ``node.meta`` key of ``(module path, module class name)`` where fxcost sets it itself
#: (the model used as its own leaf; calls recorded inside a module kept whole).
MODULE_KEY = "fxcost_module"

_OPERATORS = frozenset(id(f) for f in vars(operator).values() if callable(f))


def module_of(node: fx.Node, root_type: str = "") -> tuple[str, str]:
    """``(module_path, module_type)`` of the module ``node`` belongs to: the module a
    ``call_module`` node calls, else the innermost module whose forward made the call
    (``''`` and ``root_type`` for the root's own forward; ``('', '')`` for placeholders and
    the output)."""
    if MODULE_KEY in node.meta:
        return node.meta[MODULE_KEY]
    if node.op == "call_module":
        return str(node.target), type(called_module(node)).__name__
    stack = module_stack(node)
    if stack:
        path, cls = next(reversed(stack.values()))
        return path, getattr(cls, "__name__", str(cls))
    if node.op in ("placeholder", "output"):
        return "", ""
    return "", root_type


def called_module(node: fx.Node) -> nn.Module:
    """The module a ``call_module`` node calls (looked up once per graph root)."""
    root = node.graph.owning_module
    cached = node.meta.get(_CALLED_KEY)
    if cached is not None and cached[0] is root:
        return cached[1]
    module = root.get_submodule(str(node.target))
    node.meta[_CALLED_KEY] = (root, module)
    return module


#: ``node.meta`` key caching ``(graph root, module called)`` for :func:`called_module`.
_CALLED_KEY = "fxcost_called"


def remember_called(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> None:
    """Tell :func:`called_module` the module each ``call_module`` node of ``gm`` calls, from
    ``modules`` (path -> module, the tracer's own table), so it need not look them up."""
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = modules.get(node.target)
            if module is not None:
                node.meta[_CALLED_KEY] = (gm, module)


def fetched_attribute(node: fx.Node) -> Any:
    """The value a ``get_attr`` node fetches (None if it is gone)."""
    owner_path, _, name = str(node.target).rpartition(".")
    root = node.graph.owning_module
    owner = root.get_submodule(owner_path) if owner_path else root
    return getattr(owner, name, None)


def describe_target(node: fx.Node) -> tuple[str, str, Any]:
    """``(target, op_type, rule_key)`` of a node: readable names plus the registry key."""
    if node.op == "call_module":
        cls = type(called_module(node))
        return f"{cls.__module__}.{cls.__qualname__}", cls.__name__, cls
    if node.op == "call_function":
        return function_name(node.target), getattr(node.target, "__name__", repr(node.target)), node.target
    if node.op == "call_method":
        return f"Tensor.{node.target}", str(node.target), str(node.target)
    return str(node.target), node.op, None


def function_name(fn: Any) -> str:
    """Qualified name of a function or method as the tables show it (``torch.nn.functional.relu``,
    ``operator.add``, ``Tensor.view``)."""
    if isinstance(fn, str):
        return f"Tensor.{fn}"
    name = getattr(fn, "__name__", repr(fn))
    owner = getattr(fn, "__module__", None) or ("operator" if id(fn) in _OPERATORS else "")
    if owner == "_operator":
        owner = "operator"
    return f"{owner}.{name}" if owner else name


def call_key(func: Any) -> Any:
    """Registry key of a call seen at the torch-function level: the method name for
    ``Tensor`` methods, else the function itself."""
    name = getattr(func, "__name__", None)
    qualname = getattr(func, "__qualname__", "") or ""
    if name and (getattr(torch.Tensor, name, None) is func or qualname.startswith(("TensorBase.", "Tensor."))):
        return name
    return func


# --- what the stages store on each node ----------------------------------------------------

#: The node's output with every tensor as a :class:`TensorMeta` (set by propagation).
VALUE_KEY = "fxcost_value"
#: Bytes by dtype of the storages the node created alive together at its busiest aten op.
INTERNAL_KEY = "fxcost_internal"
#: For a node costed from the torch calls it makes: those calls (``CapturedCall``).
CALLS_KEY = "fxcost_calls"
#: Why a node stopped at a data-dependent op (its figures are lower bounds).
PARTIAL_KEY = "fxcost_partial"
#: Storages the program let go of right after this node ran (eager lifetimes of captured code).
RELEASED_KEY = "fxcost_released"
#: Storages created by captured code that outlive it without being returned (alive to the end).
RETAINED_KEY = "fxcost_retained"
#: What was assumed about tensor values to run this node (see :mod:`fxcost._assume`).
ASSUMPTIONS_KEY = "fxcost_assumptions"
#: On the node ending a module kept whole: the module's qualified class name.
KEPT_WHOLE_KEY = "fxcost_kept_whole"


def value_of(node: fx.Node) -> Any:
    """The node's output, tensors as TensorMeta (None before propagation or if unknown)."""
    return node.meta.get(VALUE_KEY)
#: On every node spliced in for a module kept whole (the calls, the weights they read, the
#: node ending it): the name of the module's node in the traced graph.
REGION_KEY = "fxcost_region"
#: On the node ending a module kept whole: ``(op, target)`` of the module's own call (its
#: arguments are the node's third argument, ``(args, kwargs)``).
REGION_CALL_KEY = "fxcost_region_call"
