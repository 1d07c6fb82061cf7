"""Roofline lower bounds: per node, time >= max(FLOPs / peak FLOP/s, bytes / bandwidth)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from ._errors import InvalidInputError
from ._records import Status

if TYPE_CHECKING:
    from ._report import Report


@dataclass(frozen=True)
class Hardware:
    """Peak throughput of a machine."""

    name: str
    """Display name."""
    peak_flops: Mapping[str, float]
    """Peak FLOP/s (or OP/s) per dtype name: ``{"float32": 67e12, "bfloat16": 989e12}``.
    ``"default"`` applies to dtypes not listed."""
    bandwidth: float
    """Memory bandwidth in bytes/s."""
    source: str = ""
    """Where the figures come from."""

    def peak_for(self, dtype: str | None) -> float:
        """Peak FLOP/s for ``dtype`` (falls back to ``default``, then float32)."""
        table = self.peak_flops
        value = table.get(dtype or "float32") or table.get("default") or table.get("float32")
        if not value:
            raise InvalidInputError(f"hardware {self.name!r} gives no peak for dtype {dtype!r}: add it to peak_flops")
        return value


#: Named presets. Dense (no sparsity) datasheet peaks; float32 means the non-tensor-core
#: FP32 rate, since fxcost does not know whether TF32 is enabled.
HARDWARE: dict[str, Hardware] = {
    "h100-sxm": Hardware(
        "NVIDIA H100 SXM5",
        {"float32": 67e12, "tfloat32": 494.7e12, "float16": 989.4e12, "bfloat16": 989.4e12,
         "float8_e4m3fn": 1978.9e12, "int8": 1978.9e12, "float64": 34e12},
        3.35e12,
        "NVIDIA H100 Tensor Core GPU datasheet (SXM5: FP32 67 TFLOPS, BF16/FP16 989 TFLOPS dense, "
        "INT8 1979 TOPS dense, HBM3 3.35 TB/s)",
    ),
    "a100-sxm": Hardware(
        "NVIDIA A100 SXM4 80GB",
        {"float32": 19.5e12, "tfloat32": 156e12, "float16": 312e12, "bfloat16": 312e12, "int8": 624e12,
         "float64": 9.7e12},
        2.039e12,
        "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM: FP32 19.5 TFLOPS, BF16/FP16 312 TFLOPS, "
        "INT8 624 TOPS, HBM2e 2,039 GB/s)",
    ),
    "laptop-cpu": Hardware(
        "Laptop CPU (4 cores, AVX2 FMA, 3 GHz, dual-channel DDR4-3200)",
        {"float32": 4 * 3.0e9 * 32, "float64": 4 * 3.0e9 * 16, "default": 4 * 3.0e9 * 32},
        51.2e9,
        "4 cores x 3 GHz x 2 AVX2 FMA units x 8 FP32 lanes x 2 FLOPs = 768 GFLOP/s; "
        "DDR4-3200 dual channel = 2 x 25.6 GB/s",
    ),
    "cortex-m7": Hardware(
        "Arm Cortex-M7 MCU at 480 MHz (STM32H7 class)",
        {"float32": 2 * 480e6, "int8": 4 * 480e6, "default": 2 * 480e6},
        1.92e9,
        "Cortex-M7 FPU: one single-precision fused MAC per cycle (2 FLOPs); SMLAD dual 16-bit MAC "
        "per cycle on int8 data (4 OPs); 64-bit AXI SRAM at 240 MHz = 1.92 GB/s",
    ),
}


@dataclass(frozen=True)
class NodeTime:
    """The roofline bound of one node."""

    name: str
    """Node name."""
    module_path: str
    """Module of the node."""
    op_type: str
    """Op type."""
    flops: int
    """FLOPs of the node."""
    bytes_moved: int
    """Bytes read plus written."""
    compute_seconds: float
    """FLOPs / peak FLOP/s."""
    memory_seconds: float
    """Bytes / bandwidth."""

    @property
    def seconds(self) -> float:
        """Lower-bound time: the larger of the two."""
        return max(self.compute_seconds, self.memory_seconds)

    @property
    def bound(self) -> str:
        """``compute`` or ``memory``: which roof limits the node (``-`` when it does nothing)."""
        if not self.compute_seconds and not self.memory_seconds:
            return "-"
        return "compute" if self.compute_seconds >= self.memory_seconds else "memory"


@dataclass(frozen=True)
class Roofline:
    """Per-node roofline bounds of a report on one machine."""

    hardware: Hardware
    """The machine."""
    nodes: tuple[NodeTime, ...] = field(default=())
    """One entry per node that does work."""
    unsupported: int = 0
    """Nodes without a cost rule: their compute time is unknown (only bytes are counted)."""

    @property
    def seconds(self) -> float:
        """Total lower-bound time, nodes run one after another."""
        return sum(n.seconds for n in self.nodes)

    def share(self, bound: str) -> float:
        """Fraction of the total time spent in ``compute``- or ``memory``-bound nodes."""
        total = self.seconds
        return sum(n.seconds for n in self.nodes if n.bound == bound) / total if total else 0.0

    def table(self, top: int | None = None, max_width: int | None = 100) -> str:
        """Per-node times, slowest first with ``top``, then the totals."""
        from ._table import roofline_table

        return roofline_table(self, top, max_width)

    def __str__(self) -> str:
        return self.table()


def roofline(report: "Report", hardware: Hardware | str) -> Roofline:
    """Roofline bounds of every node of ``report`` on ``hardware`` (a preset name or Hardware)."""
    if isinstance(hardware, str):
        if hardware not in HARDWARE:
            raise InvalidInputError(f"no hardware preset {hardware!r}; presets: {', '.join(HARDWARE)} "
                                    "(or pass fxcost.Hardware(name, peak_flops={...}, bandwidth=...))")
        hardware = HARDWARE[hardware]
    times = []
    for node in report.nodes:
        if node.status is Status.NO_COMPUTE:
            continue
        peak = hardware.peak_for(node.dtype)
        times.append(NodeTime(node.name, node.module_path, node.op_type, node.flops, node.bytes_moved,
                              node.flops / peak, node.bytes_moved / hardware.bandwidth))
    unsupported = sum(not n.supported for n in report.nodes)
    return Roofline(hardware, tuple(times), unsupported)
