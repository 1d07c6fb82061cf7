"""Peak activation memory from buffer lifetimes along the graph's linear schedule.

A buffer (a tensor storage) is allocated when the first node producing it runs and is freed
after the last user of any node holding it (a view or an in-place result holds its base's
buffer) has run. Graph outputs live to the end; inputs are held by the caller for the whole
call unless ``free_inputs``. Parameters and buffers of the model are not activations.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Sequence

import torch.fx as fx
from torch import nn

from ._graph import INTERNAL_KEY, RELEASED_KEY, RETAINED_KEY, called_module, value_of
from ._options import MemoryOptions
from ._records import Buffer, TensorMeta, iter_metas


@dataclass(frozen=True)
class Liveness:
    """Live activation bytes along the schedule."""

    during: tuple[int, ...]
    """Live bytes while each node runs (inputs still alive + its outputs + scratch)."""
    buffers: tuple[Buffer, ...]
    """Every activation buffer."""
    peak_bytes: int
    """Maximum of ``during``."""
    peak_index: int
    """Index of the first node where the peak is reached."""
    temporaries: tuple[int, ...] = ()
    """Bytes each node allocates internally beyond its outputs, at its busiest aten op
    (max-pool indices, the internals of a fused call...), freed before it returns."""

    @property
    def during_with_temporaries(self) -> tuple[int, ...]:
        """``during`` plus each node's temporaries."""
        return tuple(d + t for d, t in zip(self.during, self.temporaries or (0,) * len(self.during)))

    @property
    def peak_with_temporaries(self) -> int:
        """Peak of live bytes at aten-op granularity, node-internal temporaries included."""
        return max(self.during_with_temporaries, default=0)

    def alive_at(self, index: int) -> tuple[Buffer, ...]:
        """Buffers alive while node ``index`` runs, largest first."""
        alive = [b for b in self.buffers if b.start <= index <= b.end]
        return tuple(sorted(alive, key=lambda b: -b.nbytes))


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh,
                nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish, nn.PReLU)
_ACTIVATION_FUNCTIONS = {"relu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "silu", "sigmoid", "tanh", "gelu",
                         "leaky_relu", "elu", "mish", "relu_", "hardtanh_", "sigmoid_", "tanh_", "silu_"}
_ADDS = {"add", "add_", "iadd", "__add__", "__iadd__"}


def _function_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    if node.op == "call_function":
        return getattr(node.target, "__name__", "")
    return ""


def _module(node: fx.Node) -> nn.Module | None:
    return called_module(node) if node.op == "call_module" else None


def _is_conv_or_linear(node: fx.Node) -> bool:
    return isinstance(_module(node), (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))


def _is_depthwise(module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels > 1


def compute_liveness(
    gm: fx.GraphModule,
    weight_storages: set[int],
    options: MemoryOptions = MemoryOptions(),
    module_paths: Sequence[str] | None = None,
) -> Liveness:
    """Lifetimes of all activation buffers of ``gm`` (propagated: values in ``node.meta``)
    and the live bytes at every node.

    A buffer ends after the last user of a node holding it; for tensors made by captured
    code (a module kept whole), no earlier than the eager program let go of it, and at the
    end if that code kept it (on a module, in a cache) without returning it."""
    nodes = list(gm.graph.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    last = len(nodes) - 1
    paths = list(module_paths) if module_paths is not None else [""] * len(nodes)

    def sole_user(node: fx.Node, user: fx.Node) -> bool:
        return list(node.users) == [user] and node.op != "placeholder"

    # Which buffers each node holds; deployment rules make some nodes share a producer's buffer.
    holds: dict[fx.Node, tuple[int, ...]] = {}
    sizes: dict[int, int] = {}
    overwrite: dict[fx.Node, int] = {}  # node -> scratch bytes (it overwrites its input)
    alias_of: dict[fx.Node, fx.Node] = {}
    if options.rewrites:
        alias_of, overwrite = _deployment_aliases(nodes, options, sole_user)

    def size_of(meta: TensorMeta) -> int:
        return options.activation_size(meta.storage_nbytes, meta.dtype)

    # stream_inputs: input storages are never resident; each view of one becomes a buffer of
    # its own (keyed by a fresh negative id, sized by the view), and the input itself counts
    # only up to its last reader that is not such a view.
    streamed = {m.storage for node in nodes if node.op == "placeholder" for m in iter_metas(value_of(node))
                } if options.stream_inputs else set()
    streamed_views: set[fx.Node] = set()
    fresh = itertools.count(-1, -1)
    # a node written into another's buffer leaves its own storage unallocated: later readers of
    # that storage (a view of it, the graph's output) hold the buffer it was written into
    written_into: dict[int, tuple[int, ...]] = {}
    for node in nodes:
        if node in alias_of:
            holds[node] = holds[alias_of[node]]
            for meta in iter_metas(value_of(node)):
                written_into.setdefault(meta.storage, holds[node])
            continue
        if node.op == "get_attr":
            holds[node] = ()
            continue
        metas = [m for m in iter_metas(value_of(node)) if m.storage not in weight_storages]
        if streamed and node.op != "placeholder" and any(m.storage in streamed for m in metas):
            streamed_views.add(node)
            metas = [dataclasses.replace(m, storage=next(fresh), storage_nbytes=m.nbytes)
                     if m.storage in streamed else m for m in metas]
        for meta in metas:
            if meta.storage not in written_into:
                sizes.setdefault(meta.storage, size_of(meta))
        holds[node] = tuple(dict.fromkeys(b for m in metas for b in written_into.get(m.storage, (m.storage,))))

    start: dict[int, int] = {}
    end: dict[int, int] = {}
    producer: dict[int, fx.Node] = {}
    for node in nodes:
        i = index[node]
        if node.op == "placeholder" and streamed:  # stream_inputs: held only for direct readers
            direct = [index[user] for user in node.users if user not in streamed_views]
            if not direct:
                continue
            last_use = max(direct)
        elif node.op == "placeholder" and not options.free_inputs:
            last_use = last
        elif node.op == "output":
            last_use = last
        else:
            last_use = max((index[user] for user in node.users), default=i)
        for buffer in holds[node]:
            if buffer not in start:
                start[buffer], producer[buffer] = i, node
            end[buffer] = max(end.get(buffer, i), last_use)
        for buffer in node.meta.get(RELEASED_KEY, ()):
            if buffer in end:  # the eager program held it at least this long
                end[buffer] = max(end[buffer], i)
        for buffer in node.meta.get(RETAINED_KEY, ()):
            if buffer in end:
                end[buffer] = last

    buffers = tuple(  # numbered in allocation order, so reports are reproducible
        Buffer(number, sizes[b], producer[b].name, paths[index[producer[b]]], start[b], end[b])
        for number, b in enumerate(start)
    )
    delta = [0] * (len(nodes) + 1)
    for b in buffers:
        delta[b.start] += b.nbytes
        delta[b.end + 1] -= b.nbytes
    during = []
    live = 0
    for i, node in enumerate(nodes):
        live += delta[i]
        extra = 0
        if node in overwrite:  # the output lives inside the input it overwrites
            extra = overwrite[node] - sum(sizes[b] for b in holds[node] if start[b] == i)
        during.append(live + extra)
    peak = max(during, default=0)
    temporaries = []
    seen: set[int] = set(weight_storages)
    for node in nodes:
        metas = list(iter_metas(value_of(node)))
        created = sum(size_of(m) for m in {m.storage: m for m in metas if m.storage not in seen}.values())
        seen.update(m.storage for m in metas)
        internal = sum(options.activation_size(nbytes, dtype)
                       for dtype, nbytes in node.meta.get(INTERNAL_KEY, {}).items())
        temporaries.append(0 if node in overwrite else max(0, internal - created))
    return Liveness(tuple(during), buffers, peak, during.index(peak) if during else 0, tuple(temporaries))


def _deployment_aliases(nodes, options: MemoryOptions, sole_user):
    alias_of: dict[fx.Node, fx.Node] = {}
    overwrite: dict[fx.Node, int] = {}
    folded: dict[fx.Node, fx.Node] = {}  # node -> the conv/linear it was folded into
    position = {node: i for i, node in enumerate(nodes)}
    for node in nodes:
        module = _module(node)
        source = node.all_input_nodes[0] if node.all_input_nodes else None
        if source is None:
            continue
        if (options.fold_batchnorm and isinstance(module, nn.modules.batchnorm._BatchNorm)
                and _is_conv_or_linear(source) and sole_user(source, node)):
            alias_of[node] = source
            folded[node] = source
        elif options.inplace_activations and sole_user(source, node) and (
            isinstance(module, _ACTIVATIONS) or (module is None and _function_name(node) in _ACTIVATION_FUNCTIONS)
        ):
            alias_of[node] = alias_of.get(source, source)
            if source in folded:
                folded[node] = folded[source]
        elif options.inplace_depthwise and _is_depthwise(module) and sole_user(source, node):
            out = next(iter_metas(value_of(node)))
            channel = out.numel // out.shape[1]  # one output channel (of every sample in the batch)
            itemsize = options.activation_dtype.itemsize if options.activation_dtype is not None and out.dtype.is_floating_point else out.itemsize
            overwrite[node] = channel * itemsize
        elif options.residual_accumulate and _function_name(node) in _ADDS and len(node.all_input_nodes) == 2:
            first, second = node.all_input_nodes
            for branch, skip in ((first, second), (second, first)):
                root = folded.get(branch, branch)
                anchor = alias_of.get(skip, skip)
                if (_is_conv_or_linear(root) and _chain_only(root, branch, node)
                        and position[anchor] < position[root]  # the skip's buffer exists when the branch writes
                        and max(position[u] for u in skip.users) == position[node]
                        and next(iter_metas(value_of(branch))).shape == next(iter_metas(value_of(skip))).shape):
                    for member in _chain(root, branch):
                        alias_of[member] = anchor
                    alias_of[node] = anchor
                    break
    return alias_of, overwrite


def _chain(root: fx.Node, tip: fx.Node) -> list[fx.Node]:
    """Nodes from ``root`` to ``tip`` following sole users."""
    chain = [root]
    while chain[-1] is not tip:
        chain.append(next(iter(chain[-1].users)))
    return chain


def _chain_only(root: fx.Node, tip: fx.Node, consumer: fx.Node) -> bool:
    """Whether ``root -> ... -> tip -> consumer`` is a chain of sole users."""
    node = root
    while node is not tip:
        if len(node.users) != 1:
            return False
        node = next(iter(node.users))
    return list(tip.users) == [consumer]
