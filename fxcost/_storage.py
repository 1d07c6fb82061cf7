"""Following tensor storages while fake tensors run: when each is created, how large it is,
when the program lets go of it, and the most bytes a stretch of code had alive at once."""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Callable

import torch

from ._compat import (
    LOCAL_SCALAR,
    DataDependentOutputException,
    DynamicOutputShapeException,
    TorchDispatchMode,
    key_of_storage,
    storage_key,
)
from ._assume import warns_before_failing
from ._records import TensorMeta, iter_instances, opaque
from ._values import KnownValues


class StorageTracker(TorchDispatchMode):
    """Sees every tensor an aten op returns. A storage counts from its first sight until the
    last tensor using it is garbage collected (weakref finalizers). Every storage object is
    held until the tracker is dropped, so storage identities are never reused and a
    :class:`TensorMeta` names one storage for the whole run.

    ``scope()`` measures a stretch of code (a node, a recorded call): the bytes, by dtype, of
    the storages it created that were alive together at its busiest aten op.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holders: dict[int, int] = {}
        self.sizes: dict[int, tuple[torch.dtype, int]] = {}
        self.preexisting: set[int] = set()  # storages first seen as inputs (weights, model inputs)
        self.kept: dict[int, Any] = {}  # storage objects, so their identities stay unique
        self.scopes: list[_Scope] = []
        self.listeners: list[Any] = []
        """Told of every storage created (``created(key, dtype, nbytes)``), released
        (``released(key, dtype, nbytes)``) and of every op run (``ran(func, args, kwargs, out)``)."""
        self.read_value: Callable[[torch.Tensor], Any] | None = None
        """Answers an op that needs a tensor's value (``item()``, ``bool()``, a tensor used as
        a Python index) where the fake tensor has none; None: such ops raise."""
        self.sized: Callable[[Any, tuple, dict], Any] | None = None
        """Answers an op whose output size depends on values (``nonzero``...) with an assumed
        result, or None; unset: such ops raise."""
        self.known: KnownValues | None = None
        """Values computed for real where every input is known (see :mod:`fxcost._values`)."""

    # --- identities ----------------------------------------------------------------------
    def meta(self, tensor: torch.Tensor) -> TensorMeta:
        """The :class:`TensorMeta` of ``tensor`` (its storage kept, so the identity is unique)."""
        storage = tensor.untyped_storage()
        key = key_of_storage(storage)
        if key not in self.kept:
            self.kept[key] = storage
        # (fxcost's fake mode has no shape environment: sizes are plain ints)
        return TensorMeta(tuple(tensor.shape), tensor.dtype, key, storage.nbytes())

    def meta_structure(self, value: Any) -> Any:
        """``value`` with every tensor replaced by its :class:`TensorMeta`."""
        if isinstance(value, torch.Tensor):
            return self.meta(value)
        if type(value) is tuple:
            return tuple(self.meta_structure(v) for v in value)
        if isinstance(value, list):
            return [self.meta_structure(v) for v in value]
        if type(value) is dict:
            return {k: self.meta_structure(v) for k, v in value.items()}
        if isinstance(value, (int, float, bool, str, type(None), torch.dtype, torch.device, torch.Size)):
            return value
        from ._compat import pytree

        return pytree.tree_map(lambda v: self.meta(v) if isinstance(v, torch.Tensor) else opaque(v), value)

    # --- scopes --------------------------------------------------------------------------
    def open_scope(self) -> None:
        """Start measuring the storages created from now on."""
        self.scopes.append(_Scope())

    def close_scope(self) -> dict[torch.dtype, int]:
        """Stop measuring; the bytes by dtype alive together at the scope's busiest op."""
        return self.scopes.pop().peak_by_dtype

    # --- dispatch ------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for tensor in iter_instances((args, kwargs), torch.Tensor):
            key = storage_key(tensor)
            if key not in self.sizes and key not in self.preexisting:
                self.preexisting.add(key)
                self.kept.setdefault(key, tensor.untyped_storage())  # its identity is never reused
        try:
            if warns_before_failing(func):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = func(*args, **kwargs)
            else:
                out = func(*args, **kwargs)
        except DataDependentOutputException:
            if func is not LOCAL_SCALAR:
                raise
            value = self.known.read(args[0]) if self.known is not None else None
            if value is not None:
                return value
            if self.read_value is None:
                raise
            return self.read_value(args[0])
        except DynamicOutputShapeException:
            with self:  # what stands in for the op is tracked (and its values known) like any op
                out = self.known.exact(func, args, kwargs) if self.known is not None else None
                if out is None and self.sized is not None:
                    out = self.sized(func, args, kwargs)
            if out is None:
                raise
            return out
        if self.known is not None:
            self.known.propagate(func, args, kwargs, out)
        for tensor in iter_instances(out, torch.Tensor):
            self._track(tensor)
        for scope in self.scopes:
            scope.measure()
        for listener in self.listeners:
            listener.ran(func, args, kwargs, out)
        return out

    def made(self, inputs: list[torch.Tensor], out: list[torch.Tensor], temporaries: tuple = ()) -> None:
        """What :meth:`__torch_dispatch__` records for an op, for an op fxcost computed without
        running it (see :mod:`fxcost._direct`): the tensors ``inputs`` read, the tensors
        ``out`` returned, and ``temporaries`` (``(dtype, nbytes)`` of outputs it made and
        dropped at once, such as max-pool indices) alive together with ``out`` at the op's end."""
        sizes, preexisting = self.sizes, self.preexisting
        for tensor in inputs:
            storage = tensor.untyped_storage()
            key = key_of_storage(storage)
            if key not in sizes and key not in preexisting:
                preexisting.add(key)
                self.kept.setdefault(key, storage)
        for tensor in out:
            self._track(tensor)
        if not self.scopes:
            return
        for number, (dtype, nbytes) in enumerate(temporaries):
            for scope in self.scopes:
                scope.add(-1 - number, dtype, nbytes)
        for scope in self.scopes:
            scope.measure()
        for number, (dtype, nbytes) in enumerate(temporaries):
            for scope in self.scopes:
                scope.remove(-1 - number, dtype, nbytes)

    def sees_every_op(self) -> bool:
        """Whether a listener needs every aten op (then no op may be skipped)."""
        return any(listener.needs_ops for listener in self.listeners)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = key_of_storage(storage)
        if key in self.preexisting:
            return
        if key not in self.holders:
            size = (tensor.dtype, int(storage.nbytes()))
            self.holders[key] = 0
            self.sizes[key] = size
            self.kept.setdefault(key, storage)
            for scope in self.scopes:
                scope.add(key, *size)
            for listener in self.listeners:
                listener.created(key, *size)
        self.holders[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self.holders[key] -= 1
        if self.holders[key] == 0:
            del self.holders[key]
            for scope in self.scopes:
                scope.remove(key, *self.sizes[key])
            for listener in self.listeners:
                listener.released(key, *self.sizes[key])


class _Scope:
    """Running and peak bytes of the storages created inside one measured stretch of code."""

    __slots__ = ("created", "current", "by_dtype", "peak", "peak_by_dtype")

    def __init__(self) -> None:
        self.created: set[int] = set()
        self.current = 0
        self.by_dtype: dict[torch.dtype, int] = {}
        self.peak = 0
        self.peak_by_dtype: dict[torch.dtype, int] = {}

    def add(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        self.created.add(key)
        self.current += nbytes
        self.by_dtype[dtype] = self.by_dtype.get(dtype, 0) + nbytes

    def remove(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        if key in self.created:
            self.created.discard(key)
            self.current -= nbytes
            self.by_dtype[dtype] -= nbytes

    def measure(self) -> None:
        if self.current > self.peak:
            self.peak = self.current
            self.peak_by_dtype = {dtype: n for dtype, n in self.by_dtype.items() if n}


class Listener:
    """What a :class:`StorageTracker` tells its listeners (override what you need)."""

    needs_ops = True
    """Whether it must see every aten op (ops fxcost computes itself are not run: a listener
    that only follows storages sets this False)."""

    def created(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        """A storage was created."""

    def released(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        """The last tensor using a storage died."""

    def ran(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """An aten op ran (after its outputs were tracked)."""
