"""The cost pass: one :class:`NodeCost` per graph node from the rule registry."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._propagate import InnerCall, Propagation, tensor_meta
from ._records import Cost, Status
from ._registry import OpCall, RuleRegistry, iter_metas
from ._report import NodeCost
from .rules import is_data_movement


def describe_target(node: fx.Node, gm: fx.GraphModule) -> tuple[str, str, type | Any]:
    """``(target, op_type, rule_key)`` of a node: readable names plus the registry key."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        cls = type(module)
        return f"{cls.__module__}.{cls.__qualname__}", cls.__name__, cls
    if node.op == "call_function":
        fn = node.target
        name = getattr(fn, "__name__", repr(fn))
        owner = getattr(fn, "__module__", None) or ("operator" if fn in vars(operator).values() else "")
        if owner == "_operator":
            owner = "operator"
        return (f"{owner}.{name}" if owner else name), name, fn
    if node.op == "call_method":
        return f"Tensor.{node.target}", str(node.target), str(node.target)
    return str(node.target), node.op, None


def module_location(node: fx.Node) -> tuple[str, str]:
    """``(module_path, module_type)`` owning ``node`` ('' for the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = next(reversed(stack.values()))
        return path, getattr(cls, "__name__", str(cls))
    return "", ""


def _arg_meta(value: Any, values: dict[fx.Node, Any]) -> Any:
    return fx.node.map_arg(value, lambda n: values.get(n))


def inner_key(func: Any) -> Any:
    """Registry key of a call seen by the call recorder: method name for Tensor methods."""
    name = getattr(func, "__name__", None)
    qualname = getattr(func, "__qualname__", "") or ""
    if name and (getattr(torch.Tensor, name, None) is func or qualname.startswith(("TensorBase.", "Tensor."))):
        return name
    return func


def _key_name(key: Any) -> str:
    if isinstance(key, str):
        return f"Tensor.{key}"
    owner = getattr(key, "__module__", None) or ""
    return f"{owner}.{getattr(key, '__qualname__', getattr(key, '__name__', repr(key)))}".lstrip(".")


def _inner_cost(inner: InnerCall, outputs, rules: RuleRegistry):
    """``(registry key, rule, Cost)`` of one recorded call; rule and Cost are None without a rule."""
    key = inner.func if inner.module is not None else inner_key(inner.func)
    rule = rules.lookup(key)
    if rule is None:
        return key, None, None
    return key, rule, rule(OpCall(key, tuple(inner.args), dict(inner.kwargs), outputs, module=inner.module))


def _movement_bytes(outputs, input_storages: set[int], input_bytes: int, weight_bytes: int) -> tuple[int, int, int]:
    """``(input bytes, weight bytes, written)`` of an op that only moves data: a view writes
    and reads nothing; a copy reads what it writes."""
    written = sum(o.nbytes for o in outputs if o.storage not in input_storages)
    read = min(input_bytes + weight_bytes, written)
    return min(input_bytes, read), max(0, read - input_bytes), written


def cost_inner_calls(calls: list[InnerCall], rules: RuleRegistry) -> tuple[Cost, list[str]]:
    """Summed cost of the torch calls made inside one node, and the targets with no rule."""
    macs = flops = 0
    unknown: list[str] = []
    for inner in calls:
        outputs = tuple(iter_metas(inner.output))
        if not outputs:
            continue  # shape queries, setitem and other calls that produce no tensor
        key, _, cost = _inner_cost(inner, outputs, rules)
        if cost is None:
            if _key_name(key) not in unknown:
                unknown.append(_key_name(key))
            continue
        macs += cost.macs
        flops += cost.flops
    return Cost(macs, flops), unknown


def cost_nodes(
    gm: fx.GraphModule,
    propagation: Propagation,
    rules: RuleRegistry,
    weights: "WeightIndex",
    root_type: str,
) -> tuple[list[NodeCost], dict[str, list[NodeCost]], set[str]]:
    """Cost every node; return one record per node, the rows that replace the modules kept
    whole (``{node name: rows}``, one per torch call they made), and the parameters used."""
    used: set[str] = set()
    records: list[NodeCost] = []
    expansions: dict[str, list[NodeCost]] = {}
    param_names = weights.names
    for node in gm.graph.nodes:
        if node.op == "call_module" and node in propagation.inner_calls and \
                rules.lookup(type(gm.get_submodule(str(node.target)))) is None:
            record, rows = _expand_module(node, gm, propagation, rules, weights, used)
            records.append(record)
            if rows:
                expansions[node.name] = rows
            continue
        records.append(_cost_node(node, gm, propagation, rules, param_names, used, root_type))
    return records, expansions, used


class WeightIndex:
    """Parameters and buffers of the (fake) model, found by identity or by storage."""

    def __init__(self, gm: fx.GraphModule, param_names: dict[int, str]) -> None:
        self.names = param_names
        self.by_storage: dict[int, tuple[torch.Tensor, bool]] = {}
        for tensors, is_param in ((gm.parameters(), True), (gm.buffers(), False)):
            for tensor in tensors:
                self.by_storage.setdefault(tensor_meta(tensor).storage, (tensor, is_param))

    def account(self, tensors: list[tuple[torch.Tensor, bool]], used: set[str]) -> tuple[int, int, int]:
        """``(params, param_bytes, weight_bytes)``; parameters count at their first use."""
        params = param_bytes = weight_bytes = 0
        for tensor, is_param in {id(t): (t, p) for t, p in tensors}.values():
            nbytes = tensor.numel() * tensor.element_size()
            weight_bytes += nbytes
            name = self.names.get(id(tensor))
            if is_param and name is not None and name not in used:
                used.add(name)
                params += tensor.numel()
                param_bytes += nbytes
        return params, param_bytes, weight_bytes


def _expand_module(node, gm, propagation, rules, weights: WeightIndex, used: set[str]) -> tuple[NodeCost, list[NodeCost]]:
    """A module kept whole (untraceable, or a leaf without a rule): one row per torch call it
    made, attributed to the submodule that made it; its own row keeps only the liveness."""
    module = gm.get_submodule(str(node.target))
    root_leaf = gm.meta.get("fxcost_root_leaf")
    path = "" if root_leaf else str(node.target)
    values = propagation.values
    outputs = tuple(iter_metas(values.get(node)))
    partial = propagation.partial.get(node)
    rows = []
    for index, inner in enumerate(propagation.inner_calls[node]):
        out_metas = tuple(iter_metas(inner.output))
        if not out_metas:
            continue  # shape queries and other calls that produce no tensor
        rows.append(_inner_row(f"{node.name}.{index}", inner, out_metas, rules, weights, used))
    cls = type(module)
    status, note = Status.NO_COMPUTE, f"kept whole: costed in the {len(rows)} rows that follow"
    if partial is not None:
        status, note = Status.PARTIAL, f"counted up to a data-dependent op, not beyond: {partial}"
    record = NodeCost(
        name=node.name, op=node.op, target=f"{cls.__module__}.{cls.__qualname__}", op_type=cls.__name__,
        module_path=path, module_type=cls.__name__, output_shapes=tuple(o.shape for o in outputs),
        dtype=str(outputs[0].dtype).replace("torch.", "") if outputs else None, status=status, note=note,
    )
    return record, rows


def _inner_row(name: str, inner: InnerCall, outputs, rules, weights: WeightIndex, used: set[str]) -> NodeCost:
    key, rule, cost = _inner_cost(inner, outputs, rules)
    inputs = list(iter_metas((inner.args, inner.kwargs)))
    if inner.module is not None:
        tensors = [(p, True) for p in inner.module.parameters()] + [(b, False) for b in inner.module.buffers()]
    else:
        tensors = [weights.by_storage[m.storage] for m in inputs if m.storage in weights.by_storage]
    params, param_bytes, weight_bytes = weights.account(tensors, used)
    activation = [m for m in inputs if m.storage not in weights.by_storage]
    input_bytes = sum(m.nbytes for m in {id(m): m for m in activation}.values())
    written = sum(o.nbytes for o in outputs)
    base = dict(
        name=name, op="call_inner", target=_key_name(key), op_type=getattr(key, "__name__", str(key)),
        module_path=inner.module_path, module_type=inner.module_type, output_shapes=tuple(o.shape for o in outputs),
        dtype=str(outputs[0].dtype).replace("torch.", ""), params=params, param_bytes=param_bytes,
    )
    if cost is None:
        return NodeCost(**base, input_bytes=input_bytes, weight_bytes=weight_bytes, bytes_written=written,
                        status=Status.UNSUPPORTED, note="no cost rule")
    if cost.weight_bytes_read is not None:
        weight_bytes = cost.weight_bytes_read
    if is_data_movement(rule):
        input_bytes, weight_bytes, written = _movement_bytes(outputs, {m.storage for m in inputs}, input_bytes,
                                                             weight_bytes)
    return NodeCost(**base, macs=int(cost.macs), flops=int(cost.flops), input_bytes=input_bytes,
                    weight_bytes=weight_bytes, bytes_written=written, status=Status.COUNTED)


def _weights_of(node: fx.Node, gm: fx.GraphModule) -> list[tuple[torch.Tensor, bool]]:
    """``(tensor, is_parameter)`` for every weight the node reads."""
    found: list[tuple[torch.Tensor, bool]] = []
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        found += [(p, True) for p in module.parameters()]
        found += [(b, False) for b in module.buffers()]
    for source in node.all_input_nodes:
        if source.op == "get_attr":
            value = _fetch(gm, str(source.target))
            if isinstance(value, torch.Tensor):
                found.append((value, isinstance(value, nn.Parameter)))
    return found


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    owner_path, _, name = target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    return getattr(owner, name, None)


def _cost_node(node, gm, propagation, rules, param_names, used, root_type) -> NodeCost:
    values = propagation.values
    target, op_type, key = describe_target(node, gm)
    if node.op == "call_module":
        module_path, module_type = str(node.target), op_type
        if gm.meta.get("fxcost_root_leaf"):
            module_path = ""
    else:
        module_path, module_type = module_location(node)
        if not module_path and node.op not in ("placeholder", "output"):
            module_type = root_type
    outputs = tuple(iter_metas(values.get(node)))
    base = dict(
        name=node.name, op=node.op, target=target, op_type=op_type, module_path=module_path,
        module_type=module_type, output_shapes=tuple(o.shape for o in outputs),
        dtype=str(outputs[0].dtype).replace("torch.", "") if outputs else None,
    )
    partial = propagation.partial.get(node)
    if node.op in ("placeholder", "get_attr", "output") or (not outputs and partial is None):
        return NodeCost(**base, status=Status.NO_COMPUTE)

    # Weights read and parameters counted here (a shared parameter counts at its first use).
    weights = _weights_of(node, gm)
    params = param_bytes = weight_bytes = 0
    seen: set[int] = set()
    for tensor, is_param in weights:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        nbytes = tensor.numel() * tensor.element_size()
        weight_bytes += nbytes
        name = param_names.get(id(tensor))
        if is_param and name is not None and name not in used:
            used.add(name)
            params += tensor.numel()
            param_bytes += nbytes
    weight_inputs = {n for n in node.all_input_nodes if n.op == "get_attr"}
    activation_bytes = sum(
        meta.nbytes for source in node.all_input_nodes if source not in weight_inputs
        for meta in iter_metas(values.get(source))
    )
    written = sum(o.nbytes for o in outputs)

    rule = rules.lookup(key)
    if rule is None:
        measured = dict(params=params, param_bytes=param_bytes, input_bytes=activation_bytes,
                        weight_bytes=weight_bytes, bytes_written=written)
        if node not in propagation.inner_calls:
            return NodeCost(**base, **measured, status=Status.UNSUPPORTED, note="no cost rule")
        cost, unknown = cost_inner_calls(propagation.inner_calls[node], rules)
        if partial is not None:
            missing = f"; also no cost rule for {', '.join(unknown)}" if unknown else ""
            return NodeCost(**base, **measured, macs=cost.macs, flops=cost.flops, status=Status.PARTIAL,
                            note=f"counted up to a data-dependent op, not beyond: {partial}{missing}")
        if unknown:
            return NodeCost(**base, **measured, status=Status.UNSUPPORTED,
                            note="no cost rule for " + ", ".join(unknown))
        calls = len(propagation.inner_calls[node])
        return NodeCost(**base, **measured, macs=cost.macs, flops=cost.flops, status=Status.DECOMPOSED,
                        note=f"costed from the {calls} torch calls it makes")
    call = OpCall(
        target=key,
        args=tuple(_arg_meta(a, values) for a in node.args),
        kwargs={k: _arg_meta(v, values) for k, v in node.kwargs.items()},
        outputs=outputs,
        module=gm.get_submodule(str(node.target)) if node.op == "call_module" else None,
    )
    cost: Cost = rule(call)
    if cost.weight_bytes_read is not None:
        weight_bytes = cost.weight_bytes_read
    if is_data_movement(rule):
        input_storages = {m.storage for source in node.all_input_nodes for m in iter_metas(values.get(source))}
        activation_bytes, weight_bytes, written = _movement_bytes(outputs, input_storages, activation_bytes, weight_bytes)
    return NodeCost(
        **base, macs=int(cost.macs), flops=int(cost.flops), params=params, param_bytes=param_bytes,
        input_bytes=activation_bytes, weight_bytes=weight_bytes, bytes_written=written, status=Status.COUNTED,
    )
