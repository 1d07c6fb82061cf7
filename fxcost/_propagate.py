"""Shape propagation on fake tensors: every node's outputs as :class:`TensorMeta`.

No real kernel runs: inputs, parameters and buffers are ``FakeTensor``s, so a model
whose weights live on the ``meta`` device propagates exactly like one with real weights.
"""

from __future__ import annotations

import logging
import weakref
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.fx.immutable_collections
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils import _pytree as pytree

from ._errors import ShapePropagationError
from ._records import TensorMeta, iter_instances
from ._trace import user_frame

_FRAME = re.compile(r'^File "([^"]+)", line (\d+)')
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def tensor_meta(tensor: torch.Tensor) -> TensorMeta:
    """The :class:`TensorMeta` of a (fake) tensor."""
    storage = tensor.untyped_storage()
    return TensorMeta(
        tuple(int(size) for size in tensor.shape),
        tensor.dtype,
        StorageWeakRef(storage).cdata,
        int(storage.nbytes()),
    )


def to_meta_structure(value: Any) -> Any:
    """``value`` with every tensor replaced by its :class:`TensorMeta`."""
    if isinstance(value, torch.Tensor):
        return tensor_meta(value)
    if type(value) is tuple:
        return tuple(to_meta_structure(v) for v in value)
    if isinstance(value, list):
        return [to_meta_structure(v) for v in value]
    if type(value) is dict:
        return {k: to_meta_structure(v) for k, v in value.items()}
    if isinstance(value, (int, float, bool, str, type(None), torch.dtype, torch.device, torch.Size)):
        return value
    return pytree.tree_map(lambda v: tensor_meta(v) if isinstance(v, torch.Tensor) else v, value)


def _tensors(value: Any):
    """Every tensor inside nested tuples/lists/dicts (a fast path for pytree.tree_leaves)."""
    return iter_instances(value, torch.Tensor)


@dataclass(frozen=True)
class InnerCall:
    """One torch-level call made inside a node that fxcost looked into."""

    func: Any
    """The function or ``Tensor`` method that was called."""
    args: tuple
    """Positional arguments, tensors as :class:`TensorMeta`."""
    kwargs: dict
    """Keyword arguments, tensors as :class:`TensorMeta`."""
    output: Any
    """The result, tensors as :class:`TensorMeta`."""
    module: nn.Module | None = None
    """For a call of a module that has a rule of its own: the module (``func`` is its class)."""
    module_path: str = ""
    """Path of the innermost module running when the call was made (or of the module called)."""
    module_type: str = ""
    """Class name of that module."""


class _CallRecorder(TorchFunctionMode):
    """Records the outermost torch calls made while it is active (nested calls made by
    those functions are not seen: a mode is inactive inside its own handler). A submodule
    that has a cost rule of its own is recorded as one call, and what it does inside is not."""

    def __init__(self, has_rule: Callable[[nn.Module], bool], outer: nn.Module | None, outer_path: str = "") -> None:
        super().__init__()
        self.calls: list[InnerCall] = []
        self.has_rule = has_rule
        self.outer = outer
        self.stack: list[bool] = []  # per entered module: is it recorded as one call?
        self.handles: list[Any] = []
        self.paths: dict[int, str] = {}
        if outer is not None:
            self.paths = {id(m): ".".join(p for p in (outer_path, name) if p) for name, m in outer.named_modules()}
        self.where: list[tuple[str, str]] = [(outer_path, type(outer).__name__ if outer is not None else "")]

    def __enter__(self):
        self.handles = [
            nn.modules.module.register_module_forward_pre_hook(self._enter_module),
            nn.modules.module.register_module_forward_hook(self._leave_module, with_kwargs=True, always_call=True),
        ]
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return super().__exit__(*exc)

    def _recording_a_module(self) -> bool:
        return any(self.stack)

    def _enter_module(self, module, args):
        whole = not self._recording_a_module() and module is not self.outer and self.has_rule(module)
        self.stack.append(whole)
        self.where.append((self.paths.get(id(module), self.where[-1][0]), type(module).__name__))

    def _leave_module(self, module, args, kwargs, output=None):
        path, module_type = self.where.pop() if len(self.where) > 1 else self.where[-1]
        if self.stack and self.stack.pop():
            self.calls.append(InnerCall(type(module), to_meta_structure(args), to_meta_structure(kwargs),
                                        to_meta_structure(output), module, path, module_type))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not self._recording_a_module():
            path, module_type = self.where[-1]
            self.calls.append(InnerCall(func, to_meta_structure(args), to_meta_structure(kwargs), to_meta_structure(result),
                                        None, path, module_type))
        return result


class _AllocationTracker(TorchDispatchMode):
    """Follows the storages aten ops create inside one node (fake tensors), released by
    weakref finalizers, and keeps the largest total alive at any op, by dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.holders: dict[int, int] = {}
        self.sizes: dict[int, tuple[torch.dtype, int]] = {}
        self.known: dict[int, torch.UntypedStorage] = {}  # held: a freed storage's address may be reused
        self.current = 0
        self.peak: dict[torch.dtype, int] = {}
        self.peak_total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for leaf in _tensors((args, kwargs)):
            key = leaf.untyped_storage()._cdata
            if key not in self.sizes:
                self.known[key] = leaf.untyped_storage()  # created before this node: not a temporary
        out = func(*args, **kwargs)
        for leaf in _tensors(out):
            self._track(leaf)
        if self.current > self.peak_total:
            self.peak_total = self.current
            totals: dict[torch.dtype, int] = {}
            for dtype, nbytes in self.sizes.values():
                totals[dtype] = totals.get(dtype, 0) + nbytes
            self.peak = totals
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.known:
            return
        if key not in self.holders:
            self.holders[key] = 0
            self.sizes[key] = (tensor.dtype, int(storage.nbytes()))
            self.current += self.sizes[key][1]
        self.holders[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self.holders[key] -= 1
        if self.holders[key] == 0:
            del self.holders[key]
            self.current -= self.sizes.pop(key)[1]


@dataclass
class Propagation:
    """What shape propagation learned about the graph."""

    values: dict[fx.Node, Any]
    """Each node's output, tensors replaced by :class:`TensorMeta`."""
    inner_calls: dict[fx.Node, list[InnerCall]]
    """For nodes run with ``look_inside``: the torch calls they made, in order."""
    internal_peaks: dict[fx.Node, dict[torch.dtype, int]]
    """Per node: bytes (by dtype) of the storages it created that were alive together at
    its busiest aten op: outputs plus node-internal temporaries."""
    partial: dict[fx.Node, str] = field(default_factory=dict)
    """Nodes only the graph output reads that stopped at a data-dependent op -> why: their
    inner calls up to that op are recorded, their outputs are unknown."""


class _Propagator(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, look_inside: Callable[[fx.Node], bool],
                 has_rule: Callable[[nn.Module], bool]) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.extra_traceback = False  # errors carry their own context
        self.look_inside = look_inside
        self.has_rule = has_rule
        self.result = Propagation({}, {}, {})

    def fetch_args_kwargs_from_env(self, n: fx.Node) -> tuple[tuple, dict]:
        # fx hands lists/dicts to targets as immutable containers; real Python code may
        # mutate its arguments (torchvision's swin3d does), so give it plain ones.
        args, kwargs = super().fetch_args_kwargs_from_env(n)
        return _mutable(args), _mutable(kwargs)

    def run_node(self, n: fx.Node) -> Any:
        recorder = None
        try:
            with _AllocationTracker() as tracker:
                if n.op in ("call_function", "call_method", "call_module") and self.look_inside(n):
                    outer = self.module.get_submodule(str(n.target)) if n.op == "call_module" else None
                    outer_path = "" if self.module.meta.get("fxcost_root_leaf") else str(n.target)
                    recorder = _CallRecorder(self.has_rule, outer, outer_path if outer is not None else "")
                    with recorder:
                        result = super().run_node(n)
                    self.result.inner_calls[n] = recorder.calls
                else:
                    if n.op == "call_module":
                        self._check_input_dtype(n)
                    result = super().run_node(n)
        except Exception as error:  # noqa: BLE001 - translated into one clear error
            if recorder is not None and _data_dependent(error) and all(u.op == "output" for u in n.users):
                # Nothing in the graph needs this node's value: keep what ran before the
                # data-dependent op (e.g. a detector's backbone and heads before its NMS).
                self.result.inner_calls[n] = recorder.calls
                self.result.partial[n] = _node_error(n, error).args[0].split(": ", 1)[-1]
                self.result.values[n] = None
                self.result.internal_peaks[n] = {}
                return None
            raise _node_error(n, error, self._received(n), self.source_of) from error
        self.result.values[n] = to_meta_structure(result)
        self.result.internal_peaks[n] = tracker.peak
        return result


    def _check_input_dtype(self, n: fx.Node) -> None:
        """Real kernels refuse a float32 layer fed int64 or float16 data; meta kernels do not
        always check, so check here (lookup layers such as Embedding take integer indices)."""
        module = self.module.get_submodule(str(n.target))
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or not weight.dtype.is_floating_point:
            return
        args, _ = super().fetch_args_kwargs_from_env(n)
        first = next(_tensors(args), None)
        if first is None or first.dtype == weight.dtype:
            return
        if not first.dtype.is_floating_point and isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return
        raise TypeError(f"{type(module).__name__} has {str(weight.dtype).replace('torch.', '')} weights but its input "
                        f"is {str(first.dtype).replace('torch.', '')}: give the example input the weights' dtype "
                        "(or convert the model)")

    def _received(self, n: fx.Node) -> str:
        """``Conv2d(3, 64, ...) received [1, 4, 64, 64] float32`` for the failure message."""
        try:
            args, kwargs = super().fetch_args_kwargs_from_env(n)
        except Exception:  # noqa: BLE001 - only for a message
            return ""
        shapes = [f"[{', '.join(map(str, t.shape))}] {str(t.dtype).replace('torch.', '')}"
                  for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        layer = repr(self.module.get_submodule(str(n.target))) if n.op == "call_module" else n.format_node()
        layer = layer if len(layer) < 200 else layer[:200] + "..."
        return f"{layer} received {', '.join(shapes) or 'no tensors'}"


def _mutable(value: Any) -> Any:
    if isinstance(value, fx.immutable_collections.immutable_list):
        return [_mutable(v) for v in value]
    if isinstance(value, fx.immutable_collections.immutable_dict):
        return {k: _mutable(v) for k, v in value.items()}
    if type(value) is tuple:  # not named tuples / torch.return_types, which must keep their type
        return tuple(_mutable(v) for v in value)
    if type(value) is dict:
        return {k: _mutable(v) for k, v in value.items()}
    return value


def propagate(
    gm: fx.GraphModule,
    args: list[Any],
    fake_mode: FakeTensorMode,
    look_inside: Callable[[fx.Node], bool] = lambda node: False,
    has_rule: Callable[[nn.Module], bool] = lambda module: False,
    source_of: Callable[[fx.Node], str | None] | None = None,
) -> Propagation:
    """Run ``gm`` on fake ``args``, recording each node's outputs as TensorMeta, and the
    torch calls made inside the nodes for which ``look_inside(node)`` is true (submodules
    for which ``has_rule(module)`` is true count as one call).

    All fake tensors stay referenced until the end, so storage identities are unique.
    """
    propagator = _Propagator(gm, look_inside, has_rule)
    propagator.source_of = source_of
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    fake_log.setLevel(logging.CRITICAL)  # failures are re-raised with context, not logged
    try:
        with fake_mode, torch.no_grad():
            propagator.run(*args)
            propagator.env.clear()
    finally:
        fake_log.setLevel(level)
    return propagator.result


def _node_error(node: fx.Node, error: Exception, received: str = "",
                source_of: Callable[[fx.Node], str | None] | None = None) -> ShapePropagationError:
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else ""
    if node.op == "call_module":
        path = str(node.target)
    where = f"in module '{path}' " if path else ""
    reason = str(error).split("\n\nWhile executing")[0].strip()
    data_dependent = _data_dependent(error)
    if data_dependent:
        reason = ("the code depends on tensor values (control flow on data, or an output whose size "
                  "depends on data), which cannot be known without running on real data: " + reason.splitlines()[0])
    if len(reason) > 600:
        reason = reason[:600] + " ..."
    lines = [f"shape propagation failed {where}at node '{node.name}': {type(error).__name__}: {reason}"]
    source = user_frame(error.__traceback__) or _source_line(node) or (source_of(node) if source_of else None)
    if source:
        lines.append(f"  at {source}")
    if received:
        lines.append(f"  the layer: {received}")
    if data_dependent:
        lines.append("  fix: compute the branch from shapes or Python values (or torch.where), or analyse the "
                     "parts before and after it separately (submodule=...)")
    else:
        lines.append("  check that the example input has the shape, dtype and number of arguments this model expects")
    return ShapePropagationError("\n".join(lines))


def _data_dependent(error: BaseException) -> bool:
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    while error is not None:
        if isinstance(error, (DataDependentOutputException, DynamicOutputShapeException)):
            return True
        error = error.__cause__ or error.__context__
    return False


def source_line_by_retrace(retrace: Callable[[], fx.GraphModule]) -> Callable[[fx.Node], str | None]:
    """A ``source_of`` for :func:`propagate`: traces again, recording stack traces (slow, so
    only when an error message needs the line), and reads the same-named node's."""
    def source_of(node: fx.Node) -> str | None:
        try:
            graph = retrace().graph
        except Exception:  # noqa: BLE001 - only for a message
            return None
        twin = next((n for n in graph.nodes if n.name == node.name), None)
        return _source_line(twin) if twin is not None else None

    return source_of


def _source_line(node: fx.Node) -> str | None:
    """``file:line: code`` of the innermost frame of the node's trace-time stack outside torch."""
    lines = (node.stack_trace or "").strip().splitlines()
    found = None
    for index, line in enumerate(lines):
        match = _FRAME.match(line.strip())
        if match and not os.path.abspath(match.group(1)).startswith(_TORCH_DIR):
            code = lines[index + 1].strip() if index + 1 < len(lines) else ""
            found = f"{match.group(1)}:{match.group(2)}: {code}"
    return found
