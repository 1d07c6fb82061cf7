"""Resolving a model spec such as ``torchvision:resnet50`` or ``pkg.module:make_model``."""

from __future__ import annotations

import importlib
import re
from typing import Any

import torch
from torch import nn

from ._errors import InvalidInputError, InvalidModelError

_SHAPE = re.compile(r"^\d+(x\d+)*$")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``; every size must be a positive integer."""
    text = text.strip().lower().replace("×", "x").replace(",", "x")
    if not _SHAPE.match(text):
        raise InvalidInputError(f"bad input shape {text!r}: write sizes separated by 'x', e.g. 1x3x224x224")
    shape = tuple(int(part) for part in text.split("x"))
    if 0 in shape:
        raise InvalidInputError(f"bad input shape {text!r}: every size must be at least 1")
    return shape


def torchvision_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A torchvision model built on the meta device, and its weights' default input shape."""
    import torchvision.models as tvm

    try:
        builder = tvm.get_model_builder(name)
    except ValueError:
        close = [n for n in tvm.list_models() if name.lower() in n or n in name.lower()][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidModelError(f"torchvision has no model {name!r}{hint}; see torchvision.models.list_models()") from None
    kwargs: dict[str, Any] = {}
    size = 224
    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):
        weights = None
    if weights is not None:
        size = getattr(weights.transforms, "keywords", {}).get("crop_size", size)
        if name.startswith("vit_"):
            kwargs["image_size"] = weights.meta["min_size"][0]
    if name == "googlenet":
        kwargs["aux_logits"] = False
    if name == "inception_v3":
        kwargs["init_weights"] = False
    try:
        with torch.device("meta"):
            model = builder(**kwargs)
    except Exception:  # some constructors cannot run under the meta device
        model = builder(**kwargs).to("meta")
    if isinstance(size, (tuple, list)):
        size = size[0]
    return model, (1, 3, int(size), int(size))


def load_model(spec: str) -> tuple[nn.Module, tuple[int, ...] | None]:
    """Resolve ``torchvision:NAME`` or ``package.module:callable`` to a module (and a default shape)."""
    source, sep, name = spec.partition(":")
    if not sep or not name:
        raise InvalidModelError(f"model {spec!r} must look like torchvision:resnet50 or package.module:callable")
    if source == "torchvision":
        return torchvision_model(name)
    try:
        module = importlib.import_module(source)
    except ImportError as error:
        raise InvalidModelError(f"cannot import {source!r} for model {spec!r}: {error}") from None
    factory = module
    for part in name.split("."):
        if not hasattr(factory, part):
            raise InvalidModelError(f"module {source!r} has no attribute {name!r}")
        factory = getattr(factory, part)
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise InvalidModelError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model, None
