"""The cost pass: one :class:`NodeCost` per graph node from the rule registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._graph import call_key, called_module, describe_target, fetched_attribute, function_name, module_of
from ._propagate import InnerCall, Propagation
from ._records import Cost, NodeCost, Status, TensorMeta, bytes_read, dtype_name, iter_metas
from ._registry import OpCall, RuleRegistry
from ._weights import WeightIndex, module_weights
from .rules import is_data_movement


@dataclass
class CostedGraph:
    """What the cost pass produced."""

    nodes: list[NodeCost]
    """One record per graph node, in graph order."""
    expansions: dict[str, list[NodeCost]] = field(default_factory=dict)
    """Node name of a module kept whole -> one record per torch call it made."""
    used: set[str] = field(default_factory=set)
    """Qualified names of the parameters some node reads."""


def cost_nodes(gm: fx.GraphModule, propagation: Propagation, rules: RuleRegistry, weights: WeightIndex,
               root_type: str) -> CostedGraph:
    """Cost every node of ``gm``; modules kept whole get one row per torch call they made."""
    result = CostedGraph([], {}, weights.used)
    for node in gm.graph.nodes:
        if node.op == "call_module" and node in propagation.inner_calls and \
                rules.lookup(type(called_module(node))) is None:
            record, rows = _expand_module(node, propagation, rules, weights)
            result.nodes.append(record)
            if rows:
                result.expansions[node.name] = rows
            continue
        result.nodes.append(_cost_node(node, propagation, rules, weights, root_type))
    return result


def _movement_bytes(outputs, input_storages: set[int], input_bytes: int, weight_bytes: int) -> tuple[int, int, int]:
    """``(input bytes, weight bytes, written)`` of an op that only moves data: a view writes
    and reads nothing; a copy reads what it writes."""
    written = sum(o.nbytes for o in outputs if o.storage not in input_storages)
    read = min(input_bytes + weight_bytes, written)
    return min(input_bytes, read), max(0, read - input_bytes), written


def _priced(base: dict[str, Any], call: OpCall, rule, activations: list[TensorMeta],
            weights: tuple[int, int, int]) -> NodeCost:
    """The record of one call costed by ``rule`` (bytes of data-movement ops adjusted)."""
    params, param_bytes, weight_bytes = weights
    input_bytes = bytes_read(activations)
    cost: Cost = rule(call)
    if cost.weight_bytes_read is not None:
        weight_bytes = cost.weight_bytes_read
    written = sum(o.nbytes for o in call.outputs)
    if is_data_movement(rule):
        input_bytes, weight_bytes, written = _movement_bytes(
            call.outputs, {m.storage for m in (*activations, *iter_metas((call.args, call.kwargs)))},
            input_bytes, weight_bytes)
    return NodeCost(**base, macs=int(cost.macs), flops=int(cost.flops), params=params, param_bytes=param_bytes,
                    input_bytes=input_bytes, weight_bytes=weight_bytes, bytes_written=written,
                    status=Status.COUNTED)


def _unpriced(base: dict[str, Any], outputs, activations: list[TensorMeta], weights: tuple[int, int, int],
              **status) -> NodeCost:
    """The record of a call no single rule prices (unsupported, decomposed or partial)."""
    params, param_bytes, weight_bytes = weights
    return NodeCost(**base, params=params, param_bytes=param_bytes, input_bytes=bytes_read(activations),
                    weight_bytes=weight_bytes, bytes_written=sum(o.nbytes for o in outputs), **status)


def _base(name: str, op: str, target: str, op_type: str, module: tuple[str, str], outputs) -> dict[str, Any]:
    return dict(name=name, op=op, target=target, op_type=op_type, module_path=module[0], module_type=module[1],
                output_shapes=tuple(o.shape for o in outputs), dtype=dtype_name(outputs[0].dtype) if outputs else None)


# --- graph nodes -------------------------------------------------------------------------

def _weights_of(node: fx.Node) -> list[tuple[torch.Tensor, bool]]:
    """``(tensor, is_parameter)`` for every weight the node reads."""
    found = module_weights(called_module(node)) if node.op == "call_module" else []
    for source in node.all_input_nodes:
        if source.op == "get_attr":
            value = fetched_attribute(source)
            if isinstance(value, torch.Tensor):
                found.append((value, isinstance(value, nn.Parameter)))
    return found


def _cost_node(node: fx.Node, propagation: Propagation, rules: RuleRegistry, weights: WeightIndex,
               root_type: str) -> NodeCost:
    values = propagation.values
    target, op_type, key = describe_target(node)
    outputs = tuple(iter_metas(values.get(node)))
    base = _base(node.name, node.op, target, op_type, module_of(node, root_type), outputs)
    partial = propagation.partial.get(node)
    if node.op in ("placeholder", "get_attr", "output") or (not outputs and partial is None):
        return NodeCost(**base, status=Status.NO_COMPUTE)

    read = weights.account(_weights_of(node))
    activations = [meta for source in node.all_input_nodes if source.op != "get_attr"
                   for meta in iter_metas(values.get(source))]
    rule = rules.lookup(key)
    if rule is not None:
        call = OpCall(key, tuple(fx.node.map_arg(a, values.get) for a in node.args),
                      {k: fx.node.map_arg(v, values.get) for k, v in node.kwargs.items()}, outputs,
                      module=called_module(node) if node.op == "call_module" else None)
        return _priced(base, call, rule, activations, read)
    if node not in propagation.inner_calls:
        return _unpriced(base, outputs, activations, read, status=Status.UNSUPPORTED, note="no cost rule")
    calls = propagation.inner_calls[node]
    cost, unknown = cost_inner_calls(calls, rules)
    if partial is not None:
        missing = f"; also no cost rule for {', '.join(unknown)}" if unknown else ""
        return _unpriced(base, outputs, activations, read, macs=cost.macs, flops=cost.flops, status=Status.PARTIAL,
                         note=f"counted up to a data-dependent op, not beyond: {partial}{missing}")
    if unknown:
        return _unpriced(base, outputs, activations, read, status=Status.UNSUPPORTED,
                         note="no cost rule for " + ", ".join(unknown))
    return _unpriced(base, outputs, activations, read, macs=cost.macs, flops=cost.flops, status=Status.DECOMPOSED,
                     note=f"costed from the {len(calls)} torch calls it makes")


# --- calls recorded inside a node ---------------------------------------------------------

def _inner_call(inner: InnerCall, outputs, rules: RuleRegistry) -> tuple[Any, Any, OpCall]:
    """``(registry key, rule or None, OpCall)`` of one recorded call."""
    key = inner.func if inner.module is not None else call_key(inner.func)
    return key, rules.lookup(key), OpCall(key, tuple(inner.args), dict(inner.kwargs), outputs, module=inner.module)


def cost_inner_calls(calls: list[InnerCall], rules: RuleRegistry) -> tuple[Cost, list[str]]:
    """Summed cost of the torch calls made inside one node, and the targets with no rule."""
    macs = flops = 0
    unknown: list[str] = []
    for inner in calls:
        outputs = tuple(iter_metas(inner.output))
        if not outputs:
            continue  # shape queries, setitem and other calls that produce no tensor
        key, rule, call = _inner_call(inner, outputs, rules)
        if rule is None:
            if function_name(key) not in unknown:
                unknown.append(function_name(key))
            continue
        cost = rule(call)
        macs += cost.macs
        flops += cost.flops
    return Cost(macs, flops), unknown


def _expand_module(node: fx.Node, propagation: Propagation, rules: RuleRegistry,
                   weights: WeightIndex) -> tuple[NodeCost, list[NodeCost]]:
    """A module kept whole (untraceable, or a leaf without a rule): one row per torch call it
    made, attributed to the submodule that made it; its own row keeps only the liveness."""
    outputs = tuple(iter_metas(propagation.values.get(node)))
    rows = []
    for index, inner in enumerate(propagation.inner_calls[node]):
        out_metas = tuple(iter_metas(inner.output))
        if out_metas:  # shape queries and other calls that produce no tensor have no row
            rows.append(_inner_row(f"{node.name}.{index}", inner, out_metas, rules, weights))
    cls = type(called_module(node))
    partial = propagation.partial.get(node)
    status, note = Status.NO_COMPUTE, f"kept whole: costed in the {len(rows)} rows that follow"
    if partial is not None:
        status, note = Status.PARTIAL, f"counted up to a data-dependent op, not beyond: {partial}"
    base = _base(node.name, node.op, f"{cls.__module__}.{cls.__qualname__}", cls.__name__,
                 (module_of(node)[0], cls.__name__), outputs)
    return NodeCost(**base, status=status, note=note), rows


def _inner_row(name: str, inner: InnerCall, outputs, rules: RuleRegistry, weights: WeightIndex) -> NodeCost:
    key, rule, call = _inner_call(inner, outputs, rules)
    inputs = list(iter_metas((inner.args, inner.kwargs)))
    if inner.module is not None:
        read = weights.account(module_weights(inner.module))
    else:
        read = weights.account([weights.by_storage[m.storage] for m in inputs if m.storage in weights.by_storage])
    activations = [m for m in inputs if m.storage not in weights.by_storage]
    base = _base(name, "call_inner", function_name(key), getattr(key, "__name__", str(key)),
                 (inner.module_path, inner.module_type), outputs)
    if rule is None:
        return _unpriced(base, outputs, activations, read, status=Status.UNSUPPORTED, note="no cost rule")
    return _priced(base, call, rule, activations, read)
