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
from torch.overrides import TorchFunctionMode
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
                 free_inputs: bool = False, kept_whole=(), whole: tuple[type, ...] = ()) -> dict[str, int]:
    """Real live-activation peaks of one forward without grad (modules in eval mode, or in train
    mode with ``training=True``: the model's flags are changed), at node boundaries and at
    every aten op. Inside the modules the graph calls at the paths ``kept_whole``, the live
    bytes are also measured after every outermost torch call (modules of the classes in
    ``whole`` count as one call), as Python runs them."""
    gm = trace(model, leaf_modules)
    gm.train(training)
    preexisting = {_key(t) for t in (*gm.parameters(), *gm.buffers(), *inputs)}
    held = 0 if free_inputs else sum(t.untyped_storage().nbytes() for t in {_key(t): t for t in inputs}.values())
    tracker = StorageTracker(preexisting)
    with torch.no_grad(), tracker:
        if kept_whole:
            interpreter = _MixedMeasuring(gm, tracker, set(kept_whole), _CallBoundaries(tracker, whole))
        else:
            interpreter = _Measuring(gm, tracker, [t.clone() for t in inputs] if free_inputs else None)
        output = interpreter.run(*inputs)
        del output
    return {
        "node_peak": max(interpreter.node_live) + held,
        "op_peak": tracker.op_peak + held,
        "node_live": [live + held for live in interpreter.node_live],
    }


class _CallBoundaries(TorchFunctionMode):
    """Live bytes after every outermost torch call of an eager run (the granularity of the
    graph fxcost builds from captured code). Calls inside modules that are costed whole
    (Linear, LayerNorm, Embedding...) are inside one boundary."""

    def __init__(self, tracker: StorageTracker, whole: tuple[type, ...]):
        super().__init__()
        self.tracker = tracker
        self.whole = whole
        self.depth = 0
        self.live: list[int] = []
        self.handles = []

    def __enter__(self):
        from torch.nn.modules import module

        self.handles = [module.register_module_forward_pre_hook(self._enter),
                        module.register_module_forward_hook(self._leave, always_call=True)]
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return super().__exit__(*exc)

    def _enter(self, module, args):
        if isinstance(module, self.whole):
            self.depth += 1

    def _leave(self, module, args, output):
        if isinstance(module, self.whole):
            self.depth -= 1
            if not self.depth:
                self.live.append(self.tracker.current)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.depth:
            self.live.append(self.tracker.current)
        return out


def measure_eager(model: torch.nn.Module, *args, whole: tuple[type, ...] = (), **kwargs) -> dict[str, int]:
    """Real live-activation peaks of one eval forward of ``model`` as Python runs it (eager, no
    graph): at every aten op, and after every outermost torch call (modules of the classes in
    ``whole`` count as one call). Inputs are held by the caller."""
    inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    preexisting = {_key(t) for t in (*model.parameters(), *model.buffers(), *inputs)}
    held = sum(t.untyped_storage().nbytes() for t in {_key(t): t for t in inputs}.values())
    tracker = StorageTracker(preexisting)
    boundaries = _CallBoundaries(tracker, whole)
    with torch.no_grad(), tracker, boundaries:
        output = model(*args, **kwargs)
        del output
    return {"node_peak": max(boundaries.live) + held, "op_peak": tracker.op_peak + held}


class _MixedMeasuring(_Measuring):
    """Runs the traced graph; inside the modules kept whole, marks every outermost torch call."""

    def __init__(self, gm, tracker, kept: set[str], boundaries: _CallBoundaries):
        super().__init__(gm, tracker)
        self.kept = kept
        self.boundaries = boundaries

    def run_node(self, n):
        if n.op == "call_module" and str(n.target) in self.kept:
            with self.boundaries:
                result = super().run_node(n)
            self.node_live.extend(self.boundaries.live)
            self.boundaries.live = []
            return result
        return super().run_node(n)


def measure_analysed(model: torch.nn.Module, inputs: dict, kept_whole, whole: tuple[type, ...] = ()) -> dict[str, int]:
    """Real live-activation peaks of an eval forward of ``model`` on keyword ``inputs``, run
    the way fxcost analyses it: fx's generated schedule where fx traces the model (values freed
    after their last use), Python's own lifetimes inside the modules ``kept_whole`` (paths; ''
    = the whole model), measured after every outermost torch call there."""
    import copy

    from fxcost._inputs import explicit_forward

    kept_whole = set(kept_whole)
    if "" in kept_whole:
        return measure_eager(model, whole=whole, **inputs)
    root = copy.copy(model)  # explicit_forward gives this copy, not the model, its own forward
    _, bound = explicit_forward(root, (), dict(inputs), type(model).__name__)
    gm = trace(root, leaf_paths=kept_whole)
    gm.eval()
    placeholders = [bound[str(n.target)] for n in gm.graph.nodes if n.op == "placeholder"]
    tensors = [t for t in tree_leaves(placeholders) if isinstance(t, torch.Tensor)]
    preexisting = {_key(t) for t in (*gm.parameters(), *gm.buffers(), *tensors)}
    held = sum(t.untyped_storage().nbytes() for t in {_key(t): t for t in tensors}.values())
    tracker = StorageTracker(preexisting)
    interpreter = _MixedMeasuring(gm, tracker, kept_whole, _CallBoundaries(tracker, whole))
    with torch.no_grad(), tracker:
        output = interpreter.run(*placeholders)
        del output
    return {"node_peak": max(interpreter.node_live) + held, "op_peak": tracker.op_peak + held}


def measure_training_step(model: torch.nn.Module, inputs: tuple, optimizer: "torch.optim.Optimizer | None",
                          loss_of=lambda output: output.sum(), autocast=None) -> dict[str, int]:
    """Real peak of live memory during one steady-state training step of ``model`` on
    ``inputs`` (CPU): a first step creates the optimizer's state, then the measured step runs
    forward, loss, backward, ``optimizer.step()`` and ``zero_grad(set_to_none=True)`` under the
    storage tracker. Everything alive counts: parameters, buffers, the inputs, the optimizer's
    state (alive before the step), and every storage the step creates while it lives."""
    def step():
        context = torch.autocast("cpu", dtype=autocast) if autocast is not None else torch.enable_grad()
        with context:
            loss = loss_of(model(*inputs))
        loss.backward()
        del loss
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            for p in model.parameters():
                p.grad = None

    model.train()
    step()  # the optimizer's state now exists
    state = [v for s in (optimizer.state.values() if optimizer is not None else ()) for v in s.values()
             if isinstance(v, torch.Tensor)]
    before = {_key(t): t.untyped_storage().nbytes() for t in (*model.parameters(), *model.buffers(),
                                                               *tree_leaves(inputs), *state)
              if isinstance(t, torch.Tensor)}
    tracker = StorageTracker(set(before))
    with tracker:
        step()
    return {"peak": tracker.op_peak + sum(before.values()), "optimizer_state": sum(_key(t) in before and
            t.untyped_storage().nbytes() for t in {_key(t): t for t in state}.values())}
