"""Cost budgets: limits on a Report's totals, with failure messages a person can act on."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ._errors import InvalidInputError
from ._units import format_bytes, format_count, parse_quantity

if TYPE_CHECKING:
    from ._report import Report


@dataclass(frozen=True)
class Quantity:
    """A budgetable quantity of a report."""

    name: str
    """Limit keyword, e.g. ``macs``."""
    value: Callable[["Report"], int]
    """Reads the quantity off a report."""
    is_bytes: bool
    """Formatted with binary units."""
    unit: str
    """Unit word for counts."""
    by_module: str | None
    """The GroupCost attribute that says which modules contribute (None: liveness; ``"step"``:
    the training step's memory by category)."""
    training: bool = False
    """Needs a report with a training step."""


QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("macs", lambda r: r.macs, False, "MACs", "macs"),
        Quantity("flops", lambda r: r.flops, False, "FLOPs", "flops"),
        Quantity("params", lambda r: r.params, False, "params", "params"),
        Quantity("param_bytes", lambda r: r.param_bytes, True, "", "param_bytes"),
        Quantity("bytes_moved", lambda r: r.bytes_moved, True, "", "bytes_moved"),
        Quantity("peak_activation", lambda r: r.peak_activation_bytes, True, "", None),
        Quantity("peak_memory", lambda r: r.peak_memory_bytes, True, "", None),
        Quantity("train_peak_memory", lambda r: r.train_peak_bytes, True, "", "step", training=True),
        Quantity("backward_flops", lambda r: r.backward_flops, False, "FLOPs", "backward_flops", training=True),
        Quantity("step_flops", lambda r: r.step_flops, False, "FLOPs", "flops", training=True),
    )
}


class BudgetExceeded(AssertionError):
    """A report is over one or more of its limits (an AssertionError, so tests fail)."""

    __module__ = "fxcost"  # shown as fxcost.BudgetExceeded, its public name, in test failures


def _format(quantity: Quantity, value: float) -> str:
    if quantity.is_bytes:
        return format_bytes(value)
    return format_count(value, quantity.unit).strip()


def check_limit_names(limits: Mapping[str, Any], where: str = "") -> None:
    """Raise :class:`InvalidInputError` for a misspelled limit."""
    unknown = [name for name in limits if name not in QUANTITIES]
    if unknown:
        raise InvalidInputError(
            f"unknown budget limit(s) {', '.join(map(repr, unknown))}{where}; "
            f"the limits are: {', '.join(QUANTITIES)}"
        )


def _contributors(report: "Report", quantity: Quantity, count: int = 5) -> list[str]:
    if quantity.by_module == "step":
        step = report.training
        lines = [f"at the peak (during the {step.peak_phase}" + (f", node {step.peak_node}" if step.peak_node else "")
                 + "): " + ", ".join(f"{name.replace('_', ' ')} {format_bytes(nbytes)}"
                                     for name, nbytes in step.memory.items() if nbytes)]
        for holder in step.peak_holders[:count]:
            lines.append(f"  {format_bytes(holder.nbytes):>10}  saved for the backward by {holder.node} "
                         f"({holder.module_path or 'the root module'})")
        return lines
    if quantity.by_module is None:
        node = report.peak_node
        lines = [f"alive at the peak (during node {node}):"]
        inputs = {n.name for n in report.nodes if n.op == "placeholder"}
        for buffer in report.peak_buffers[:count]:
            owner = "model input" if buffer.producer in inputs else buffer.module_path or "the root module"
            lines.append(f"  {format_bytes(buffer.nbytes):>10}  produced by {buffer.producer} ({owner})")
        return lines
    groups = [g for g in report.by_module(depth=max(1, _useful_depth(report))) if getattr(g, quantity.by_module)]
    groups.sort(key=lambda g: getattr(g, quantity.by_module), reverse=True)
    total = quantity.value(report) or 1
    lines = [f"largest contributors to {quantity.name}:"]
    for group in groups[:count]:
        amount = getattr(group, quantity.by_module)
        lines.append(f"  {_format(quantity, amount):>14}  {100 * amount / total:5.1f}%  "
                     f"{group.key or '(root ops)'} ({group.module_type})")
    return lines


def _useful_depth(report: "Report") -> int:
    """The shallowest depth at which the model splits into several modules."""
    for depth in (1, 2, 3):
        if len({g.key for g in report.by_module(depth)}) > 2:
            return depth
    return 1


def assert_within(report: "Report", **limits: int | float | str) -> "Report":
    """Check ``report`` against limits; raise :class:`BudgetExceeded` naming what grew.

    Limits (numbers or strings such as ``"4.2G"``, ``"25MiB"``): ``macs``, ``flops``,
    ``params``, ``param_bytes``, ``bytes_moved``, ``peak_activation`` (bytes),
    ``peak_memory`` (bytes: activations + parameters + buffers), and for a report with a
    training step ``train_peak_memory`` (bytes), ``backward_flops``, ``step_flops``. Returns
    the report.
    """
    __tracebackhide__ = True  # pytest shows the failure at the caller's line, not in here
    check_limit_names(limits)
    untrained = [name for name in limits if QUANTITIES[name].training and report.training is None]
    if untrained:
        raise InvalidInputError(f"{', '.join(untrained)} need a training step: analyse with "
                                "training=fxcost.Training(...) (or --train on the command line)")
    problems = []
    for name, raw_limit in limits.items():
        quantity = QUANTITIES[name]
        limit = parse_quantity(raw_limit)
        value = quantity.value(report)
        if value > limit:
            over = value - limit
            share = f"+{100 * over / limit:.1f}%" if limit else "limit is 0"
            problems.append("\n".join([
                f"{name}: {_format(quantity, value)} > limit {_format(quantity, limit)} "
                f"({share}, {_format(quantity, over)} over)",
                *("    " + line for line in _contributors(report, quantity)),
            ]))
    if problems:
        raise BudgetExceeded(f"fxcost budget exceeded for {report.model}:\n  " + "\n  ".join(problems))
    return report


def baseline_figures(report: "Report") -> dict[str, int]:
    """The budgetable quantities of ``report``, for a baseline file."""
    return {name: int(q.value(report)) for name, q in QUANTITIES.items()
            if not q.training or report.training is not None}


def write_baseline(path: str, report: "Report") -> None:
    """Record ``report``'s figures as the baseline at ``path`` (JSON)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"model": report.model, "figures": baseline_figures(report)}, handle, indent=1, sort_keys=True)
        handle.write("\n")


def assert_near_baseline(report: "Report", path: str, tolerance: float | str = 0.0) -> "Report":
    """Fail if any quantity grew more than ``tolerance`` (``0.02`` or ``"2%"``) over the
    baseline recorded at ``path``."""
    __tracebackhide__ = True
    if isinstance(tolerance, str):
        text = tolerance.strip()
        tolerance = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not os.path.exists(path):
        raise BudgetExceeded(f"no fxcost baseline at {path}: record one with `pytest --fxcost-update`")
    with open(path, encoding="utf-8") as handle:
        recorded = json.load(handle)["figures"]
    limits = {name: math.floor(value * (1 + tolerance)) for name, value in recorded.items() if name in QUANTITIES}
    try:
        return assert_within(report, **limits)
    except BudgetExceeded as error:
        raise BudgetExceeded(f"{error}\n  (limits are the baseline in {path} + {100 * tolerance:g}%; "
                             "re-record with `pytest --fxcost-update` if the growth is intended)") from None
