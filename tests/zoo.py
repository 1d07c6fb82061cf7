"""Building zoo models on the meta device, and checking them against published figures."""

import torch
import torchvision.models as tvm
from torchvision.models import get_model, get_model_weights

CLASSIFICATION = tvm.list_models(module=tvm)

#: torchvision prints ``_ops`` in GMACs with 3 decimals: the true figure lies within half a unit
#: of the last printed digit, 0.0005 GMACs.
PRINTED_OPS_PRECISION = 500_000


def meta_model(build, *args, **kwargs) -> torch.nn.Module:
    """``build(*args, **kwargs)`` with its parameters on the meta device (no memory, no init cost)."""
    try:
        with torch.device("meta"):
            return build(*args, **kwargs)
    except Exception:  # a few constructors (regnet) cannot run under the meta device
        return build(*args, **kwargs).to("meta")


def build_kwargs(name: str, weights) -> dict:
    if name == "googlenet":
        return {"aux_logits": False}
    if name == "inception_v3":
        return {"aux_logits": True, "init_weights": False}
    if name.startswith("vit_"):
        return {"image_size": weights.meta["min_size"][0]}
    return {}


def build_on_meta(name: str, weights=None) -> torch.nn.Module:
    """A classification model as its published weights expect, on the meta device."""
    weights = weights or get_model_weights(name).DEFAULT
    return meta_model(get_model, name, **build_kwargs(name, weights))


def input_size(weights) -> int:
    return weights.transforms.keywords.get("crop_size", 224)


def on_meta(example):
    """An example input (shapes, tensors, or tuples/dicts of them) as meta tensors."""
    if isinstance(example, torch.Tensor):
        return example.to("meta")
    if isinstance(example, dict):
        return {key: on_meta(value) for key, value in example.items()}
    if isinstance(example, (tuple, list)) and all(isinstance(size, int) for size in example):
        return torch.empty(example, device="meta")
    return tuple(on_meta(item) for item in example)


def assert_published(report, name: str) -> None:
    """MACs equal torchvision's published ``_ops`` at its printed precision, params exactly."""
    published = get_model_weights(name).DEFAULT.meta
    printed = round(published["_ops"] * 1e9)
    assert abs(report.macs - printed) <= PRINTED_OPS_PRECISION, (
        f"{name}: {report.macs / 1e9:.6f} GMACs, torchvision prints {published['_ops']:.3f}")
    assert report.params == published["num_params"]
