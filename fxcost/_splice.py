"""One model, one graph: the torch calls recorded inside a module kept whole become graph
nodes in its place, linked to each other and to the rest of the graph by data.

Each recorded call becomes a ``call_function`` / ``call_method`` / ``call_module`` node whose
arguments are the nodes that produced its tensors (``getitem`` nodes pick tensors out of
tuples), the parameters it read (``get_attr``), or constants. The module's own node is
replaced by a node that rebuilds its return value from the nodes that produced it and holds
the module's inputs until then (the caller holds them for the whole call): its arguments
are the module call's own, so the call can be made again (:mod:`fxcost._replay`). Every node
spliced in for a module is marked with it (``REGION_KEY``). Lifetimes inside follow the eager
run the calls were recorded from.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._capture import CapturedCall, Recording, Ref
from ._compat import pytree
from ._graph import (
    ASSUMPTIONS_KEY,
    INTERNAL_KEY,
    KEPT_WHOLE_KEY,
    MODULE_KEY,
    PARTIAL_KEY,
    REGION_CALL_KEY,
    REGION_KEY,
    RELEASED_KEY,
    RETAINED_KEY,
    VALUE_KEY,
    called_module,
    function_name,
    module_of,
    value_of,
)
from ._trace import GraphOnlyModule

_OPCODES = {"function": "call_function", "method": "call_method", "module": "call_module"}
_CONSTANTS = "_fxcost_constants"


def region_output(spec: Any, leaves: list, held: tuple) -> Any:
    """The value a module kept whole returned, rebuilt from the nodes that produced its
    tensors; ``held`` are the module call's ``(args, kwargs)``, alive until it returns."""
    return pytree.tree_unflatten(leaves, spec)


def splice_regions(gm: fx.GraphModule, regions: dict[fx.Node, Recording], root: nn.Module) -> fx.GraphModule:
    """Replace every module kept whole by the nodes of the calls it made; returns the new
    GraphModule over ``root`` (``gm``'s graph, rewritten). When the model itself was kept
    whole (one node calling it), the graph stays over ``gm``, which holds the model under
    that node's target."""
    if not regions:
        return gm
    graph = gm.graph
    whole_model = next((n for n in regions if n.op == "call_module" and module_of(n)[0] == "" and n.target), None)
    prefix = f"{whole_model.target}." if whole_model is not None else ""
    base = gm if whole_model is not None else root
    constants = _Constants(base)
    for node, recording in regions.items():
        with graph.inserting_before(node):
            end = _Region(graph, node, recording, constants, prefix).build()
        node.replace_all_uses_with(end)
        graph.erase_node(node)
    return GraphOnlyModule(base, graph, type(root).__name__)


class _Constants:
    """Tensors recorded calls used that are neither activations nor parameters/buffers:
    attached to the mirror under one container, fetched by ``get_attr``."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.names: dict[int, str] = {}

    def name(self, tensor: torch.Tensor) -> str:
        if id(tensor) not in self.names:
            holder = self.root.__dict__["_modules"].get(_CONSTANTS)
            if holder is None:
                holder = nn.Module()
                self.root.__dict__["_modules"][_CONSTANTS] = holder
            attribute = f"c{len(self.names)}"
            holder.__dict__[attribute] = tensor
            self.names[id(tensor)] = f"{_CONSTANTS}.{attribute}"
        return self.names[id(tensor)]


class _Region:
    def __init__(self, graph: fx.Graph, node: fx.Node, recording: Recording, constants: _Constants,
                 prefix: str) -> None:
        self.prefix = prefix  # of module paths as attributes of the graph's root
        self.graph = graph
        self.node = node
        self.recording = recording
        self.constants = constants
        self.module = module_of(node)
        self.calls: list[fx.Node] = []
        self.picked: dict[tuple, fx.Node] = {}
        self.attributes: dict[str, fx.Node] = {}

    def build(self) -> fx.Node:
        for call in self.recording.calls:
            self.calls.append(self._call_node(call))
        leaves, spec = pytree.tree_flatten(self.recording.output)
        held = (self.node.args, self.node.kwargs)
        end = self.graph.create_node("call_function", region_output, (spec, [self._arg(leaf) for leaf in leaves], held),
                                     name=f"{self.node.name}_return")
        end.meta[REGION_CALL_KEY] = (self.node.op, self.node.target)
        if self.node.op == "call_module":
            cls = type(called_module(self.node))
            kept = f"{cls.__module__}.{cls.__qualname__}"
        else:
            kept = function_name(self.node.target)
        end.meta.update({MODULE_KEY: self.module, VALUE_KEY: value_of(self.node), RETAINED_KEY: self.recording.retained,
                         KEPT_WHOLE_KEY: kept})
        for node in (*self.calls, *self.picked.values(), *self.attributes.values(), end):
            node.meta[REGION_KEY] = self.node.name
        for key in (PARTIAL_KEY, ASSUMPTIONS_KEY):  # what was said of the module's node as a whole
            if key in self.node.meta:
                end.meta[key] = self.node.meta[key]
        return end

    def _call_node(self, call: CapturedCall) -> fx.Node:
        args = tuple(self._arg(a) for a in call.args)
        kwargs = {k: self._arg(v) for k, v in call.kwargs.items()}
        target = call.target
        if call.kind == "module":
            hint, target = call.target or self.module[1], (self.prefix + call.target).rstrip(".")
        else:
            hint = f"{call.module_path}.{call.target if isinstance(call.target, str) else getattr(call.target, '__name__', 'call')}"
        node = self.graph.create_node(_OPCODES[call.kind], target, args, kwargs, name=hint.lstrip(".") or None)
        call.node_name = node.name
        node.meta.update({MODULE_KEY: (call.module_path, call.module_type), VALUE_KEY: call.output,
                          INTERNAL_KEY: call.internal, RELEASED_KEY: call.released})
        if call.assumptions:
            node.meta[ASSUMPTIONS_KEY] = call.assumptions
        return node

    def _arg(self, value: Any) -> Any:
        if isinstance(value, Ref):
            return self._source(value)
        if isinstance(value, (tuple, list)):
            items = [self._arg(v) for v in value]
            return type(value)(items) if type(value) in (tuple, list) else tuple(items)
        if isinstance(value, dict):
            return {k: self._arg(v) for k, v in value.items()}
        return value

    def _source(self, ref: Ref) -> fx.Node:
        if ref.kind == "call":
            return self._pick(self.calls[ref.index], ("call", ref.index), ref.path)
        if ref.kind == "input":
            return self._input(ref.path)
        name = self.prefix + ref.name if ref.kind == "weight" else self.constants.name(ref.value)
        if name not in self.attributes:
            node = self.graph.create_node("get_attr", name)  # fake weights are no nn.Parameter: skip its check
            node.meta.update({MODULE_KEY: self.module, VALUE_KEY: ref.meta})
            self.attributes[name] = node
        return self.attributes[name]

    def _input(self, path: tuple) -> fx.Node:
        """The node of the region's input at ``path`` inside ``(args, kwargs)``."""
        value: Any = (self.node.args, self.node.kwargs)
        for depth, step in enumerate(path):
            if isinstance(value, fx.Node):
                return self._pick(value, ("input", path[:depth]), path[depth:])
            value = value[step]
        return value

    def _pick(self, producer: fx.Node, key: tuple, path: tuple) -> fx.Node:
        """``producer`` indexed by ``path`` through ``getitem`` nodes (made once each)."""
        node = producer
        for depth, step in enumerate(path):
            cache = (*key, path[:depth + 1])
            if cache not in self.picked:
                picked = self.graph.call_function(operator.getitem, (node, step))
                parent = value_of(node)
                picked.meta.update({MODULE_KEY: node.meta.get(MODULE_KEY, self.module),
                                    VALUE_KEY: parent[step] if parent is not None else None})
                self.picked[cache] = picked
            node = self.picked[cache]
        return node
