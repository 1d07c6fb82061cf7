"""Symbolic tracing with ``torch.fx``: standard ``torch.nn`` modules stay leaves."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import os
import traceback
from typing import Any, Iterable

import torch
import torch.fx as fx
import torch.utils.checkpoint
from torch import nn

from ._compat import LeanGraph, make_lean, pytree
from ._errors import TraceError
from ._graph import MODULE_KEY, remember_called

#: ``torch.nn`` modules that are compositions of other modules: traced through, so
#: their parts are costed by the parts' own rules.
TRACE_INTO: tuple[type[nn.Module], ...] = (
    nn.Sequential, nn.ModuleList, nn.ModuleDict,
    nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder,
    nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
)

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_FXCOST_DIR = os.path.dirname(__file__) + os.sep


#: Functions fx keeps as one call instead of tracing through: what they do at run time
#: (recomputing the forward in the backward) is not what tracing them would record.
KEPT_CALLS = (torch.utils.checkpoint.checkpoint,)


class CostTracer(fx.Tracer):
    """``fx.Tracer`` keeping every ``torch.nn`` module (and ``leaf_modules``) as a leaf, and
    calls of :data:`KEPT_CALLS` (activation checkpointing) as one call each."""

    def __init__(self, leaf_modules: Iterable[type[nn.Module]] = (), leaf_paths: Iterable[str] = (),
                 record_stack_traces: bool = False) -> None:
        super().__init__(param_shapes_constant=True, autowrap_functions=KEPT_CALLS, autowrap_modules=(math,))
        self.record_stack_traces = record_stack_traces  # costly: only when an error needs a source line
        self.leaf_types = tuple(leaf_modules)
        self.leaf_paths = set(leaf_paths)
        self.seen: dict[str, nn.Module] = {}  # path -> module, for every module called

    def release(self) -> None:
        """Forget the traced module, its graph and tables: torch's tracer keeps itself in a
        reference cycle (a recursive closure), which would otherwise hold them until the
        cyclic garbage collector runs."""
        self.__dict__.clear()

    def path_of_module(self, mod: nn.Module) -> str:
        path = super().path_of_module(mod)
        self.seen[path] = mod
        return path

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        # ``torch.utils.checkpoint.checkpoint(...)`` reaches the function through its module
        # (the globals fx patches only hold ``checkpoint`` where it was imported by name):
        # while tracing, that module attribute records one call too.
        with _recording_as_one_call(torch.utils.checkpoint, "checkpoint"):
            return super().trace(root, concrete_args)

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        make_lean(self.graph)  # (the graph trace() just made: every node is created after this)
        return super().create_args_for_root(root_fn, is_module, concrete_args)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        if module_qualified_name in self.leaf_paths:
            return True
        if type(m) in TRACE_INTO:
            return False
        return super().is_leaf_module(m, module_qualified_name)


@contextlib.contextmanager
def _recording_as_one_call(owner: Any, name: str):
    """While active, ``owner.name(...)`` called with a Proxy among its arguments records one
    ``call_function`` node of the original function instead of running it."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        proxy = next((value for value in pytree.tree_leaves((args, kwargs)) if isinstance(value, fx.Proxy)), None)
        if proxy is None:
            return original(*args, **kwargs)
        return proxy.tracer.create_proxy("call_function", original, args, kwargs)

    setattr(owner, name, recorded)
    try:
        yield
    finally:
        setattr(owner, name, original)


def traced_through(module: nn.Module, leaf_modules: Iterable[type[nn.Module]] = ()) -> bool:
    """Whether fx traces ``module``'s forward (False: it stays one call, a leaf)."""
    return not CostTracer(leaf_modules).is_leaf_module(module, "")


class GraphOnlyModule(fx.GraphModule):
    """A GraphModule that skips generating Python code: fxcost only interprets the graph.

    It shares ``root``'s children, parameters and buffers (and holds the other attributes
    the graph fetches) instead of rebuilding the part of ``root``'s module tree the graph
    uses, as ``fx.GraphModule`` does: the paths the graph names resolve to the same objects."""

    def __init__(self, root: nn.Module, graph: fx.Graph, class_name: str = "GraphModule") -> None:
        super().__init__({}, fx.Graph(), class_name)
        state = self.__dict__
        for table in ("_modules", "_parameters", "_buffers"):
            state[table] = dict(getattr(root, table))
        state["training"] = root.training
        for node in graph.nodes:
            if node.op == "get_attr" and "." not in node.target and not hasattr(self, node.target):
                setattr(self, node.target, getattr(root, node.target))
        self.graph = graph

    def recompile(self):
        return None

    def forward(self, *args, **kwargs):
        raise RuntimeError("this graph is for analysis: interpret it with torch.fx.Interpreter")


#: Name of the single call_module node when the model itself is a leaf (``nn.Conv2d``...).
ROOT_LEAF = "model"


def trace(root: nn.Module, leaf_modules: Iterable[type[nn.Module]] = (), concrete_args: dict[str, Any] | None = None,
          leaf_paths: Iterable[str] = (), record_stack_traces: bool = False, runnable: bool = True) -> fx.GraphModule:
    """Trace ``root`` into a GraphModule, or raise :class:`TraceError` naming the culprit.

    ``runnable=False`` returns a :class:`GraphOnlyModule` (no code generation: faster).
    """
    if isinstance(root, fx.GraphModule) and not leaf_modules and not concrete_args:
        # a copy of its graph (node metadata shared, not copied): the stages write on the nodes
        # and splice captured calls in, and the user's graph must stay as it is
        return (fx.GraphModule if runnable else GraphOnlyModule)(root, copy.deepcopy(root.graph))
    tracer = CostTracer(leaf_modules, leaf_paths, record_stack_traces)
    if tracer.is_leaf_module(root, ""):
        return _leaf_root_graph(root, runnable)
    try:
        graph = tracer.trace(root, concrete_args=concrete_args)
    except Exception as error:  # noqa: BLE001 - translated into one clear error
        failure = _trace_error(error, tracer)
        tracer.release()
        try:
            raise failure from error
        finally:
            del failure  # (else the error, its traceback and this frame form a reference cycle)
    gm = (fx.GraphModule if runnable else GraphOnlyModule)(tracer.root, graph, type(root).__name__)
    remember_called(gm, tracer.seen)
    tracer.release()
    return gm


def trace_with_fallback(
    root: nn.Module, leaf_modules: Iterable[type[nn.Module]] = (), concrete_args: dict[str, Any] | None = None,
    leaf_paths: Iterable[str] = (),
) -> tuple[fx.GraphModule, dict[str, str]]:
    """Trace ``root``; where fx cannot trace a module, keep that module whole (a leaf, costed
    later from the torch calls it makes on fake tensors) and retry. Where keeping it whole
    does not help (the call itself cannot be traced, e.g. an argument fx cannot represent),
    the module making the call is kept whole instead. Returns the graph and
    ``{module path: why it was kept whole}`` (``""`` = the whole model). ``leaf_paths`` are
    kept whole on request.

    Each retry keeps one more module whole (or an ancestor in place of its descendants), so the
    loop ends. Once two modules of one class have failed at the same source line, every other
    module of that class is kept whole too, for the same reason, before the next retry: a model
    repeating a block fx cannot trace (80 attention modules in MViTv2-huge) costs three traces,
    not one per block. (A module kept whole is costed from the calls it makes, exactly as if fx
    had traced it; only its temporaries live as long as its Python code keeps them.)"""
    fallbacks: dict[str, str] = {}
    leaf_paths = tuple(leaf_paths)
    failed_at: dict[tuple[type, str], int] = {}  # (module class, source line) -> failures
    while True:
        try:
            return trace(root, leaf_modules, concrete_args, (*leaf_paths, *fallbacks), runnable=False), fallbacks
        except TraceError as error:
            path = error.module_path
            while path and path in fallbacks:
                path = path.rpartition(".")[0]
            reason = error.reason + (f" (at {error.source_line})" if error.source_line else "")
            if not path:
                return _leaf_root_graph(root, runnable=False), {"": reason}
            kind = (type(root.get_submodule(path)), reason)
            failed_at[kind] = failed_at.get(kind, 0) + 1
            others = [p for p, m in root.named_modules() if type(m) is kind[0] and p != path] if failed_at[kind] >= 2 else []
            for keep in (path, *others):  # (the failing module always; others not inside a module kept whole)
                if keep in fallbacks or (keep != path and any(keep.startswith(kept + ".") for kept in fallbacks)):
                    continue
                fallbacks = {p: r for p, r in fallbacks.items() if not p.startswith(keep + ".")}
                fallbacks[keep] = reason


def user_frame(tb) -> str | None:
    """``file:line: code`` of the innermost frame of ``tb`` outside torch and fxcost."""
    for frame in reversed(traceback.extract_tb(tb)):
        path = os.path.abspath(frame.filename)
        if path.startswith(_TORCH_DIR) or path.startswith(_FXCOST_DIR) or frame.filename.startswith("<"):
            continue
        return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return None


def _trace_error(error: Exception, tracer: CostTracer) -> TraceError:
    path, module_type = "", ""
    if tracer.module_stack:
        path, module_type = next(reversed(tracer.module_stack.values()))
        module_type = getattr(module_type, "__name__", str(module_type))
    where = f"module '{path}' ({module_type})" if path else "the model's own forward()"
    line = user_frame(error.__traceback__)
    message = [f"torch.fx cannot trace {where}: {type(error).__name__}: {error}".rstrip()]
    if line:
        message.append(f"  at {line}")
    hint = "pass leaf_modules=[" + (module_type or "TheModule") + "] to cost that module as a whole"
    message.append(
        "  fix: if the code branches on tensor values or shapes, pass concrete_args={...} for the "
        f"arguments it branches on, or {hint}"
    )
    result = TraceError("\n".join(message))
    result.module_path, result.source_line = path, line
    result.reason = f"torch.fx cannot trace it: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return result


def _leaf_root_graph(root: nn.Module, runnable: bool) -> fx.GraphModule:
    """A one-node graph calling ``root``, so a bare leaf module is costed by its module rule."""
    graph = LeanGraph()
    positional, keywords = [], {}
    for name, parameter in inspect.signature(root.forward).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = parameter.default if parameter.default is not parameter.empty else inspect.Signature.empty
        node = graph.placeholder(name, default_value=default)
        if parameter.kind is parameter.POSITIONAL_ONLY:
            positional.append(node)
        else:
            keywords[name] = node
    call = graph.call_module(ROOT_LEAF, tuple(positional), keywords)
    call.meta[MODULE_KEY] = ("", type(root).__name__)  # it is the model itself, not a submodule
    graph.output(call)
    holder = nn.Module()
    holder.add_module(ROOT_LEAF, root)
    return (fx.GraphModule if runnable else GraphOnlyModule)(holder, graph, type(root).__name__)
