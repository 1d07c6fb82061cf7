"""A runnable module from fxcost's analysis graph.

The analysis graph (:func:`fxcost._analyze.analysis_graph`) runs over fxcost's mirror of the
model: fake weights and, where ``torch.fx`` could not trace a module (every Hugging Face
model), the torch calls the module made on fake tensors spliced in as nodes
(:mod:`fxcost._splice`). :func:`replay` turns it into a ``GraphModule`` over the user's own
modules and weights that runs for real: the same nodes, so a graph rewrite (the
peak-minimising schedule) rewrites the graph fxcost analyses.

A module kept whole is replayed call by call where that is faithful, and otherwise stays one
call of the module, listed in :attr:`Replay.kept_whole` with the reason:

* values were assumed to run it (its code depends on tensor values: the recorded calls follow
  the assumption, not the data);
* it read a tensor made during fxcost's own run that is neither a weight nor a constant of the
  model;
* it returned, or passed to a torch call, an object that cannot be rebuilt (a cache...);
* a module in it has forward hooks or pre-hooks (a hook's Python side effects are not torch calls).

Captured code computed sizes from the example input, and the replayed calls carry them as
constants: the module is specialised to the example's shapes, dtypes and non-tensor arguments,
and checks them when called (:func:`fxcost._runtime.expect_input`). Python side effects of the
captured code (attributes set on modules, lists appended) are not replayed; what it returns and
what it writes in place into tensors are.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._analyze import AnalysisGraph
from ._compat import FakeTensor, has_forward_hooks, pytree
from ._errors import InvalidModelError
from ._graph_values import FakeRun, fake_run
from ._graph import (
    ASSUMPTIONS_KEY,
    MODULE_KEY,
    PARTIAL_KEY,
    REGION_CALL_KEY,
    REGION_KEY,
    called_module,
    fetched_attribute,
    function_name,
)
from ._inputs import explicit_forward, fake_arguments, input_device, parameter_names, split_example_input
from ._mirror import shallow_copy
from ._records import Opaque
from ._runtime import dump_spec, expect_constant, expect_input, rebuild_output
from ._trace import traced_through

#: Argument values generated code can spell (``repr`` gives Python that rebuilds them).
_SPELLABLE = (int, float, bool, str, complex, type(None), torch.dtype, torch.device, torch.memory_format,
              torch.layout, torch.Size, slice, type(Ellipsis))


@dataclass(frozen=True)
class KeptWhole:
    """A module whose captured calls are not replayed: it stays one call of the module."""

    path: str
    """Module path ('' = the whole model)."""
    reason: str
    """Why its calls cannot be replayed faithfully."""
    node: str = ""
    """Name of the node calling it in the runnable graph."""
    region: str = field(default="", repr=False, compare=False)
    """Name of its node in the traced graph (its calls' ``REGION_KEY`` in the analysis graph)."""


@dataclass(frozen=True)
class Replay:
    """The analysis graph made runnable over the user's model."""

    graph_module: fx.GraphModule
    """Runs for real: the user's modules and weights (shared, not copied)."""
    replayed: tuple[str, ...]
    """Paths of the modules fx could not trace whose captured calls are nodes of the graph."""
    kept_whole: tuple[KeptWhole, ...]
    """Modules kept as one call, with why."""

    twin: "Twin | None" = None
    """For a fake run: the graph with the modules kept whole replayed where they can be."""


@dataclass(frozen=True)
class Twin:
    """The graph with modules kept whole replayed anyway, for fake runs: what they return and
    write in place, following fxcost's assumptions."""

    graph_module: fx.GraphModule
    """The graph (never run on real data)."""
    ends: dict[str, Any]
    """Node of a module kept whole (in the replay's graph) -> the twin's node for what it returns."""
    members: dict[str, tuple[str, ...]]
    """Node of a module kept whole -> names of the twin's nodes making its calls."""


def replay(built: AnalysisGraph, model: nn.Module, example_input: Any) -> Replay:
    """The analysis graph of ``model`` on ``example_input`` as a runnable ``GraphModule``
    over ``model``'s own modules and weights (see the module docstring for what is replayed)."""
    result = _Replayer(built, model, example_input).run()
    if not result.kept_whole:
        return result
    twin = _Replayer(built, model, example_input)
    twin_replay = twin.run(for_fake_run=True)
    ends = {k.node: twin.ends[k.region] for k in result.kept_whole if k.region in twin.ends}
    members = {k.node: tuple(twin.members.get(k.region, ())) for k in result.kept_whole if k.region in twin.ends}
    return replace(result, twin=Twin(twin_replay.graph_module, ends, members) if ends else None)


def fake_run_of(replayed: Replay, example_input: Any) -> FakeRun:
    """A fake-tensor run of the replay's graph. Modules kept whole whose captured calls can be
    replayed run as those calls (following fxcost's assumptions, with its hooks' torch calls but
    not their side effects), so code that depends on tensor values runs; the others run as
    they are, and must not depend on tensor values."""
    gm, twin = replayed.graph_module, replayed.twin
    try:
        run = fake_run(twin.graph_module if twin is not None else gm, example_input)
    except Exception as error:  # noqa: BLE001 - translated into one clear error
        kept = ", ".join(f"'{k.path}' ({k.reason})" for k in replayed.kept_whole) or "none"
        raise InvalidModelError(f"fxcost cannot run the graph of {type(gm).__name__} on fake tensors to order it: "
                                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}; "
                                f"modules kept whole: {kept}") from error
    if twin is None:
        return run
    by_name = {node.name: node for node in twin.graph_module.graph.nodes}
    values: dict[fx.Node, Any] = {}
    mutated: dict[fx.Node, set[int]] = {}
    for node in gm.graph.nodes:
        if node.name in twin.ends:
            end = twin.ends[node.name]
            values[node] = run.values[end] if isinstance(end, fx.Node) else end
            written = set().union(*(run.mutated.get(by_name[m], set()) for m in twin.members[node.name]))
        else:
            values[node] = run.values[by_name[node.name]]
            written = run.mutated.get(by_name[node.name], set())
        if written:
            mutated[node] = written
    return FakeRun(values, run.weight_storages, mutated)


def region_of(node: fx.Node) -> str | None:
    """Name of the module node a node of the analysis graph was spliced in for, if any."""
    return node.meta.get(REGION_KEY)


class _Replayer:
    def __init__(self, built: AnalysisGraph, model: nn.Module, example_input: Any) -> None:
        self.built = built
        self.source = built.graph
        self.model = model
        self.example_input = example_input
        mirror = built.subject.mirror
        self.weight_names = mirror.names
        self.module_paths = {id(module): path for path, module in mirror.module.named_modules()}
        self.root_call: nn.Module | None = None  # the model, callable as the mirror is (explicit forward)
        self.objects: dict[str, Any] = {}  # target -> the user's object
        self.called: dict[str, str] = {}  # module kept whole (its traced node's name) -> its node here
        self.ends: dict[str, Any] = {}  # module replayed -> what stands for its return value here
        self.members: dict[str, list[str]] = {}  # module replayed -> names of its calls' nodes here

    # --- which modules are replayed -------------------------------------------------------
    def run(self, for_fake_run: bool = False) -> Replay:
        """The replay; ``for_fake_run``: every module that can be replayed is, faithful or not
        (for a fake run following fxcost's assumptions, never for a real one)."""
        regions: dict[str, list[fx.Node]] = {}
        for node in self.source.graph.nodes:
            if region_of(node) is not None:
                regions.setdefault(region_of(node), []).append(node)
        kept: dict[str, KeptWhole] = {}
        replayed: list[str] = []
        for name, members in regions.items():
            end = members[-1]
            path = end.meta[MODULE_KEY][0]
            broken = self._unreplayable(members, end)
            unfaithful = None if broken is not None else self._unfaithful(members, end)
            if broken is None and (unfaithful is None or for_fake_run):
                replayed.append(path)
            else:
                kept[name] = KeptWhole(path, broken or unfaithful, region=name)
        graph = self._graph(kept, bool(replayed))
        kept = {name: replace(k, node=self.called[name]) for name, k in kept.items()}
        try:
            gm = fx.GraphModule(self._root(), graph, type(self.model).__name__)
        except Exception as error:  # noqa: BLE001 - translated into one clear error
            raise InvalidModelError(f"fxcost cannot generate code for the graph of {type(self.model).__name__}: "
                                    f"{type(error).__name__}: {error}") from error
        return Replay(gm, tuple(replayed), tuple(kept.values()))

    def _unfaithful(self, members: list[fx.Node], end: fx.Node) -> str | None:
        """Why replaying the captured calls of a module would not do what the module does
        (None: it would)."""
        for node in members:
            assumed = node.meta.get(ASSUMPTIONS_KEY)
            if assumed:
                return f"its code depends on tensor values; fxcost assumed them ({assumed[0]})"
        for node in members:
            if node.op == "call_module" or node is end and end.meta[REGION_CALL_KEY][0] == "call_module":
                module = self._user_module(called_module(node) if node is not end
                                           else self._fetch(end.meta[REGION_CALL_KEY][1], traced=True))
                hooked = next((m for m in module.modules() if has_forward_hooks(m)), None)
                if hooked is not None:
                    return f"{type(hooked).__name__} in it has forward hooks (their side effects are not torch calls)"
        return None

    def _unreplayable(self, members: list[fx.Node], end: fx.Node) -> str | None:
        """Why the captured calls of a module cannot be made into a runnable graph (None: they can)."""
        if PARTIAL_KEY in end.meta:
            return f"it stops at a data-dependent op ({end.meta[PARTIAL_KEY]})"
        for node in members:
            if node.op == "get_attr" and self._user_object(fetched_attribute(node)) is None:
                return (f"it reads a tensor made while fxcost ran it on fake tensors ({node.target}), not a weight or "
                        "a constant of the model")
            if node is not end:
                for value in pytree.tree_leaves((node.args, node.kwargs)):
                    if not isinstance(value, (fx.Node, *_SPELLABLE)):
                        return f"it passes a {type(value).__name__} to {function_name(node.target)}"
        spec, leaves = end.args[0], end.args[1]
        odd = next((v for v in leaves if isinstance(v, Opaque) or not isinstance(v, (fx.Node, *_SPELLABLE))), None)
        if odd is not None:
            kind = odd.type_name if isinstance(odd, Opaque) else type(odd).__name__
            return f"it returns a {kind}, which fxcost does not rebuild from torch calls"
        if not spec.is_leaf() and dump_spec(spec) is None:
            return "its return value's type cannot be rebuilt (torch.utils pytree cannot serialise it)"
        return None

    # --- the graph -----------------------------------------------------------------------
    def _graph(self, kept: dict[str, KeptWhole], guarded: bool) -> fx.Graph:
        graph = fx.Graph()
        env: dict[fx.Node, Any] = {}
        placeholders = [n for n in self.source.graph.nodes if n.op == "placeholder"]
        names = parameter_names(self.built.subject.mirror.module)
        if names is None or len(names) != len(placeholders):
            names = [str(n.target) for n in placeholders]
        for node, name in zip(placeholders, names):
            env[node] = graph.placeholder(name, default_value=node.args[0] if node.args else inspect.Signature.empty)
            _keep_meta(node, env[node])
        self._guards(graph, placeholders, names, env, guarded)
        for node in self.source.graph.nodes:
            if node.op == "placeholder":
                continue
            region = region_of(node)
            if region in kept:
                if REGION_CALL_KEY in node.meta:
                    env[node] = self._module_call(graph, node, region, env)
                continue
            if REGION_CALL_KEY in node.meta:
                env[node] = self.ends[region] = self._rebuilt(graph, node, env)
                continue
            env[node] = graph.node_copy(node, lambda n: env[n])
            _keep_meta(node, env[node])
            if region is not None:
                self.members.setdefault(region, []).append(env[node].name)
            if node.op in ("get_attr", "call_module"):
                self._install(str(node.target), node)
        graph.lint()
        return graph

    def _guards(self, graph: fx.Graph, placeholders: list[fx.Node], names: list[str], env: dict,
                replayed: bool) -> None:
        """Keyword constants of the example that the mirror's forward took in get a placeholder
        and a check; where captured code is replayed (it used the example's sizes), every
        input is checked against the example's."""
        _, given = split_example_input(self.example_input)
        constants = [(graph.placeholder(name, default_value=value), name, value) for name, value in given.items()
                     if name not in names and isinstance(value, _SPELLABLE)]
        for node, name, value in zip(placeholders, names, self.built.traced.placeholders if replayed else ()):
            if isinstance(value, torch.Tensor):
                env[node] = graph.call_function(expect_input, (env[node], tuple(value.shape), value.dtype, name))
                _keep_meta(node, env[node])
            elif isinstance(value, _SPELLABLE):
                constants.append((env[node], name, value))
        for node, name, value in constants:
            graph.call_function(expect_constant, (node, value, name))

    def _rebuilt(self, graph: fx.Graph, end: fx.Node, env: dict) -> Any:
        """The value a replayed module returned, from the nodes that made its tensors."""
        spec, leaves = end.args[0], [fx.node.map_arg(leaf, lambda n: env[n]) for leaf in end.args[1]]
        if spec.is_leaf():
            return leaves[0]
        node = graph.call_function(rebuild_output, (dump_spec(spec), *leaves))
        node.meta[MODULE_KEY] = end.meta[MODULE_KEY]
        return node

    def _module_call(self, graph: fx.Graph, end: fx.Node, region: str, env: dict) -> fx.Node:
        """A module kept whole: one call of it, with the arguments it was called with."""
        op, target = end.meta[REGION_CALL_KEY]
        args, kwargs = fx.node.map_arg(end.args[2], lambda n: env[n])
        for value in pytree.tree_leaves((args, kwargs)):
            if not isinstance(value, (fx.Node, *_SPELLABLE)):
                raise InvalidModelError(f"fxcost cannot call '{region}' again: it was called with a "
                                        f"{type(value).__name__}")
        node = graph.create_node(op, target, tuple(args), dict(kwargs), name=region)
        node.meta[MODULE_KEY] = end.meta[MODULE_KEY]
        self.called[region] = node.name
        if op == "call_module":
            self._install(str(target), None)
        return node

    # --- the user's objects ----------------------------------------------------------------
    def _fetch(self, target: str, traced: bool = False) -> Any:
        """The mirror's object at ``target`` of the analysis graph (``traced``: of the traced
        graph, which still holds the modules kept whole)."""
        value: Any = self.built.traced.gm if traced else self.source
        for part in target.split("."):
            value = getattr(value, part)
        return value

    def _install(self, target: str, node: fx.Node | None) -> None:
        value = self._fetch(target, traced=node is None)
        real = self._user_object(value)
        if real is None:
            raise InvalidModelError(f"node {node.name if node is not None else target} reads '{target}', a tensor "
                                    "made while fxcost ran the model on fake tensors: fxcost cannot run it for real")
        self.objects[target] = real

    def _user_module(self, module: nn.Module) -> nn.Module:
        path = self.module_paths.get(id(module))
        if path is None:
            raise InvalidModelError(f"a {type(module).__name__} of fxcost's graph is not a module of the model")
        if path == "":
            return self._root_call()
        return self.model.get_submodule(path)

    def _user_object(self, value: Any) -> Any:
        """The user's object standing behind one of the mirror's (None: there is none)."""
        if isinstance(value, nn.Module):
            return self._user_module(value)
        if isinstance(value, torch.Tensor):
            name = self.weight_names.get(id(value))
            if name is not None:
                owner, _, attribute = name.rpartition(".")
                return getattr(self.model.get_submodule(owner) if owner else self.model, attribute)
            return None if isinstance(value, FakeTensor) else value  # a real constant of the model
        return value

    def _root_call(self) -> nn.Module:
        """The model, taking the arguments the mirror's forward takes (its explicit forward
        where the mirror has one), on a copy sharing everything but the class."""
        if self.root_call is None:
            mirror = self.built.subject.mirror.module
            if type(mirror) is type(self.model):
                self.root_call = self.model
            else:
                copy = shallow_copy(self.model)
                args, kwargs = split_example_input(self.example_input)
                with self.built.subject.fake_mode:
                    args, kwargs = fake_arguments(args, kwargs, input_device(args, kwargs))
                explicit_forward(copy, tuple(args), dict(kwargs), type(self.model).__name__,
                                 traced=traced_through(copy, self.built.traced.leaf_modules))
                self.root_call = copy
        return self.root_call

    def _root(self) -> nn.Module:
        """A module holding every object the graph fetches at its path."""
        root = nn.Module()
        holders = {id(root)}
        for target in sorted(self.objects, key=lambda t: t.count(".")):
            owner = root
            *path, name = target.split(".")
            for part in path:
                child = owner._modules.get(part)
                if child is None:
                    child = nn.Module()
                    holders.add(id(child))
                    owner.add_module(part, child)
                owner = child
                if id(owner) not in holders:
                    break  # inside one of the model's modules: reachable as it is
            else:
                value = self.objects[target]
                if isinstance(value, nn.Module):
                    owner.add_module(name, value)
                else:
                    owner.__dict__[name] = value  # found by getattr; GraphModule registers its own copy
        return root


def _keep_meta(source: fx.Node, node: fx.Node) -> None:
    """Carry over what stays true of the node in a real run: the module it belongs to."""
    for key in list(node.meta):
        if key.startswith("fxcost_") and key != MODULE_KEY:
            del node.meta[key]
    if MODULE_KEY in source.meta:
        node.meta[MODULE_KEY] = source.meta[MODULE_KEY]
