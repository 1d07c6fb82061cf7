"""Plain records: what the analysis stages hand to each other and what views read.

The bottom layer: this module imports no other fxcost module but the errors.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """``torch.float32`` -> ``"float32"`` (None stays None)."""
    return None if dtype is None else str(dtype).replace("torch.", "")


def dtype_from_name(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32``."""
    return getattr(torch, name)


@dataclass(frozen=True)
class TensorMeta:
    """Shape, dtype and storage identity of one tensor seen during shape propagation."""

    shape: tuple[int, ...]
    """Sizes of every dimension."""
    dtype: torch.dtype
    """Element type."""
    storage: int = 0
    """Identity of the underlying storage: equal for a tensor and its views."""
    storage_nbytes: int = 0
    """Size of the whole underlying storage in bytes."""

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the elements this tensor addresses (not of its whole storage)."""
        return self.numel * self.itemsize


@dataclass(frozen=True)
class Opaque:
    """Stands for an object a node returned that is neither a tensor nor a plain value (a cache
    object...): named, not kept, so the tensors inside it live as long as the program keeps
    them, not as long as fxcost's records."""

    type_name: str
    """Its class's qualified name."""


_PLAIN = (int, float, bool, str, complex, type(None), torch.dtype, torch.device, torch.Size, slice, type(Ellipsis))


def opaque(value: Any) -> Any:
    """``value`` if it is a plain value (or a TensorMeta), else an :class:`Opaque` naming it."""
    if isinstance(value, (TensorMeta, Opaque, *_PLAIN)):
        return value
    cls = type(value)
    return Opaque(f"{cls.__module__}.{cls.__qualname__}")


def iter_instances(value: Any, cls: type) -> Iterator[Any]:
    """Every instance of ``cls`` inside nested tuples/lists/dicts, in order."""
    if isinstance(value, cls):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from iter_instances(item, cls)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_instances(item, cls)


def iter_metas(value: Any) -> Iterator[TensorMeta]:
    """Every :class:`TensorMeta` inside a nested tuple/list/dict value."""
    return iter_instances(value, TensorMeta)


def bytes_read(tensors: Any) -> int:
    """Bytes an op reads from its distinct input tensors ``tensors`` (TensorMetas; a tensor
    passed twice, as in ``x + x``, is given once): a storage read through several views by
    one op is read at most once in full, so each storage contributes the bytes of its views,
    capped at the storage's size."""
    per_storage: dict[int, int] = {}
    capacity: dict[int, int] = {}
    for meta in tensors:
        per_storage[meta.storage] = per_storage.get(meta.storage, 0) + meta.nbytes
        capacity[meta.storage] = meta.storage_nbytes
    return sum(min(nbytes, capacity[storage]) if capacity[storage] else nbytes
               for storage, nbytes in per_storage.items())


class MovesBytes:
    """``bytes_moved`` and ``intensity`` for records with ``flops``, ``bytes_read`` and ``bytes_written``."""

    @property
    def bytes_moved(self) -> int:
        """Bytes read plus bytes written."""
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved (0 when nothing moves)."""
        moved = self.bytes_moved
        return self.flops / moved if moved else 0.0


class Status(str, enum.Enum):
    """How a node's cost was obtained."""

    COUNTED = "counted"
    """A cost rule matched the node."""
    NO_COMPUTE = "no-compute"
    """The node does no arithmetic: a placeholder, an attribute, shape arithmetic or a non-tensor value."""
    DECOMPOSED = "decomposed"
    """No rule for the node itself: it was costed by the rules of the torch calls it makes."""
    PARTIAL = "partial"
    """Costed from its torch calls up to a data-dependent op (e.g. NMS) it could not get past:
    what follows that op is not counted, so the node's figures are lower bounds."""
    UNSUPPORTED = "unsupported"
    """No cost rule exists for the node's target: its MACs and FLOPs are unknown, not zero."""


@dataclass(frozen=True)
class Cost:
    """What a cost rule returns for one call. Counts are per call, whole batch."""

    macs: int = 0
    """Multiply-accumulates of matmul-class work (convolution, linear, matmul, attention, RNN)."""
    flops: int = 0
    """All floating-point operations: 2 per MAC plus elementwise work."""
    weight_bytes_read: int | None = None
    """Bytes of weights/buffers the op really reads, when not all of them (e.g. embedding rows)."""
    moves_data: bool = False
    """The op only moves or creates data: an output that is a view of an input is neither
    read nor written, a copy reads what it writes."""


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
    """Activation bytes alive while this node runs (see ``Report.peak_activation_bytes``)."""
    temporary_bytes: int = 0
    """Bytes the node allocates internally beyond its outputs and frees before returning."""
    assumption: str = ""
    """What was assumed about tensor values to run this node (see ``Report.assumptions``)."""
    backward_macs: int = 0
    """Training: MACs of this node's gradient (input and weight gradients; recomputed forward
    under activation checkpointing)."""
    backward_flops: int = 0
    """Training: FLOPs of this node's gradient."""

    @property
    def bytes_read(self) -> int:
        """Bytes read: input activations plus weights and buffers."""
        return self.input_bytes + self.weight_bytes

    @property
    def supported(self) -> bool:
        """False when the node's MACs/FLOPs are unknown or only a lower bound."""
        return self.status not in (Status.UNSUPPORTED, Status.PARTIAL)


@dataclass(frozen=True)
class Buffer:
    """One activation buffer and its lifetime in schedule steps (node indices)."""

    id: int
    """Number of the buffer, in allocation order."""
    nbytes: int
    """Size in bytes (at the counted activation dtype)."""
    producer: str
    """Name of the node that allocated it."""
    module_path: str
    """Module of that node."""
    start: int
    """Index of the allocating node."""
    end: int
    """Index of the last node during which it is alive."""


@dataclass(frozen=True)
class GroupCost(MovesBytes):
    """Summed costs of a group of nodes: a module (with its submodules) or an op type."""

    key: str
    """Module path (``''`` = ops called directly by the root's forward) or op type."""
    module_type: str
    """Class name of the module (module groups) or the op's target (op groups)."""
    depth: int
    """Number of components of the module path (0 for op groups and the root)."""
    nodes: int
    """Number of nodes in the group that do work (placeholders and outputs excluded)."""
    macs: int
    """Summed multiply-accumulates."""
    flops: int
    """Summed FLOPs."""
    params: int
    """Parameters first used inside the group."""
    param_bytes: int
    """Bytes of those parameters."""
    bytes_read: int
    """Summed bytes read (activations and weights)."""
    bytes_written: int
    """Summed bytes written."""
    peak_live_bytes: int
    """Peak live activation bytes while the group's nodes run."""
    unsupported: int
    """Nodes of the group without a cost rule (their MACs/FLOPs are unknown)."""
    macs_share: float
    """Fraction of the model's MACs (0..1)."""
    flops_share: float
    """Fraction of the model's FLOPs (0..1)."""
    backward_macs: int = 0
    """Training: summed MACs of the group's gradients."""
    backward_flops: int = 0
    """Training: summed FLOPs of the group's gradients."""


@dataclass(frozen=True)
class Assumption:
    """A value fxcost assumed where the model's code depends on tensor values."""

    location: str
    """``file:line`` of the code (innermost frame outside torch and fxcost); ``assume=``
    takes it as a key."""
    code: str
    """That line of source."""
    what: str
    """What was assumed, in words."""
    value: str
    """The assumed value (``repr``), or ``upper bound`` for a value-dependent size."""
    count: int
    """How many times it was assumed there."""


#: Categories of memory in a training step, in the order reports list them.
CATEGORIES = ("weights", "gradients", "optimizer_state", "activations", "temporaries", "inputs")


@dataclass(frozen=True)
class MemoryPoint:
    """Live bytes by category at one point of a training step."""

    phase: str
    """``forward``, ``loss``, ``backward`` or ``optimizer``."""
    node: str
    """The node running (forward), whose gradient is computed (backward), or the phase."""
    bytes: dict[str, int]
    """Live bytes per category (see :data:`CATEGORIES`)."""
    op: int = 0
    """How many aten ops of the step had run (the point's position in time)."""


@dataclass(frozen=True)
class PeakHolder:
    """Activations a node saved for the backward that are alive at the training peak."""

    node: str
    """The node that saved them."""
    module_path: str
    """Its module."""
    nbytes: int
    """Bytes saved and still alive."""


@dataclass(frozen=True)
class TrainingStep:
    """One steady-state training step: its peak memory by category and what it costs beyond
    the forward (the per-node backward costs are on the nodes)."""

    optimizer: str
    """The optimizer (``adamw``..., a class name, or ``none``)."""
    loss: str
    """How the loss was formed (``output.loss``, ``output.sum()`` or the function's name)."""
    amp: str | None
    """The autocast dtype, if any."""
    checkpointed: tuple[str, ...]
    """Module paths run under activation checkpointing by request."""
    peak_bytes: int
    """Peak of everything live during the step."""
    peak_phase: str
    """``forward``, ``loss``, ``backward`` or ``optimizer``."""
    peak_node: str
    """The node running at the peak (forward), or whose gradient was being computed."""
    memory: dict[str, int]
    """Bytes per category at the peak (see :data:`CATEGORIES`)."""
    peak_holders: tuple[PeakHolder, ...]
    """Saved activations alive at the peak, by the node that saved them, largest first."""
    gradient_bytes: int
    """Bytes of the parameters' gradients after the backward."""
    optimizer_state_bytes: int
    """Bytes of the optimizer's state."""
    loss_macs: int
    """MACs of the loss and its gradient."""
    loss_flops: int
    """FLOPs of the loss and its gradient."""
    optimizer_flops: int
    """FLOPs of the optimizer step (one per element each of its ops writes)."""
    unsupported: dict[str, int]
    """aten ops of the backward or the optimizer without a rule -> how many ran (their FLOPs
    are not counted: the backward totals are lower bounds)."""
    timeline: tuple[MemoryPoint, ...] = ()
    """Live bytes by category at every node boundary of the step (for plots)."""


_FIELD_DEFAULTS: dict[type, tuple[dict[str, Any], int]] = {}


def new_record(cls: type, **fields: Any) -> Any:
    """``cls(**fields)`` for a frozen dataclass of plain fields, without running its
    ``__init__`` (which sets each field through ``object.__setattr__``: five times slower, and
    this runs per node); fields left out take their defaults."""
    known = _FIELD_DEFAULTS.get(cls)
    if known is None:
        every = dataclasses.fields(cls)
        if any(f.default_factory is not dataclasses.MISSING for f in every):
            raise TypeError(f"{cls.__name__} has fields with default factories: construct it normally")
        known = _FIELD_DEFAULTS[cls] = ({f.name: f.default for f in every if f.default is not dataclasses.MISSING},
                                        len(every))
    record = object.__new__(cls)
    state = record.__dict__
    state.update(known[0])
    state.update(fields)
    if len(state) != known[1]:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in state]
        raise TypeError(f"{cls.__name__}: {'missing ' + ', '.join(missing) if missing else 'unknown fields'}")
    return record


def with_fields(record: Any, **changes: Any) -> Any:
    """A copy of the frozen dataclass ``record`` with ``changes`` (``dataclasses.replace``
    without re-running ``__init__``: records are plain field holders, and this runs per node)."""
    copy = object.__new__(type(record))
    state = copy.__dict__
    state.update(record.__dict__)
    state.update(changes)
    return copy
