"""The analysis result: per-node records and model totals."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._aggregate import GroupCost
    from ._compare import ReportDiff
    from ._roofline import Roofline

from ._errors import InvalidInputError
from ._liveness import Buffer, MemoryOptions
from ._records import MovesBytes, Status

#: The ``format`` key of :meth:`Report.to_dict`; version 2 added ``totals``.
FORMAT = "fxcost.report/2"
_READABLE_FORMATS = ("fxcost.report/1", FORMAT)

#: The figures :meth:`Report.to_dict` puts under ``totals``: report attributes, by name.
TOTALS = (
    "macs", "flops", "params", "trainable_params", "non_trainable_params", "param_bytes", "buffer_bytes",
    "bytes_read", "bytes_written", "bytes_moved", "intensity", "peak_activation_bytes", "peak_node",
    "peak_with_temporaries_bytes", "weight_memory_bytes", "peak_memory_bytes", "unused_param_count", "complete",
)


@dataclass(frozen=True)
class NodeCost(MovesBytes):
    """The cost of one graph node. Counts cover one forward call on the example input."""

    name: str
    """The fx node name (unique in the graph)."""
    op: str
    """fx opcode: placeholder, get_attr, call_module, call_function, call_method or output."""
    target: str
    """What was called: a module class, a function or a ``Tensor.method``, fully qualified."""
    op_type: str
    """Short name of the target, used to group nodes: ``Conv2d``, ``add``, ``matmul``..."""
    module_path: str
    """Path of the module the node belongs to (``layer1.0.conv2``); ``''`` for the root."""
    module_type: str
    """Class name of that module."""
    output_shapes: tuple[tuple[int, ...], ...]
    """Shape of every tensor the node outputs."""
    dtype: str | None
    """dtype of the first output tensor (``float32``), or None when it outputs no tensor."""
    macs: int = 0
    """Multiply-accumulates of matmul-class work."""
    flops: int = 0
    """Floating-point operations (2 per MAC plus elementwise work)."""
    params: int = 0
    """Parameters first used by this node (a shared parameter counts once, at its first use)."""
    param_bytes: int = 0
    """Bytes of those parameters."""
    input_bytes: int = 0
    """Bytes of input activations read."""
    weight_bytes: int = 0
    """Bytes of parameters and buffers read."""
    bytes_written: int = 0
    """Bytes of outputs written."""
    status: Status = Status.COUNTED
    """Whether a cost rule matched (``unsupported``: MACs and FLOPs are unknown, not zero)."""
    note: str = ""
    """How the cost was found when not by a rule of its own, or why it is unknown."""
    live_bytes: int = 0
    """Activation bytes alive while this node runs (see :attr:`Report.peak_activation_bytes`)."""
    temporary_bytes: int = 0
    """Bytes the node allocates internally beyond its outputs and frees before returning."""

    @property
    def bytes_read(self) -> int:
        """Bytes read: input activations plus weights and buffers."""
        return self.input_bytes + self.weight_bytes

    @property
    def supported(self) -> bool:
        """False when the node's MACs/FLOPs are unknown or only a lower bound."""
        return self.status not in (Status.UNSUPPORTED, Status.PARTIAL)


@dataclass(frozen=True)
class Report(MovesBytes):
    """Costs of one model on one example input. Totals sum the node records."""

    model: str
    """Class name of the analysed model."""
    nodes: tuple[NodeCost, ...]
    """One record per graph node, in execution order."""
    params: int
    """Unique parameters of the model (as ``sum(p.numel() for p in model.parameters())``)."""
    trainable_params: int
    """Of those, the ones with ``requires_grad``."""
    param_bytes: int
    """Bytes of all unique parameters."""
    buffer_bytes: int
    """Bytes of all unique buffers (BatchNorm running statistics...)."""
    unused_params: tuple[str, ...] = ()
    """Names of parameters the traced forward never reads (e.g. an aux head in eval)."""
    unused_param_count: int = 0
    """Number of elements in ``unused_params``."""
    inputs: tuple[tuple[str, tuple[int, ...], str], ...] = ()
    """``(name, shape, dtype)`` of every tensor input."""
    mode: str = "eval"
    """``eval``, ``train`` or ``as-is``: the module mode the analysis ran in."""
    unsupported: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Targets with no cost rule -> names of the nodes calling them."""
    peak_activation_bytes: int = 0
    """Peak of live activation bytes over the graph's schedule (parameters excluded)."""
    peak_node: str = ""
    """Name of the node during which that peak is first reached."""
    peak_buffers: tuple[Buffer, ...] = ()
    """The activation buffers alive at the peak, largest first: who holds the memory."""
    peak_with_temporaries_bytes: int = 0
    """The peak at aten-op granularity: also counts node-internal temporaries (max-pool
    indices, the internals of fused calls such as attention)."""
    weight_memory_bytes: int = 0
    """Bytes of all parameters and buffers (at ``memory.weight_dtype`` when given)."""
    memory: MemoryOptions = MemoryOptions()
    """The memory layout assumptions behind the liveness figures."""
    module_types: dict[str, str] = field(default_factory=dict)
    """Class name of every module path that owns nodes, at every level."""
    quantized: dict[str, str] = field(default_factory=dict)
    """Converted quantized modules -> their class; each was costed as the float module it
    computes, with its weights counted at their real (int8) size."""
    fallbacks: dict[str, str] = field(default_factory=dict)
    """Modules torch.fx could not trace -> why; each was costed whole from the torch calls
    it makes on fake tensors ('' = the whole model)."""

    # --- totals --------------------------------------------------------------------------
    @property
    def macs(self) -> int:
        """Total multiply-accumulates."""
        return sum(n.macs for n in self.nodes)

    @property
    def flops(self) -> int:
        """Total floating-point operations."""
        return sum(n.flops for n in self.nodes)

    @property
    def non_trainable_params(self) -> int:
        """Parameters with ``requires_grad=False``."""
        return self.params - self.trainable_params

    @property
    def bytes_read(self) -> int:
        """Bytes read by all nodes (activations and weights; a weight read twice counts twice)."""
        return sum(n.bytes_read for n in self.nodes)

    @property
    def bytes_written(self) -> int:
        """Bytes written by all nodes."""
        return sum(n.bytes_written for n in self.nodes)

    @property
    def peak_memory_bytes(self) -> int:
        """Peak activations plus all parameters and buffers."""
        return self.peak_activation_bytes + self.weight_memory_bytes

    @property
    def complete(self) -> bool:
        """True when every node had a cost rule."""
        return not self.unsupported

    def node(self, name: str) -> NodeCost:
        """The record of the node called ``name``."""
        for record in self.nodes:
            if record.name == name:
                return record
        raise KeyError(f"no node named {name!r} in this report")

    def total(self, module_path: str = "") -> NodeCost:
        """Summed costs of the nodes inside ``module_path`` ('' = the whole model)."""
        from ._aggregate import total

        return total(self, module_path)

    def by_module(self, depth: int = 1) -> "list[GroupCost]":
        """Summed costs per module down to ``depth`` levels (see :class:`GroupCost`)."""
        from ._aggregate import by_module

        return by_module(self, depth)

    def by_op(self) -> "list[GroupCost]":
        """Summed costs and shares per op type (Conv2d, Linear, add, matmul...)."""
        from ._aggregate import by_op

        return by_op(self)

    def module_peaks(self, paths: Any = None, depth: int | None = None) -> dict[str, int]:
        """Peak live activation bytes while each module's nodes run (per-block peak memory)."""
        from ._aggregate import module_peaks

        return module_peaks(self, paths, depth)

    def alive_at_peak(self) -> tuple[Buffer, ...]:
        """The buffers alive at the peak, largest first (same as :attr:`peak_buffers`)."""
        return self.peak_buffers

    def roofline(self, hardware: Any) -> "Roofline":
        """Per-node roofline lower bounds on ``hardware`` (a preset name from
        ``fxcost.HARDWARE`` or an ``fxcost.Hardware``)."""
        from ._roofline import roofline

        return roofline(self, hardware)

    def diff(self, other: "Report", depth: int = 1) -> "ReportDiff":
        """Per-module and total deltas from this report to ``other``."""
        from ._compare import compare

        return compare(self, other, depth)

    # --- export -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` restores an equal Report.

        ``format`` names the schema version, ``totals`` holds the model totals (the
        attributes named in :data:`TOTALS`; derived, ignored by :meth:`from_dict`).
        """
        data: dict[str, Any] = {"format": FORMAT, "totals": {name: getattr(self, name) for name in TOTALS}}
        data.update(dataclasses.asdict(self))
        for node in data["nodes"]:
            node["status"] = node["status"].value
        data["memory"] = self.memory.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        """Rebuild a Report from :meth:`to_dict` output (format version 1 or 2)."""
        version = data.get("format", FORMAT)
        if version not in _READABLE_FORMATS:
            raise InvalidInputError(f"unknown report format {version!r}: this fxcost reads "
                                    f"{' and '.join(_READABLE_FORMATS)} (a newer fxcost wrote it?)")
        data = {k: v for k, v in data.items() if k not in ("format", "totals")}
        nodes = tuple(
            NodeCost(**{**node, "status": Status(node["status"]),
                        "output_shapes": tuple(tuple(s) for s in node["output_shapes"])})
            for node in data.pop("nodes")
        )
        data["unused_params"] = tuple(data.get("unused_params", ()))
        data["inputs"] = tuple((name, tuple(shape), dtype) for name, shape, dtype in data.get("inputs", ()))
        data["unsupported"] = {k: tuple(v) for k, v in data.get("unsupported", {}).items()}
        data["peak_buffers"] = tuple(Buffer(**b) for b in data.get("peak_buffers", ()))
        data["memory"] = MemoryOptions.from_dict(data.get("memory", {}))
        return cls(nodes=nodes, **data)

    def to_json(self, **dumps_kwargs: Any) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), **dumps_kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Report":
        """Rebuild a Report from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def table(self, **options: Any) -> str:
        """The per-node table followed by totals.

        Options: ``columns`` (names: name, module, op, type, shape, dtype, params, macs,
        flops, read, written, moved, intensity, live, status), ``sort_by`` (a column,
        largest first), ``top`` (the N most expensive nodes), ``raw`` (exact integers),
        ``max_width`` (default 100 columns), ``all_nodes``.
        """
        from ._table import format_report

        return format_report(self, **options)

    def module_table(self, depth: int = 1, columns: Any = None, raw: bool = False, max_width: int | None = 100) -> str:
        """Costs summed per module down to ``depth`` levels, indented like torchinfo."""
        from ._table import MODULE_COLUMNS, group_table

        return group_table(self.by_module(depth), columns or MODULE_COLUMNS, raw, max_width)

    def op_table(self, columns: Any = None, raw: bool = False, max_width: int | None = 100) -> str:
        """Costs, counts and shares of the total per op type."""
        from ._table import OP_COLUMNS, group_table

        return group_table(self.by_op(), columns or OP_COLUMNS, raw, max_width)

    def summary(self, raw: bool = False) -> str:
        """The model totals in human units, one per line."""
        from ._table import summary

        return summary(self, raw)

    def to_csv(self) -> str:
        """Every node as a CSV row of exact integers."""
        from ._table import nodes_csv

        return nodes_csv(self)

    def to_markdown(self, **options: Any) -> str:
        """The per-node table as a GitHub Markdown table (same options as :meth:`table`)."""
        from ._table import node_table

        return node_table(self, tablefmt="github", max_width=options.pop("max_width", None), **options)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"Report(model={self.model!r}, nodes={len(self.nodes)}, macs={self.macs}, "
                f"flops={self.flops}, params={self.params})")
