"""``analyze()``: composes the stages model -> trace -> shapes -> costs -> Report."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from . import rules as _rules  # noqa: F401 - fills the default registry
from ._costing import cost_nodes, describe_target
from ._errors import InvalidInputError, InvalidModelError
from ._fake_model import fake_model
from ._inputs import bind_placeholders, fake_arguments, input_device, split_example_input
from ._liveness import MemoryOptions, compute_liveness
from ._propagate import propagate, tensor_meta
from ._records import Status
from ._registry import RULES, OpCall
from ._report import Report
from ._trace import trace

_MODES = {"eval": "eval", "train": "train", "as-is": None}


class UnsupportedOpWarning(UserWarning):
    """Some nodes have no cost rule: their MACs and FLOPs are unknown."""


def analyze(
    model: nn.Module,
    example_input: Any,
    *,
    leaf_modules: Iterable[type[nn.Module]] = (),
    concrete_args: dict[str, Any] | None = None,
    mode: str = "eval",
    rules: Mapping[Any, Callable[[OpCall], Any]] | None = None,
    memory: MemoryOptions | None = None,
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

    args, kwargs = split_example_input(example_input)
    device = input_device(args, kwargs)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode:
        fake = fake_model(model, device, _MODES[mode])
        fake_args, fake_kwargs = fake_arguments(args, kwargs, device)
    name = type(model).__name__
    gm = trace(fake.module, leaf_modules, concrete_args)
    bound = bind_placeholders(gm, fake_args, fake_kwargs, name)
    registry = RULES.merged(rules)
    propagation = propagate(gm, bound, fake_mode, lambda node: registry.lookup(describe_target(node, gm)[2]) is None)
    values = propagation.values
    nodes, used = cost_nodes(gm, propagation, registry, fake.names, name)
    memory = memory or MemoryOptions()
    weights = [t for t in (*fake.module.parameters(), *fake.module.buffers())]
    weight_storages = {tensor_meta(t).storage for t in weights}
    liveness = compute_liveness(gm, values, weight_storages, memory, [n.module_path for n in nodes],
                                propagation.internal_peaks)
    nodes = [dataclasses.replace(n, live_bytes=live, temporary_bytes=temp)
             for n, live, temp in zip(nodes, liveness.during, liveness.temporaries)]

    unsupported: dict[str, list[str]] = {}
    for node in nodes:
        if node.status is Status.UNSUPPORTED:
            unsupported.setdefault(node.target, []).append(node.name)
    report = Report(
        model=name,
        nodes=tuple(nodes),
        **_parameter_totals(model, used),
        inputs=tuple(
            (str(node.target), values[node].shape, str(values[node].dtype).replace("torch.", ""))
            for node in gm.graph.nodes
            if node.op == "placeholder" and hasattr(values.get(node), "shape")
        ),
        mode=mode,
        unsupported={target: tuple(names) for target, names in unsupported.items()},
        peak_activation_bytes=liveness.peak_bytes,
        peak_node=nodes[liveness.peak_index].name if nodes else "",
        peak_buffers=liveness.alive_at(liveness.peak_index),
        peak_with_temporaries_bytes=liveness.peak_with_temporaries,
        weight_memory_bytes=_weight_memory(model, memory.weight_dtype),
        memory=memory,
        module_types=_module_types(gm),
    )
    if unsupported:
        warnings.warn(
            f"fxcost has no cost rule for {', '.join(sorted(unsupported))} "
            f"({sum(map(len, unsupported.values()))} nodes): their MACs/FLOPs are not counted; "
            "see report.unsupported, or pass rules={target: fn} to analyze()",
            UnsupportedOpWarning,
            stacklevel=2,
        )
    return report


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


def _module_types(gm) -> dict[str, str]:
    types: dict[str, str] = {}
    root_leaf = gm.meta.get("fxcost_root_leaf")
    for node in gm.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            types.setdefault(path, getattr(cls, "__name__", str(cls)))
        if node.op == "call_module" and not root_leaf:
            types.setdefault(str(node.target), type(gm.get_submodule(str(node.target))).__name__)
    return types


def _weight_memory(model: nn.Module, dtype: torch.dtype | None) -> int:
    unique = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
    return sum(
        t.numel() * (dtype.itemsize if dtype is not None and t.dtype.is_floating_point else t.element_size())
        for t in unique
    )


def _parameter_totals(model: nn.Module, used: set[str]) -> dict[str, Any]:
    params = trainable = param_bytes = unused_count = 0
    unused: list[str] = []
    for name, p in model.named_parameters():
        params += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        param_bytes += p.numel() * p.element_size()
        if name not in used:
            unused.append(name)
            unused_count += p.numel()
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    return dict(params=params, trainable_params=trainable, param_bytes=param_bytes, buffer_bytes=buffer_bytes,
                unused_params=tuple(unused), unused_param_count=unused_count)
