"""The value of every node of a GraphModule as fake tensors: what the graph passes read
shapes, dtypes and storage identities from. No real kernel runs; the model is not touched."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from ._compat import FakeTensorMode
from ._fake_model import fake_model
from ._inputs import bind_placeholders, fake_arguments, input_device, split_example_input


def fake_values(gm: fx.GraphModule, example_input: Any, mode: str | None = "eval") -> dict[fx.Node, Any]:
    """``{node: value}`` of one run of ``gm`` on fake tensors shaped like ``example_input``.

    Parameters stay where they are (real or ``meta``): the run uses a mirror of ``gm`` with
    fake parameters, in ``mode`` (``"eval"``, ``"train"`` or ``None`` for each module's own
    flag). All values stay referenced, so storage identities are unique.
    """
    args, kwargs = split_example_input(example_input)
    device = input_device(args, kwargs)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    mirror = fake_model(gm, fake_mode, device, mode).module
    with fake_mode:
        fake_args, fake_kwargs = fake_arguments(args, kwargs, device)
    bound = bind_placeholders(gm, fake_args, fake_kwargs, type(gm).__name__)
    values: dict[fx.Node, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            values[n] = super().run_node(n)
            return values[n]

    with fake_mode, torch.no_grad():
        Recorder(mirror, graph=gm.graph).run(*bound)
    return values
