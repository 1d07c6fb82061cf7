"""The analysis result: per-node records, model totals, and every view of them.

``Report`` sits on top of the view modules (tables, aggregation, roofline, comparison): it
holds the records and offers each view as a method; the views import only the records.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from . import _aggregate, _compare, _roofline, _table
from ._errors import InvalidInputError
from ._options import MemoryOptions
from ._records import (
    Assumption,
    Buffer,
    GroupCost,
    MemoryPoint,
    MovesBytes,
    NodeCost,
    PeakHolder,
    Status,
    TrainingStep,
)

#: The ``format`` key of :meth:`Report.to_dict`; version 2 added ``totals``.
FORMAT = "fxcost.report/2"
_READABLE_FORMATS = ("fxcost.report/1", FORMAT)

#: The figures :meth:`Report.to_dict` puts under ``totals``: report attributes, by name.
TOTALS = (
    "macs", "flops", "params", "trainable_params", "non_trainable_params", "param_bytes", "buffer_bytes",
    "bytes_read", "bytes_written", "bytes_moved", "intensity", "peak_activation_bytes", "peak_node",
    "peak_with_temporaries_bytes", "weight_memory_bytes", "peak_memory_bytes", "unused_param_count", "complete",
)
#: Added to ``totals`` when the report holds a training step.
TRAINING_TOTALS = (
    "backward_macs", "backward_flops", "step_flops", "train_peak_bytes", "train_peak_phase", "train_memory",
    "gradient_bytes", "optimizer_state_bytes",
)


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
    assumptions: tuple[Assumption, ...] = ()
    """Values fxcost assumed where the code depends on tensor values (branches on values,
    ``.item()``, value-dependent output sizes); the nodes concerned say so in ``assumption``."""
    training: TrainingStep | None = None
    """The training step, when ``analyze(..., training=fxcost.Training(...))`` asked for one."""
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

    # --- training step ------------------------------------------------------------------
    def _step(self) -> TrainingStep:
        if self.training is None:
            raise AttributeError("this report has no training step: pass training=fxcost.Training(...) to analyze()")
        return self.training

    @property
    def backward_macs(self) -> int:
        """MACs of the backward pass, summed over the nodes (the loss's are in ``training.loss_macs``)."""
        self._step()
        return sum(n.backward_macs for n in self.nodes)

    @property
    def backward_flops(self) -> int:
        """FLOPs of the backward pass, summed over the nodes."""
        self._step()
        return sum(n.backward_flops for n in self.nodes)

    @property
    def step_flops(self) -> int:
        """FLOPs of one training step: forward, loss, backward and optimizer."""
        step = self._step()
        return self.flops + self.backward_flops + step.loss_flops + step.optimizer_flops

    @property
    def train_peak_bytes(self) -> int:
        """Peak of everything live during one steady-state training step."""
        return self._step().peak_bytes

    @property
    def train_memory(self) -> dict[str, int]:
        """Bytes by category at the training peak: weights, gradients, optimizer_state,
        activations (saved for the backward), temporaries, inputs."""
        return dict(self._step().memory)

    @property
    def train_peak_phase(self) -> str:
        """``forward``, ``loss``, ``backward`` or ``optimizer``: when the training peak happens."""
        return self._step().peak_phase

    @property
    def gradient_bytes(self) -> int:
        """Bytes of the parameters' gradients."""
        return self._step().gradient_bytes

    @property
    def optimizer_state_bytes(self) -> int:
        """Bytes of the optimizer's state."""
        return self._step().optimizer_state_bytes

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
        return _aggregate.total(self, module_path)

    def by_module(self, depth: int = 1) -> list[GroupCost]:
        """Summed costs per module down to ``depth`` levels (see :class:`GroupCost`)."""
        return _aggregate.by_module(self, depth)

    def by_op(self) -> list[GroupCost]:
        """Summed costs and shares per op type (Conv2d, Linear, add, matmul...)."""
        return _aggregate.by_op(self)

    def module_peaks(self, paths: Any = None, depth: int | None = None) -> dict[str, int]:
        """Peak live activation bytes while each module's nodes run (per-block peak memory)."""
        return _aggregate.module_peaks(self, paths, depth)

    def roofline(self, hardware: Any) -> "_roofline.Roofline":
        """Per-node roofline lower bounds on ``hardware`` (a preset name from
        ``fxcost.HARDWARE`` or an ``fxcost.Hardware``)."""
        return _roofline.roofline(self, hardware)

    def diff(self, other: "Report", depth: int = 1) -> "_compare.ReportDiff":
        """Per-module and total deltas from this report to ``other``."""
        return _compare.compare(self, other, depth)

    # --- export -------------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """The model totals by attribute name: :data:`TOTALS`, and :data:`TRAINING_TOTALS`
        when the report holds a training step."""
        names = TOTALS + (TRAINING_TOTALS if self.training is not None else ())
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` restores an equal Report.

        ``format`` names the schema version, ``totals`` holds the model totals (the
        attributes named in :data:`TOTALS`, and :data:`TRAINING_TOTALS` with a training
        step; derived, ignored by :meth:`from_dict`).
        """
        data: dict[str, Any] = {"format": FORMAT, "totals": self.totals()}
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
        data["assumptions"] = tuple(Assumption(**a) for a in data.get("assumptions", ()))
        if data.get("training"):
            step = dict(data["training"])
            step["checkpointed"] = tuple(step["checkpointed"])
            step["peak_holders"] = tuple(PeakHolder(**h) for h in step["peak_holders"])
            step["timeline"] = tuple(MemoryPoint(**p) for p in step.get("timeline", ()))
            data["training"] = TrainingStep(**step)
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
        return _table.format_report(self, **options)

    def module_table(self, depth: int = 1, columns: Any = None, raw: bool = False, max_width: int | None = 100) -> str:
        """Costs summed per module down to ``depth`` levels, indented like torchinfo."""
        default = _table.MODULE_TRAINING_COLUMNS if self.training is not None else _table.MODULE_COLUMNS
        return _table.group_table(self.by_module(depth), columns or default, raw, max_width)

    def op_table(self, columns: Any = None, raw: bool = False, max_width: int | None = 100) -> str:
        """Costs, counts and shares of the total per op type."""
        return _table.group_table(self.by_op(), columns or _table.OP_COLUMNS, raw, max_width)

    def summary(self, raw: bool = False) -> str:
        """The model totals in human units, one per line."""
        return _table.summary(self, raw)

    def to_csv(self) -> str:
        """Every node as a CSV row of exact integers."""
        return _table.nodes_csv(self)

    def to_markdown(self, **options: Any) -> str:
        """The per-node table as a GitHub Markdown table (same options as :meth:`table`)."""
        return _table.node_table(self, tablefmt="github", max_width=options.pop("max_width", None), **options)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"Report(model={self.model!r}, nodes={len(self.nodes)}, macs={self.macs}, "
                f"flops={self.flops}, params={self.params})")
