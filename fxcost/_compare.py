"""Differences between two reports, per module and in total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._units import format_bytes, format_count

if TYPE_CHECKING:
    from ._report import Report

_QUANTITIES = ("macs", "flops", "params", "bytes_moved", "peak_live_bytes")


@dataclass(frozen=True)
class Delta:
    """One quantity in two reports."""

    before: int
    """Value in the first report (0 where the module is absent)."""
    after: int
    """Value in the second report."""

    @property
    def change(self) -> int:
        """``after - before``."""
        return self.after - self.before

    @property
    def ratio(self) -> float | None:
        """Relative change (None when ``before`` is 0)."""
        return self.change / self.before if self.before else None


@dataclass(frozen=True)
class ModuleDelta:
    """One module (or the whole model, key ``'(total)'``) in both reports."""

    key: str
    """Module path."""
    present: str
    """``both``, ``before`` or ``after``: which reports have the module."""
    deltas: dict[str, Delta]
    """Quantity name (macs, flops, params, bytes_moved, peak_live_bytes) -> Delta."""


@dataclass(frozen=True)
class ReportDiff:
    """Per-module and total deltas from ``before`` to ``after``."""

    before: str
    """Model name of the first report."""
    after: str
    """Model name of the second report."""
    total: ModuleDelta
    """The whole model."""
    modules: tuple[ModuleDelta, ...]
    """Every module at the compared depth, in order of appearance."""

    def changed(self) -> tuple[ModuleDelta, ...]:
        """Modules whose numbers differ."""
        return tuple(m for m in self.modules if any(d.change for d in m.deltas.values()))

    def table(self, only_changed: bool = True) -> str:
        """The deltas as a table (modules with no change left out unless asked)."""
        from tabulate import tabulate

        def cell(delta: Delta, size: bool) -> str:
            fmt = format_bytes if size else format_count
            sign = "+" if delta.change > 0 else "-" if delta.change < 0 else ""
            rel = f" ({100 * delta.ratio:+.1f}%)" if delta.ratio is not None and delta.change else ""
            return f"{sign}{fmt(abs(delta.change))}{rel}" if delta.change else "="

        rows = []
        for entry in ((self.changed() if only_changed else self.modules) + (self.total,)):
            rows.append([entry.key + ("" if entry.present == "both" else f" [{entry.present} only]"),
                         cell(entry.deltas["macs"], False), cell(entry.deltas["params"], False),
                         cell(entry.deltas["bytes_moved"], True), cell(entry.deltas["peak_live_bytes"], True)])
        return (f"{self.before} -> {self.after}\n"
                + tabulate(rows, headers=["module", "Δ MACs", "Δ params", "Δ moved", "Δ peak live"], disable_numparse=True))

    def __str__(self) -> str:
        return self.table()


def compare(before: "Report", after: "Report", depth: int = 1) -> ReportDiff:
    """Per-module (down to ``depth``) and total deltas from ``before`` to ``after``."""
    groups_a = {g.key: g for g in before.by_module(depth)}
    groups_b = {g.key: g for g in after.by_module(depth)}
    keys = list(dict.fromkeys([*groups_a, *groups_b]))
    modules = []
    for key in keys:
        a, b = groups_a.get(key), groups_b.get(key)
        present = "both" if a and b else "before" if a else "after"
        modules.append(ModuleDelta(key or "(root ops)", present, {
            q: Delta(getattr(a, q) if a else 0, getattr(b, q) if b else 0) for q in _QUANTITIES
        }))
    totals = {
        "macs": Delta(before.macs, after.macs), "flops": Delta(before.flops, after.flops),
        "params": Delta(before.params, after.params), "bytes_moved": Delta(before.bytes_moved, after.bytes_moved),
        "peak_live_bytes": Delta(before.peak_activation_bytes, after.peak_activation_bytes),
    }
    return ReportDiff(before.model, after.model, ModuleDelta("(total)", "both", totals), tuple(modules))
