"""Graph transforms: GEMM tiling, patch-based inference (MCUNetV2) and a peak-minimising
schedule. Each returns a new ``GraphModule`` computing the same function; the model given is
never modified."""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ._errors import InvalidInputError, PatchError
from ._graph_values import fake_values
from ._patch_plan import PatchCandidate, PatchPlan, evaluate_patches, plan_patches
from ._patching import Patch, PatchLayout, patch_inference
from ._reorder import Schedule, ScheduleCandidate, reorder_for_peak, schedule_for_peak

__all__ = [
    "tile_matmuls",
    "patch_inference",
    "evaluate_patches",
    "plan_patches",
    "PatchPlan",
    "PatchCandidate",
    "PatchLayout",
    "Patch",
    "PatchError",
    "reorder_for_peak",
    "schedule_for_peak",
    "Schedule",
    "ScheduleCandidate",
]


def _ranges(size: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(tile, size - start)) for start in range(0, size, tile)]


def _shapes(gm: fx.GraphModule, example_input: Any) -> dict[fx.Node, torch.Size]:
    """Output shape of every tensor-valued node, from a fake-tensor run (no real kernels)."""
    return {node: value.shape for node, value in fake_values(gm, example_input, mode=None).items()
            if isinstance(value, torch.Tensor)}


def _tiled_product(graph: fx.Graph, a: fx.Node, b_tile, m: int, k: int, n: int, max_m: int, max_k: int, max_n: int) -> fx.Node:
    """Emit ``a @ B`` for ``a`` of shape (m, k) as tiles: split, per-tile matmul, sum over K,
    concat over N then M. ``b_tile(k0, kl, n0, nl)`` emits the (kl, nl) tile of B."""
    rows = []
    for m0, ml in _ranges(m, max_m):
        a_rows = graph.call_method("narrow", (a, 0, m0, ml)) if ml != m else a
        cols = []
        for n0, nl in _ranges(n, max_n):
            acc = None
            for k0, kl in _ranges(k, max_k):
                a_tile = graph.call_method("narrow", (a_rows, 1, k0, kl)) if kl != k else a_rows
                product = graph.call_function(torch.matmul, (a_tile, b_tile(k0, kl, n0, nl)))
                acc = product if acc is None else graph.call_function(operator.add, (acc, product))
            cols.append(acc)
        rows.append(cols[0] if len(cols) == 1 else graph.call_function(torch.cat, (cols, 1)))
    return rows[0] if len(rows) == 1 else graph.call_function(torch.cat, (rows, 0))


def tile_matmuls(gm: fx.GraphModule, max_m: int, max_k: int, max_n: int, example_input: Any) -> fx.GraphModule:
    """Rewrite every ``nn.Linear``, ``F.linear`` and 2-D ``matmul`` of ``gm`` into GEMM tiles
    of at most ``max_m x max_k x max_n`` (split, per-tile matmul, sum over K, concat).

    ``example_input`` gives the shapes (only shapes are used). Returns a new GraphModule that
    computes the same function; ``gm`` is not modified. Batched (3-D+) matmuls are left as is.
    """
    for name, value in (("max_m", max_m), ("max_k", max_k), ("max_n", max_n)):
        if not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    result = fx.GraphModule(gm, _copy_graph(gm.graph), type(gm).__name__ + "Tiled")
    shapes = _shapes(result, example_input)
    graph = result.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(result.get_submodule(str(node.target)), nn.Linear):
            x = node.args[0]
            weight_name, bias_name = f"{node.target}.weight", f"{node.target}.bias"
            has_bias = result.get_submodule(str(node.target)).bias is not None
        elif node.op == "call_function" and node.target is F.linear:
            x = node.args[0]
            weight_name = bias_name = None
            has_bias = len(node.args) > 2 and node.args[2] is not None
        elif node.op == "call_function" and node.target in (torch.matmul, operator.matmul) and \
                len(shapes.get(node.args[0], ())) == 2 and len(shapes.get(node.args[1], ())) == 2:
            x = node.args[0]
            weight_name = bias_name = None
            has_bias = False
        else:
            continue
        in_shape = shapes[x]
        k = in_shape[-1]
        n = shapes[node][-1]
        m = math.prod(in_shape[:-1])
        with graph.inserting_before(node):
            a = graph.call_method("reshape", (x, m, k)) if len(in_shape) != 2 else x
            if node.target in (torch.matmul, operator.matmul):
                b = node.args[1]

                def b_tile(k0, kl, n0, nl, b=b):
                    tile = graph.call_method("narrow", (b, 0, k0, kl)) if kl != k else b
                    return graph.call_method("narrow", (tile, 1, n0, nl)) if nl != n else tile
            else:
                weight = graph.get_attr(weight_name) if weight_name else node.args[1]

                def b_tile(k0, kl, n0, nl, weight=weight):
                    tile = graph.call_method("narrow", (weight, 0, n0, nl)) if nl != n else weight
                    tile = graph.call_method("narrow", (tile, 1, k0, kl)) if kl != k else tile
                    return graph.call_method("t", (tile,))
            out = _tiled_product(graph, a, b_tile, m, k, n, max_m, max_k, max_n)
            if has_bias:
                bias = graph.get_attr(bias_name) if bias_name else node.args[2]
                out = graph.call_function(operator.add, (out, bias))
            if len(in_shape) != 2:
                out = graph.call_method("reshape", (out, *in_shape[:-1], n))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    graph.lint()
    result.recompile()
    return result


def _copy_graph(graph: fx.Graph) -> fx.Graph:
    copy = fx.Graph()
    output = copy.graph_copy(graph, {})
    copy.output(output)
    return copy
