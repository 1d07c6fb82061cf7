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


#: Further columns when the reports hold a training step.
_TRAINING_COLUMNS = (("step FLOPs", "step_flops", False), ("train peak", "train_peak_bytes", True))


def sweep_table(points: list[SweepPoint], tablefmt: str = "simple", raw: bool = False) -> str:
    """A row per size: MACs, FLOPs, peak activation and peak memory (and with a training
    step, the step's FLOPs and peak)."""
    from tabulate import tabulate

    sizes = _sizes(points)
    columns = _COLUMNS + (_TRAINING_COLUMNS if points and points[0].report.training is not None else ())
    rows = []
    for point in points:
        row = [str(getattr(point, attr)) for _, attr in sizes]
        for _, attr, is_bytes in columns:
            value = getattr(point.report, attr)
            row.append(f"{value:,}" if raw else format_bytes(value) if is_bytes else format_count(value))
        rows.append(row)
    headers = [h for h, _ in sizes] + [h for h, _, _ in columns]
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=["right"] * len(headers))


def sweep_records(points: list[SweepPoint]) -> list[dict]:
    """A dict per size: the sizes, the input, and the report's totals (exact numbers; the
    training memory by category as ``train_memory.CATEGORY``)."""
    records = []
    for p in points:
        record = {"batch": p.batch, "seq": p.seq, "inputs": p.inputs}
        for name, value in p.report.totals().items():
            if isinstance(value, dict):
                record.update({f"{name}.{key}": part for key, part in value.items()})
            else:
                record[name] = value
        records.append(record)
    return records


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
