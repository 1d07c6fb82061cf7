"""Recording the torch calls a piece of Python makes while it runs on fake tensors.

Where ``torch.fx`` cannot look (a module it cannot trace, a module kept whole, a function
fx keeps as one call), fxcost runs the code on fake tensors under a ``TorchFunctionMode``
and records the outermost torch calls: functions, ``Tensor`` methods, and calls of
submodules that have a cost rule of their own (recorded as one call; what they do inside is
not). Each tensor argument is traced back to where it came from (an input of the recorded
code, an earlier call, a parameter or buffer, or a constant), so the calls can become graph
nodes linked by data, and the moment the program lets go of each tensor is noted, so the
graph's lifetimes are those of the eager run.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ._assume import SPLIT_SIZE_NAMES, Assumer, call_site
from ._compat import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    TorchFunctionMode,
    has_forward_hooks,
    pytree,
    value_unknown,
    register_global_module_hooks,
    torch_function_disabled,
)
from ._direct import NOT_DONE, uninstall
from ._graph import ASSUMPTIONS_KEY, call_key
from ._records import TensorMeta, opaque
from ._storage import Listener, StorageTracker
from ._walk import modules_of

#: Calls that change a tensor in place but return no tensor: recorded although they have
#: no tensor output.
_MUTATORS = frozenset({"__setitem__"})

#: Reads of a tensor's layout (sizes, dtype, device): answered at once, never recorded.
_LAYOUT_READS = frozenset({
    torch.Tensor.shape.__get__, torch.Tensor.dtype.__get__, torch.Tensor.device.__get__,
    torch.Tensor.ndim.__get__, torch.Tensor.is_cuda.__get__, torch.Tensor.layout.__get__,
    torch.Tensor.size, torch.Tensor.dim, torch.Tensor.stride, torch.Tensor.numel, torch.Tensor.is_contiguous,
    torch.Tensor.is_floating_point, torch.Tensor.element_size, torch.Tensor.untyped_storage,
})

#: Argument types pytree keeps as leaves and that are never tensors.
_LEAVES = frozenset({int, float, bool, complex, str, type(None), type(Ellipsis), slice, torch.dtype, torch.device,
                     torch.layout, torch.memory_format})

#: The recorder running, if any (read by :class:`RuleBody`).
_ACTIVE: ContextVar["Recorder | None"] = ContextVar("fxcost_recorder", default=None)


class RuleBody:
    """The forward of a module that a cost rule prices as a whole but that also has forward
    hooks: while a recorder records, the forward is recorded as one call of the module (its
    rule) and the hooks around it call by call. Set on fxcost's mirror only."""

    def __init__(self, module: nn.Module, forward: Callable[..., Any]) -> None:
        self.module = module
        self.forward = forward

    def __call__(self, *args, **kwargs):
        recorder = _ACTIVE.get()
        if recorder is None or recorder.recording is None or any(recorder.whole):
            return self.forward(*args, **kwargs)
        return recorder.body(self.module, self.forward, args, kwargs)


def wrap_hooked_rule_modules(root: nn.Module, has_rule: Callable[[nn.Module], bool]) -> None:
    """Give every module of fxcost's mirror ``root`` that a rule prices whole and that has
    forward hooks a :class:`RuleBody` forward, so its hooks are costed too."""
    for module in modules_of(root):
        if has_rule(module) and has_forward_hooks(module) and not isinstance(module.__dict__.get("forward"), RuleBody):
            module.__dict__["forward"] = RuleBody(module, module.forward)


@dataclass(frozen=True)
class Ref:
    """Where a tensor argument of a recorded call comes from."""

    kind: str
    """``input`` (of the recorded code), ``call`` (an earlier call's output), ``weight``
    (a parameter or buffer of the model) or ``constant`` (any other tensor)."""
    index: int = 0
    """``call``: index of the call."""
    path: tuple = ()
    """Position of the tensor inside that value (``input``: inside ``(args, kwargs)``)."""
    name: str = ""
    """``weight``: qualified name of the parameter or buffer."""
    value: Any = None
    """``constant``: the tensor itself."""
    meta: TensorMeta | None = None
    """Shape, dtype and storage of the tensor when it was passed."""


@dataclass
class CapturedCall:
    """One recorded torch call."""

    kind: str
    """``function``, ``method`` or ``module``."""
    target: Any
    """The function, the ``Tensor`` method's name, or the module's path."""
    args: tuple
    """Positional arguments, tensors replaced by :class:`Ref`."""
    kwargs: dict
    """Keyword arguments, tensors replaced by :class:`Ref`."""
    output: Any
    """The result, tensors replaced by :class:`TensorMeta`."""
    module_path: str
    """Path of the innermost module running when the call was made (or of the module called)."""
    module_type: str
    """Class name of that module."""
    module: nn.Module | None = None
    """For module calls: the module."""
    internal: dict = field(default_factory=dict)
    """Bytes by dtype of the storages the call created that were alive together at its
    busiest aten op (outputs included)."""
    released: list[int] = field(default_factory=list)
    """Storages the program let go of after this call returned, before the next began."""
    assumptions: list[str] = field(default_factory=list)
    """What was assumed about values to run this call or read its result (see :mod:`fxcost._assume`)."""
    node_name: str = ""
    """The graph node it became (set when it is spliced into the graph)."""

    @property
    def key(self) -> Any:
        """Registry key: the module's class, the method name or the function."""
        return type(self.module) if self.kind == "module" else self.target

    def metas(self) -> tuple[tuple, dict]:
        """``(args, kwargs)`` with tensors as :class:`TensorMeta` (what cost rules read)."""
        unref = lambda v: v.meta if isinstance(v, Ref) else v  # noqa: E731
        return (tuple(pytree.tree_map(unref, a) for a in self.args),
                {k: pytree.tree_map(unref, v) for k, v in self.kwargs.items()})


@dataclass
class Recording:
    """Everything recorded while one piece of code ran."""

    calls: list[CapturedCall] = field(default_factory=list)
    """The calls, in order."""
    output: Any = None
    """What the code returned, tensors replaced by :class:`Ref`."""
    retained: list[int] = field(default_factory=list)
    """Storages created by recorded calls that outlive the code without being part of what it
    returned (kept on a module, in a cache...)."""


def _paths(value: Any, prefix: tuple = ()):
    """``(path, tensor)`` for every tensor in nested tuples/lists/dicts."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))


class Recorder(TorchFunctionMode):
    """Records the outermost torch calls made while :meth:`recording` is active.

    Args:
        tracker: the storage tracker of the run (identities, temporaries, releases).
        has_rule: whether a submodule is costed by a rule of its own (then recorded as one call).
        module_paths: ``id(module) -> path`` for every module of the model.
        weight_names: ``id(tensor) -> qualified name`` of every parameter and buffer.
    """

    def __init__(self, tracker: StorageTracker, has_rule: Callable[[nn.Module], bool],
                 module_paths: Mapping[int, str], weight_names: Mapping[int, str], assumer: Assumer | None = None) -> None:
        super().__init__()
        self.assumer = assumer  # None: value-dependent code raises (strict)
        self.observer: Any = None  # a training step's observer: told which call runs and what it made
        self.pending: list[str] = []  # assumptions made inside the call being recorded
        if assumer is not None:
            tracker.read_value = self.read_value
            tracker.sized = self.sized
        self.current_node: Any = None  # the graph node being run (assumptions outside recorded calls)
        self.tracker = tracker
        self.has_rule = has_rule
        self.module_paths = module_paths
        self.weight_names = weight_names
        self.recording: Recording | None = None
        self.busy = False  # fxcost's own code is running: its torch calls are not the model's
        self.sources: dict[int, tuple[weakref.ref, Ref]] = {}
        self.whole: list[bool] = []  # per entered module: recorded as one call?
        self.where: list[tuple[str, str]] = [("", "")]
        self.outer: nn.Module | None = None
        self.eager: list[Any] = []  # per module recorded whole: the context running it as in eager
        self.last_recording: Recording | None = None
        self.produced: dict[int, tuple[int, tuple]] = {}  # storage -> (call, path) of its producer
        self.handles: list[Any] = []
        self.direct: Any = None  # a fxcost._direct.Direct: outputs of common ops computed without running them

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self):
        self.handles = register_global_module_hooks(self._enter_module, self._leave_module)
        self.token = _ACTIVE.set(self)
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        _ACTIVE.reset(self.token)
        return super().__exit__(*exc)

    def record(self, run: Callable[[], Any], args: tuple, kwargs: dict, path: str, module_type: str,
               outer: nn.Module | None = None) -> tuple[Any, Recording]:
        """Run ``run()`` (which calls the code on ``args``/``kwargs``) and record its calls as
        made inside module ``path``; ``outer`` (the module being run, if any) is looked into
        even if it has a rule. Returns the result and the recording."""
        recording = self.last_recording = Recording()
        self.recording, self.sources, self.produced, self.outer = recording, {}, {}, outer
        self.where, self.whole = [(path, module_type)], []
        for source_path, tensor in _paths((args, kwargs)):
            self._remember(tensor, Ref("input", path=source_path, meta=self.tracker.meta(tensor)))
        lifetimes = _Lifetimes(self)
        self.tracker.listeners.append(lifetimes)
        installed = self.direct.install(outer, self._unrecorded) if self.direct is not None and outer is not None else []
        try:
            with self:
                result = run()
        finally:
            uninstall(installed)
            self.tracker.listeners.remove(lifetimes)
            self.recording = None
        created = lifetimes.created_keys
        self.busy = True
        try:
            recording.output = pytree.tree_map(lambda v: v if isinstance(v, Ref) else opaque(v), self._refs(result))
            returned = {ref.meta.storage for ref in pytree.tree_leaves(recording.output) if isinstance(ref, Ref)}
            recording.retained = [storage for storage in self.produced
                                  if storage in created and storage in self.tracker.holders and storage not in returned]
        finally:
            self.busy = False
        return result, recording

    def _unrecorded(self) -> bool:
        """Whether the module call starting now is not recorded call by call (it is recorded
        as one call, or runs inside one, or nothing is being recorded)."""
        return self.recording is None or any(self.whole)

    # --- sources -------------------------------------------------------------------------
    def _remember(self, tensor: torch.Tensor, ref: Ref) -> None:
        self.sources[id(tensor)] = (weakref.ref(tensor), ref)

    def _ref(self, tensor: torch.Tensor) -> Ref:
        entry = self.sources.get(id(tensor))
        meta = self.tracker.meta(tensor)
        if entry is not None and entry[0]() is tensor:
            ref = entry[1]
            return ref if ref.meta == meta else Ref(ref.kind, ref.index, ref.path, ref.name, ref.value, meta)
        name = self.weight_names.get(id(tensor))
        if name is not None:
            return Ref("weight", name=name, meta=meta)
        return Ref("constant", value=tensor, meta=meta)

    def _refs(self, value: Any) -> Any:
        """``value`` with every tensor replaced by its :class:`Ref` (``pytree.tree_map``;
        plain tuples, lists, dicts and scalars, most arguments, without pytree's overhead)."""
        kind = type(value)
        if kind in _LEAVES:
            return value
        if isinstance(value, torch.Tensor):
            return self._ref(value)
        if kind is tuple or kind is list:
            return kind(self._refs(v) for v in value)
        if kind is dict:
            return {k: self._refs(v) for k, v in value.items()}
        return pytree.tree_map(lambda v: self._ref(v) if isinstance(v, torch.Tensor) else v, value)

    def _released(self, storage: int) -> None:
        if self.recording is not None and self.recording.calls and storage in self.produced:
            self.recording.calls[-1].released.append(storage)  # (a storage made before it is never freed here)

    # --- calls ---------------------------------------------------------------------------
    def _append(self, call: CapturedCall, result: Any) -> None:
        index = len(self.recording.calls)
        self.recording.calls.append(call)
        for path, tensor in _paths(result):
            meta = self.tracker.meta(tensor)
            self._remember(tensor, Ref("call", index=index, path=path, meta=meta))
            self.produced.setdefault(meta.storage, (index, path))

    def _run(self, func, args: tuple, kwargs: dict) -> tuple[Any, str | None]:
        """``func(*args, **kwargs)``, or, where the code reads a tensor value fake tensors do
        not have (``bool(t)``, ``int(t)``...), what the assumer assumes for what it asks
        (with what was assumed, in words). Value-dependent sizes, and values read inside ops,
        are assumed where the aten ops run (:class:`StorageTracker`)."""
        if self.assumer is not None and not self.busy and self.assumer.handles_read(func) and args \
                and isinstance(args[0], torch.Tensor) and value_unknown(args[0]) \
                and (self.tracker.known is None or self.tracker.known.real(args[0]) is None):
            return self.assumer.read(func, args[0], call_site())
        if self.direct is not None:
            result = self.direct.call(call_key(func), args, kwargs)
            if result is not NOT_DONE:
                return result, None
        try:
            if self.direct is not None:
                return self.direct.fallback(lambda: func(*args, **kwargs)), None
            return func(*args, **kwargs), None
        except RuntimeError as error:
            if self.assumer is None or not self.assumer.made or \
                    isinstance(error, (DataDependentOutputException, DynamicOutputShapeException)):
                raise
            key = call_key(func)
            if key == "__setitem__":
                # A copy into a slice whose bounds came from assumed values may not fit what
                # was computed from other assumed values: skip the copy (it moves data only).
                return None, self.assumer.skipped(str(error).splitlines()[0], call_site())
            balanced = self.assumer.balanced_split(key, args, kwargs, call_site()) if key in ("split", "split_with_sizes") else None
            if balanced is None:
                raise
            sizes, what = balanced
            return func(args[0], sizes, *args[2:], **{k: v for k, v in kwargs.items() if k not in SPLIT_SIZE_NAMES}), what

    def read_value(self, tensor: torch.Tensor) -> Any:
        """A value read inside an op (not through ``item()``/``bool()``...): assumed by dtype."""
        value, what = self.assumer.read(None, tensor, call_site())
        self._assumed(what, tensor)
        return value

    def sized(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """The upper-bound result of an aten op whose output size depends on values (None:
        no bound known). Attached to the graph node running, or to the call recorded next."""
        assumed = self.assumer.sized(func, args, kwargs, call_site())
        if assumed is None:
            return None
        result, what = assumed
        if self.recording is not None and not any(self.whole):
            self.pending.append(what)  # the recorded call this op runs in
        else:
            self._assumed(what, None)
        return result

    def _assumed(self, what: str, tensor: Any) -> None:
        """Attach an assumption to the recorded call that produced ``tensor``, else to the
        graph node being run."""
        entry = self.sources.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        if self.recording is not None and entry is not None and entry[0]() is tensor and entry[1].kind == "call":
            self.recording.calls[entry[1].index].assumptions.append(what)
        elif self.current_node is not None:
            self.current_node.meta.setdefault(ASSUMPTIONS_KEY, []).append(what)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _LAYOUT_READS:  # (no aten op, no value read, nothing to record)
            return func(*args, **(kwargs or {}))
        kwargs = kwargs or {}
        if self.recording is None or self.busy or any(self.whole):
            result, what = self._run(func, args, kwargs)
            if what is not None:
                self._assumed(what, None)
            return result
        self.busy = True
        ref_args, ref_kwargs = self._refs(args), self._refs(kwargs)
        self.busy = False
        index = len(self.recording.calls)
        if self.observer is not None:
            self.observer.running(self.current_node, index)
        self.tracker.open_scope()
        self.pending = []
        try:
            result, what = self._run(func, args, kwargs)
        finally:
            internal = self.tracker.close_scope()
        if what is None and self.pending:
            what = "; ".join(self.pending)
        key = call_key(func)
        if not isinstance(result, torch.Tensor) and key not in _MUTATORS and \
                not any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(result)):
            if what is not None:  # a value read: the assumption concerns the call that made the tensor
                self._assumed(what, args[0] if args else None)
            return result  # shape queries, .item(), property reads: their values are constants
        self.busy = True
        try:
            path, module_type = self.where[-1]
            kind = "method" if isinstance(key, str) else "function"
            call = CapturedCall(kind, key, ref_args, ref_kwargs, self.tracker.meta_structure(result), path,
                                module_type, internal=internal, assumptions=[what] if what else [])
            self._append(call, result)
        finally:
            self.busy = False
        if self.observer is not None:
            self.observer.made(result, self.current_node, index)
        return result

    # --- modules -------------------------------------------------------------------------
    def _enter_module(self, module, args):
        if self.recording is None or self.busy:
            return
        whole = (not any(self.whole) and module is not self.outer and self.has_rule(module)
                 and id(module) in self.module_paths  # one made during the forward: its calls are recorded
                 and not isinstance(module.__dict__.get("forward"), RuleBody))  # hooks: see body()
        self.whole.append(whole)
        parent = self.where[-1][0]
        self.where.append((self.module_paths.get(id(module), parent), type(module).__name__))
        if whole:
            if self.observer is not None:
                self.observer.running(self.current_node, len(self.recording.calls))
            self.tracker.open_scope()
            self.eager.append(torch_function_disabled())  # it runs as in eager: no mode sees its calls
            self.eager[-1].__enter__()

    def _leave_module(self, module, args, kwargs, output=None):
        if self.recording is None or self.busy or not self.whole:
            return
        path, module_type = self.where.pop()
        if not self.whole.pop():
            return
        self.eager.pop().__exit__(None, None, None)
        internal = self.tracker.close_scope()
        self.busy = True
        try:
            ref_args, ref_kwargs = self._refs(args), self._refs(kwargs)
            call = CapturedCall("module", path, ref_args, ref_kwargs, self.tracker.meta_structure(output), path,
                                module_type, module=module, internal=internal)
            self._append(call, output)
        finally:
            self.busy = False
        if self.observer is not None:
            self.observer.made(output, self.current_node, len(self.recording.calls) - 1)

    def body(self, module: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Run and record ``module``'s own forward as one call of the module (see :class:`RuleBody`)."""
        self.whole.append(True)
        if self.observer is not None:
            self.observer.running(self.current_node, len(self.recording.calls))
        self.tracker.open_scope()
        try:
            with torch_function_disabled():
                output = forward(*args, **kwargs)
        finally:
            internal = self.tracker.close_scope()
            self.whole.pop()
        self.busy = True
        try:
            path = self.module_paths.get(id(module), self.where[-1][0])
            call = CapturedCall("module", path, self._refs(args), self._refs(kwargs), self.tracker.meta_structure(output),
                                path, type(module).__name__, module=module, internal=internal)
            self._append(call, output)
        finally:
            self.busy = False
        if self.observer is not None:
            self.observer.made(output, self.current_node, len(self.recording.calls) - 1)
        return output


class _Lifetimes(Listener):
    """While code is recorded: the storages it creates, and when it lets go of them."""

    needs_ops = False

    def __init__(self, recorder: "Recorder") -> None:
        self.recorder = recorder
        self.created_keys: set[int] = set()

    def created(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        self.created_keys.add(key)

    def released(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        self.recorder._released(key)
