"""Patch-based inference (MCUNetV2): the first stage of a CNN computed one output patch at a time.

The stage is every node the output of module ``until`` depends on. For each patch of the
stage's output, a backward pass over the stage finds the region of every intermediate map
the patch needs (its receptive field, clipped to the map); the rewritten graph computes each
node on that region only, padding at the border of the whole map exactly as the original
layer does (see :mod:`fxcost._patch_modules`), writes the patch into a preallocated stage
output, and then runs the rest of the model unchanged.

Patchable: ``nn.Conv2d`` (any kernel, stride, dilation, groups, zero padding),
``nn.MaxPool2d``, ``nn.AvgPool2d``, elementwise activations, BatchNorm (eval: running
statistics), dropout (eval), elementwise arithmetic such as residual adds, and channel-wise
``cat``/``chunk``/``split``/channel slicing. Anything else in the stage raises
:class:`PatchError` naming it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ._graph import module_of
from ._errors import InvalidInputError, PatchError
from ._graph_values import fake_values
from ._patch_modules import PatchAvgPool2d, PatchConv2d, PatchMaxPool2d
from ._trace import trace

Region = tuple[int, int, int, int]
"""``(row start, row stop, column start, column stop)`` of a feature map."""

#: ``node.meta`` key of the :class:`PatchLayout` of a graph built by :func:`patch_inference`.
LAYOUT_KEY = "fxcost_patches"

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.GELU,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.PReLU, nn.Softplus, nn.Threshold, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.BatchNorm2d, nn.SyncBatchNorm,
)
_POINTWISE_FORWARDS = {cls.forward for cls in _POINTWISE_MODULES}
_POINTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul, operator.neg,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.maximum, torch.minimum, torch.clamp,
    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.abs,
    F.relu, F.relu6, F.hardtanh, F.hardswish, F.hardsigmoid, F.silu, F.sigmoid, F.tanh, F.gelu, F.leaky_relu,
    F.elu, F.selu, F.celu, F.mish, F.softplus, F.dropout,
}
_POINTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "relu", "sigmoid", "tanh", "clamp", "clamp_min", "clamp_max", "exp",
    "abs", "contiguous", "float", "half", "to", "type_as", "__add__", "__radd__", "__mul__", "__rmul__",
    "__sub__", "__truediv__", "relu_", "sigmoid_", "add_", "mul_", "clamp_", "hardtanh_",
}
_CHANNEL_FUNCTIONS = {torch.cat, torch.concat, torch.chunk, torch.split, torch.tensor_split}
_CHANNEL_METHODS = {"chunk", "split", "tensor_split"}


@dataclass(frozen=True)
class Patch:
    """One patch of the stage output and what computes it."""

    index: tuple[int, int]
    """``(row, column)`` of the patch in the grid."""
    output_region: Region
    """Region of the stage output it produces."""
    input_region: Region
    """Region of the model input it reads (its receptive field, clipped to the image)."""
    nodes: tuple[str, ...]
    """Names of the graph nodes that compute it (slices included)."""


@dataclass(frozen=True)
class PatchLayout:
    """How :func:`patch_inference` split the stage (stored in ``graph_module.meta``)."""

    until: str
    """Last module of the patched stage."""
    grid: tuple[int, int]
    """Patches along rows and columns."""
    output_shape: tuple[int, ...]
    """Shape of the stage output."""
    patches: tuple[Patch, ...]
    """Every patch, row-major."""
    stage_nodes: tuple[str, ...]
    """Names of the original graph's nodes in the stage."""


# --- geometry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Window:
    """A sliding window along one spatial dimension."""

    kernel: int
    stride: int
    dilation: int
    pad: int  # padding before the first element

    def input_range(self, start: int, stop: int) -> tuple[int, int]:
        """Unclipped input range (may run into the padding) read by outputs ``[start, stop)``."""
        return start * self.stride - self.pad, (stop - 1) * self.stride - self.pad + self.dilation * (self.kernel - 1) + 1


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _windows(module: nn.Module) -> tuple[_Window, _Window]:
    kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    padding = module.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":  # torch puts the odd element of the total padding after
        padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
    padding = _pair(padding)
    return tuple(_Window(k, s, d, p) for k, s, d, p in zip(kernel, stride, dilation, padding))


def _avg_divisors(window: _Window, size: int, start: int, stop: int, count_include_pad: bool) -> tuple[int, ...]:
    """Per-output factor of ``avg_pool``'s divisor along one dimension (torch's formula)."""
    factors = []
    for index in range(start, stop):
        lo = index * window.stride - window.pad
        hi = min(lo + window.kernel, size + window.pad)
        factors.append(hi - lo if count_include_pad else min(hi, size) - max(lo, 0))
    return tuple(factors)


def split_evenly(size: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``parts`` near-equal pieces of ``size`` (the first ones one larger)."""
    base, extra = divmod(size, parts)
    bounds, start = [], 0
    for part in range(parts):
        stop = start + base + (1 if part < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _union(a: Region | None, b: Region) -> Region:
    if a is None:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _clip(lo: int, hi: int, size: int) -> tuple[int, int, int, int]:
    """``(clipped lo, clipped hi, padding before, padding after)``."""
    start, stop = max(lo, 0), min(hi, size)
    return start, stop, start - lo, hi - stop


# --- what each node of the stage is -----------------------------------------------------

@dataclass(frozen=True)
class _Kind:
    """How one stage node maps an output region to the regions of its tensor inputs."""

    windows: tuple[_Window, _Window] | None = None
    """Set for convolutions and pools: the window along rows and columns."""
    module: nn.Module | None = None
    """The original conv/pool module (for windows)."""


def _describe(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' ({type(gm.get_submodule(str(node.target))).__name__})"
    name = getattr(node.target, "__name__", str(node.target))
    where = module_of(node)[0]
    return f"'{name}' (node {node.name}{f' in {where}' if where else ''})"


def _unpatchable(node: fx.Node, gm: fx.GraphModule, until: str, why: str) -> PatchError:
    return PatchError(
        f"cannot compute the stage up to '{until}' patch by patch: {_describe(node, gm)} {why}. "
        "Patch-based inference supports convolutions, pooling, BatchNorm (eval), activations, elementwise "
        "arithmetic (residual adds) and channel concatenation/splits; choose an earlier split point (until=...)"
    )


def _classify(node: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any], until: str) -> _Kind:
    spatial = _spatial_of(values[node])
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        window = next((c for c in (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d) if isinstance(module, c)), None)
        if window is not None:
            if type(module).forward is not window.forward:
                raise _unpatchable(node, gm, until, "overrides forward(), so its patch version cannot be derived")
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise _unpatchable(node, gm, until, f"pads with mode '{module.padding_mode}', which needs the whole map")
            if isinstance(module, nn.MaxPool2d) and module.return_indices:
                raise _unpatchable(node, gm, until, "returns indices into the whole map")
            return _Kind(_windows(module), module)
        if isinstance(module, _POINTWISE_MODULES) and type(module).forward in _POINTWISE_FORWARDS:
            return _Kind()
        raise _unpatchable(node, gm, until, "is not elementwise or a sliding window")
    if node.op == "call_function" and node.target is operator.getitem:
        source, index = node.args
        if isinstance(values.get(source), (tuple, list)):
            return _Kind()
        if _channel_index(index):
            return _Kind()
        raise _unpatchable(node, gm, until, "indexes spatial dimensions")
    if node.op in ("call_function", "call_method") and spatial is None:
        raise _unpatchable(node, gm, until, "does not produce a 4-D feature map")
    if (node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS) or \
            (node.op == "call_method" and node.target in _POINTWISE_METHODS):
        for source in node.all_input_nodes:
            if _spatial_of(values.get(source)) not in (None, spatial, (1, 1)):
                raise _unpatchable(node, gm, until, "combines maps of different sizes")
        return _Kind()
    if (node.op == "call_function" and node.target in _CHANNEL_FUNCTIONS) or \
            (node.op == "call_method" and node.target in _CHANNEL_METHODS):
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else (node.args[1] if node.target in (
            torch.cat, torch.concat) and len(node.args) > 1 else 0))
        if dim in (1, -3):
            return _Kind()
        raise _unpatchable(node, gm, until, f"works along dimension {dim}, not the channels")
    raise _unpatchable(node, gm, until, "is not elementwise or a sliding window")


def _channel_index(index: Any) -> bool:
    """``x[:, a:b]``-style indexing that leaves batch and spatial dimensions whole."""
    if not isinstance(index, tuple) or len(index) < 2 or index[0] != slice(None):
        return False
    return all(i == slice(None) for i in index[2:]) and isinstance(index[1], (slice, int))


def _spatial_of(value: Any) -> tuple[int, int] | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape[2:]) if value.dim() == 4 else None
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        shapes = {_spatial_of(v) for v in value}
        return shapes.pop() if len(shapes) == 1 else None
    return None


# --- the stage ----------------------------------------------------------------------------

@dataclass
class _Stage:
    nodes: list[fx.Node]  # in graph order, placeholders and get_attrs excluded
    kinds: dict[fx.Node, _Kind]
    image: fx.Node  # the placeholder the stage reads
    output: fx.Node


def _find_stage(gm: fx.GraphModule, values: dict[fx.Node, Any], until: str) -> _Stage:
    inside = [n for n in gm.graph.nodes if module_of(n)[0] == until or module_of(n)[0].startswith(until + ".")]
    if not inside:
        raise InvalidInputError(f"no node of the traced model belongs to module '{until}': give the path of a "
                                "module the forward calls (e.g. 'features.4')")
    output = inside[-1]
    if _spatial_of(values.get(output)) is None or not isinstance(values[output], torch.Tensor):
        raise PatchError(f"the output of '{until}' (node {output.name}) is not a 4-D feature map "
                         f"(got {_shape_text(values.get(output))}): choose a convolutional block as the split point")
    ancestors: set[fx.Node] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if node in ancestors:
            continue
        ancestors.add(node)
        stack.extend(node.all_input_nodes)
    images = [n for n in ancestors if n.op == "placeholder"]
    if len(images) != 1 or _spatial_of(values.get(images[0])) is None:
        raise PatchError(f"the stage up to '{until}' must read exactly one 4-D image input; it reads "
                         f"{', '.join(n.name for n in images) or 'none'}")
    nodes = [n for n in gm.graph.nodes if n in ancestors and n.op not in ("placeholder", "get_attr")]
    for node in nodes:
        if node is not output:
            outside = [u for u in node.users if u not in ancestors]
            if outside:
                raise PatchError(
                    f"cannot split after '{until}': node {node.name} ({module_of(node)[0] or 'model'}) inside the stage "
                    f"is also read after it by {outside[0].name} ({module_of(outside[0])[0] or 'model'}); "
                    "patch-based inference keeps only the stage output: choose a split point after that use")
    kinds = {node: _classify(node, gm, values, until) for node in nodes}
    for node in nodes:
        inplace = (node.op == "call_method" and str(node.target).endswith("_")) or (
            node.op == "call_module" and getattr(gm.get_submodule(str(node.target)), "inplace", False))
        if inplace and node.all_input_nodes and len(node.all_input_nodes[0].users) > 1:
            raise _unpatchable(node, gm, until, "writes in place into a map that is read elsewhere")
    return _Stage(nodes, kinds, images[0], output)


def _shape_text(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


# --- regions -------------------------------------------------------------------------------

def _requests(node: fx.Node, kind: _Kind, region: Region, values) -> dict[fx.Node, tuple[Region, tuple[int, ...]]]:
    """Region of each tensor input ``node`` reads to produce ``region`` (clipped), with the
    padding ``(left, right, top, bottom)`` a window needs beyond the map."""
    requests = {}
    for source in node.all_input_nodes:
        spatial = _spatial_of(values.get(source))
        if spatial is None or spatial == (1, 1) and _spatial_of(values[node]) != (1, 1):
            continue  # broadcast along the map: read whole
        if kind.windows is None:
            requests[source] = (region, (0, 0, 0, 0))
            continue
        rows, cols = kind.windows
        r0, r1, top, bottom = _clip(*rows.input_range(region[0], region[1]), spatial[0])
        c0, c1, left, right = _clip(*cols.input_range(region[2], region[3]), spatial[1])
        requests[source] = ((r0, r1, c0, c1), (left, right, top, bottom))
    return requests


def _regions(stage: _Stage, values, patch_region: Region) -> dict[fx.Node, Region]:
    """Region of every stage node (and of the image) one patch needs."""
    need: dict[fx.Node, Region] = {stage.output: patch_region}
    for node in reversed(stage.nodes):
        if node not in need:
            continue  # computed for another patch only (cannot happen in a connected stage)
        for source, (region, _) in _requests(node, stage.kinds[node], need[node], values).items():
            need[source] = _union(need.get(source), region)
    return need


# --- the rewrite -----------------------------------------------------------------------------

def _patch_module(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        return PatchConv2d.of(module)
    if isinstance(module, nn.MaxPool2d):
        return PatchMaxPool2d.of(module)
    return PatchAvgPool2d.of(module)


class _Emitter:
    """Writes one patch's nodes into the new graph."""

    def __init__(self, graph: fx.Graph, stage: _Stage, values, copied: dict[fx.Node, fx.Node]):
        self.graph, self.stage, self.values, self.copied = graph, stage, values, copied

    def emit(self, need: dict[fx.Node, Region], suffix: str) -> tuple[fx.Node, list[fx.Node]]:
        self.created: list[fx.Node] = []
        env: dict[fx.Node, fx.Node] = {self.stage.image: self.copied[self.stage.image]}
        computed: dict[fx.Node, Region] = {self.stage.image: _full_region(self.values[self.stage.image])}
        for node in self.stage.nodes:
            kind = self.stage.kinds[node]
            if node.target is operator.getitem and isinstance(self.values[node.args[0]], (tuple, list)):
                source = node.args[0]  # one map of a channel split: the split ran on the union region
                item = self._node(node, "call_function", operator.getitem, (env[source], node.args[1]), {},
                                  f"{node.name}_{suffix}")
                env[node] = self._cut(item, computed[source], need[node], node, suffix)
                computed[node] = need[node]
                continue
            requests = _requests(node, kind, need[node], self.values)
            inputs = {source: self._cut(env[source], computed[source], region, node, suffix)
                      for source, (region, _) in requests.items()}

            def arg(value: fx.Node) -> fx.Node:
                return inputs[value] if value in inputs else env.get(value, self.copied.get(value))

            args, kwargs = fx.node.map_arg(node.args, arg), fx.node.map_arg(node.kwargs, arg)
            if kind.windows is not None:
                source = node.all_input_nodes[0]
                extra = (self._divisor(kind, need[node], source),) if isinstance(kind.module, nn.AvgPool2d) else ()
                args, kwargs = (inputs[source], requests[source][1], *extra), {}
            env[node] = self._node(node, node.op, node.target, args, kwargs, f"{node.name}_{suffix}")
            computed[node] = need[node]
        return env[self.stage.output], self.created

    def _node(self, like: fx.Node, op: str, target: Any, args, kwargs, name: str) -> fx.Node:
        new = self.graph.create_node(op, target, args, kwargs, name=name)
        new.meta = dict(like.meta)  # same module path as the node it stands for
        self.created.append(new)
        return new

    def _cut(self, value: fx.Node, have: Region, want: Region, consumer: fx.Node, suffix: str) -> fx.Node:
        """``value`` (computed on ``have``) restricted to ``want``: a view, or itself."""
        if want == have:
            return value
        index = (slice(None), slice(None), slice(want[0] - have[0], want[1] - have[0]),
                 slice(want[2] - have[2], want[3] - have[2]))
        if value.op == "placeholder":  # a patch of the input: read just before its use
            return self._node(consumer, "call_function", operator.getitem, (value, index), {},
                              f"slice_for_{consumer.name}_{suffix}")
        with self.graph.inserting_after(value):  # a view taken where the map is made, as a skip branch is
            return self._node(consumer, "call_function", operator.getitem, (value, index), {},
                              f"slice_for_{consumer.name}_{suffix}")

    def _divisor(self, kind: _Kind, region: Region, source: fx.Node):
        pool = kind.module
        if pool.divisor_override:
            return None
        size = _spatial_of(self.values[source])
        rows = _avg_divisors(kind.windows[0], size[0], region[0], region[1], pool.count_include_pad)
        cols = _avg_divisors(kind.windows[1], size[1], region[2], region[3], pool.count_include_pad)
        area = kind.windows[0].kernel * kind.windows[1].kernel
        if all(r * c == area for r in rows for c in cols):
            return None
        return rows, cols


def _full_region(value: torch.Tensor) -> Region:
    return 0, value.shape[2], 0, value.shape[3]


def _grid(patches: Any) -> tuple[int, int]:
    grid = (patches, patches) if isinstance(patches, int) else tuple(patches)
    if len(grid) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in grid):
        raise InvalidInputError(f"patches must be a positive int or a (rows, columns) pair, got {patches!r}")
    return grid


class Patcher:
    """One trace and fake-tensor run of a model, rewritten for any split point and grid."""

    def __init__(self, model: nn.Module, example_input: Any) -> None:
        self.name = type(model).__name__
        self.gm = trace(model)
        self.values = fake_values(self.gm, example_input)

    def split_points(self) -> list[str]:
        """Module paths of depth 1 and 2 whose last node yields a 4-D map, in execution order
        (the default split points of :func:`plan_patches`)."""
        last: dict[str, int] = {}
        for position, node in enumerate(self.gm.graph.nodes):
            parts = module_of(node)[0].split(".") if module_of(node)[0] else []
            for depth in (1, 2):
                if len(parts) >= depth:
                    last[".".join(parts[:depth])] = position
        nodes = list(self.gm.graph.nodes)
        by_position: dict[int, str] = {}  # one name per cut: the outermost module ending there
        for path in sorted(last, key=lambda path: path.count("."), reverse=True):
            by_position[last[path]] = path
        return [by_position[i] for i in sorted(by_position) if isinstance(self.values.get(nodes[i]), torch.Tensor)
                and _spatial_of(self.values[nodes[i]]) is not None]

    def output_size(self, until: str) -> tuple[int, int]:
        """Height and width of the stage output of ``until``."""
        return tuple(self.values[_find_stage(self.gm, self.values, until).output].shape[2:])

    def rewrite(self, until: str, patches: Any) -> fx.GraphModule:
        """See :func:`patch_inference`."""
        grid = _grid(patches)
        if not isinstance(until, str) or not until:
            raise InvalidInputError(f"until must name a module of the model (e.g. 'features.4'), got {until!r}")
        gm, values = self.gm, self.values
        stage = _find_stage(gm, values, until)
        out_value = values[stage.output]
        height, width = out_value.shape[2:]
        if grid[0] > height or grid[1] > width:
            raise InvalidInputError(f"a {grid[0]}x{grid[1]} grid does not fit the {height}x{width} output of '{until}'")

        graph = fx.Graph()
        copied: dict[fx.Node, fx.Node] = {}
        in_stage = set(stage.nodes)
        for node in gm.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                copied[node] = graph.node_copy(node, lambda n: copied[n])
        output = graph.create_node("call_method", "new_empty", (copied[stage.image], tuple(out_value.shape)),
                                   {"dtype": out_value.dtype}, name=f"{stage.output.name}_patched")
        emitter = _Emitter(graph, stage, values, copied)
        layout: list[Patch] = []
        for i, (r0, r1) in enumerate(split_evenly(height, grid[0])):
            for j, (c0, c1) in enumerate(split_evenly(width, grid[1])):
                need = _regions(stage, values, (r0, r1, c0, c1))
                tip, created = emitter.emit(need, f"p{i}_{j}")
                index = (slice(None), slice(None), slice(r0, r1), slice(c0, c1))
                write = graph.create_node("call_function", operator.setitem, (output, index, tip),
                                          name=f"write_p{i}_{j}")
                layout.append(Patch((i, j), (r0, r1, c0, c1), need[stage.image],
                                    tuple(n.name for n in (*created, write))))
        copied[stage.output] = output
        for node in gm.graph.nodes:
            if node not in in_stage and node not in copied:
                copied[node] = graph.node_copy(node, lambda n: copied[n])

        modules: dict[str, Any] = {}
        for node in graph.nodes:
            if node.op in ("call_module", "get_attr"):
                modules[str(node.target)] = _fetch(gm, str(node.target))
        for node in stage.nodes:
            if stage.kinds[node].windows is not None:
                modules[str(node.target)] = _patch_module(stage.kinds[node].module)
        result = fx.GraphModule(modules, graph, self.name + "Patched")
        result.meta[LAYOUT_KEY] = PatchLayout(until, grid, tuple(out_value.shape), tuple(layout),
                                              tuple(n.name for n in stage.nodes))
        return result


def patch_inference(model: nn.Module, example_input: Any, until: str, patches: tuple[int, int] | int = (4, 4)
                    ) -> fx.GraphModule:
    """Rewrite ``model`` so the modules up to and including ``until`` run one output patch at
    a time (MCUNetV2's patch-based inference); the rest of the model runs as before.

    Args:
        model: a CNN; its parameters may be real or on the ``meta`` device. Not modified: the
            result shares its modules and parameters.
        example_input: the input (tensor or shape) whose sizes fix the patches.
        until: path of the last module of the patched stage (e.g. ``"features.4"``).
        patches: the grid of patches of the stage output, ``(rows, columns)`` or ``n`` for n x n
            (near-equal patches; the first rows/columns are one larger where it does not divide).

    Returns:
        A ``GraphModule`` computing the same function (run it in eval mode: BatchNorm uses its
        running statistics). Each patch reads only its receptive field of the input, is
        padded exactly where the whole map is, and is written into the stage output.
        ``result.meta["fxcost_patches"]`` holds the :class:`PatchLayout`.

    Raises:
        PatchError: the stage holds an op that cannot be computed by patches (named), or a
            value of the stage other than its output is read after it.
    """
    return Patcher(model, example_input).rewrite(until, patches)


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)
