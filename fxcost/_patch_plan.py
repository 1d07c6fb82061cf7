"""What patch-based inference costs, and the search for the split point and patch grid.

The figures come from :func:`fxcost.analyze` of the rewritten graph (peak under the given
:class:`MemoryOptions`, MACs by the cost rules) and of the original model. The MAC overhead
of a patch is what it computes beyond its share of the unpatched stage, the share being
proportional to the area of the stage output it produces; the patches' overheads add up to
the total overhead (patched MACs minus original MACs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch.fx as fx
from torch import nn

from ._analyze import analyze
from ._errors import InvalidInputError, PatchError
from ._options import MemoryOptions
from ._patching import LAYOUT_KEY, Patcher, Region
from ._report import Report
from ._table import text_table
from ._units import format_bytes, format_count, parse_quantity


@dataclass(frozen=True)
class PatchCandidate:
    """One split point and grid tried by :func:`plan_patches`."""

    until: str
    """Last module of the patched stage ('' = the model unpatched)."""
    grid: tuple[int, int]
    """Patches along rows and columns."""
    peak_bytes: int
    """Peak activation memory of the whole rewritten model."""
    macs: int
    """MACs of the whole rewritten model."""
    overhead_macs: int
    """MACs beyond the unpatched model's (recomputed overlaps)."""
    fits: bool
    """Whether ``peak_bytes`` is within the memory limit."""


@dataclass(frozen=True)
class PatchPlan:
    """A model with its first stage computed patch by patch, and what that costs."""

    until: str
    """Last module of the patched stage ('' when the model fits without patching)."""
    grid: tuple[int, int]
    """Patches along rows and columns."""
    peak_bytes: int
    """Peak activation memory of the whole rewritten model (under ``memory``)."""
    stage_peak_bytes: int
    """Peak while the patched stage runs (the stage output buffer included)."""
    macs: int
    """MACs of the whole rewritten model."""
    original_peak_bytes: int
    """Peak activation memory of the model unpatched (under ``memory``)."""
    original_macs: int
    """MACs of the model unpatched."""
    stage_macs: int
    """MACs of the stage unpatched."""
    patch_macs: tuple[int, ...]
    """MACs of each patch, row-major."""
    patch_regions: tuple[Region, ...]
    """Region of the stage output each patch produces, row-major."""
    memory: MemoryOptions
    """Memory layout the peaks assume."""
    memory_limit: int | None = None
    """The limit :func:`plan_patches` planned for, in bytes."""
    candidates: tuple[PatchCandidate, ...] = ()
    """Every split point and grid :func:`plan_patches` tried, in search order."""
    graph_module: fx.GraphModule | None = field(default=None, repr=False, compare=False)
    """The rewritten model (see :func:`patch_inference`)."""
    report: Report | None = field(default=None, repr=False, compare=False)
    """``fxcost.analyze`` of ``graph_module``."""

    @property
    def overhead_macs(self) -> int:
        """MACs the rewritten model computes beyond the original (the overlaps)."""
        return self.macs - self.original_macs

    @property
    def overhead(self) -> float:
        """``overhead_macs`` as a fraction of the original model's MACs."""
        return self.overhead_macs / self.original_macs if self.original_macs else 0.0

    @property
    def patch_overhead_macs(self) -> tuple[float, ...]:
        """Per patch (row-major): its MACs minus its share of the unpatched stage's MACs
        (share = its part of the stage output's area). They add up to ``overhead_macs``."""
        areas = [(r[1] - r[0]) * (r[3] - r[2]) for r in self.patch_regions]
        total = sum(areas)
        return tuple(m - self.stage_macs * a / total for m, a in zip(self.patch_macs, areas))

    def table(self) -> str:
        """The candidates tried: split point, grid, peak, MACs, overhead, fit."""
        rows = []
        for c in self.candidates:
            chosen = c.fits and c.until == self.until and c.grid == self.grid
            overhead = f"+{format_count(c.overhead_macs)} ({100 * c.overhead_macs / self.original_macs:.1f}%)" \
                if c.until else "0"
            rows.append([c.until or "(unpatched)", f"{c.grid[0]}x{c.grid[1]}" if c.until else "-",
                         format_bytes(c.peak_bytes), format_count(c.macs), overhead,
                         "yes" if c.fits else "no", "<- plan" if chosen else ""])
        return text_table(rows, ["split after", "grid", "peak", "MACs", "MAC overhead", "fits", ""], "llrrrll")

    def summary(self) -> str:
        """The chosen plan in a few lines: peaks before and after, MAC overhead in total and per patch."""
        limit = f", limit {format_bytes(self.memory_limit)}" if self.memory_limit is not None else ""
        if not self.until:
            return f"plan:             no patching needed: peak {format_bytes(self.peak_bytes)}{limit.replace(',', ';')}"
        lines = [
            f"plan:             modules up to '{self.until}' in {self.grid[0]}x{self.grid[1]} patches",
            f"peak activations: {format_bytes(self.original_peak_bytes)} -> {format_bytes(self.peak_bytes)} "
            f"({self.original_peak_bytes / self.peak_bytes:.1f}x lower{limit}); "
            f"{format_bytes(self.stage_peak_bytes)} in the patched stage",
            f"MACs:             {format_count(self.original_macs)} -> {format_count(self.macs)} "
            f"(+{format_count(self.overhead_macs)}, +{100 * self.overhead:.1f}%; the stage's own MACs "
            f"+{100 * self.overhead_macs / self.stage_macs:.1f}%)",
            "overhead per patch (MACs, one row of patches per line):",
        ]
        per_patch = self.patch_overhead_macs
        for row in range(self.grid[0]):
            cells = per_patch[row * self.grid[1]:(row + 1) * self.grid[1]]
            lines.append("  " + "  ".join(f"{format_count(round(v)):>8}" for v in cells))
        return "\n".join(lines)

    def __str__(self) -> str:
        return (self.table() + "\n\n" if self.candidates else "") + self.summary()


#: Split points in a row that may fail to lower the smallest peak (once one did) before a search
#: that found no fit gives up.
_PATIENCE = 3


def _plan(patcher: Patcher, example_input: Any, until: str, grid: Any, memory: MemoryOptions,
          original: Report) -> PatchPlan:
    gm = patcher.rewrite(until, grid)
    report = analyze(gm, example_input, memory=memory)
    layout = gm.meta[LAYOUT_KEY]
    macs = {n.name: n.macs for n in report.nodes}
    patch_macs = tuple(sum(macs.get(name, 0) for name in p.nodes) for p in layout.patches)
    in_stage = {name for p in layout.patches for name in p.nodes}
    first = next(i for i, n in enumerate(report.nodes) if n.name in in_stage)
    last = max(i for i, n in enumerate(report.nodes) if n.name in in_stage)
    stage_peak = max(n.live_bytes for n in report.nodes[first:last + 1])
    rest_macs = report.macs - sum(patch_macs)
    return PatchPlan(
        until=layout.until, grid=layout.grid, peak_bytes=report.peak_activation_bytes, stage_peak_bytes=stage_peak,
        macs=report.macs, original_peak_bytes=original.peak_activation_bytes, original_macs=original.macs,
        stage_macs=original.macs - rest_macs, patch_macs=patch_macs,
        patch_regions=tuple(p.output_region for p in layout.patches), memory=memory, graph_module=gm, report=report,
    )


def evaluate_patches(model: nn.Module, example_input: Any, until: str, patches: Any = (4, 4),
                     memory: MemoryOptions | None = None) -> PatchPlan:
    """Rewrite ``model`` with :func:`patch_inference` and cost it: peak before and after
    (under ``memory``), MACs and the MAC overhead in total and per patch."""
    memory = memory or MemoryOptions()
    original = analyze(model, example_input, memory=memory)
    return _plan(Patcher(model, example_input), example_input, until, patches, memory, original)


def plan_patches(model: nn.Module, example_input: Any, memory_limit: str | int, memory: MemoryOptions | None = None,
                 splits: list[str] | None = None, grids: list[Any] | None = None) -> PatchPlan:
    """The split point and patch grid with the lowest MAC overhead whose peak fits ``memory_limit``.

    Args:
        model, example_input: as for :func:`fxcost.analyze`.
        memory_limit: bytes, or a string such as ``"256kB"`` (``kB`` = 1000 bytes, ``KiB`` = 1024).
        memory: memory layout of the peak (e.g. ``MemoryOptions.deployment(torch.int8, stream_inputs=True)``).
        splits: module paths to try as the end of the patched stage; default: the modules of
            depth 1 and 2 ending in a 4-D map, in execution order.
        grids: grids to try, ``(rows, columns)`` or ``n``; default 2x2 to 8x8.

    The search assumes what holds for CNN stages: the MAC overhead grows with the number of
    patches and with the depth of the stage. So for each split point (in execution order)
    grids are tried in order until one fits; a split point stops early when the peak is set
    after the stage (patches cannot lower it) or two finer grids in a row did not lower it; and
    once a plan fits, the search ends at the first split point whose coarsest grid already
    costs as much overhead. Without any fit, once patching has lowered the peak it gives up after
    three split points in a row that did not lower it further. Every rewrite tried is costed by ``fxcost.analyze``.

    Returns:
        The :class:`PatchPlan` chosen, with ``candidates`` (print ``plan.table()``). A model
        that fits unpatched gets a plan with ``until=''``.

    Raises:
        PatchError: nothing tried fits; the message gives the smallest peak found and the table.
    """
    limit = parse_quantity(memory_limit)
    if limit <= 0:
        raise InvalidInputError(f"memory_limit must be positive, got {memory_limit!r}")
    memory = memory or MemoryOptions()
    original = analyze(model, example_input, memory=memory)
    unpatched = PatchCandidate("", (1, 1), original.peak_activation_bytes, original.macs, 0,
                               original.peak_activation_bytes <= limit)
    candidates = [unpatched]
    if unpatched.fits:
        return PatchPlan("", (1, 1), original.peak_activation_bytes, original.peak_activation_bytes, original.macs,
                         original.peak_activation_bytes, original.macs, original.macs, (), (), memory, limit,
                         tuple(candidates), report=original)
    patcher = Patcher(model, example_input)
    grid_list = [(g, g) if isinstance(g, int) else tuple(g) for g in (grids or range(2, 9))]
    best: PatchPlan | None = None
    smallest, stale = unpatched.peak_bytes, None  # stale: split points since the peak last went down
    for until in splits or patcher.split_points():
        try:
            height, width = patcher.output_size(until)
        except PatchError:
            continue  # not a cut of the graph, or not a feature map
        improved, split_peak, misses = False, None, 0
        for position, grid in enumerate(grid_list):
            if grid[0] > height or grid[1] > width:
                break
            try:
                plan = _plan(patcher, example_input, until, grid, memory, original)
            except PatchError:
                break  # the stage holds an op that patches cannot compute
            fits = plan.peak_bytes <= limit
            candidates.append(PatchCandidate(until, plan.grid, plan.peak_bytes, plan.macs, plan.overhead_macs, fits))
            improved |= plan.peak_bytes < smallest
            smallest = min(smallest, plan.peak_bytes)
            if best is not None and position == 0 and plan.overhead_macs >= best.overhead_macs:
                return _chosen(best, limit, candidates)  # deeper stages and finer grids only add overhead
            if fits:
                if best is None or (plan.overhead_macs, plan.peak_bytes) < (best.overhead_macs, best.peak_bytes):
                    best = plan
                break  # finer grids only add overhead
            if plan.stage_peak_bytes < plan.peak_bytes:
                break  # the peak is after the stage: more patches cannot lower it
            misses = misses + 1 if split_peak is not None and plan.peak_bytes >= split_peak else 0
            split_peak = plan.peak_bytes if split_peak is None else min(split_peak, plan.peak_bytes)
            if misses == 2:
                break  # two finer grids in a row did not lower the peak
        stale = 0 if improved else (stale + 1 if stale is not None else None)
        if stale == _PATIENCE:
            break  # nothing fits, and later split points stopped lowering the peak
    if best is None:
        smallest = min(candidates, key=lambda c: c.peak_bytes)
        where = f"with patches up to '{smallest.until}' in {smallest.grid[0]}x{smallest.grid[1]}" if smallest.until \
            else "unpatched"
        shown = PatchPlan("", (1, 1), 0, 0, 0, 0, original.macs, 0, (), (), memory, limit, tuple(candidates))
        raise PatchError(
            f"no split point and patch grid brings the peak activation memory under {format_bytes(limit)}: the "
            f"smallest peak found is {format_bytes(smallest.peak_bytes)} ({where}). Raise the limit, try other "
            f"split points or finer grids (splits=..., grids=...), or a smaller activation dtype.\n{shown.table()}")
    return _chosen(best, limit, candidates)


def _chosen(plan: PatchPlan, limit: int, candidates: list[PatchCandidate]) -> PatchPlan:
    return dataclasses.replace(plan, memory_limit=limit, candidates=tuple(candidates))
