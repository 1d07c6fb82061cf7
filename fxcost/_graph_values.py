"""One run of a GraphModule on fake tensors: the value of every node, which storages hold
weights, and which storages each node writes in place. What the graph passes read shapes,
dtypes, aliasing and mutation from. No real kernel runs; the model is not touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from ._compat import new_fake_mode, pytree, storage_key, tensor_version
from ._mirror import mirror_model
from ._inputs import bind_placeholders, fake_arguments, input_device, split_example_input


@dataclass
class FakeRun:
    """What one fake-tensor run of a graph saw."""

    values: dict[fx.Node, Any]
    """The value of every node (fake tensors; all kept referenced, so storages stay unique)."""
    weight_storages: set[int] = field(default_factory=set)
    """Storage identities of the parameters and buffers."""
    mutated: dict[fx.Node, set[int]] = field(default_factory=dict)
    """Storage identities each node wrote in place (its inputs' version counters moved)."""


def fake_run(gm: fx.GraphModule, example_input: Any, mode: str | None = "eval") -> FakeRun:
    """Run ``gm`` on fake tensors shaped like ``example_input``.

    Parameters stay where they are (real or ``meta``): the run uses a mirror of ``gm`` with
    fake parameters, in ``mode`` (``"eval"``, ``"train"`` or ``None`` for each module's own flag).
    """
    args, kwargs = split_example_input(example_input)
    device = input_device(args, kwargs)
    fake_mode = new_fake_mode()
    mirror = mirror_model(gm, fake_mode, device, {"eval": False, "train": True}.get(mode) if mode else None).module
    with fake_mode:
        fake_args, fake_kwargs = fake_arguments(args, kwargs, device)
    bound = bind_placeholders(gm, fake_args, fake_kwargs, type(gm).__name__)
    run = FakeRun({}, {storage_key(t) for t in (*mirror.parameters(), *mirror.buffers())})

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            inputs = [t for t in pytree.tree_leaves((self.fetch_args_kwargs_from_env(n)))
                      if isinstance(t, torch.Tensor)] if n.op not in ("placeholder", "output") else []
            before = [tensor_version(t) for t in inputs]
            run.values[n] = super().run_node(n)
            written = {storage_key(t) for t, version in zip(inputs, before) if tensor_version(t) != version}
            if written:
                run.mutated[n] = written
            return run.values[n]

    with fake_mode, torch.no_grad():
        Recorder(mirror, graph=gm.graph).run(*bound)
    return run


def fake_values(gm: fx.GraphModule, example_input: Any, mode: str | None = "eval") -> dict[fx.Node, Any]:
    """``{node: value}`` of one fake-tensor run of ``gm`` (see :func:`fake_run`)."""
    return fake_run(gm, example_input, mode).values
