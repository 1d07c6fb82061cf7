"""``analyze()``: the chain of stages options -> mirror -> trace -> propagate -> cost ->
liveness -> report. Each stage is a function with typed inputs and outputs; this module
only composes them."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.fx as fx
from torch import nn

from . import rules as _rules  # noqa: F401 - fills the default registry
from ._compat import new_fake_mode
from ._costing import CostedGraph, cost_nodes
from ._assume import Assumer
from ._capture import wrap_hooked_rule_modules
from ._collector import collector_paused
from ._compat import has_forward_hooks
from ._graph import CALLS_KEY, called_module, describe_target, module_of, value_of
from ._inputs import (
    bind_placeholders,
    constant_arguments,
    explicit_forward,
    fake_arguments,
    input_device,
    inputs_of,
    parameter_names,
    split_example_input,
)
from ._lazy import LazyMapping
from ._liveness import Liveness, compute_liveness
from ._mirror import Mirror, mirror_model
from ._options import AnalysisOptions, MemoryOptions, Training
from ._propagate import propagate, source_line_by_retrace
from ._records import Assumption, NodeCost, Status, dtype_name, iter_instances, with_fields
from ._registry import OpCall
from ._report import Report
from ._splice import splice_regions
from ._training import StepObserver, checkpointed_forward, fake_target
from ._trace import trace, trace_with_fallback, traced_through
from ._walk import modules_of, named_modules_of
from ._weights import NamedWeights, WeightIndex, parameter_totals, real_weight_sizes, weight_memory


class UnsupportedOpWarning(UserWarning):
    """Some nodes have no cost rule: their MACs and FLOPs are unknown."""


class TraceFallbackWarning(UserWarning):
    """Some modules could not be traced by torch.fx and were costed whole."""


class AssumptionWarning(UserWarning):
    """The model's code depends on tensor values: fxcost assumed them (see ``report.assumptions``)."""


def analyze(
    model: nn.Module,
    example_input: Any,
    *,
    leaf_modules: Iterable[type[nn.Module]] = (),
    concrete_args: dict[str, Any] | None = None,
    mode: str | None = None,
    rules: Mapping[Any, Callable[[OpCall], Any]] | None = None,
    memory: MemoryOptions | None = None,
    exclude: Iterable[str] = (),
    submodule: str | None = None,
    fallback: bool = True,
    assume: Mapping[str, Any] | Callable[[Any], Any] | None = None,
    strict: bool = False,
    training: Training | None = None,
) -> Report:
    """Analyse ``model`` on ``example_input`` without running it on real data.

    Args:
        model: any ``nn.Module``; its weights may be real or on the ``meta`` device.
        example_input: a tensor, a shape such as ``(1, 3, 224, 224)`` (float32), a tuple/list
            of positional arguments, or a dict of keyword arguments. Only shapes, dtypes and
            devices are used.
        leaf_modules: extra module classes to keep whole (not traced through).
        concrete_args: passed to ``torch.fx`` for arguments the forward branches on.
        mode: ``"eval"`` (the default without ``training``), ``"train"`` (the default with it)
            or ``"as-is"``: the module mode analysed. The model's own flags are never changed.
        rules: extra or replacement cost rules, ``{target: rule}`` (see :mod:`fxcost.rules`).
        memory: memory layout assumptions for the liveness figures (default: eager PyTorch,
            inputs held by the caller); ``MemoryOptions.deployment()`` for an int8 MCU runtime.
        exclude: module paths to leave out (e.g. ``["fc"]`` for a backbone without its
            classifier head): they are replaced by identity and their parameters not counted.
        submodule: analyse only this module path, with the input it receives inside the
            model (its first call) when ``model`` runs on ``example_input``.
        fallback: where ``torch.fx`` cannot trace a module (Python control flow on shapes,
            unsupported Python), keep that module whole and cost it from the torch calls it
            makes on fake tensors (listed in ``report.fallbacks``, one
            :class:`TraceFallbackWarning`). ``False`` raises :class:`TraceError` instead.
        assume: where the code depends on tensor values (``if x.sum() > 0:``, ``int(n)``), the
            values to assume per call site, ``{"mynet.py:9": False}``, or a callable taking the
            site (:class:`fxcost.Site`) and returning a value (None: the default). Defaults:
            branches taken, integers the input size, sizes their upper bound; every assumption
            is listed in ``report.assumptions``.
        strict: raise :class:`ShapePropagationError` on value-dependent code instead of assuming.
        training: a :class:`fxcost.Training`: also analyse one steady-state training step
            (backward costs per node, the step's peak memory by category: ``report.training``).

    Returns:
        A :class:`Report`. Nodes without a cost rule are listed in ``report.unsupported``
        and an :class:`UnsupportedOpWarning` is issued once.
    """
    options = AnalysisOptions.checked(model, mode=mode, leaf_modules=leaf_modules, concrete_args=concrete_args,
                                      rules=rules, memory=memory, exclude=exclude, submodule=submodule,
                                      fallback=fallback, assume=assume, strict=strict, training=training)
    with collector_paused():  # (see fxcost._collector)
        built = analysis_graph(model, example_input, options)
        subject, traced, graph = built.subject, built.traced, built.graph
        weights = WeightIndex(subject.mirror.module, subject.mirror.names)
        costed = cost_nodes(graph, options.rules, weights, subject.name)
        liveness = liveness_of(built, options.memory, weights, [n.module_path for n in costed.nodes])
        report = build_report(subject, traced, graph, costed, liveness, options)
        built.release()
        del built, subject, traced, graph, weights, costed, liveness
    warn_about(report)
    return report


# --- stages --------------------------------------------------------------------------------

@dataclass
class Subject:
    """What is analysed: the user's module (or the submodule asked for), its mirror, and
    the fake arguments it is called with."""

    module: nn.Module
    """The user's module (never modified)."""
    mirror: Mirror
    """Its stand-in with fake parameters."""
    args: tuple
    """Positional arguments, tensors fake."""
    kwargs: dict
    """Keyword arguments, tensors fake."""
    fake_mode: Any
    """The fake-tensor mode every fake tensor belongs to."""
    excluded: Callable[[str], bool]
    """Whether a parameter/module name (relative to :attr:`module`) is excluded."""
    checkpointed: tuple[str, ...] = ()
    """Module paths run under activation checkpointing (training)."""
    target: Any = None
    """The loss target, fake (training)."""

    @property
    def name(self) -> str:
        """Class name of the analysed module."""
        return type(self.module).__name__


def prepare(model: nn.Module, example_input: Any, options: AnalysisOptions) -> Subject:
    """Mirror the model with fake tensors, make the example input fake, and narrow both to
    ``options.submodule`` (the submodule gets the input it receives inside the model)."""
    args, kwargs = split_example_input(example_input)
    device = input_device(args, kwargs)
    fake_mode = new_fake_mode()
    mirror = mirror_model(model, fake_mode, device, options.training_flag, options.exclude,
                          grads=options.training is not None)
    with fake_mode:
        args, kwargs = fake_arguments(args, kwargs, device)
        target = fake_target(options.training.target, device) if options.training is not None else None
    excluded = options.excluded
    if options.submodule is not None:
        path = options.submodule
        args, kwargs = inputs_of(mirror.module, path, args, kwargs, fake_mode)
        model, mirror = model.get_submodule(path), mirror.narrow(path)
        excluded = lambda name: options.excluded(f"{path}.{name}")  # noqa: E731
    wrap_hooked_rule_modules(mirror.module, lambda module: options.rules.module_rule(module) is not None)
    args, kwargs = explicit_forward(mirror.module, tuple(args), dict(kwargs), type(model).__name__,
                                    traced=traced_through(mirror.module, options.leaf_modules))
    checkpointed = _checkpoint(mirror.module, options.training.checkpoint if options.training is not None else ())
    return Subject(model, mirror, args, kwargs, fake_mode, excluded, checkpointed, target)


def _checkpoint(root: nn.Module, entries: tuple) -> tuple[str, ...]:
    """Run the mirror's modules named by path or class under activation checkpointing; their
    paths (outermost only)."""
    if not entries:
        return ()
    paths = [path for path, module in root.named_modules() if path and any(
        path == entry if isinstance(entry, str) else isinstance(module, entry) for entry in entries)]
    paths = [p for p in paths if not any(p.startswith(q + ".") for q in paths)]
    for path in paths:
        checkpointed_forward(root.get_submodule(path))
    return tuple(paths)


@dataclass
class Traced:
    """The traced graph and what tracing had to give up on."""

    gm: Any
    """The GraphModule over the mirror (analysis only: no generated code)."""
    fallbacks: dict[str, str]
    """Module paths kept whole because fx cannot trace them -> why ('' = the whole model)."""
    leaf_modules: tuple
    """Module classes kept whole on request."""
    concrete_args: dict[str, Any]
    """Arguments traced as constants."""
    placeholders: list[Any]
    """The fake value bound to each placeholder, in order."""

    def retrace(self, root: nn.Module):
        """The same trace again, with stack traces recorded (slow: for error messages)."""
        return trace(root, self.leaf_modules, self.concrete_args, list(self.fallbacks), record_stack_traces=True)


def trace_subject(subject: Subject, options: AnalysisOptions) -> Traced:
    """Trace the mirror, keeping untraceable modules whole when ``options.fallback``, and
    bind the fake arguments to the graph's placeholders."""
    root = subject.mirror.module
    concrete_args = {**constant_arguments(root, subject.args, subject.kwargs), **options.concrete_args}
    if options.fallback:
        gm, fallbacks = trace_with_fallback(root, options.leaf_modules, concrete_args, leaf_paths=subject.checkpointed)
    else:
        gm, fallbacks = trace(root, options.leaf_modules, concrete_args, subject.checkpointed, runnable=False), {}
    bound = bind_placeholders(gm, subject.args, subject.kwargs, subject.name, parameter_names(root))
    return Traced(gm, dict(fallbacks), options.leaf_modules, concrete_args, bound)


def propagate_subject(subject: Subject, traced: Traced, options: AnalysisOptions) -> fx.GraphModule:
    """Shapes of every node on fake tensors (in ``node.meta``). Functions without a rule of
    their own are costed from the torch calls they make; modules without one (kept whole, or
    untraceable) are replaced by the nodes of the calls they made: one graph."""
    registry = options.rules
    root = subject.mirror.module
    sizes = [size for value in traced.placeholders for tensor in iter_instances(value, torch.Tensor) for size in tensor.shape]
    assumer = None if options.strict else Assumer(options.assume, max(sizes, default=1))
    looked_into: dict[Any, bool] = {}  # per module called / function target

    def look_inside(node: fx.Node) -> bool:
        key = id(called_module(node)) if node.op == "call_module" else (node.op, node.target)
        if key not in looked_into:
            looked_into[key] = _looked_into(node, registry)
        return looked_into[key]

    propagation = propagate(
        traced.gm, traced.placeholders, subject.fake_mode,
        look_inside=look_inside,
        has_rule=lambda module: registry.module_rule(module) is not None,
        source_of=source_line_by_retrace(lambda: traced.retrace(root)),
        weight_names=subject.mirror.names,
        module_paths=LazyMapping(lambda: {id(module): path for path, module in named_modules_of(root)}),
        assumer=assumer,
        step=(lambda tracker: StepObserver(options.training, registry, root, traced.placeholders, tracker))
        if options.training is not None else None,
        target=subject.target,
    )
    graph = splice_regions(traced.gm, propagation.regions, root)
    graph.meta["fxcost_tracker"] = propagation.tracker  # keeps storage identities unique
    graph.meta["fxcost_assumptions"] = _assumptions(assumer)
    if propagation.step is not None:
        graph.meta["fxcost_step"] = _step_result(propagation, graph, subject)
    return graph


@dataclass
class AnalysisGraph:
    """The graph every analysis of a model works on (costs, liveness, the peak-minimising
    schedule), with what built it."""

    subject: Subject
    """The model, its mirror and the fake arguments."""
    traced: Traced
    """The traced graph and the modules kept whole."""
    graph: fx.GraphModule
    """The propagated graph over the mirror: every node's values in ``node.meta``, the calls
    of modules kept whole spliced in as nodes (analysis only: no generated code)."""

    def release(self) -> None:
        """Drop what the graphs and the mirror hold (node values, fake tensors, the mirror's
        modules' attributes), once nothing more is read from them: it then goes by reference
        counting, not waiting for the cyclic garbage collector, even where something left in a
        cycle (torch's tracer leaves some after a failed trace) still refers to a module of the
        mirror (see :mod:`fxcost._collector`). The graphs are unusable afterwards."""
        for gm in {id(gm): gm for gm in (self.graph, self.traced.gm)}.values():
            for node in gm.graph.nodes:
                node.meta = {}
            gm.meta.clear()
            for table in ("_modules", "_parameters", "_buffers"):
                gm.__dict__[table] = {}
        for module in modules_of(self.subject.mirror.module):
            module.__dict__.clear()


def analysis_graph(model: nn.Module, example_input: Any, options: AnalysisOptions) -> AnalysisGraph:
    """The stages up to the one graph: mirror, trace, propagate (and splice)."""
    with collector_paused():
        subject = prepare(model, example_input, options)
        traced = trace_subject(subject, options)
        return AnalysisGraph(subject, traced, propagate_subject(subject, traced, options))


def liveness_of(built: AnalysisGraph, memory: MemoryOptions, weights: WeightIndex | None = None,
                module_paths: list[str] | None = None) -> Liveness:
    """Buffer lifetimes and live bytes along the analysis graph (``peak_bytes`` is the
    report's ``peak_activation_bytes``)."""
    if weights is None:
        weights = WeightIndex(built.subject.mirror.module, built.subject.mirror.names)
    return compute_liveness(built.graph, set(weights.by_storage), memory, module_paths)


def _step_result(propagation, graph: fx.GraphModule, subject: Subject):
    """The training step's record and the backward costs per node name."""
    names: dict[tuple, str] = {}
    for node in graph.graph.nodes:
        names[(node, None)] = node.name
        for index, _ in enumerate(node.meta.get(CALLS_KEY, ())):
            names[(node, index)] = node.name  # calls of a node costed as one
    for node, recording in propagation.regions.items():
        for index, call in enumerate(recording.calls):
            names[(node, index)] = call.node_name
    modules = {node.name: module_of(node)[0] for node in graph.graph.nodes}
    return propagation.step.result(names, graph, subject.checkpointed, lambda name: modules.get(name, ""))


def _assumptions(assumer: Assumer | None) -> tuple[Assumption, ...]:
    if assumer is None:
        return ()
    return tuple(Assumption(site.location, site.code, what, repr(value) if not isinstance(value, str) else value,
                            assumer.counts[key])
                 for key, (site, value, what) in assumer.made.items())


def _looked_into(node: fx.Node, registry) -> bool:
    """Whether a node's torch calls are recorded: it has no rule of its own, or it is a
    module whose call runs more than its rule prices (forward hooks)."""
    if node.op == "call_module":
        module = called_module(node)
        return registry.module_rule(module) is None or has_forward_hooks(module)
    return registry.lookup(describe_target(node)[2]) is None


def build_report(subject: Subject, traced: Traced, graph: fx.GraphModule, costed: CostedGraph,
                 liveness: Liveness, options: AnalysisOptions) -> Report:
    """Assemble the Report: node records with their live bytes, totals, liveness figures."""
    stand_ins = subject.mirror.stand_ins
    step, backward = graph.meta.get("fxcost_step", (None, {}))
    nodes = [with_fields(n, live_bytes=live, temporary_bytes=temp,
                                 backward_macs=backward.get(n.name, (0, 0))[0],
                                 backward_flops=backward.get(n.name, (0, 0))[1])
             for n, live, temp in zip(costed.nodes, liveness.during, liveness.temporaries)]
    peak_node = nodes[liveness.peak_index].name if nodes else ""
    nodes = real_weight_sizes(nodes, stand_ins)
    unsupported: dict[str, list[str]] = {}
    for node in nodes:
        if node.status in (Status.UNSUPPORTED, Status.PARTIAL):
            unsupported.setdefault(node.target, []).append(node.name)
    weights = NamedWeights.of(subject.module, subject.excluded)
    totals = parameter_totals(weights, costed.used, subject.excluded, stand_ins)
    return Report(
        model=subject.name,
        nodes=tuple(nodes),
        **dataclasses.asdict(totals),
        inputs=tuple(
            (str(node.target), value_of(node).shape, dtype_name(value_of(node).dtype))
            for node in graph.graph.nodes
            if node.op == "placeholder" and hasattr(value_of(node), "shape")
        ),
        mode=options.mode,
        unsupported={target: tuple(names) for target, names in unsupported.items()},
        peak_activation_bytes=liveness.peak_bytes,
        peak_node=peak_node,
        peak_buffers=liveness.alive_at(liveness.peak_index),
        peak_with_temporaries_bytes=liveness.peak_with_temporaries,
        weight_memory_bytes=weight_memory(weights, options.memory.weight_dtype, subject.excluded, stand_ins),
        memory=options.memory,
        module_types=_module_types(nodes, subject.mirror),
        fallbacks=dict(traced.fallbacks),
        quantized={path: s.original for path, s in stand_ins.items()},
        assumptions=graph.meta.get("fxcost_assumptions", ()),
        training=step,
    )


def warn_about(report: Report) -> None:
    """One warning for modules costed whole, one for nodes without a rule."""
    if report.fallbacks:
        named = [f"'{path}'" if path else "the whole model" for path in report.fallbacks]
        where = ", ".join(named if len(named) <= 8 else [*named[:6], f"... ({len(named)} modules)", named[-1]])
        warnings.warn(
            f"torch.fx could not trace {where}: costed whole from the torch calls made on fake tensors "
            "(see report.fallbacks; pass fallback=False to get the tracing error)",
            TraceFallbackWarning,
            stacklevel=3,
        )
    if report.assumptions:
        first = report.assumptions[0]
        warnings.warn(
            f"the model's code depends on tensor values at {len(report.assumptions)} place(s); fxcost assumed them "
            f"(e.g. {first.location}: {first.what}): see report.assumptions, pass assume={{'file.py:LINE': value}} "
            "to choose, or strict=True to refuse",
            AssumptionWarning,
            stacklevel=3,
        )
    if report.unsupported:
        partial = [n for n in report.nodes if n.status is Status.PARTIAL]
        detail = (f"; {', '.join(n.name for n in partial)} stopped at a data-dependent op ({partial[0].note})"
                  if partial else "")
        warnings.warn(
            f"fxcost could not cost all of {', '.join(sorted(report.unsupported))} "
            f"({sum(map(len, report.unsupported.values()))} nodes): totals are lower bounds{detail}; "
            "see report.unsupported and the nodes' notes, or pass rules={target: fn} to analyze()",
            UnsupportedOpWarning,
            stacklevel=3,
        )


# --- helpers ---------------------------------------------------------------------------------

def _module_types(nodes: list[NodeCost], mirror: Mirror) -> dict[str, str]:
    """Class name of every module path owning a node, at every level (a converted quantized
    module under its own class, not its float stand-in's)."""
    types: dict[str, str] = {}
    modules: dict[str, nn.Module] | None = None
    for node in nodes:
        if not node.module_path or node.module_path in types:
            continue
        if modules is None:
            modules = dict(named_modules_of(mirror.module, remove_duplicate=False))
        parts = node.module_path.split(".")
        for level in range(1, len(parts) + 1):
            path = ".".join(parts[:level])
            if path not in types:
                module = modules.get(path)
                types[path] = type(module).__name__ if module is not None else (
                    node.module_type if level == len(parts) else "")
    for path, replacement in mirror.stand_ins.items():
        if path in types:
            types[path] = replacement.original.rsplit(".", 1)[-1]
    return types
