"""One model at several input sizes: a row of totals per batch size / sequence length."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._units import format_bytes, format_count

if TYPE_CHECKING:
    from ._report import Report

#: Format key of the JSON a sweep is written as.
FORMAT = "fxcost.sweep/1"


@dataclass(frozen=True)
class SweepPoint:
    """The analysis of one input size."""

    batch: int
    """Batch size (first size of the first input)."""
    seq: int | None
    """Sequence length (second size of the token inputs), None for models without tokens."""
    inputs: str
    """The example input, as written on the command line (``input_ids=8x512:int64``)."""
    report: "Report"
    """The analysis at this size."""


#: (header, report attribute, is bytes) of the text table's figures.
_COLUMNS = (("MACs", "macs", False), ("FLOPs", "flops", False),
            ("peak activation", "peak_activation_bytes", True), ("peak memory", "peak_memory_bytes", True))


def _sizes(points: list[SweepPoint]) -> list[tuple[str, str]]:
    """(header, attribute) of the size columns: batch, and seq when the model has tokens."""
    return [("batch", "batch")] + ([("seq", "seq")] if any(p.seq is not None for p in points) else [])


def sweep_table(points: list[SweepPoint], tablefmt: str = "simple", raw: bool = False) -> str:
    """A row per size: MACs, FLOPs, peak activation and peak memory."""
    from tabulate import tabulate

    sizes = _sizes(points)
    rows = []
    for point in points:
        row = [str(getattr(point, attr)) for _, attr in sizes]
        for _, attr, is_bytes in _COLUMNS:
            value = getattr(point.report, attr)
            row.append(f"{value:,}" if raw else format_bytes(value) if is_bytes else format_count(value))
        rows.append(row)
    headers = [h for h, _ in sizes] + [h for h, _, _ in _COLUMNS]
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=["right"] * len(headers))


def sweep_records(points: list[SweepPoint]) -> list[dict]:
    """A dict per size: the sizes, the input, and the report's totals (exact numbers)."""
    from ._report import TOTALS

    return [{"batch": p.batch, "seq": p.seq, "inputs": p.inputs,
             **{name: getattr(p.report, name) for name in TOTALS}} for p in points]


def sweep_json(points: list[SweepPoint]) -> str:
    """``{"format": ..., "model": ..., "rows": [...]}`` (rows as :func:`sweep_records`)."""
    model = points[0].report.model if points else ""
    return json.dumps({"format": FORMAT, "model": model, "rows": sweep_records(points)}, indent=1)


def sweep_csv(points: list[SweepPoint]) -> str:
    """The records of :func:`sweep_records` as CSV (an empty cell for no sequence length)."""
    records = sweep_records(points)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else ["batch"], lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    return buffer.getvalue()
