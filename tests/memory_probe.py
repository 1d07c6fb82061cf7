"""Measuring the real peak of live activation memory of a traced model.

The GraphModule is executed for real on CPU by an fx Interpreter that frees every value after
its last use and drops unread values at once (as fx's generated code does), under a TorchDispatchMode that sees every tensor
an aten op creates: a storage is counted once, when first seen, and released by weakref
finalizers when the last tensor using it dies. Parameters and buffers are not created by the
run. The inputs are held by the caller for the whole call (added to every figure), or, with
``free_inputs=True``, handed over to the run (copied under the tracker, referenced only by the
interpreter) and freed after their last use.
"""

from __future__ import annotations

import weakref

import torch
import torch.fx as fx
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fxcost._trace import trace


def _key(tensor: torch.Tensor) -> int:
    return StorageWeakRef(tensor.untyped_storage()).cdata


class StorageTracker(TorchDispatchMode):
    def __init__(self, preexisting: set[int]):
        super().__init__()
        self.preexisting = preexisting
        self.sizes: dict[int, int] = {}
        self.holders: dict[int, int] = {}
        self.current = 0
        self.op_peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        self.op_peak = max(self.op_peak, self.current)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        key = _key(tensor)
        if key in self.preexisting:
            return
        if key not in self.holders:
            self.holders[key] = 0
            self.sizes[key] = tensor.untyped_storage().nbytes()
            self.current += self.sizes[key]
        self.holders[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self.holders[key] -= 1
        if self.holders[key] == 0:
            del self.holders[key]
            self.current -= self.sizes.pop(key)


class _Measuring(fx.Interpreter):
    def __init__(self, gm, tracker, handed_over=None):
        super().__init__(gm, garbage_collect_values=True)
        self.tracker = tracker
        self.node_live: list[int] = []
        self.handed_over = handed_over  # inputs only the interpreter references, or None

    def placeholder(self, target, args, kwargs):
        if self.handed_over is not None:
            return self.handed_over.pop(0)
        return super().placeholder(target, args, kwargs)

    def run_node(self, n):
        result = super().run_node(n)
        self.node_live.append(self.tracker.current)
        if not n.users and n.op != "output":
            return None  # fx's generated code drops a value nobody reads right away
        return result


def measure_peak(model: torch.nn.Module, *inputs: torch.Tensor, leaf_modules=(), training: bool = False,
                 free_inputs: bool = False) -> dict[str, int]:
    """Real live-activation peaks of one forward without grad (modules in eval mode, or in train
    mode with ``training=True``: the model's flags are changed), at node boundaries and at
    every aten op."""
    gm = trace(model, leaf_modules)
    gm.train(training)
    preexisting = {_key(t) for t in (*gm.parameters(), *gm.buffers(), *inputs)}
    held = 0 if free_inputs else sum(t.untyped_storage().nbytes() for t in {_key(t): t for t in inputs}.values())
    tracker = StorageTracker(preexisting)
    with torch.no_grad(), tracker:
        interpreter = _Measuring(gm, tracker, [t.clone() for t in inputs] if free_inputs else None)
        output = interpreter.run(*inputs)
        del output
    return {
        "node_peak": max(interpreter.node_live) + held,
        "op_peak": tracker.op_peak + held,
        "node_live": [live + held for live in interpreter.node_live],
    }
