"""Every private or unstable torch API fxcost relies on, in one place.

A torch release that moves one of these breaks this file only. Everything else in fxcost
imports the names below instead of reaching into ``torch._*`` itself.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.fx as fx
import torch.fx.immutable_collections as _immutable
from torch._subclasses.fake_tensor import (  # noqa: F401 - re-exported
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
)
from torch.overrides import TorchFunctionMode  # noqa: F401 - re-exported
from torch.utils import _pytree as pytree  # noqa: F401 - re-exported
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: F401 - re-exported

#: fx containers handed to targets as arguments; real code may mutate its arguments.
IMMUTABLE_LIST = _immutable.immutable_list
IMMUTABLE_DICT = _immutable.immutable_dict

#: The aten op every read of a tensor's value goes through (``item()``, ``bool()``, ``int()``...).
LOCAL_SCALAR = torch.ops.aten._local_scalar_dense.default

#: The logger fake tensors report kernel failures to (fxcost re-raises them with context).
FAKE_TENSOR_LOGGER = "torch._subclasses.fake_tensor"


def _grouped_mm_size(mat_a: torch.Tensor, mat_b: torch.Tensor, offs: torch.Tensor | None) -> list[int]:
    """Output size of ``torch._grouped_mm`` for its four operand layouts (see its meta kernel)."""
    contracted = (mat_a.size(1), mat_b.size(0)) if mat_a.dim() == mat_b.dim() == 2 else (mat_a.size(-1), mat_b.size(-2))
    groups = {offs.size(0) if offs is not None else None, *(m.size(0) for m in (mat_a, mat_b) if m.dim() == 3)}
    if contracted[0] != contracted[1] or len(groups - {None}) > 1 or (offs is None) != (mat_a.dim() == mat_b.dim() == 3):
        raise RuntimeError(f"grouped_mm: operands {list(mat_a.shape)} and {list(mat_b.shape)} with "
                           f"{'no offsets' if offs is None else f'{offs.size(0)} offsets'} do not form a grouped matmul")
    if mat_a.dim() == 2 and mat_b.dim() == 2:
        return [offs.size(0), mat_a.size(0), mat_b.size(1)]
    if mat_a.dim() == 2:
        return [mat_a.size(0), mat_b.size(-1)]
    if mat_b.dim() == 2:
        return [mat_a.size(1), mat_b.size(1)]
    return [mat_a.size(0), mat_a.size(1), mat_b.size(-1)]


_GROUPED_MM = getattr(torch.ops.aten, "_grouped_mm", None)
_GROUPED_MM = _GROUPED_MM.default if _GROUPED_MM is not None else None


_LIFTS = (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default)
_CONSTANT_NUMEL_LIMIT = 1  # (FakeTensorMode keeps the values of lifted tensors up to this size)


class _FakeMode(FakeTensorMode):
    """``FakeTensorMode`` with the shape of ``aten._grouped_mm`` for every dtype its CPU kernel
    takes: torch's meta kernel copies the CUDA checks and refuses float32, which the CPU kernel
    (and so a real run of a Mixture-of-Experts model on CPU, transformers' default there) accepts.

    ``torch.tensor(data)`` (``aten.lift_fresh``) makes its fake tensor the way
    :class:`FakeFactory` does, not through torch's general conversion of a real tensor: the
    same sizes, strides, dtype and device, and, as torch does, the values kept as the fake's
    ``constant`` where it has at most one element (``torch.tensor(3)``, ``torch.tensor([])``)."""

    def dispatch(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LIFTS and len(args) == 1 and not kwargs and type(args[0]) is torch.Tensor \
                and args[0].layout is torch.strided:
            return self._lifted(args[0])
        if func is _GROUPED_MM and args[0].dtype == torch.float32 and args[0].device.type in ("cpu", "meta"):
            mat_a, mat_b = args[0], args[1]
            offs = kwargs.get("offs", args[2] if len(args) > 2 else None)
            dtype = kwargs.get("out_dtype") or mat_a.dtype
            size = _grouped_mm_size(mat_a, mat_b, offs)
            return super().dispatch(torch.ops.aten.empty.memory_format, types, (size,),
                                    {"dtype": dtype, "device": mat_a.device})
        return super().dispatch(func, types, args, kwargs)

    def _lifted(self, real: torch.Tensor) -> torch.Tensor:
        fake = FakeFactory(self, real.device).like(real)  # (not kept: it refers to this mode)
        if real.numel() <= _CONSTANT_NUMEL_LIMIT and real.device.type != "meta":
            with _no_modes():
                fake.constant = real.clone()
        return fake


def new_fake_mode() -> FakeTensorMode:
    """A fake-tensor mode that also accepts real tensors (constants of the model)."""
    return _FakeMode(allow_non_fake_inputs=True)


class FakeFactory:
    """Makes fake tensors of one fake-tensor mode and device without running any op: a new
    storage of given sizes and strides, or a view of an existing fake tensor's storage (what
    :mod:`fxcost._direct` returns for the layers whose outputs it computes itself).

    The instance state is that of a fake tensor made by ``FakeTensor``'s own constructor
    (same mode, device, no constant); only the sizes, strides and storage differ.
    """

    def __init__(self, fake_mode: FakeTensorMode, device: torch.device) -> None:
        self.fake_mode = fake_mode
        with _no_modes():
            reference = FakeTensor(fake_mode, torch.empty((0,), device="meta"), device)
        self.device = reference.fake_device
        self.state = dict(reference.__dict__)
        self.throw_on_data_ptr = not fake_mode._allow_unsafe_data_ptr_access

    def _wrap(self, meta: torch.Tensor) -> torch.Tensor:
        fake = torch.Tensor._make_subclass(FakeTensor, meta, False, dispatch_device=True,
                                           device_for_backend_keys=self.device)
        if self.throw_on_data_ptr:
            torch._C._set_throw_on_mutable_data_ptr(fake)
        else:
            torch._C._set_warn_deprecated_on_mutable_data_ptr(fake)
        fake.__dict__.update(self.state)
        return fake

    def new(self, shape: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
        """A fake tensor with a storage of its own."""
        with _no_modes():
            meta = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
        return self._wrap(meta)

    def like(self, tensor: torch.Tensor, parameter: bool = False) -> torch.Tensor:
        """A fake tensor of ``tensor``'s sizes, strides and dtype (any device, data never read).
        ``parameter`` marks it as an ``nn.Parameter`` would, without the dispatched
        ``detach()`` that ``nn.Parameter(fake)`` costs."""
        fake = self.new(tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if parameter:
            fake._is_param = True
        return fake

    def view(self, base: torch.Tensor, shape: tuple, stride: tuple, offset: int) -> torch.Tensor:
        """A fake tensor over ``base``'s storage (same storage identity)."""
        with _no_modes():
            meta = torch.empty((0,), dtype=base.dtype, device="meta")
            meta.set_(base.untyped_storage(), offset, shape, stride)
        return self._wrap(meta)


def _no_modes():
    """A context in which no dispatch mode (fake-tensor mode, fxcost's tracker) sees the ops
    run on ``meta`` tensors."""
    return torch._C._ExcludeDispatchKeyGuard(_PYTHON_KEYS)


_PYTHON_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.Python) | torch._C.DispatchKeySet(
    torch._C.DispatchKey.PythonTLSSnapshot)


def is_fake_of(tensor: Any, fake_mode: FakeTensorMode) -> bool:
    """Whether ``tensor`` is a fake tensor of ``fake_mode`` whose values were never known
    (not made from a Python constant)."""
    return type(tensor) is FakeTensor and tensor.fake_mode is fake_mode and tensor.constant is None


def is_constant_of(tensor: Any, fake_mode: FakeTensorMode) -> bool:
    """Whether ``tensor`` is a constant ``fake_mode`` accepts: a fake tensor of it made from a
    Python constant (whose values it keeps: ``torch.tensor([])`` run on fake tensors), or a real
    tensor (the same made while tracing: a constant of the graph)."""
    if type(tensor) is torch.Tensor:
        return tensor.device.type != "meta"
    return type(tensor) is FakeTensor and tensor.fake_mode is fake_mode and tensor.constant is not None


def empty_like_strides(tensor: torch.Tensor) -> tuple[int, ...]:
    """The strides ``torch.empty_like(tensor)`` gives on fake tensors (torch's reference
    decomposition: the input's dimension order, without its gaps)."""
    from torch._prims_common import compute_elementwise_output_logical_to_physical_perm

    perm, _ = compute_elementwise_output_logical_to_physical_perm(tensor)
    shape = tensor.shape
    strides = [0] * len(shape)
    step = 1
    for dim in reversed(perm):
        strides[dim] = step
        step *= max(shape[dim], 1)
    return tuple(strides)


def bump_version(tensor: torch.Tensor) -> None:
    """Move ``tensor``'s version counter as an in-place op would."""
    torch._C._autograd._unsafe_set_version_counter((tensor,), (tensor._version + 1,))


def storage_key(tensor: torch.Tensor) -> int:
    """Identity of ``tensor``'s storage: equal for a tensor and all its views."""
    return tensor.untyped_storage()._cdata


def key_of_storage(storage: torch.UntypedStorage) -> int:
    """Identity of a storage object (what :func:`storage_key` gives for its tensors)."""
    return storage._cdata


def module_tensors(module: torch.nn.Module) -> list[tuple[torch.Tensor, bool]]:
    """``(tensor, is_parameter)`` for every parameter, then every buffer, of ``module`` and its
    submodules, each once (what ``parameters()`` and ``buffers()`` yield, without their
    generator machinery)."""
    modules, seen, stack = [], set(), [module]
    while stack:  # named_modules' order: depth first, children in registration order
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        modules.append(current)
        stack.extend(reversed([child for child in current._modules.values() if child is not None]))
    found, tensors = [], set()
    for table, is_param in (("_parameters", True), ("_buffers", False)):
        for current in modules:
            for tensor in current.__dict__[table].values():
                if tensor is not None and id(tensor) not in tensors:
                    tensors.add(id(tensor))
                    found.append((tensor, is_param))
    return found


def module_stack(node: fx.Node) -> dict[str, tuple[str, Any]]:
    """``{key: (module path, module class)}`` of the modules active when ``node`` was traced,
    outermost first (fx records it in ``node.meta``)."""
    return node.meta.get("nn_module_stack") or {}


def is_data_dependent(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is a fake-tensor failure on a value-dependent op."""
    while error is not None:
        if isinstance(error, (DataDependentOutputException, DynamicOutputShapeException)):
            return True
        error = error.__cause__ or error.__context__
    return False


def register_global_module_hooks(pre_hook, hook) -> list[Any]:
    """Forward pre-hook and forward hook on every module call (handles to remove)."""
    from torch.nn.modules import module as module_module

    return [
        module_module.register_module_forward_pre_hook(pre_hook),
        module_module.register_module_forward_hook(hook, with_kwargs=True, always_call=True),
    ]


#: Per-module tables of user forward hooks, in the order ``Module._call_impl`` runs them.
_PRE_HOOKS, _PRE_HOOKS_WITH_KWARGS = "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs"
_HOOKS, _HOOKS_WITH_KWARGS = "_forward_hooks", "_forward_hooks_with_kwargs"


def has_forward_hooks(module: torch.nn.Module) -> bool:
    """Whether ``module`` has forward pre-hooks or forward hooks of its own."""
    return bool(module.__dict__.get(_PRE_HOOKS) or module.__dict__.get(_HOOKS))


def take_forward_hooks(module: torch.nn.Module) -> tuple[list, list]:
    """Remove ``module``'s forward pre-hooks and forward hooks (it must be fxcost's own copy)
    and return them as ``[(hook, with_kwargs)]`` lists, in the order torch runs them."""
    state = module.__dict__
    pre = [(hook, key in state.get(_PRE_HOOKS_WITH_KWARGS, {})) for key, hook in state.get(_PRE_HOOKS, {}).items()]
    post = [(hook, key in state.get(_HOOKS_WITH_KWARGS, {})) for key, hook in state.get(_HOOKS, {}).items()]
    for table in (_PRE_HOOKS, _PRE_HOOKS_WITH_KWARGS, _HOOKS, _HOOKS_WITH_KWARGS):
        if table in state:
            state[table] = type(state[table])()
    return pre, post


def is_functorch_wrapped(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a functorch wrapper (a ``vmap``-batched tensor...), which has no storage."""
    return torch._C._functorch.is_functorch_wrapped_tensor(tensor)


def value_unknown(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a fake tensor whose values fxcost cannot read (fake tensors made
    from small Python constants keep their values)."""
    return isinstance(tensor, FakeTensor) and getattr(tensor, "constant", None) is None


def torch_function_disabled() -> Any:
    """A context in which no torch-function mode or subclass intercepts calls, so code runs
    as in eager PyTorch (e.g. ``nn.MultiheadAttention`` takes its fused fast path)."""
    return torch._C.DisableTorchFunction()


def real_tensors() -> Any:
    """A context in which tensor factories make real tensors again (inside a fake-tensor mode)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    return unset_fake_temporarily()


def mutates_inputs(func: Any) -> bool:
    """Whether the aten op ``func`` writes into one of its inputs (``add_``, ``copy_``, ``out=``)."""
    schema = getattr(func, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


@contextlib.contextmanager
def onednn_disabled():
    """oneDNN kernels off (RNNs then run torch's portable per-step kernel), restored after."""
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


def tensor_version(tensor: torch.Tensor) -> int:
    """The version counter of ``tensor``: it moves when the tensor (or a view of it) is written in place."""
    return tensor._version


#: What :class:`LeanGraph` uses of ``fx.Graph``'s internals; without them it is a plain ``fx.Graph``.
_GRAPH_INTERNALS = ("_graph_namespace", "_insert", "_find_nodes_lookup_table", "_len", "_target_to_str")
_LEAN = all(hasattr(fx.Graph(), name) for name in _GRAPH_INTERNALS)


class LeanGraph(fx.Graph):
    """An ``fx.Graph`` whose ``create_node`` skips torch's walk over every new node's
    arguments looking for raw ``SymInt``s to warn about: fxcost's fake mode has no shape
    environment, so its graphs hold none, and the walk is a tenth of tracing time. Nodes are
    otherwise created exactly as ``fx.Graph.create_node`` creates them."""

    def create_node(self, op, target, args=None, kwargs=None, name=None, type_expr=None):
        if not _LEAN:
            return super().create_node(op, target, args, kwargs, name, type_expr)
        if not args:
            args = ()
        elif not isinstance(args, tuple):
            raise AssertionError(f"args must be a tuple, got {type(args)}")
        if not kwargs:
            kwargs = IMMUTABLE_DICT()
        elif not isinstance(kwargs, dict):
            raise AssertionError(f"kwargs must be a dict, got {type(kwargs)}")
        name = self._graph_namespace.create_name(name if name is not None else self._target_to_str(target), None)
        node = fx.Node(self, name, op, target, args, kwargs, type_expr)
        hooks = getattr(self.owning_module, "_create_node_hooks", None) if self.owning_module is not None else None
        for hook in hooks or ():
            hook(node)
        self._graph_namespace.associate_name_with_obj(name, node)
        self._insert(node)
        self._find_nodes_lookup_table.insert(node)
        self._len += 1
        return node


def make_lean(graph: fx.Graph) -> None:
    """Turn a plain ``fx.Graph`` (one a tracer just made) into a :class:`LeanGraph`."""
    if type(graph) is fx.Graph:
        graph.__class__ = LeanGraph
