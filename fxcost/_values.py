"""Values fxcost knows although its tensors are fake: what the model's own code computes from
constants (``torch.arange(T)``, ``torch.tensor([0, 1])``, masks built from them) and what an
assumption says (``nonzero`` selecting every element yields the positions ``0..n-1``).

Small tensors whose inputs are all known are computed for real, on the CPU, next to their fake
twins; the model's inputs and weights are never read, so nothing derived from them is known.
A value read of a known tensor (``bool(mask.any())``, ``int(idx)``) then needs no assumption,
and assumptions stay consistent with each other (an index taken from an assumed ``nonzero`` is
in range).
"""

from __future__ import annotations

from typing import Any

import torch

from ._compat import FakeTensor, mutates_inputs, pytree, real_tensors, storage_key
from ._records import iter_instances

#: Tensors with more elements than this are not computed for real (their values stay unknown).
LIMIT = 1 << 16
_UNINITIALISED = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"}
_LIFTS = {"lift_fresh", "lift", "lift_fresh_copy"}


class KnownValues:
    """Real values of fake storages, kept as real 1-D buffers of their storage's size."""

    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}

    def real(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The real twin of a fake tensor whose storage is known (a view of its buffer), else None."""
        buffer = self.buffers.get(storage_key(tensor))
        if buffer is None or buffer.dtype != tensor.dtype:
            return None
        with real_tensors():
            return torch.as_strided(buffer, tensor.shape, tensor.stride(), tensor.storage_offset())

    def remember(self, fake: torch.Tensor, real: torch.Tensor) -> None:
        """Record that ``fake`` holds the values of ``real`` (same shape)."""
        if fake.numel() > LIMIT or real.shape != fake.shape:
            return
        with real_tensors():
            elements = fake.untyped_storage().nbytes() // max(fake.element_size(), 1)
            buffer = torch.zeros(elements, dtype=fake.dtype)
            torch.as_strided(buffer, fake.shape, fake.stride(), fake.storage_offset()).copy_(real)
        self.buffers[storage_key(fake)] = buffer

    def read(self, tensor: torch.Tensor) -> Any:
        """The Python value of a known one-element tensor, or None."""
        real = self.real(tensor)
        if real is None:
            return None
        with real_tensors():
            return real.item()

    def exact(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """For an op whose output size depends on values (``nonzero``...): its fake outputs
        with their real values when every tensor it reads is known, else None. Call it where
        tensor factories make fake tensors."""
        real_out = self._run_real(func, args, kwargs)
        if real_out is None:
            return None
        fakes = pytree.tree_map(lambda r: torch.empty(r.shape, dtype=r.dtype, device=_device(args))
                                if isinstance(r, torch.Tensor) else r, real_out)
        for fake, real in zip(pytree.tree_leaves(fakes), pytree.tree_leaves(real_out)):
            if isinstance(real, torch.Tensor):
                self.remember(fake, real)
        return fakes

    def _run_real(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``func`` on the real twins of its arguments, or None if one is unknown or it fails."""
        name = getattr(getattr(func, "overloadpacket", func), "__name__", "")
        missing = False

        def twin(value: Any) -> Any:
            nonlocal missing
            if isinstance(value, FakeTensor):
                real = self.real(value)
                if real is None:
                    missing = True
                return real
            if isinstance(value, torch.Tensor) and name not in _LIFTS:
                missing = True  # a real tensor of the model: its values are not read
            return value

        real_args, real_kwargs = pytree.tree_map(twin, (args, kwargs))
        if missing:
            return None
        try:
            with real_tensors():
                return func(*real_args, **{k: v for k, v in real_kwargs.items() if k != "device"})
        except Exception:  # noqa: BLE001 - a value fxcost cannot compute stays unknown
            return None

    def propagate(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """After an aten op ran on fake tensors: if every tensor it read is known and small,
        run it for real too and remember its outputs' values."""
        for value in iter_instances((args, kwargs), torch.Tensor):  # the common case: an unknown input
            if not isinstance(value, FakeTensor) or storage_key(value) not in self.buffers:
                if not (isinstance(value, torch.Tensor) and not isinstance(value, FakeTensor)):
                    return
        name = getattr(getattr(func, "overloadpacket", func), "__name__", "")
        if name in _UNINITIALISED or torch.Tag.nondeterministic_seeded in getattr(func, "tags", ()):
            return
        outputs = [t for t in pytree.tree_leaves(out) if isinstance(t, FakeTensor)]
        if not outputs or any(t.numel() > LIMIT for t in outputs):
            return
        real_out = self._run_real(func, args, kwargs)
        if real_out is None:
            return
        reals = [t for t in pytree.tree_leaves(real_out) if isinstance(t, torch.Tensor)]
        if len(reals) != len(outputs):
            return
        for fake, real in zip(outputs, reals):
            if storage_key(fake) not in self.buffers or mutates_inputs(func):
                self.remember(fake, real)


def _device(args: tuple) -> torch.device:
    return next((t.device for t in pytree.tree_leaves(args) if isinstance(t, torch.Tensor)), torch.device("cpu"))
