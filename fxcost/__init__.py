"""fxcost: what a PyTorch model costs, computed from its traced graph without running it.

``fxcost.analyze(model, example_input)`` returns a :class:`Report` with per-node MACs,
FLOPs, parameters and bytes moved.
"""

from ._analyze import TraceFallbackWarning, UnsupportedOpWarning, analyze
from ._budget import BudgetExceeded, assert_within
from ._compare import Delta, ModuleDelta, ReportDiff, compare
from ._errors import (
    FxcostError,
    InvalidInputError,
    InvalidModelError,
    ShapePropagationError,
    TraceError,
)
from ._options import MemoryOptions
from ._records import Buffer, Cost, GroupCost, NodeCost, Status, TensorMeta
from ._registry import RULES, OpCall, RuleRegistry
from ._report import Report
from ._roofline import HARDWARE, Hardware, NodeTime, Roofline
from ._units import format_bytes, format_count, parse_quantity

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
    "format_bytes",
    "format_count",
    "parse_quantity",
]


def __getattr__(name: str):
    """``fxcost.plot`` and ``fxcost.passes`` are imported on first use."""
    if name in ("plot", "passes", "formulas", "rules"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fxcost' has no attribute {name!r}")
