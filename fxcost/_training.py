"""One steady-state training step, run on fake tensors and followed op by op.

The forward runs with autograd on (and under autocast, and activation checkpointing, when
asked); every graph node tags the autograd nodes it creates, and a saved-tensor hook notes
what autograd keeps for the backward. Then the loss, ``loss.backward()`` and the optimizer
step run on fake tensors too. Eager PyTorch semantics come for free: what autograd saves,
when gradients are allocated and freed, the optimizer's own temporaries are what torch does.
The storage tracker counts live bytes by category at every aten op; backward ops are costed
by the aten-level rules of the registry and attributed to the node whose gradient they compute.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.fx as fx
from torch import nn

from ._compat import onednn_disabled, pytree, storage_key
from ._errors import InvalidInputError
from ._options import Training
from ._records import CATEGORIES, Cost, MemoryPoint, PeakHolder, TrainingStep, iter_instances
from ._registry import OpCall, RuleRegistry
from ._storage import Listener, StorageTracker

#: aten ops that only view, copy or create data: no FLOPs (bytes are not counted in the step).
_MOVES_DATA = frozenset({
    "view", "_unsafe_view", "reshape", "expand", "t", "transpose", "permute", "as_strided", "detach", "alias",
    "slice", "select", "unsqueeze", "squeeze", "clone", "copy_", "_to_copy", "to", "contiguous", "zeros", "ones",
    "zeros_like", "ones_like", "empty", "empty_like", "empty_strided", "new_zeros", "new_ones", "new_empty",
    "new_empty_strided", "full", "full_like", "fill_", "zero_", "lift_fresh", "unbind", "split", "split_with_sizes",
    "chunk", "cat", "stack", "index_select", "gather", "scatter", "_reshape_alias", "expand_as", "view_as",
    "split_copy", "slice_backward", "select_backward", "index", "unfold", "flip", "roll", "repeat", "narrow",
    "pad", "constant_pad_nd", "_unsafe_index", "masked_fill", "masked_fill_", "where", "arange", "scalar_tensor",
    "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "_foreach_zero_", "set_", "resize_", "device",
})
_DEFAULT_LOSS = "output.sum()"


@dataclass
class _Owner:
    """Who an op belongs to: a graph node, a call recorded inside a module kept whole (resolved
    to its graph node after splicing), the loss or the optimizer."""

    node: Any
    """The fx node (or a label: ``loss``, ``optimizer``)."""
    call: int | None = None
    """Index of the recorded call inside ``node``'s recording, if any."""
    macs: int = 0
    flops: int = 0


class StepObserver(Listener):
    """Follows one training step (see the module's docstring)."""

    def __init__(self, training: Training, rules: RuleRegistry, root: nn.Module, inputs: list,
                 tracker: StorageTracker) -> None:
        self.training = training
        self.rules = rules
        self.root = root
        self.tracker = tracker
        self.phase = "warm-up"
        self.owner: _Owner | None = None
        self.owners: dict[Any, _Owner] = {}
        self.autograd_owner: dict[Any, _Owner] = {}
        self.parameters = list({id(p): p for p in root.parameters() if p.requires_grad}.values())
        self.optimizer = training.build_optimizer(self.parameters)
        weights = {storage_key(t): t.untyped_storage().nbytes() for t in (*root.parameters(), *root.buffers())}
        held = {storage_key(t): t.untyped_storage().nbytes() for t in iter_instances(inputs, torch.Tensor)}
        self.constant = {"weights": sum(weights.values()), "inputs": sum(held.values())}
        self.category: dict[int, str] = {}
        self.sizes: dict[int, int] = {}
        self.totals = dict.fromkeys(CATEGORIES, 0)
        self.peak = -1
        self.peak_at: tuple[str, _Owner | None, dict[str, int], int] | None = None
        self.peak_point = 0
        self.timeline: list[tuple[str, _Owner | None, dict[str, int], int]] = []
        self.ops = 0
        self.saved: dict[int, list] = {}  # storage -> [owner, bytes, saved at op, released at op]
        self.unsupported: dict[str, int] = {}
        self.loss_cost = _Owner("loss")
        self.optimizer_cost = _Owner("optimizer")
        self.gradient_bytes = 0
        self.optimizer_state_bytes = 0
        self.loss_description = _DEFAULT_LOSS

    # --- memory by category ------------------------------------------------------------
    def created(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        self.category[key] = "temporaries"
        self.sizes[key] = nbytes
        self.totals["temporaries"] += nbytes

    def released(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        category = self.category.pop(key, None)
        if category is not None:
            self.totals[category] -= self.sizes.pop(key)
        if key in self.saved:
            self.saved[key][3] = self.ops

    def _mark(self, key: int, category: str) -> None:
        current = self.category.get(key)
        if current is not None and current != category:
            self.totals[current] -= self.sizes[key]
            self.totals[category] += self.sizes[key]
            self.category[key] = category

    def _live(self) -> dict[str, int]:
        live = dict(self.totals)
        live["weights"] += self.constant["weights"]
        live["inputs"] += self.constant["inputs"]
        return live

    def ran(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        self.ops += 1
        total = sum(self.totals.values())
        if self.phase != "warm-up" and total > self.peak:
            self.peak = total
            self.peak_at = (self.phase, self.owner, self._live(), self.ops)
            self.peak_point = len(self.timeline)  # the peak goes into the timeline here
        if self.phase == "optimizer":  # one point per op: its temporaries come and go within a node
            self.timeline.append((self.phase, self.owner, self._live(), self.ops))
        if self.phase in ("loss", "backward", "optimizer"):
            self._count(func, args, kwargs, out)

    def _at(self, owner: _Owner | None) -> None:
        if owner is not self.owner:
            self.owner = owner
            if self.phase != "warm-up":
                self.timeline.append((self.phase, owner, self._live(), self.ops))

    # --- costing ops the step runs -----------------------------------------------------
    def _count(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        owner = {"loss": self.loss_cost, "optimizer": self.optimizer_cost}.get(self.phase, self.owner)
        if owner is None:
            owner = self.loss_cost  # the gradient of the loss seeds the backward
        packet = getattr(func, "overloadpacket", func)
        name = getattr(packet, "__name__", str(func))
        rule = self.rules.lookup(packet)
        outputs = tuple(self.tracker.meta(t) for t in iter_instances(out, torch.Tensor))
        if rule is not None:
            meta_args, meta_kwargs = pytree.tree_map(
                lambda v: self.tracker.meta(v) if isinstance(v, torch.Tensor) else v, (args, kwargs))
            cost: Cost = rule(OpCall(packet, tuple(meta_args), dict(meta_kwargs), outputs))
            owner.macs += int(cost.macs)
            owner.flops += int(cost.flops)
        elif self.phase == "optimizer" and name not in _MOVES_DATA:
            owner.flops += sum(o.numel for o in outputs)  # the update: one FLOP per element written
        elif name in _MOVES_DATA or getattr(func, "is_view", False) or name.startswith("_foreach_zero"):
            pass
        elif torch.Tag.pointwise in getattr(func, "tags", ()):
            owner.flops += sum(o.numel for o in outputs[:1])
        else:
            self.unsupported[name] = self.unsupported.get(name, 0) + 1

    # --- autograd ----------------------------------------------------------------------
    def owner_of(self, node: Any, call: int | None = None) -> _Owner:
        key = (node, call)
        if key not in self.owners:
            self.owners[key] = _Owner(node, call)
        return self.owners[key]

    def running(self, node: Any, call: int | None = None) -> None:
        """The forward is now running ``node`` (or recorded call ``call`` inside it)."""
        self._at(self.owner_of(node, call))

    def made(self, value: Any, node: Any, call: int | None = None) -> None:
        """``node`` (or its recorded call) produced ``value``: the autograd nodes behind it that
        no earlier node made compute its gradient."""
        owner = self.owner_of(node, call)
        stack = [t.grad_fn for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        while stack:
            grad_fn = stack.pop()
            if grad_fn is None or grad_fn in self.autograd_owner:
                continue
            self.autograd_owner[grad_fn] = owner
            grad_fn.register_prehook(lambda grads, owner=owner: self._at(owner))
            stack.extend(next_fn for next_fn, _ in grad_fn.next_functions)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = storage_key(tensor)
        if key in self.category and self.category[key] == "temporaries":
            self._mark(key, "activations")
            self.saved.setdefault(key, [self.owner, self.sizes[key], self.ops, None])
        return tensor

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """The context of the forward: autograd on, autocast if asked, saved tensors noted.
        Creates the optimizer's state first (a steady-state step)."""
        self._warm_up()
        self.phase = "forward"
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.enable_grad())
            # RNNs take torch's portable kernel (per-step matmuls, gradients only where needed),
            # not oneDNN's fused layer, whose backward always computes every gradient
            stack.enter_context(onednn_disabled())
            if self.training.amp is not None:
                device = next((p.device.type for p in self.parameters), "cpu")
                stack.enter_context(torch.autocast(device_type=device, dtype=self.training.amp))
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t))
            self.autocast = stack
            yield

    def _warm_up(self) -> None:
        for parameter in self.parameters:
            parameter.register_post_accumulate_grad_hook(self._gradient)
        if self.optimizer is None:
            return
        for parameter in self.parameters:
            parameter.grad = torch.zeros_like(parameter)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for state in self.optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    self._mark(storage_key(value), "optimizer_state")
        self.optimizer_state_bytes = sum(
            {storage_key(v): v.untyped_storage().nbytes() for state in self.optimizer.state.values()
             for v in state.values() if isinstance(v, torch.Tensor)}.values())

    def _gradient(self, parameter: torch.Tensor) -> None:
        self._mark(storage_key(parameter.grad), "gradients")

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """The loss of ``output`` (see :class:`fxcost.Training`)."""
        self.phase = "loss"
        self._at(self.loss_cost)
        function = self.training.loss
        try:
            if function is not None:
                self.loss_description = getattr(function, "__name__", type(function).__name__)
                loss = function(output, target)
            elif _loss_of(output) is not None:
                self.loss_description, loss = "output.loss", _loss_of(output)
            else:
                leaf = next((t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)
                             and (t.dtype.is_floating_point or t.dtype.is_complex)), None)
                if leaf is None:
                    raise InvalidInputError("the model's output has no floating-point tensor to sum: pass "
                                            "fxcost.Training(loss=lambda output, target: ...)")
                loss = leaf.sum()
        except InvalidInputError:
            raise
        except Exception as error:  # noqa: BLE001 - the user's loss failed: say how
            shapes = ", ".join(str(tuple(t.shape)) for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor))
            got = f"target {tuple(target.shape)}" if isinstance(target, torch.Tensor) else f"target {target!r}"
            raise InvalidInputError(f"loss(output, target) failed: {type(error).__name__}: "
                                    f"{str(error).splitlines()[0] if str(error) else ''} (output {shapes}; {got}); "
                                    "check the target's shape and dtype, or the loss function") from None
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise InvalidInputError(f"the loss must be a scalar tensor, got {shape}: reduce it (e.g. .mean()) "
                                    "in the loss function")
        if not loss.requires_grad:
            raise InvalidInputError("the loss does not depend on any trainable parameter: nothing to train "
                                    "(are all parameters frozen, or is the output detached?)")
        self.made(loss, "loss")
        return loss

    def backward_and_step(self, held: list[torch.Tensor]) -> None:
        """``loss.backward()`` of the loss in ``held`` (taken out of it, so it dies after the
        backward as in a training loop), then the optimizer step and
        ``zero_grad(set_to_none=True)``."""
        self.phase = "backward"
        held.pop().backward()
        self.gradient_bytes = sum({storage_key(p.grad): p.grad.untyped_storage().nbytes()
                                   for p in self.parameters if p.grad is not None}.values())
        if self.optimizer is not None:
            self.phase = "optimizer"
            self._at(self.optimizer_cost)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        else:
            for parameter in self.parameters:
                parameter.grad = None
        self.timeline.append((self.phase, None, self._live(), self.ops))  # the step's end
        self.phase = "done"

    # --- the record --------------------------------------------------------------------
    def result(self, node_names: dict[tuple, str], graph: fx.GraphModule, checkpointed: tuple[str, ...],
               module_path: Any) -> tuple[TrainingStep, dict[str, tuple[int, int]]]:
        """The step's record and ``{node name: (backward MACs, backward FLOPs)}``.

        ``node_names`` maps ``(node, call)`` to the name of the graph node it became."""
        def name_of(owner: _Owner | None) -> str:
            if owner is None:
                return ""
            if isinstance(owner.node, str):
                return owner.node
            return node_names.get((owner.node, owner.call), getattr(owner.node, "name", str(owner.node)))

        backward: dict[str, list[int]] = {}
        for owner in self.owners.values():
            if isinstance(owner.node, str) or not (owner.macs or owner.flops):
                continue
            entry = backward.setdefault(name_of(owner), [0, 0])
            entry[0] += owner.macs
            entry[1] += owner.flops
        phase, owner, live, at = self.peak_at if self.peak_at is not None else ("forward", None, self._live(), 0)
        holders: dict[str, int] = {}
        for saved_owner, nbytes, start, end in self.saved.values():
            if start <= at and (end is None or end > at):
                name = name_of(saved_owner)
                holders[name] = holders.get(name, 0) + nbytes
        peak_holders = tuple(PeakHolder(name, module_path(name), nbytes)
                             for name, nbytes in sorted(holders.items(), key=lambda item: -item[1]))
        step = TrainingStep(
            optimizer=self.training.optimizer_name, loss=self.loss_description,
            amp=str(self.training.amp).replace("torch.", "") if self.training.amp is not None else None,
            checkpointed=checkpointed, peak_bytes=sum(live.values()), peak_phase=phase, peak_node=name_of(owner),
            memory=live, peak_holders=peak_holders, gradient_bytes=self.gradient_bytes,
            optimizer_state_bytes=self.optimizer_state_bytes, loss_macs=self.loss_cost.macs,
            loss_flops=self.loss_cost.flops, optimizer_flops=self.optimizer_cost.flops,
            unsupported=dict(self.unsupported),
            timeline=tuple(MemoryPoint(p, name_of(o), bytes_, op) for p, o, bytes_, op in
                           (*self.timeline[:self.peak_point], (phase, owner, live, at), *self.timeline[self.peak_point:])),
        )
        return step, {name: (macs, flops) for name, (macs, flops) in backward.items()}


def _loss_of(output: Any) -> Any:
    """The loss a model returned (``output.loss``; a traced Hugging Face output is a dict)."""
    if isinstance(output, dict):
        return output.get("loss")
    return getattr(output, "loss", None)


def fake_target(target: Any, device: torch.device) -> Any:
    """The loss target as a fake tensor (a shape means float32). Call inside the fake mode."""
    if target is None:
        return None
    if isinstance(target, torch.Size) or (isinstance(target, (tuple, list)) and target
                                         and all(type(v) is int for v in target)):
        return torch.empty(tuple(target), dtype=torch.float32, device=device)
    if isinstance(target, torch.Tensor):
        return torch.empty_strided(tuple(target.shape), tuple(target.stride()), dtype=target.dtype, device=device)
    return target


def checkpointed_forward(module: nn.Module) -> None:
    """Run ``module`` (fxcost's mirror) under non-reentrant activation checkpointing."""
    original = module.forward

    def forward(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(original, *args, use_reentrant=False, **kwargs)

    module.__dict__["forward"] = forward
