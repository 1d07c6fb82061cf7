"""Text tables of a :class:`Report` (the one module that imports tabulate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

from ._records import Status
from ._units import format_bytes, format_count

if TYPE_CHECKING:
    from ._report import Report


def _shape_text(shapes: tuple[tuple[int, ...], ...]) -> str:
    if not shapes:
        return ""
    text = ", ".join("[" + ", ".join(map(str, shape)) + "]" for shape in shapes[:2])
    return text + (f" +{len(shapes) - 2}" if len(shapes) > 2 else "")


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def format_report(report: "Report", raw: bool = False) -> str:
    """Per-node table of the nodes that do work, then model totals in human units."""
    count = (lambda v: f"{v:,}") if raw else format_count
    size = (lambda v: f"{v:,}") if raw else format_bytes
    rows = []
    for node in report.nodes:
        if node.status is Status.NO_COMPUTE:
            continue
        macs = "?" if node.status is Status.UNSUPPORTED else (count(node.macs) if node.macs else "")
        flops = "unsupported" if node.status is Status.UNSUPPORTED else count(node.flops)
        rows.append([
            _truncate(node.module_path or node.name, 24), _truncate(node.op_type, 18),
            _shape_text(node.output_shapes), count(node.params) if node.params else "",
            macs, flops, size(node.bytes_moved),
        ])
    table = tabulate(
        rows, headers=["module", "op", "output shape", "params", "MACs", "FLOPs", "moved"],
        disable_numparse=True, colalign=("left", "left", "left", "right", "right", "right", "right"),
    )
    return table + "\n\n" + summary(report, raw)


def summary(report: "Report", raw: bool = False) -> str:
    """Model totals, one per line, in human units (exact integers with ``raw=True``)."""
    def count(value: int, unit: str) -> str:
        return (f"{value:,} {unit}" if raw else format_count(value, unit)).rstrip()

    size = (lambda v: f"{v:,} B") if raw else format_bytes
    lines = [
        f"model:            {report.model} ({report.mode} mode)",
        f"MACs:             {count(report.macs, 'MACs')}",
        f"FLOPs:            {count(report.flops, 'FLOPs')}",
        f"params:           {count(report.params, '')} params "
        f"({count(report.trainable_params, '')} trainable), {size(report.param_bytes)}",
        f"buffers:          {size(report.buffer_bytes)}",
        f"bytes read:       {size(report.bytes_read)}",
        f"bytes written:    {size(report.bytes_written)}",
    ]
    if report.unused_params:
        lines.append(f"unused params:    {count(report.unused_param_count, '')} params in "
                     f"{len(report.unused_params)} tensors never read by forward()")
    if report.unsupported:
        names = ", ".join(sorted(report.unsupported))
        lines.append(f"UNSUPPORTED:      {names} — MACs/FLOPs of these nodes are unknown, totals are lower bounds")
    return "\n".join(lines)
