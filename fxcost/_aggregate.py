"""Summing node records: by module path, by op type."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ._records import Status
from ._report import NodeCost

if TYPE_CHECKING:
    from ._report import Report

_SUMMED = ("macs", "flops", "params", "param_bytes", "input_bytes", "weight_bytes", "bytes_written")


def in_module(node: NodeCost, module_path: str) -> bool:
    """Whether ``node`` belongs to ``module_path`` or one of its submodules."""
    if not module_path:
        return True
    path = node.module_path
    return path == module_path or path.startswith(module_path + ".")


def sum_nodes(nodes: Iterable[NodeCost], name: str, module_path: str = "", module_type: str = "", op_type: str = "") -> NodeCost:
    """One record whose counts are the sums of ``nodes``."""
    nodes = list(nodes)
    sums = {key: sum(getattr(n, key) for n in nodes) for key in _SUMMED}
    unsupported = any(n.status is Status.UNSUPPORTED for n in nodes)
    return NodeCost(
        name=name, op="total", target=name, op_type=op_type, module_path=module_path,
        module_type=module_type, output_shapes=(), dtype=None, **sums,
        status=Status.UNSUPPORTED if unsupported else Status.COUNTED,
    )


def total(report: "Report", module_path: str = "") -> NodeCost:
    """Summed costs of the nodes inside ``module_path`` ('' = the whole model)."""
    nodes = [n for n in report.nodes if in_module(n, module_path)]
    if module_path and not nodes:
        raise KeyError(f"no node belongs to module {module_path!r}")
    return sum_nodes(nodes, module_path or report.model, module_path)


def module_peaks(report: "Report", paths: Iterable[str] | None = None, depth: int | None = None) -> dict[str, int]:
    """Peak live activation bytes while the nodes of each module run.

    ``paths`` names the modules; otherwise every module path cut to ``depth`` components
    (``depth=None``: the full paths of the nodes' own modules).
    """
    peaks: dict[str, int] = {}
    if paths is not None:
        for path in paths:
            inside = [n.live_bytes for n in report.nodes if in_module(n, path) and n.op not in ("placeholder", "output")]
            if not inside:
                raise KeyError(f"no node belongs to module {path!r}")
            peaks[path] = max(inside)
        return peaks
    for node in report.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        path = node.module_path if depth is None else ".".join(node.module_path.split(".")[:depth])
        peaks[path] = max(peaks.get(path, 0), node.live_bytes)
    return peaks
