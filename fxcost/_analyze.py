"""``analyze()``: composes the stages model -> trace -> shapes -> costs -> Report."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from . import rules as _rules  # noqa: F401 - fills the default registry
from ._costing import WeightIndex, cost_nodes, describe_target
from ._errors import InvalidInputError, InvalidModelError
from ._fake_model import fake_model
from ._inputs import bind_placeholders, fake_arguments, input_device, split_example_input
from ._liveness import MemoryOptions, compute_liveness
from ._propagate import propagate, source_line_by_retrace
from ._records import Status
from ._registry import RULES, OpCall
from ._report import Report
from ._trace import trace, trace_with_fallback

_MODES = {"eval": "eval", "train": "train", "as-is": None}


class UnsupportedOpWarning(UserWarning):
    """Some nodes have no cost rule: their MACs and FLOPs are unknown."""


class TraceFallbackWarning(UserWarning):
    """Some modules could not be traced by torch.fx and were costed whole."""


def analyze(
    model: nn.Module,
    example_input: Any,
    *,
    leaf_modules: Iterable[type[nn.Module]] = (),
    concrete_args: dict[str, Any] | None = None,
    mode: str = "eval",
    rules: Mapping[Any, Callable[[OpCall], Any]] | None = None,
    memory: MemoryOptions | None = None,
    exclude: Iterable[str] = (),
    submodule: str | None = None,
    fallback: bool = True,
) -> Report:
    """Analyse ``model`` on ``example_input`` without running it on real data.

    Args:
        model: any ``nn.Module``; its weights may be real or on the ``meta`` device.
        example_input: a tensor, a shape such as ``(1, 3, 224, 224)`` (float32), a tuple/list
            of positional arguments, or a dict of keyword arguments. Only shapes, dtypes and
            devices are used.
        leaf_modules: extra module classes to keep whole (not traced through).
        concrete_args: passed to ``torch.fx`` for arguments the forward branches on.
        mode: ``"eval"`` (default), ``"train"`` or ``"as-is"``: the module mode analysed.
            The model's own ``training`` flags are never changed.
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

    Returns:
        A :class:`Report`. Nodes without a cost rule are listed in ``report.unsupported``
        and an :class:`UnsupportedOpWarning` is issued once.
    """
    _check_model(model)
    if mode not in _MODES:
        raise InvalidInputError(f"mode={mode!r} is not one of {', '.join(map(repr, _MODES))}")
    leaf_modules = tuple(leaf_modules)
    for leaf in leaf_modules:
        if not (isinstance(leaf, type) and issubclass(leaf, nn.Module)):
            raise InvalidInputError(f"leaf_modules must hold nn.Module subclasses, got {leaf!r}")

    exclude = tuple(exclude)
    for path in (*exclude, *([submodule] if submodule else [])):
        _check_path(model, path)

    args, kwargs = split_example_input(example_input)
    device = input_device(args, kwargs)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake = fake_model(model, fake_mode, device, _MODES[mode], exclude)
    with fake_mode:
        fake_args, fake_kwargs = fake_arguments(args, kwargs, device)
    if submodule:
        inner_args, inner_kwargs = _inputs_of(fake.module, submodule, fake_args, fake_kwargs, fake_mode)
        return analyze(model.get_submodule(submodule), (*inner_args, *inner_kwargs.values()) if not inner_kwargs
                       else {**dict(zip(_positional_names(model.get_submodule(submodule)), inner_args)), **inner_kwargs},
                       leaf_modules=leaf_modules, mode=mode, rules=rules, memory=memory, fallback=fallback)
    name = type(model).__name__
    concrete_args = {**_constant_arguments(model, args, kwargs), **(concrete_args or {})}
    if fallback:
        gm, fallbacks = trace_with_fallback(fake.module, leaf_modules, concrete_args)
    else:
        gm, fallbacks = trace(fake.module, leaf_modules, concrete_args, runnable=False), {}
    bound = bind_placeholders(gm, fake_args, fake_kwargs, name, _parameter_names(model))
    registry = RULES.merged(rules)
    retrace = lambda: trace(fake.module, leaf_modules, concrete_args, list(fallbacks), record_stack_traces=True)  # noqa: E731
    propagation = propagate(gm, bound, fake_mode, lambda node: registry.lookup(describe_target(node, gm)[2]) is None,
                            lambda module: registry.lookup(type(module)) is not None, source_line_by_retrace(retrace))
    values = propagation.values
    weights = WeightIndex(gm, fake.names)
    nodes, expansions, used = cost_nodes(gm, propagation, registry, weights, name)
    memory = memory or MemoryOptions()
    liveness = compute_liveness(gm, values, set(weights.by_storage), memory, [n.module_path for n in nodes],
                                propagation.internal_peaks)
    nodes = [dataclasses.replace(n, live_bytes=live, temporary_bytes=temp)
             for n, live, temp in zip(nodes, liveness.during, liveness.temporaries)]
    peak_node = nodes[liveness.peak_index].name if nodes else ""  # graph order, before expanded rows
    nodes = _with_expansions(nodes, expansions)
    nodes = _real_weight_sizes(nodes, fake.stand_ins)

    unsupported: dict[str, list[str]] = {}
    for node in nodes:
        if node.status in (Status.UNSUPPORTED, Status.PARTIAL):
            unsupported.setdefault(node.target, []).append(node.name)
    module_types = _module_types(gm)
    module_types.update({path: s.original.rsplit(".", 1)[-1] for path, s in fake.stand_ins.items()})
    root_leaf = gm.meta.get("fxcost_root_leaf")
    for node in gm.graph.nodes:
        if node.name in expansions:  # a module kept whole: name its submodules too
            prefix = "" if root_leaf else f"{node.target}."
            for path, module in gm.get_submodule(str(node.target)).named_modules():
                if path:
                    module_types.setdefault(prefix + path, type(module).__name__)
    report = Report(
        model=name,
        nodes=tuple(nodes),
        **_parameter_totals(model, used, exclude, fake.stand_ins),
        inputs=tuple(
            (str(node.target), values[node].shape, str(values[node].dtype).replace("torch.", ""))
            for node in gm.graph.nodes
            if node.op == "placeholder" and hasattr(values.get(node), "shape")
        ),
        mode=mode,
        unsupported={target: tuple(names) for target, names in unsupported.items()},
        peak_activation_bytes=liveness.peak_bytes,
        peak_node=peak_node,
        peak_buffers=liveness.alive_at(liveness.peak_index),
        peak_with_temporaries_bytes=liveness.peak_with_temporaries,
        weight_memory_bytes=_weight_memory(model, memory.weight_dtype, exclude, fake.stand_ins),
        memory=memory,
        module_types=module_types,
        fallbacks=dict(fallbacks),
        quantized={path: s.original for path, s in fake.stand_ins.items()},
    )
    if fallbacks:
        where = ", ".join(f"'{path}'" if path else "the whole model" for path in fallbacks)
        warnings.warn(
            f"torch.fx could not trace {where}: costed whole from the torch calls made on fake tensors "
            "(see report.fallbacks; pass fallback=False to get the tracing error)",
            TraceFallbackWarning,
            stacklevel=2,
        )
    if unsupported:
        partial = [n for n in nodes if n.status is Status.PARTIAL]
        detail = (f"; {', '.join(n.name for n in partial)} stopped at a data-dependent op ({partial[0].note})"
                  if partial else "")
        warnings.warn(
            f"fxcost could not cost all of {', '.join(sorted(unsupported))} "
            f"({sum(map(len, unsupported.values()))} nodes): totals are lower bounds{detail}; "
            "see report.unsupported and the nodes' notes, or pass rules={target: fn} to analyze()",
            UnsupportedOpWarning,
            stacklevel=2,
        )
    return report


def _parameter_names(model: nn.Module) -> list[str] | None:
    import inspect

    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _constant_arguments(model: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Forward parameters the example input gives as plain Python values (ints, floats,
    bools, strings, None) or leaves at a default of None/True/False: traced as those
    constants, so ``range(n)`` or ``if mask is not None:`` follow the real call."""
    import inspect

    if isinstance(model, torch.fx.GraphModule):
        return {}
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    constants = {}
    for index, parameter in enumerate(parameters):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if index < len(args) or parameter.name in kwargs:
            value = args[index] if index < len(args) else kwargs[parameter.name]
            if value is None or isinstance(value, (bool, int, float, str)):
                constants[parameter.name] = value
        elif parameter.default is not parameter.empty and (parameter.default is None or isinstance(parameter.default, bool)):
            constants[parameter.name] = parameter.default
    return constants


def _check_path(model: nn.Module, path: str) -> None:
    try:
        model.get_submodule(path)
    except AttributeError:
        owner, _, _ = path.rpartition(".")
        try:
            children = [name for name, _ in model.get_submodule(owner).named_children()]
        except AttributeError:
            children = [name for name, _ in model.named_children()]
        raise InvalidInputError(
            f"{type(model).__name__} has no submodule {path!r}; "
            f"submodules{' of ' + repr(owner) if owner else ''} are: {', '.join(children) or 'none'}"
        ) from None
    if not path:
        raise InvalidInputError("an empty module path names the whole model")


class _Captured(Exception):
    pass


def _inputs_of(root: nn.Module, path: str, args: tuple, kwargs: dict, fake_mode) -> tuple[tuple, dict]:
    """The (fake) arguments module ``path`` receives on its first call while ``root`` runs."""
    target = root.get_submodule(path)
    captured: list[tuple[tuple, dict]] = []

    def hook(module, hook_args, hook_kwargs):
        captured.append((hook_args, hook_kwargs))
        raise _Captured

    handle = target.register_forward_pre_hook(hook, with_kwargs=True)  # on the mirror, not the user's model
    try:
        with fake_mode, torch.no_grad():
            root(*args, **kwargs)
    except _Captured:
        pass
    except Exception as error:  # noqa: BLE001 - translated into one clear error
        raise InvalidInputError(f"running the model to find the input of {path!r} failed: "
                                f"{type(error).__name__}: {error}") from error
    finally:
        handle.remove()
    if not captured:
        raise InvalidInputError(f"module {path!r} is never called by the model's forward on this input")
    return captured[0]


def _positional_names(module: nn.Module) -> list[str]:
    import inspect

    return [name for name, p in inspect.signature(module.forward).parameters.items()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_model(model: Any) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise InvalidModelError(
            "a TorchScript module cannot be traced by torch.fx: analyse the original nn.Module "
            "(before torch.jit.script/trace) instead"
        )
    if not isinstance(model, nn.Module):
        raise InvalidModelError(
            f"expected a torch.nn.Module, got {type(model).__name__}: wrap the function in an nn.Module"
        )
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise InvalidModelError(
            "this module was compiled with torch.compile: pass the original module (model._orig_mod)"
        )


def _with_expansions(nodes: list, expansions: dict[str, list]) -> list:
    """Insert after each module kept whole the rows of the calls it made; they share its
    live bytes (the schedule inside such a module is not known)."""
    result = []
    for node in nodes:
        result.append(node)
        for row in expansions.get(node.name, ()):
            result.append(dataclasses.replace(row, live_bytes=node.live_bytes))
    return result


def _module_types(gm) -> dict[str, str]:
    types: dict[str, str] = {}
    root_leaf = gm.meta.get("fxcost_root_leaf")
    for node in gm.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            types.setdefault(path, getattr(cls, "__name__", str(cls)))
        if node.op == "call_module" and not root_leaf:
            types.setdefault(str(node.target), type(gm.get_submodule(str(node.target))).__name__)
    return types


def _excluded(name: str, exclude: tuple[str, ...]) -> bool:
    return any(name.startswith(path + ".") for path in exclude)


def _kept_stand_ins(stand_ins: dict | None, exclude: tuple[str, ...]) -> list:
    return [s for path, s in (stand_ins or {}).items() if not _excluded(path + ".", exclude)]


def _weight_memory(model: nn.Module, dtype: torch.dtype | None, exclude: tuple[str, ...] = (),
                   stand_ins: dict | None = None) -> int:
    unique = {id(t): t for name, t in (*model.named_parameters(), *model.named_buffers())
              if not _excluded(name, exclude)}.values()
    return sum(
        t.numel() * (dtype.itemsize if dtype is not None and t.dtype.is_floating_point else t.element_size())
        for t in unique
    ) + sum(s.nbytes for s in _kept_stand_ins(stand_ins, exclude))  # packed weights, already at real size


def _real_weight_sizes(nodes: list, stand_ins: dict) -> list:
    """Rows of quantized modules read their real (int8) weights, not the float stand-in's."""
    if not stand_ins:
        return nodes
    real = {path: s.nbytes for path, s in stand_ins.items()}
    return [dataclasses.replace(n, weight_bytes=real[n.module_path], param_bytes=real[n.module_path] if n.params else 0)
            if n.module_path in real and n.weight_bytes else n for n in nodes]  # one weight-reading node per module


def _parameter_totals(model: nn.Module, used: set[str], exclude: tuple[str, ...] = (),
                      stand_ins: dict | None = None) -> dict[str, Any]:
    params = trainable = param_bytes = unused_count = 0
    unused: list[str] = []
    for replacement in _kept_stand_ins(stand_ins, exclude):  # packed weights are not nn.Parameters
        params += replacement.numel
        param_bytes += replacement.nbytes
    for name, p in model.named_parameters():
        if _excluded(name, exclude):
            continue
        params += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        param_bytes += p.numel() * p.element_size()
        if name not in used:
            unused.append(name)
            unused_count += p.numel()
    buffer_bytes = sum(b.numel() * b.element_size() for name, b in model.named_buffers() if not _excluded(name, exclude))
    return dict(params=params, trainable_params=trainable, param_bytes=param_bytes, buffer_bytes=buffer_bytes,
                unused_params=tuple(unused), unused_param_count=unused_count)
