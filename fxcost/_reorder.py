"""A peak-minimising schedule: reorder a graph's nodes so fewer activations are alive at once.

Finding the order with the smallest peak is NP-hard for general graphs, so several orders are
built and the best kept (as Inductor's ``reorder_for_peak_memory`` does in
``torch/_inductor/memory.py``), then improved by a local search:

* ``baseline``: the graph's own order;
* ``lpmf``: least peak memory first (Inductor's greedy, after Wu et al., DAC 2006): among the
  nodes ready to run, while one fits under the peak seen so far, the one leaving the least
  memory after it ran; otherwise the one needing the least memory to run;
* ``bfs``: FIFO (Inductor's): the ready node whose predecessors ran earliest;
* ``dfs``: Inductor's depth-first order, dependencies visited in ascending order of the bytes a
  node writes and reads;
* ``memory-aware dfs``: depth-first, the inputs of a node visited in decreasing order of (peak
  of the subgraph producing it - its output), the optimal order for trees (Liu, 1987);
* ``local search``: from the best of these, nodes before the peak step are sunk just before
  their first consumer, and nodes after it hoisted just after their last dependency, while a
  move lowers (peak, number of steps at the peak).

Every order is scored on :class:`ScheduleModel`, which is fxcost's liveness model, so the
peak it predicts is the ``peak_activation_bytes`` that :func:`fxcost.analyze` reports for the
reordered graph.
"""

from __future__ import annotations

import heapq
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.fx as fx
from torch import nn

from ._analyze import (AssumptionWarning, TraceFallbackWarning, UnsupportedOpWarning, analysis_graph, analyze,
                       liveness_of)
from ._errors import InvalidModelError
from ._options import AnalysisOptions, MemoryOptions
from ._replay import KeptWhole, fake_run_of, replay
from ._report import Report
from ._schedule_model import ScheduleModel, kept_whole_inside
from ._table import text_table
from ._units import format_bytes


# --- the orders ------------------------------------------------------------------------------

def _lpmf(model: ScheduleModel) -> list[int]:
    """Least peak memory first."""
    steps = set(model.steps)
    waiting = {i: len(model.preds[i]) for i in steps}
    remaining = [sum(1 for r in readers if r in steps) for readers in model.readers]
    ready = {i for i in steps if waiting[i] == 0}
    live = sum(model.sizes[b] for i in model.prefix for b in model.allocates[i])
    peak = live
    order: list[int] = []
    while ready:
        gap = peak - live

        def frees(i: int) -> int:
            """Bytes freed once ``i`` has run: buffers it is the last reader of."""
            own = [b for b in model.allocates[i] if not model.pinned[b] and remaining[b] == 1]
            read = [b for b in model.reads[i] if not model.pinned[b] and remaining[b] == 1]
            return sum(model.sizes[b] for b in (*own, *read))

        def cost(i: int) -> tuple[int, int, int]:
            size = sum(model.sizes[b] for b in model.allocates[i]) + model.extra[i]
            return (size if size > gap else 0, size - model.extra[i] - frees(i), i)

        chosen = min(ready, key=cost)
        ready.remove(chosen)
        order.append(chosen)
        live += sum(model.sizes[b] for b in model.allocates[chosen])
        peak = max(peak, live + model.extra[chosen])
        live -= frees(chosen)
        for b in (*model.allocates[chosen], *model.reads[chosen]):
            remaining[b] -= 1
        for s in model.succs[chosen]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.add(s)
    return order


def _bfs(model: ScheduleModel) -> list[int]:
    """Ready nodes by the sorted positions of their predecessors (earliest first)."""
    waiting = {i: len(model.preds[i]) for i in model.steps}
    position: dict[int, int] = {}
    heap = [([], i) for i in model.steps if waiting[i] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, chosen = heapq.heappop(heap)
        position[chosen] = len(order)
        order.append(chosen)
        for s in sorted(model.succs[chosen]):
            waiting[s] -= 1
            if waiting[s] == 0:
                heapq.heappush(heap, (sorted(position[p] for p in model.preds[s]), s))
    return order


def _depth_first(model: ScheduleModel, key: Callable[[int], Any], roots: list[int]) -> list[int]:
    order: list[int] = []
    seen: set[int] = set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            for p in sorted(model.preds[node], key=key, reverse=True):  # popped in ascending key order
                if p not in seen:
                    stack.append((p, False))
    return order


def _dfs(model: ScheduleModel) -> list[int]:
    """Inductor's DFS: nodes, and the dependencies of each, in ascending bytes written + read."""
    weight = {i: sum(model.sizes[b] for b in (*model.allocates[i], *model.reads[i])) for i in model.steps}
    key = lambda i: (weight[i], i)  # noqa: E731
    return _depth_first(model, key, sorted(model.steps, key=key))


def _memory_aware_dfs(model: ScheduleModel) -> list[int]:
    """Depth-first from the outputs; inputs in decreasing (subgraph peak - output size)."""
    out = {i: sum(model.sizes[b] for b in model.allocates[i]) for i in model.steps}
    peak: dict[int, int] = {}
    for i in model.steps:  # original order is topological
        running = top = 0
        for p in sorted(model.preds[i], key=lambda p: out[p] - peak[p]):
            top = max(top, running + peak[p])
            running += out[p]
        peak[i] = max(top, running + out[i] + model.extra[i])
    key = lambda i: (peak[i] - out[i], -i)  # noqa: E731 - visited largest first
    sinks = [i for i in model.steps if not model.succs[i]]
    roots = sorted(sinks, key=key, reverse=True)
    return _depth_first(model, lambda i: (-key(i)[0], -key(i)[1]), roots)


def _local_search(model: ScheduleModel, steps: list[int], max_moves: int) -> list[int]:
    """Sink nodes before the peak step past it, hoist nodes after it before it, while the
    (peak, steps at the peak) pair goes down."""
    order = list(steps)
    offset = len(model.prefix)

    def score(candidate: list[int]) -> tuple[int, int]:
        during = model.timeline(candidate)
        top = max(during)
        return top, during.count(top)

    best = score(order)
    for _ in range(max_moves):
        during = model.timeline(order)
        top = max(during)
        where = {i: p for p, i in enumerate(order)}
        peaks = {p - offset for p, live in enumerate(during) if live == top}
        first_peak, last_peak = min(peaks), max(peaks)
        moves: list[tuple[int, int, int]] = []  # (estimated gain, node, new position)
        for p, i in enumerate(order):
            if p < first_peak:
                target = min((where[s] for s in model.succs[i]), default=len(order)) - 1
                if target >= last_peak:
                    moves.append((sum(model.sizes[b] for b in model.allocates[i]), i, target))
            elif p > last_peak:
                target = max((where[q] for q in model.preds[i]), default=-1) + 1
                if target <= first_peak:
                    moves.append((sum(model.sizes[b] for b in model.reads[i]), i, target))
        improved = False
        for _, node, target in sorted(moves, key=lambda m: -m[0])[:8]:
            candidate = [i for i in order if i != node]
            candidate.insert(target, node)
            current = score(candidate)
            if current < best:
                order, best, improved = candidate, current, True
                break
        if not improved:
            break
    return order


#: The orders tried, by name, in this order.
ALGORITHMS: dict[str, Callable[[ScheduleModel], list[int]]] = {
    "baseline": lambda model: list(model.steps),
    "lpmf": _lpmf,
    "bfs": _bfs,
    "dfs": _dfs,
    "memory-aware dfs": _memory_aware_dfs,
}

#: Of these, the ones Inductor's ``reorder_for_peak_memory`` picks from.
INDUCTOR = ("baseline", "lpmf", "bfs", "dfs")


# --- the result --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScheduleCandidate:
    """One order tried and its peak."""

    method: str
    """Name of the algorithm that built it."""
    peak_bytes: int
    """Peak activation memory of the order."""


@dataclass(frozen=True)
class Schedule:
    """A graph reordered for a lower peak, with every order tried."""

    peak_before_bytes: int
    """``peak_activation_bytes`` of the graph in its own order (``fxcost.analyze``)."""
    peak_after_bytes: int
    """``peak_activation_bytes`` of the reordered graph (``fxcost.analyze``)."""
    method: str
    """The algorithm whose order was kept."""
    candidates: tuple[ScheduleCandidate, ...]
    """Every order tried, with its peak."""
    lower_bound_bytes: int = 0
    """No order can go under this peak: the most any one node needs alive while it runs."""
    memory: MemoryOptions = MemoryOptions()
    """Memory layout of the peaks."""
    peak_as_written_bytes: int = 0
    """``peak_activation_bytes`` of the model itself (``fxcost.analyze(model, ...)``): inside the
    modules fx cannot trace, tensors live as long as the Python code keeps them, where the
    graph frees each after its last use. Equal to ``peak_before_bytes`` for traced models."""
    replayed: tuple[str, ...] = ()
    """Modules fx cannot trace whose captured torch calls are nodes of the graph (the graph is
    then specialised to the example input's shapes, and checks them)."""
    kept_whole: tuple[KeptWhole, ...] = ()
    """Modules fx cannot trace that stay one call of the module, not reordered inside, with why."""
    graph_module: fx.GraphModule | None = field(default=None, repr=False, compare=False)
    """The reordered graph."""
    report: Report | None = field(default=None, repr=False, compare=False)
    """``fxcost.analyze`` of the reordered graph (its ``peak_activation_bytes`` is
    ``peak_after_bytes``): budgets are checked on it (``fxcost.assert_within(schedule.report, ...)``)."""

    def peak_of(self, method: str) -> int:
        """Peak of the order built by ``method``."""
        return next(c.peak_bytes for c in self.candidates if c.method == method)

    @property
    def inductor_peak_bytes(self) -> int:
        """The peak Inductor's choice (best of baseline, LPMF, BFS, DFS) reaches."""
        return min(self.peak_of(m) for m in INDUCTOR)

    def table(self) -> str:
        """Peak of every order tried, the one kept marked."""
        rows = [[c.method, format_bytes(c.peak_bytes), f"{100 * (c.peak_bytes / self.peak_before_bytes - 1):+.1f}%"
                 if self.peak_before_bytes else "", "<- kept" if c.method == self.method else ""]
                for c in self.candidates]
        return text_table(rows, ["order", "peak", "vs graph order", ""], "lrrl")

    def __str__(self) -> str:
        change = self.peak_before_bytes / self.peak_after_bytes if self.peak_after_bytes else 1.0
        bound = "the lower bound: no order does better" if self.peak_after_bytes == self.lower_bound_bytes else \
            f"lower bound {format_bytes(self.lower_bound_bytes)}"
        lines = [f"{self.table()}\n",
                 f"peak activations: {format_bytes(self.peak_before_bytes)} -> "
                 f"{format_bytes(self.peak_after_bytes)} ({change:.2f}x lower, order: {self.method}; {bound})"]
        if self.replayed:
            modules = f"{len(self.replayed)} module{'s' if len(self.replayed) > 1 else ''}"
            lines.append(f"as written:       {format_bytes(self.peak_as_written_bytes)} (Python's lifetimes inside "
                         f"{modules} fx cannot trace; the graph frees each tensor after its last use)")
            lines.append("specialised to the example input's shapes (checked when called): captured code computed "
                         "sizes from them")
        for kept in self.kept_whole:
            lines.append(f"kept whole: '{kept.path or type(self.graph_module).__name__}' is one call, not reordered "
                         f"inside: {kept.reason}")
        return "\n".join(lines)


def _rebuilt(gm: fx.GraphModule, model: ScheduleModel, steps: list[int]) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for i in model.full_order(steps):
        node = model.nodes[i]
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.lint()
    return fx.GraphModule(gm, graph, type(gm).__name__)


def schedule_for_peak(model: nn.Module, example_input: Any, memory: MemoryOptions | None = None,
                      max_moves: int = 1000) -> Schedule:
    """Reorder ``model``'s graph for the lowest peak activation memory the algorithms find.

    Args:
        model: any module :func:`fxcost.analyze` analyses, or a ``GraphModule``. Not modified.
        example_input: as for :func:`fxcost.analyze`.
        memory: the memory layout of the peak. The orders are built on the storage-level
            buffer model (``free_inputs`` and ``activation_dtype`` honoured); the deployment
            aliasing options are applied when the result is analysed.
        max_moves: bound on the local search's moves.

    Returns:
        A :class:`Schedule`: the reordered ``graph_module`` (the same function: only the order
        of independent nodes changes), peaks before and after from ``fxcost.analyze``, and the
        peak of every order tried (print ``schedule.table()``).

    The schedule is built on fxcost's own graph of the model, the one :func:`fxcost.analyze`
    costs: where ``torch.fx`` cannot trace a module (Hugging Face models), the torch calls it
    makes are nodes, replayed for real in the returned module, which is then specialised to the
    example input's shapes and checks them when called (see ``Schedule.replayed``). A module
    whose calls cannot be replayed faithfully stays one call (``Schedule.kept_whole`` says
    why). The graph is analysed in eval mode, as :func:`fxcost.analyze` does by default:
    writes into parameters or buffers (BatchNorm statistics in training) are not ordered, and
    random ops keep their order only when fx marks them impure.
    """
    if not isinstance(model, nn.Module):
        raise InvalidModelError(f"expected a torch.nn.Module or GraphModule, got {type(model).__name__}")
    memory = memory or MemoryOptions()
    built = analysis_graph(model, example_input, AnalysisOptions.checked(model, memory=memory))
    assumed = built.graph.meta.get("fxcost_assumptions", ())
    if assumed:
        warnings.warn(f"the model's code depends on tensor values at {len(assumed)} place(s); the peaks assume them "
                      f"(e.g. {assumed[0].location}: {assumed[0].what}); see fxcost.analyze(...).assumptions",
                      AssumptionWarning, stacklevel=2)
    replayed = replay(built, model, example_input)
    gm = replayed.graph_module
    plain = MemoryOptions(free_inputs=memory.free_inputs, activation_dtype=memory.activation_dtype)
    as_written = liveness_of(built, memory)
    inside = kept_whole_inside(built.graph, liveness_of(built, plain), plain,
                               {k.region: k.node for k in replayed.kept_whole}) if replayed.kept_whole else {}
    buffers = ScheduleModel.build(gm, fake_run_of(replayed, example_input), memory, inside)
    orders = {name: build(buffers) for name, build in ALGORITHMS.items()}
    peaks = {name: buffers.peak(order) for name, order in orders.items()}
    start = min(orders, key=lambda name: (peaks[name], list(ALGORITHMS).index(name)))
    searched = _local_search(buffers, orders[start], max_moves)
    orders["local search"], peaks["local search"] = searched, buffers.peak(searched)
    kept = min(orders, key=lambda name: (peaks[name], name != "baseline"))
    result = _rebuilt(gm, buffers, orders[kept]) if kept != "baseline" else gm
    before = _analysed(gm, example_input, memory)
    after = _analysed(result, example_input, memory) if kept != "baseline" else before
    candidates = tuple(ScheduleCandidate(name, peaks[name]) for name in orders)
    return Schedule(before.peak_activation_bytes, after.peak_activation_bytes, kept, candidates, buffers.lower_bound(),
                    memory, as_written.peak_bytes, replayed.replayed, replayed.kept_whole, result, after)


def _analysed(gm: fx.GraphModule, example_input: Any, memory: MemoryOptions) -> Report:
    with warnings.catch_warnings():  # what the warnings say, the schedule says (or analysing the model does)
        for category in (UnsupportedOpWarning, TraceFallbackWarning, AssumptionWarning):
            warnings.simplefilter("ignore", category)
        return analyze(gm, example_input, memory=memory)


def reorder_for_peak(model: nn.Module, example_input: Any, memory: MemoryOptions | None = None) -> fx.GraphModule:
    """The graph of ``model`` with its nodes reordered for a lower peak activation memory
    (see :func:`schedule_for_peak` for the algorithms and the figures)."""
    return schedule_for_peak(model, example_input, memory).graph_module
