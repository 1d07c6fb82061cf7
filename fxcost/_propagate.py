"""Shape propagation on fake tensors: every node's outputs as :class:`TensorMeta`.

No real kernel runs: inputs, parameters and buffers are ``FakeTensor``s, so a model
whose weights live on the ``meta`` device propagates exactly like one with real weights.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.fx as fx
from torch import nn

from ._assume import Assumer
from ._capture import Recorder, Recording
from ._direct import NOT_DONE, Direct, has_call, has_module
from ._compat import FAKE_TENSOR_LOGGER, IMMUTABLE_DICT, IMMUTABLE_LIST, FakeTensorMode, is_data_dependent, pytree
from ._errors import ShapePropagationError
from ._lazy import LazyMapping
from ._graph import CALLS_KEY, INTERNAL_KEY, PARTIAL_KEY, VALUE_KEY, called_module, module_of
from ._records import dtype_name, iter_instances
from ._storage import StorageTracker
from ._values import KnownValues
from ._trace import KEPT_CALLS, user_frame

_FRAME = re.compile(r'^File "([^"]+)", line (\d+)')
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


@dataclass
class Propagation:
    """What shape propagation learned beyond what it stored on the nodes (``node.meta``:
    values, temporaries, the calls of nodes looked into, partial results)."""

    regions: dict[fx.Node, Recording] = field(default_factory=dict)
    """Modules kept whole (no rule of their own, or fx cannot trace them) -> the torch calls
    they made, to become graph nodes."""
    tracker: StorageTracker | None = None
    """The storage tracker of the run (keeps storage identities unique while alive)."""
    step: Any = None
    """The :class:`~fxcost._training.StepObserver` of a training step, if one ran."""


class _Propagator(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, look_inside: Callable[[fx.Node], bool], recorder: Recorder) -> None:
        super().__init__(gm, garbage_collect_values=True)  # storages stay unique: the tracker keeps them
        self.extra_traceback = False  # errors carry their own context
        self.look_inside = look_inside
        self.recorder = recorder
        self.tracker = recorder.tracker
        self.observer: Any = None  # the training step's observer, if any
        self.result = Propagation(tracker=recorder.tracker)
        self.direct: Direct | None = recorder.direct

    def fetch_args_kwargs_from_env(self, n: fx.Node) -> tuple[tuple, dict]:
        # fx hands lists/dicts to targets as immutable containers; real Python code may
        # mutate its arguments (torchvision's swin3d does), so give it plain ones.
        args, kwargs = super().fetch_args_kwargs_from_env(n)
        return _mutable(args), _mutable(kwargs)

    def run_node(self, n: fx.Node) -> Any:
        self.recorder.last_recording = None
        self.recorder.current_node = n
        try:
            if n.op in ("call_function", "call_method", "call_module") and self.look_inside(n):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                outer = called_module(n) if n.op == "call_module" else None
                path, module_type = module_of(n)
                self.tracker.open_scope()
                try:
                    result, recording = self.recorder.record(lambda: getattr(self, n.op)(n.target, args, kwargs),
                                                             args, kwargs, path, module_type, outer)
                finally:
                    internal = self.tracker.close_scope()
                if outer is not None or n.target in KEPT_CALLS:  # its calls become graph nodes
                    self.result.regions[n] = recording
                else:
                    n.meta[CALLS_KEY] = recording.calls
                    n.meta[INTERNAL_KEY] = internal
            else:
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                module = called_module(n) if n.op == "call_module" else None
                if module is not None and (self.observer is None or self.observer.training.amp is None):
                    self._check_input_dtype(module, args)  # (under autocast, layers mix dtypes on purpose)
                if self.observer is not None:
                    self.observer.running(n)
                self.tracker.open_scope()
                try:
                    result = self._direct(n, module, args, kwargs)
                    if result is NOT_DONE:
                        run = lambda: getattr(self, n.op)(n.target, args, kwargs)  # noqa: E731
                        result = self.direct.fallback(run) if self.direct is not None else run()
                finally:
                    n.meta[INTERNAL_KEY] = self.tracker.close_scope()
                if self.observer is not None:
                    self.observer.made(result, n)
        except Exception as error:  # noqa: BLE001 - translated into one clear error
            partial = self.recorder.last_recording
            if partial is not None and is_data_dependent(error) and all(u.op == "output" for u in n.users):
                # Nothing in the graph needs this node's value: keep what ran before the
                # data-dependent op (e.g. a detector's backbone and heads before its NMS).
                n.meta[PARTIAL_KEY] = _node_error(n, error).args[0].split(": ", 1)[-1]
                n.meta[VALUE_KEY] = None
                if n.op == "call_module":
                    self.result.regions[n] = partial
                else:
                    n.meta[CALLS_KEY] = partial.calls
                return None
            raise _node_error(n, error, self._received(n), self.source_of) from error
        n.meta[VALUE_KEY] = self.tracker.meta_structure(result)
        return result

    def _direct(self, n: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict) -> Any:
        """The node's result computed without running it (see :mod:`fxcost._direct`), or NOT_DONE."""
        if self.direct is None:
            return NOT_DONE
        self.direct.learning = None
        if module is not None:
            return self.direct.module(module, args, kwargs) if has_module(module) else NOT_DONE
        if n.op != "get_attr" and n.op != "placeholder" and n.op != "output" and has_call(n.target):
            return self.direct.call(n.target, args, kwargs)
        return NOT_DONE

    def _check_input_dtype(self, module: nn.Module, args: tuple) -> None:
        """Real kernels refuse a float32 layer fed int64 or float16 data; meta kernels do not
        always check, so check here (lookup layers such as Embedding take integer indices)."""
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or not weight.dtype.is_floating_point:
            return
        first = next(iter_instances(args, torch.Tensor), None)
        if first is None or first.dtype == weight.dtype:
            return
        if not first.dtype.is_floating_point and isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return
        raise TypeError(f"{type(module).__name__} has {dtype_name(weight.dtype)} weights but its input "
                        f"is {dtype_name(first.dtype)}: give the example input the weights' dtype "
                        "(or convert the model)")

    def _received(self, n: fx.Node) -> str:
        """``Conv2d(3, 64, ...) received [1, 4, 64, 64] float32`` for the failure message."""
        try:
            args, kwargs = super().fetch_args_kwargs_from_env(n)
        except Exception:  # noqa: BLE001 - only for a message
            return ""
        shapes = [f"[{', '.join(map(str, t.shape))}] {dtype_name(t.dtype)}"
                  for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        layer = repr(called_module(n)) if n.op == "call_module" else n.format_node()
        layer = layer if len(layer) < 200 else layer[:200] + "..."
        return f"{layer} received {', '.join(shapes) or 'no tensors'}"


def _mutable(value: Any) -> Any:
    kind = type(value)
    if kind not in _CONTAINERS:  # (not named tuples / torch.return_types, which must keep their type)
        return value
    if kind is tuple:
        return tuple(_mutable(v) for v in value) if any(type(v) in _CONTAINERS for v in value) else value
    if kind is IMMUTABLE_LIST:
        return [_mutable(v) for v in value]
    return {k: _mutable(v) for k, v in value.items()}


_CONTAINERS = frozenset({IMMUTABLE_LIST, IMMUTABLE_DICT, tuple, dict})


def propagate(
    gm: fx.GraphModule,
    args: list[Any],
    fake_mode: FakeTensorMode,
    look_inside: Callable[[fx.Node], bool] = lambda node: False,
    has_rule: Callable[[nn.Module], bool] = lambda module: False,
    source_of: Callable[[fx.Node], str | None] | None = None,
    weight_names: Mapping[int, str] | None = None,
    module_paths: Mapping[int, str] | None = None,
    assumer: Assumer | None = None,
    step: Callable[[StorageTracker], Any] | None = None,
    target: Any = None,
) -> Propagation:
    """Run ``gm`` on fake ``args``, storing each node's outputs as TensorMeta in
    ``node.meta``, and record the torch calls made inside the nodes for which
    ``look_inside(node)`` is true (submodules for which ``has_rule(module)`` is true count as
    one call). ``weight_names`` (``id -> name`` of parameters and buffers) and
    ``module_paths`` (``id -> path`` of modules, default: as seen from ``gm``) name the
    weights recorded calls read and the modules they run in. ``assumer`` completes code that
    depends on tensor values by stated assumptions (None: such code raises). ``step`` makes
    the :class:`~fxcost._training.StepObserver` of a training step from the run's tracker: the
    forward then runs with autograd, followed by the loss (of the output and ``target``), the
    backward and the optimizer step (``Propagation.step``).

    Values are freed after their last use, as fx's generated code frees them (inside recorded
    code, tensors live as long as the program keeps them); the tracker keeps every storage
    object, so a storage identity is never reused.
    """
    if module_paths is None:
        module_paths = LazyMapping(lambda: {id(module): path for path, module in gm.named_modules()})
    tracker = StorageTracker()
    tracker.known = KnownValues()
    recorder = Recorder(tracker, has_rule, module_paths, weight_names or {}, assumer)
    recorder.direct = Direct(fake_mode, tracker)
    propagator = _Propagator(gm, look_inside, recorder)
    propagator.source_of = source_of
    fake_log = logging.getLogger(FAKE_TENSOR_LOGGER)
    disabled = fake_log.disabled
    fake_log.disabled = True  # failures are re-raised with context, not logged
    try:
        with fake_mode, tracker:
            if step is None:
                with torch.no_grad():
                    propagator.run(*args)
            else:
                propagator.result.step = recorder.observer = propagator.observer = step(tracker)
                _train(propagator, args, target)
            propagator.env.clear()
    finally:
        fake_log.disabled = disabled
        tracker.read_value = tracker.sized = None  # (the recorder's: a reference cycle through it)
    return propagator.result


def _train(propagator: "_Propagator", args: list, target: Any) -> None:
    """The forward of a training step, then its loss, backward and optimizer step."""
    observer = propagator.observer
    propagator.tracker.listeners.append(observer)
    try:
        with observer.forward():
            output = propagator.run(*args)
            loss = observer.loss(output, target)
        del output
        propagator.env.clear()
        held = [loss]
        del loss
        observer.backward_and_step(held)
    finally:
        propagator.tracker.listeners.remove(observer)


def _node_error(node: fx.Node, error: Exception, received: str = "",
                source_of: Callable[[fx.Node], str | None] | None = None) -> ShapePropagationError:
    path = module_of(node)[0]
    where = f"in module '{path}' " if path else ""
    reason = str(error).split("\n\nWhile executing")[0].strip()
    data_dependent = is_data_dependent(error)
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
