"""The cost pass: one :class:`NodeCost` per graph node from the rule registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._capture import CapturedCall
from ._graph import (
    ASSUMPTIONS_KEY,
    CALLS_KEY,
    KEPT_WHOLE_KEY,
    PARTIAL_KEY,
    called_module,
    describe_target,
    fetched_attribute,
    function_name,
    module_of,
    value_of,
)
from ._records import Cost, NodeCost, Status, TensorMeta, bytes_read, dtype_name, iter_metas, new_record
from ._registry import OpCall, RuleRegistry
from ._weights import WeightIndex, module_weights


@dataclass
class CostedGraph:
    """What the cost pass produced."""

    nodes: list[NodeCost]
    """One record per graph node, in graph order."""
    used: set[str] = field(default_factory=set)
    """Qualified names of the parameters some node reads."""


def cost_nodes(gm: fx.GraphModule, rules: RuleRegistry, weights: WeightIndex, root_type: str) -> CostedGraph:
    """Cost every node of ``gm`` (propagated: values in ``node.meta``)."""
    return CostedGraph([_cost_node(node, rules, weights, root_type) for node in gm.graph.nodes], weights.used)


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
    if cost.moves_data:
        input_bytes, weight_bytes, written = _movement_bytes(
            call.outputs, {m.storage for m in (*activations, *iter_metas((call.args, call.kwargs)))},
            input_bytes, weight_bytes)
    return new_record(NodeCost, **base, macs=int(cost.macs), flops=int(cost.flops), params=params, param_bytes=param_bytes,
                    input_bytes=input_bytes, weight_bytes=weight_bytes, bytes_written=written,
                    status=Status.COUNTED)


def _unpriced(base: dict[str, Any], outputs, activations: list[TensorMeta], weights: tuple[int, int, int],
              **status) -> NodeCost:
    """The record of a call no single rule prices (unsupported, decomposed or partial)."""
    params, param_bytes, weight_bytes = weights
    return new_record(NodeCost, **base, params=params, param_bytes=param_bytes, input_bytes=bytes_read(activations),
                    weight_bytes=weight_bytes, bytes_written=sum(o.nbytes for o in outputs), **status)


def _base(name: str, op: str, target: str, op_type: str, module: tuple[str, str], outputs,
          assumptions: list[str] = ()) -> dict[str, Any]:
    return dict(name=name, op=op, target=target, op_type=op_type, module_path=module[0], module_type=module[1],
                output_shapes=tuple(o.shape for o in outputs), dtype=dtype_name(outputs[0].dtype) if outputs else None,
                assumption="; ".join(dict.fromkeys(assumptions)))


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


def _cost_node(node: fx.Node, rules: RuleRegistry, weights: WeightIndex, root_type: str) -> NodeCost:
    target, op_type, key = describe_target(node)
    if KEPT_WHOLE_KEY in node.meta:  # the end of a module kept whole: named after the module
        target = node.meta[KEPT_WHOLE_KEY]
        op_type = target.rsplit(".", 1)[-1]
    outputs = tuple(iter_metas(value_of(node)))
    base = _base(node.name, node.op, target, op_type, module_of(node, root_type), outputs,
                 node.meta.get(ASSUMPTIONS_KEY, ()))
    partial = node.meta.get(PARTIAL_KEY)
    if KEPT_WHOLE_KEY in node.meta:
        note = "end of a module kept whole: the torch calls it made are the nodes before"
        if partial is not None:
            return new_record(NodeCost, **base, status=Status.PARTIAL, note=f"counted up to a data-dependent op, not beyond: {partial}")
        return new_record(NodeCost, **base, status=Status.NO_COMPUTE, note=note)
    if node.op in ("placeholder", "get_attr", "output") or (not outputs and partial is None):
        return new_record(NodeCost, **base, status=Status.NO_COMPUTE)

    inputs = [meta for source in node.all_input_nodes if source.op != "get_attr"
              for meta in iter_metas(value_of(source))]
    # a view of a weight made by an earlier node (``weight.t()``, a tile) is weight read here
    params, param_bytes, weight_bytes = weights.account(_weights_of(node))
    read = (params, param_bytes, weight_bytes + bytes_read([m for m in inputs if m.storage in weights.by_storage]))
    activations = [meta for meta in inputs if meta.storage not in weights.by_storage]
    rule = rules.lookup(key)
    if rule is not None:
        call = OpCall(key, tuple(fx.node.map_arg(a, value_of) for a in node.args),
                      {k: fx.node.map_arg(v, value_of) for k, v in node.kwargs.items()}, outputs,
                      module=called_module(node) if node.op == "call_module" else None)
        return _priced(base, call, rule, activations, read)
    calls = node.meta.get(CALLS_KEY)
    if calls is None:
        return _unpriced(base, outputs, activations, read, status=Status.UNSUPPORTED, note="no cost rule")
    cost, unknown = cost_calls(calls, rules)
    if partial is not None:
        missing = f"; also no cost rule for {', '.join(unknown)}" if unknown else ""
        return _unpriced(base, outputs, activations, read, macs=cost.macs, flops=cost.flops, status=Status.PARTIAL,
                         note=f"counted up to a data-dependent op, not beyond: {partial}{missing}")
    if unknown:
        return _unpriced(base, outputs, activations, read, status=Status.UNSUPPORTED,
                         note="no cost rule for " + ", ".join(unknown))
    return _unpriced(base, outputs, activations, read, macs=cost.macs, flops=cost.flops, status=Status.DECOMPOSED,
                     note=f"costed from the {len(calls)} torch calls it makes")


def cost_calls(calls: list[CapturedCall], rules: RuleRegistry) -> tuple[Cost, list[str]]:
    """Summed cost of the torch calls made inside one node, and the targets with no rule."""
    macs = flops = 0
    unknown: list[str] = []
    for call in calls:
        outputs = tuple(iter_metas(call.output))
        if not outputs:
            continue  # in-place calls that return nothing (setitem) move data only
        rule = rules.lookup(call.key)
        if rule is None:
            if function_name(call.key) not in unknown:
                unknown.append(function_name(call.key))
            continue
        args, kwargs = call.metas()
        cost = rule(OpCall(call.key, args, kwargs, outputs, module=call.module))
        macs += cost.macs
        flops += cost.flops
    return Cost(macs, flops), unknown
