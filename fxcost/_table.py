"""Text tables of a :class:`Report` (the one module that imports tabulate)."""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from tabulate import tabulate

from ._errors import InvalidInputError
from ._records import Status
from ._units import format_bytes, format_count

if TYPE_CHECKING:
    from ._records import GroupCost, NodeCost
    from ._report import Report


class Kind(enum.Enum):
    TEXT = "text"
    COUNT = "count"
    BYTES = "bytes"
    RATIO = "ratio"


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the per-node table."""

    header: str
    kind: Kind
    value: Callable[["NodeCost"], Any]


def _shape_text(shapes: tuple[tuple[int, ...], ...]) -> str:
    if not shapes:
        return ""
    text = ", ".join("[" + ", ".join(map(str, shape)) + "]" for shape in shapes[:2])
    return text + (f" +{len(shapes) - 2}" if len(shapes) > 2 else "")


#: The per-node table's columns, by the name used in ``columns=`` and ``sort_by=``.
NODE_COLUMNS: dict[str, Column] = {
    "name": Column("node", Kind.TEXT, lambda n: n.name),
    "module": Column("module", Kind.TEXT, lambda n: n.module_path or n.name),
    "op": Column("op", Kind.TEXT, lambda n: n.op_type),
    "type": Column("module type", Kind.TEXT, lambda n: n.module_type),
    "shape": Column("output shape", Kind.TEXT, lambda n: _shape_text(n.output_shapes)),
    "dtype": Column("dtype", Kind.TEXT, lambda n: n.dtype or ""),
    "params": Column("params", Kind.COUNT, lambda n: n.params),
    "macs": Column("MACs", Kind.COUNT, lambda n: n.macs),
    "flops": Column("FLOPs", Kind.COUNT, lambda n: n.flops),
    "read": Column("read", Kind.BYTES, lambda n: n.bytes_read),
    "written": Column("written", Kind.BYTES, lambda n: n.bytes_written),
    "moved": Column("moved", Kind.BYTES, lambda n: n.bytes_moved),
    "intensity": Column("FLOP/B", Kind.RATIO, lambda n: n.intensity),
    "live": Column("live", Kind.BYTES, lambda n: n.live_bytes),
    "status": Column("status", Kind.TEXT, lambda n: n.status.value),
    "bwd_macs": Column("bwd MACs", Kind.COUNT, lambda n: n.backward_macs),
    "bwd_flops": Column("bwd FLOPs", Kind.COUNT, lambda n: n.backward_flops),
}
DEFAULT_COLUMNS = ("module", "op", "shape", "params", "macs", "flops", "moved")
#: The default columns of a report with a training step.
TRAINING_COLUMNS = ("module", "op", "shape", "params", "macs", "bwd_macs", "flops", "bwd_flops")
_SHRINKABLE = ("module", "name", "type", "op", "shape")


def _formatter(kind: Kind, raw: bool) -> Callable[[Any], str]:
    if kind is Kind.COUNT:
        return (lambda v: f"{v:,}") if raw else (lambda v: format_count(v) if v else "")
    if kind is Kind.BYTES:
        return (lambda v: f"{v:,}") if raw else format_bytes
    if kind is Kind.RATIO:
        return lambda v: f"{v:.3g}" if v else ""
    return str


def _check_columns(columns: Sequence[str], known: Iterable[str]) -> None:
    known = list(known)
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise InvalidInputError(f"unknown column(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")


_MIN_WIDTH = {"module": 12, "name": 10, "type": 10, "op": 8, "shape": 14}


def _fit(rows: list[list[str]], headers: list[str], names: Sequence[str], max_width: int | None,
         fixed: Sequence[list[str]] = ()) -> None:
    """Truncate text columns of ``rows`` to fit ``max_width`` (``fixed`` rows count for the
    widths but are not cut): names keep their end (the innermost module), shapes their start."""
    if not max_width or not rows:
        return
    # tabulate pads every header by 2 (its MIN_PADDING)
    widths = [max(len(h) + 2, *(len(r[i]) for r in (*rows, *fixed))) for i, h in enumerate(headers)]
    excess = sum(widths) + 2 * (len(widths) - 1) - max_width
    for name in _SHRINKABLE:
        if excess <= 0:
            break
        if name not in names:
            continue
        i = list(names).index(name)
        target = max(len(headers[i]), _MIN_WIDTH[name], widths[i] - excess)
        if target < widths[i]:
            for row in rows:
                if len(row[i]) > target:
                    row[i] = row[i][: target - 1] + "…" if name == "shape" else "…" + row[i][-(target - 1):]
            excess -= widths[i] - target
            widths[i] = target


def node_table(
    report: "Report",
    columns: Sequence[str] | None = None,
    sort_by: str | None = None,
    top: int | None = None,
    raw: bool = False,
    max_width: int | None = 100,
    tablefmt: str = "simple",
    all_nodes: bool = False,
) -> str:
    """Per-node table with a totals footer.

    Args:
        columns: names from :data:`NODE_COLUMNS` (default: module, op, shape, params, MACs,
            FLOPs, moved).
        sort_by: a column to sort by, largest first.
        top: keep the ``top`` most expensive nodes (by ``sort_by``, default MACs then FLOPs).
        raw: exact integers instead of human units.
        max_width: truncate long names so the table fits (None: never truncate).
        all_nodes: also list placeholders, attributes and the output.
    """
    names = list(columns or (TRAINING_COLUMNS if report.training is not None else DEFAULT_COLUMNS))
    _check_columns(names, NODE_COLUMNS)
    if sort_by is not None:
        _check_columns([sort_by], NODE_COLUMNS)
    nodes = [n for n in report.nodes if all_nodes or n.status is not Status.NO_COMPUTE]
    if sort_by is not None:
        nodes.sort(key=lambda n: NODE_COLUMNS[sort_by].value(n), reverse=True)
    elif top is not None:
        nodes.sort(key=lambda n: (n.macs, n.flops), reverse=True)
    if top is not None:
        if top < 1:
            raise InvalidInputError(f"top must be at least 1, got {top}")
        nodes = nodes[:top]
    formats = [_formatter(NODE_COLUMNS[c].kind, raw) for c in names]
    rows = []
    for node in nodes:
        row = [fmt(NODE_COLUMNS[c].value(node)) for c, fmt in zip(names, formats)]
        if node.status is Status.UNSUPPORTED:
            for i, c in enumerate(names):
                if c == "macs":
                    row[i] = "?"
                elif c == "flops":
                    row[i] = "unsupported"
        elif node.status is Status.PARTIAL:  # counted up to a data-dependent op: lower bounds
            for i, c in enumerate(names):
                if c in ("macs", "flops"):
                    row[i] = ("≥" + row[i]) if node.macs or node.flops else ("?" if c == "macs" else "partial")
        if node.assumption:  # its figures rest on an assumed tensor value
            text = next((i for i, c in enumerate(names) if NODE_COLUMNS[c].kind is Kind.TEXT), None)
            if text is not None:
                row[text] += " *"
        rows.append(row)
    headers = [NODE_COLUMNS[c].header for c in names]
    footer = _totals_row(report, names, formats, top is not None)
    _fit(rows, headers, names, max_width, fixed=[footer])
    aligns = ["left" if NODE_COLUMNS[c].kind is Kind.TEXT else "right" for c in names]
    if tablefmt != "simple":
        return tabulate(rows + [footer], headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=aligns)
    body = tabulate(rows + [footer], headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=aligns)
    lines = body.splitlines()
    rule = lines[1]
    return "\n".join(lines[:-1] + [rule, lines[-1]])


def _totals_row(report: "Report", names, formats, partial: bool) -> list[str]:
    totals = {
        "params": report.params, "macs": report.macs, "flops": report.flops, "read": report.bytes_read,
        "written": report.bytes_written, "moved": report.bytes_moved, "intensity": report.intensity,
        "live": report.peak_activation_bytes,
    }
    if report.training is not None:
        totals.update(bwd_macs=report.backward_macs, bwd_flops=report.backward_flops)
    row = []
    label_done = False
    for name, fmt in zip(names, formats):
        if name in totals:
            row.append(fmt(totals[name]))
        elif not label_done:
            row.append("total (all)" if partial else "total")
            label_done = True
        else:
            row.append("")
    return row


GROUP_COLUMNS: dict[str, Column] = {
    "module": Column("module", Kind.TEXT, lambda g: ("· " * max(g.depth - 1, 0)) + (g.key or "(root ops)")),
    "op": Column("op", Kind.TEXT, lambda g: g.key),
    "type": Column("type", Kind.TEXT, lambda g: g.module_type),
    "count": Column("count", Kind.COUNT, lambda g: g.nodes),
    "params": Column("params", Kind.COUNT, lambda g: g.params),
    "macs": Column("MACs", Kind.COUNT, lambda g: g.macs),
    "macs%": Column("MACs %", Kind.TEXT, lambda g: f"{100 * g.macs_share:.1f}%" if g.macs else ""),
    "flops": Column("FLOPs", Kind.COUNT, lambda g: g.flops),
    "flops%": Column("FLOPs %", Kind.TEXT, lambda g: f"{100 * g.flops_share:.1f}%" if g.flops else ""),
    "moved": Column("moved", Kind.BYTES, lambda g: g.bytes_moved),
    "live": Column("peak live", Kind.BYTES, lambda g: g.peak_live_bytes),
    "bwd_macs": Column("bwd MACs", Kind.COUNT, lambda g: g.backward_macs),
    "bwd_flops": Column("bwd FLOPs", Kind.COUNT, lambda g: g.backward_flops),
}


def group_table(groups: "list[GroupCost]", columns: Sequence[str], raw: bool = False,
                max_width: int | None = 100, tablefmt: str = "simple") -> str:
    """A table of module or op groups."""
    _check_columns(columns, GROUP_COLUMNS)
    formats = [_formatter(GROUP_COLUMNS[c].kind, raw) for c in columns]
    rows = []
    for group in groups:
        row = [fmt(GROUP_COLUMNS[c].value(group)) for c, fmt in zip(columns, formats)]
        if group.unsupported:
            row = [cell + ("?" if c in ("macs", "flops") else "") for c, cell in zip(columns, row)]
        rows.append(row)
    headers = [GROUP_COLUMNS[c].header for c in columns]
    _fit(rows, headers, columns, max_width)
    aligns = ["left" if GROUP_COLUMNS[c].kind is Kind.TEXT and not c.endswith("%") else "right" for c in columns]
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=aligns)


MODULE_COLUMNS = ("module", "type", "params", "macs", "flops", "moved", "live")
#: The module table's columns for a report with a training step.
MODULE_TRAINING_COLUMNS = ("module", "type", "params", "macs", "bwd_macs", "flops", "bwd_flops", "live")
OP_COLUMNS = ("op", "count", "params", "macs", "macs%", "flops", "flops%", "moved")


def summary(report: "Report", raw: bool = False) -> str:
    """Model totals, one per line, in human units (exact integers with ``raw=True``)."""
    def count(value: int, unit: str) -> str:
        return (f"{value:,} {unit}" if raw else format_count(value, unit)).rstrip()

    size = (lambda v: f"{v:,} B") if raw else format_bytes
    lines = [
        f"model:            {report.model} ({report.mode} mode)",
        "inputs:           " + (", ".join(f"{name} [{', '.join(map(str, shape))}] {dtype}"
                                          for name, shape, dtype in report.inputs) or "none"),
        f"MACs:             {count(report.macs, 'MACs')}",
        f"FLOPs:            {count(report.flops, 'FLOPs')}",
        f"params:           {count(report.params, '')} params "
        f"({count(report.trainable_params, '')} trainable), {size(report.param_bytes)}",
        f"buffers:          {size(report.buffer_bytes)}",
        f"bytes read:       {size(report.bytes_read)}",
        f"bytes written:    {size(report.bytes_written)}",
        f"peak activations: {size(report.peak_activation_bytes)} (at node {report.peak_node}; "
        f"{size(report.peak_with_temporaries_bytes)} with node temporaries)",
        f"peak memory:      {size(report.peak_memory_bytes)} (activations + parameters + buffers)",
    ]
    if report.unused_params:
        lines.append(f"unused params:    {count(report.unused_param_count, '')} params in "
                     f"{len(report.unused_params)} tensors never read by forward()")
    partial = sorted({n.target for n in report.nodes if n.status is Status.PARTIAL})
    unknown = sorted({n.target for n in report.nodes if n.status is Status.UNSUPPORTED})
    if unknown:
        lines.append(f"UNSUPPORTED:      {', '.join(unknown)} — MACs/FLOPs of these nodes are unknown, "
                     "totals are lower bounds")
    if partial:
        lines.append(f"PARTIAL:          {', '.join(partial)} — counted only up to a data-dependent op "
                     "(see the node's note), totals are lower bounds")
    if report.training is not None:
        lines.extend(_training_lines(report, count, size))
    if report.assumptions:
        lines.append(f"ASSUMED:          {len(report.assumptions)} value(s) the code depends on (rows marked *; "
                     "report.assumptions; override with assume={'file.py:LINE': value}):")
        for assumption in report.assumptions[:_LISTED_ASSUMPTIONS]:
            times = f" ({assumption.count} times)" if assumption.count > 1 else ""
            lines.append(f"  {_short_location(assumption.location)}: {assumption.what}{times}")
        if len(report.assumptions) > _LISTED_ASSUMPTIONS:
            lines.append(f"  ... and {len(report.assumptions) - _LISTED_ASSUMPTIONS} more")
    return "\n".join(lines)


_LISTED_ASSUMPTIONS = 8
_CATEGORY_WORDS = {"weights": "weights", "gradients": "gradients", "optimizer_state": "optimizer state",
                   "activations": "saved activations", "temporaries": "temporaries", "inputs": "inputs"}


def _training_lines(report: "Report", count, size) -> list[str]:
    """The summary's lines about the training step."""
    step = report.training
    amp = f", autocast {step.amp}" if step.amp else ""
    checkpointed = f", checkpointing {', '.join(step.checkpointed)}" if step.checkpointed else ""
    where = f" at node {step.peak_node}" if step.peak_node and step.peak_node != step.peak_phase else ""
    lines = [
        f"training step:    {step.optimizer} optimizer, loss {step.loss}{amp}{checkpointed}",
        f"backward:         {count(report.backward_macs, 'MACs')}, {count(report.backward_flops, 'FLOPs')}; "
        f"step {count(report.step_flops, 'FLOPs')} (forward + loss + backward + optimizer)",
        f"train peak:       {size(step.peak_bytes)} during the {step.peak_phase}{where}",
        "                  " + ", ".join(f"{_CATEGORY_WORDS[name]} {size(nbytes)}" for name, nbytes in step.memory.items()),
        f"gradients:        {size(step.gradient_bytes)}; optimizer state {size(step.optimizer_state_bytes)}",
    ]
    if step.unsupported:
        lines.append(f"UNSUPPORTED:      backward/optimizer ops without a rule: {', '.join(sorted(step.unsupported))} "
                     "— backward FLOPs are lower bounds")
    return lines


def _short_location(location: str) -> str:
    """``.../site-packages/torchvision/ops/boxes.py:54`` -> ``torchvision/ops/boxes.py:54``."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in location:
            return location.split(marker, 1)[1]
    return location


def format_report(report: "Report", raw: bool = False, **options: Any) -> str:
    """Per-node table then model totals."""
    return node_table(report, raw=raw, **options) + "\n\n" + summary(report, raw)


def nodes_csv(report: "Report") -> str:
    """Every node record as a CSV row with exact integers (shapes as ``1x3x224x224;...``)."""
    from ._records import NodeCost

    fields = [f.name for f in dataclasses.fields(NodeCost)] + ["bytes_read", "intensity"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for node in report.nodes:
        row = []
        for name in fields:
            value = getattr(node, name)
            if name == "output_shapes":
                value = ";".join("x".join(map(str, shape)) for shape in value)
            elif isinstance(value, Status):
                value = value.value
            elif value is None:
                value = ""
            row.append(value)
        writer.writerow(row)
    return buffer.getvalue()


def _seconds(value: float) -> str:
    for factor, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns" if value else "0"


def roofline_table(roof, top: int | None = None, max_width: int | None = 100) -> str:
    """Per-node roofline bounds, then the total and the compute/memory split."""
    nodes = list(roof.nodes)
    if top is not None:
        nodes = sorted(nodes, key=lambda n: n.seconds, reverse=True)[:top]
    rows = [[n.module_path or n.name, n.op_type, format_count(n.flops) if n.flops else "",
             format_bytes(n.bytes_moved), f"{n.flops / n.bytes_moved:.3g}" if n.bytes_moved else "",
             _seconds(n.seconds), n.bound] for n in nodes]
    headers = ["module", "op", "FLOPs", "moved", "FLOP/B", "time >=", "bound"]
    _fit(rows, headers, ["module", "op", "flops", "moved", "intensity", "time", "bound"], max_width)
    table = tabulate(rows, headers=headers, disable_numparse=True,
                     colalign=("left", "left", "right", "right", "right", "right", "left"))
    hw = roof.hardware
    lines = [
        table, "",
        f"hardware:  {hw.name} (bandwidth {format_count(hw.bandwidth, 'B')}/s)",
        f"total:     {_seconds(roof.seconds)} lower bound, "
        f"{100 * roof.share('compute'):.0f}% of it compute-bound, {100 * roof.share('memory'):.0f}% memory-bound",
    ]
    if roof.unsupported:
        lines.append(f"note:      {roof.unsupported} nodes have no cost rule: their compute time is not counted")
    return "\n".join(lines)


def text_table(rows: list[list[str]], headers: list[str], align: str) -> str:
    """A plain text table; ``align`` has one letter per column, ``l`` or ``r``."""
    sides = {"l": "left", "r": "right"}
    return tabulate(rows, headers=headers, disable_numparse=True, colalign=tuple(sides[a] for a in align))
