"""Building torchvision classification models as their published weights expect."""

import torch
import torchvision.models as tvm
from torchvision.models import get_model, get_model_weights

CLASSIFICATION = tvm.list_models(module=tvm)


def build_kwargs(name: str, weights) -> dict:
    if name == "googlenet":
        return {"aux_logits": False}
    if name == "inception_v3":
        return {"aux_logits": True, "init_weights": False}
    if name.startswith("vit_"):
        return {"image_size": weights.meta["min_size"][0]}
    return {}


def build_on_meta(name: str, weights=None) -> torch.nn.Module:
    """The model with its parameters on the meta device (no memory, no init cost)."""
    weights = weights or get_model_weights(name).DEFAULT
    kwargs = build_kwargs(name, weights)
    try:
        with torch.device("meta"):
            return get_model(name, **kwargs)
    except Exception:  # a few constructors (regnet) cannot run under the meta device
        return get_model(name, **kwargs).to("meta")


def input_size(weights) -> int:
    return weights.transforms.keywords.get("crop_size", 224)
