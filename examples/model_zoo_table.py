"""Shared seed 001's model-zoo table for torchvision: params and MACs of every classification
model, and the same without the classifier head (*Params, *MACs) — the figures that matter
when a network is used as a backbone.

    python examples/model_zoo_table.py [--models resnet50 vgg16 ...] [--out zoo.md]
"""

import argparse
import warnings

import torch
import torchvision.models as tvm
from torchvision.models import get_model, get_model_weights

import fxcost

HEAD_NAMES = ("fc", "classifier", "heads", "head")


def build(name: str):
    weights = get_model_weights(name).DEFAULT
    kwargs = {}
    if name == "googlenet":
        kwargs = {"aux_logits": False, "init_weights": False}
    elif name == "inception_v3":
        kwargs = {"init_weights": False}
    elif name.startswith("vit_"):
        kwargs = {"image_size": weights.meta["min_size"][0]}
    try:
        with torch.device("meta"):
            model = get_model(name, **kwargs)
    except Exception:  # a few constructors cannot run on the meta device
        model = get_model(name, **kwargs).to("meta")
    size = weights.transforms.keywords.get("crop_size", 224)
    return model, (1, 3, size, size)


def head_of(model) -> str:
    """The classifier head: the last top-level child named like one."""
    names = [name for name, _ in model.named_children() if name in HEAD_NAMES]
    return names[-1]


def row(name: str) -> dict:
    model, shape = build(name)
    head = head_of(model)
    full = fxcost.analyze(model, shape)
    backbone = fxcost.analyze(model, shape, exclude=[head])
    return {"model": name, "input": f"{shape[-1]}x{shape[-1]}", "params": full.params, "macs": full.macs,
            "head": head, "backbone_params": backbone.params, "backbone_macs": backbone.macs}


def markdown(rows: list[dict]) -> str:
    lines = ["| Model | Input | Params(M) | MACs(G) | *Params(M) | *MACs(G) | head |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.2f} | "
                     f"{r['backbone_params'] / 1e6:.2f} | {r['backbone_macs'] / 1e9:.2f} | {r['head']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="model names (default: the whole classification zoo)")
    parser.add_argument("--out", default="model_zoo.md", help="Markdown file to write")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # constructors' init warnings
    rows = [row(name) for name in (args.models or tvm.list_models(module=tvm))]
    table = markdown(rows)
    print(table)
    print("* = without the classifier head")
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(table + "\n\\* = without the classifier head (the module named in the last column)\n")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
