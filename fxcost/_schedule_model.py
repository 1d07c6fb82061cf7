"""The buffer model of a graph's schedule: who allocates, holds and frees which storage, so the
peak of any topological order can be computed quickly.

It is fxcost's liveness model (see :mod:`fxcost._liveness`) restated for reordering: a buffer (a
storage) is allocated by the node that creates it and freed after the last node that holds it
(views and in-place results hold their base) or reads any of its holders; model inputs are held
to the end unless ``free_inputs``; graph outputs live to the end; parameters and buffers of the
model are not activations. Floating-point activations count at ``activation_dtype`` if given.

Placeholders, then ``get_attr`` nodes, come first in every order, and the output node last;
the other nodes ("steps") may be permuted within their dependencies: data flow, plus, for every
storage written in place, the original order between that write and every other access to the
storage, plus the original order among impure nodes.

A node that runs a module as one call whose inside fxcost analyses call by call (a module kept
whole, :class:`Inside`) needs more than its inputs and outputs while it runs: the most its own
buffers take at once beyond its outputs (``extra``), and the buffers it keeps alive to the end
(on a module, in a cache) without returning them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from ._compat import storage_key
from ._graph import REGION_KEY, RETAINED_KEY, value_of
from ._graph_values import FakeRun
from ._liveness import Liveness
from ._options import MemoryOptions
from ._records import iter_metas


def _storages(value: Any, weights: set[int]) -> dict[int, tuple[int, torch.dtype]]:
    """``{storage: (bytes, dtype)}`` of the activation tensors in a node's value."""
    found: dict[int, tuple[int, torch.dtype]] = {}
    for leaf in pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            key = storage_key(leaf)
            if key not in weights:
                found.setdefault(key, (int(leaf.untyped_storage().nbytes()), leaf.dtype))
    return found


@dataclass(frozen=True)
class Inside:
    """What a node running a module as one call allocates inside it."""

    extra: int = 0
    """Bytes alive at its busiest point beyond its outputs and what it keeps (freed before it returns)."""
    kept: tuple[int, ...] = ()
    """Sizes of the buffers it keeps alive to the end without returning them."""


@dataclass
class ScheduleModel:
    """Buffers and dependencies of a graph, indexed by node number in the original order."""

    nodes: list[fx.Node]
    """Every node, original order."""
    prefix: list[int]
    """Placeholders and ``get_attr`` nodes: always first, in this order."""
    steps: list[int]
    """The nodes that may be reordered, original order."""
    suffix: list[int]
    """The output node."""
    preds: list[set[int]]
    """Per node: the steps that must run before it."""
    succs: list[set[int]]
    """Per node: the steps that must run after it."""
    sizes: list[int]
    """Per buffer: bytes (at the counted dtype)."""
    holders: list[list[int]]
    """Per buffer: nodes whose value holds it (the first one allocates it)."""
    readers: list[list[int]]
    """Per buffer: holders and every user of a holder (it is freed after the last of them)."""
    pinned: list[bool]
    """Per buffer: alive to the end (a held input or a graph output)."""
    allocates: list[list[int]]
    """Per node: the buffers it allocates."""
    reads: list[list[int]]
    """Per node: the buffers it holds or reads, other than those it allocates."""
    extra: list[int]
    """Per node: bytes alive only while it runs (see :class:`Inside`)."""

    @classmethod
    def build(cls, gm: fx.GraphModule, run: FakeRun, options: MemoryOptions = MemoryOptions(),
              inside: dict[str, Inside] | None = None) -> "ScheduleModel":
        """The buffers of ``gm`` from a fake run of it; ``inside``: node name -> what it
        allocates inside (nodes running a module kept whole)."""
        inside = inside or {}
        nodes = list(gm.graph.nodes)
        number = {node: i for i, node in enumerate(nodes)}
        prefix = [i for i, n in enumerate(nodes) if n.op == "placeholder"] + \
                 [i for i, n in enumerate(nodes) if n.op == "get_attr"]
        suffix = [i for i, n in enumerate(nodes) if n.op == "output"]
        fixed = set(prefix) | set(suffix)
        steps = [i for i in range(len(nodes)) if i not in fixed]

        def counted(nbytes: int, dtype: torch.dtype) -> int:
            if options.activation_dtype is not None and dtype.is_floating_point:
                return nbytes // dtype.itemsize * options.activation_dtype.itemsize
            return nbytes

        buffer_of: dict[int, int] = {}
        sizes: list[int] = []
        holders: list[list[int]] = []
        pinned: list[bool] = []
        allocates: list[list[int]] = [[] for _ in nodes]
        held: list[list[int]] = [[] for _ in nodes]
        for i, node in enumerate(nodes):
            if node.op == "get_attr":
                continue
            for key, (nbytes, dtype) in _storages(run.values.get(node), run.weight_storages).items():
                if key not in buffer_of:
                    buffer_of[key] = len(sizes)
                    sizes.append(counted(nbytes, dtype))
                    holders.append([])
                    pinned.append(False)
                    allocates[i].append(buffer_of[key])
                b = buffer_of[key]
                holders[b].append(i)
                held[i].append(b)
                if node.op == "output" or (node.op == "placeholder" and not options.free_inputs):
                    pinned[b] = True
            for size in inside.get(node.name, Inside()).kept:  # alive to the end, read by nobody
                sizes.append(size)
                holders.append([i])
                pinned.append(True)
                allocates[i].append(len(sizes) - 1)
        extra = [inside.get(node.name, Inside()).extra for node in nodes]
        readers = [sorted({*hs, *(number[u] for h in hs for u in nodes[h].users)}) for hs in holders]
        reads: list[list[int]] = [[] for _ in nodes]
        for b, members in enumerate(readers):
            for i in members:
                if b not in allocates[i]:
                    reads[i].append(b)

        preds: list[set[int]] = [set() for _ in nodes]
        for i in steps:
            preds[i] = {number[p] for p in nodes[i].all_input_nodes if number[p] not in fixed}
        # a write in place keeps its original order with every other access to the storage
        accesses: dict[int, list[int]] = {}
        for b, members in enumerate(readers):
            accesses[b] = [i for i in members if i not in fixed]
        for node, keys in run.mutated.items():
            w = number[node]
            for key in keys:
                for other in accesses.get(buffer_of.get(key, -1), ()):
                    if other < w:
                        preds[w].add(other)
                    elif other > w:
                        preds[other].add(w)
        impure = [i for i in steps if nodes[i].is_impure()]
        for before, after in zip(impure, impure[1:]):
            preds[after].add(before)
        succs: list[set[int]] = [set() for _ in nodes]
        for i, ps in enumerate(preds):
            for p in ps:
                succs[p].add(i)
        return cls(nodes, prefix, steps, suffix, preds, succs, sizes, holders, readers, pinned, allocates, reads,
                   extra)

    def full_order(self, steps: list[int]) -> list[int]:
        """Node numbers in schedule order: prefix, the given steps, the output."""
        return [*self.prefix, *steps, *self.suffix]

    def timeline(self, steps: list[int]) -> list[int]:
        """Live bytes while each node of ``full_order(steps)`` runs (fxcost's ``live_bytes``)."""
        order = self.full_order(steps)
        position = [0] * len(self.nodes)
        for p, i in enumerate(order):
            position[i] = p
        last = len(order) - 1
        delta = [0] * (len(order) + 1)
        for b, size in enumerate(self.sizes):
            start = min(position[h] for h in self.holders[b])
            end = last if self.pinned[b] else max(position[r] for r in self.readers[b])
            delta[start] += size
            delta[end + 1] -= size
        live, during = 0, []
        for p, i in enumerate(order):
            live += delta[p]
            during.append(live + self.extra[i])
        return during

    def peak(self, steps: list[int]) -> int:
        """Peak live bytes of the order."""
        return max(self.timeline(steps), default=0)

    def lower_bound(self) -> int:
        """A peak no order can go under: the most any one node needs alive while it runs (what
        it allocates and reads, with the inputs held to the end)."""
        held = {b for i in self.prefix for b in self.allocates[i] if self.pinned[b]}
        return max((sum(self.sizes[b] for b in {*held, *self.allocates[i], *self.reads[i]}) + self.extra[i]
                    for i in (*self.prefix, *self.steps)), default=0)

    def is_valid(self, steps: list[int]) -> bool:
        """Whether ``steps`` is a permutation of the steps respecting every dependency."""
        if sorted(steps) != sorted(self.steps):
            return False
        seen: set[int] = set()
        for i in steps:
            if not self.preds[i] <= seen:
                return False
            seen.add(i)
        return True


def kept_whole_inside(graph: fx.GraphModule, liveness: Liveness, options: MemoryOptions,
                      regions: dict[str, str]) -> dict[str, Inside]:
    """What each module kept whole allocates inside, from the analysis graph where its calls
    are nodes (``regions``: the module's node name there -> its node's name in the graph to
    reorder) and that graph's ``liveness`` under ``options``."""
    nodes = list(graph.graph.nodes)
    found: dict[str, Inside] = {}
    for region, name in regions.items():
        members = [i for i, node in enumerate(nodes) if node.meta.get(REGION_KEY) == region]
        if not members:
            continue
        seen = {m.storage for node in nodes[:members[0]] for m in iter_metas(value_of(node))}
        made: dict[int, int] = {}
        for i in members:
            for meta in iter_metas(value_of(nodes[i])):
                if meta.storage not in seen and nodes[i].op != "get_attr":
                    made.setdefault(meta.storage, options.activation_size(meta.storage_nbytes, meta.dtype))
        end = nodes[members[-1]]
        returned = sum(made.get(s, 0) for s in {m.storage for m in iter_metas(value_of(end))})
        kept = tuple(made[s] for s in end.meta.get(RETAINED_KEY, ()) if s in made)
        names = {nodes[i].name for i in members}
        own = [b for b in liveness.buffers if b.producer in names]
        busiest = max(sum(b.nbytes for b in own if b.start <= i <= b.end) for i in members)
        found[name] = Inside(max(0, busiest - returned - sum(kept)), kept)
    return found
