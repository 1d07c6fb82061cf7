"""fxcost: what a PyTorch model costs, computed from its traced graph without running it.

``fxcost.analyze(model, example_input)`` returns a :class:`Report` with per-node MACs,
FLOPs, parameters and bytes moved.

The public names are imported on first use, so that ``import fxcost`` (and ``fxcost --help``,
and the pytest plugin) does not import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    FxcostError,
    InvalidInputError,
    InvalidModelError,
    ShapePropagationError,
    TraceError,
)
from ._units import format_bytes, format_count, parse_quantity

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from . import formulas, passes, plot, rules  # noqa: F401
    from ._analyze import AssumptionWarning, TraceFallbackWarning, UnsupportedOpWarning, analyze
    from ._assume import Site
    from ._budget import BudgetExceeded, assert_within
    from ._compare import Delta, ModuleDelta, ReportDiff, compare
    from ._options import MemoryOptions, Training
    from ._records import (Assumption, Buffer, Cost, GroupCost, MemoryPoint, NodeCost, PeakHolder, Status,
                           TensorMeta, TrainingStep)
    from ._registry import RULES, OpCall, RuleRegistry
    from ._report import Report
    from ._roofline import HARDWARE, Hardware, NodeTime, Roofline

#: Public name -> the submodule that defines it (imported on first access).
_LAZY = {
    "analyze": "._analyze", "UnsupportedOpWarning": "._analyze", "TraceFallbackWarning": "._analyze",
    "AssumptionWarning": "._analyze", "Site": "._assume", "Assumption": "._records",
    "assert_within": "._budget", "BudgetExceeded": "._budget",
    "Report": "._report", "NodeCost": "._records",
    "GroupCost": "._records",
    "compare": "._compare", "ReportDiff": "._compare", "ModuleDelta": "._compare", "Delta": "._compare",
    "Hardware": "._roofline", "HARDWARE": "._roofline", "Roofline": "._roofline", "NodeTime": "._roofline",
    "MemoryOptions": "._options", "Training": "._options", "Buffer": "._records",
    "TrainingStep": "._records", "MemoryPoint": "._records", "PeakHolder": "._records",
    "Status": "._records", "Cost": "._records", "TensorMeta": "._records",
    "RULES": ".rules",  # the registry, filled with the default rules
    "OpCall": "._registry", "RuleRegistry": "._registry",
}
_SUBMODULES = ("plot", "passes", "formulas", "rules")

__all__ = [
    "analyze",
    "assert_within",
    "BudgetExceeded",
    "Report",
    "GroupCost",
    "compare",
    "ReportDiff",
    "ModuleDelta",
    "Delta",
    "Hardware",
    "HARDWARE",
    "Roofline",
    "NodeTime",
    "MemoryOptions",
    "Training",
    "TrainingStep",
    "MemoryPoint",
    "PeakHolder",
    "Buffer",
    "NodeCost",
    "Status",
    "Cost",
    "OpCall",
    "TensorMeta",
    "RULES",
    "RuleRegistry",
    "FxcostError",
    "InvalidModelError",
    "InvalidInputError",
    "TraceError",
    "ShapePropagationError",
    "UnsupportedOpWarning",
    "TraceFallbackWarning",
    "AssumptionWarning",
    "Assumption",
    "Site",
    "format_bytes",
    "format_count",
    "parse_quantity",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or ``fxcost.plot``, ``fxcost.passes``...) on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'fxcost' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
