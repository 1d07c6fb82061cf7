"""Plain records passed between the analysis stages."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch


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
        return dtype_itemsize(self.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the elements this tensor addresses (not of its whole storage)."""
        return self.numel * self.itemsize


def iter_instances(value, cls):
    """Every instance of ``cls`` inside nested tuples/lists/dicts, in order."""
    if isinstance(value, cls):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from iter_instances(item, cls)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_instances(item, cls)


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


def dtype_itemsize(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return dtype.itemsize


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
