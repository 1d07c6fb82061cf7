"""Summing node records: by module path (hierarchically), by op type, per-module peaks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ._records import GroupCost, NodeCost, Status

if TYPE_CHECKING:
    from ._report import Report

_SUMMED = ("macs", "flops", "params", "param_bytes", "input_bytes", "weight_bytes", "bytes_written")
_IDLE = ("placeholder", "output", "get_attr")


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
    unsupported = any(not n.supported for n in nodes)
    return NodeCost(
        name=name, op="total", target=name, op_type=op_type, module_path=module_path,
        module_type=module_type, output_shapes=(), dtype=None, **sums,
        status=Status.UNSUPPORTED if unsupported else Status.COUNTED,
        live_bytes=max((n.live_bytes for n in nodes), default=0),
    )


def total(report: "Report", module_path: str = "") -> NodeCost:
    """Summed costs of the nodes inside ``module_path`` ('' = the whole model)."""
    nodes = [n for n in report.nodes if in_module(n, module_path)]
    if module_path and not nodes:
        raise KeyError(f"no node belongs to module {module_path!r}")
    return sum_nodes(nodes, module_path or report.model, module_path)


def _group(report: "Report", key: str, module_type: str, depth: int, nodes: list[NodeCost]) -> GroupCost:
    macs, flops = report.macs, report.flops
    group_macs = sum(n.macs for n in nodes)
    group_flops = sum(n.flops for n in nodes)
    return GroupCost(
        key=key, module_type=module_type, depth=depth, nodes=len(nodes), macs=group_macs, flops=group_flops,
        params=sum(n.params for n in nodes), param_bytes=sum(n.param_bytes for n in nodes),
        bytes_read=sum(n.bytes_read for n in nodes), bytes_written=sum(n.bytes_written for n in nodes),
        peak_live_bytes=max((n.live_bytes for n in nodes), default=0),
        backward_macs=sum(n.backward_macs for n in nodes), backward_flops=sum(n.backward_flops for n in nodes),
        unsupported=sum(not n.supported for n in nodes),
        macs_share=group_macs / macs if macs else 0.0, flops_share=group_flops / flops if flops else 0.0,
    )


def by_module(report: "Report", depth: int = 1) -> list[GroupCost]:
    """Module groups down to ``depth`` path components, in execution order, parents before
    children (like torchinfo's depth). Functional ops count in the module that calls them;
    ops called by the root's own forward form the group ``''``."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    working = [n for n in report.nodes if n.op not in _IDLE and n.status is not Status.NO_COMPUTE]
    order: dict[str, list[NodeCost]] = {}
    for node in working:
        parts = node.module_path.split(".") if node.module_path else []
        if not parts:
            order.setdefault("", []).append(node)
        for level in range(1, min(depth, len(parts)) + 1):
            order.setdefault(".".join(parts[:level]), []).append(node)
    return [
        _group(report, key, report.module_types.get(key, report.model if not key else ""),
               key.count(".") + 1 if key else 0, nodes)
        for key, nodes in order.items()
    ]


def by_op(report: "Report") -> list[GroupCost]:
    """Op-type groups (``Conv2d``, ``Linear``, ``add``, ``matmul``...), most MACs first, then FLOPs."""
    groups: dict[str, list[NodeCost]] = {}
    for node in report.nodes:
        if node.op not in _IDLE:
            groups.setdefault(node.op_type, []).append(node)
    rows = [_group(report, key, nodes[0].target, 0, nodes) for key, nodes in groups.items()]
    return sorted(rows, key=lambda g: (-g.macs, -g.flops, g.key))


def module_peaks(report: "Report", paths: Iterable[str] | None = None, depth: int | None = None) -> dict[str, int]:
    """Peak live activation bytes while the nodes of each module run.

    ``paths`` names the modules; otherwise every module path cut to ``depth`` components
    (``depth=None``: the full paths of the nodes' own modules).
    """
    peaks: dict[str, int] = {}
    if paths is not None:
        for path in paths:
            inside = [n.live_bytes for n in report.nodes if in_module(n, path) and n.op not in _IDLE]
            if not inside:
                raise KeyError(f"no node belongs to module {path!r}")
            peaks[path] = max(inside)
        return peaks
    for node in report.nodes:
        if node.op in _IDLE:
            continue
        path = node.module_path if depth is None else ".".join(node.module_path.split(".")[:depth])
        peaks[path] = max(peaks.get(path, 0), node.live_bytes)
    return peaks
