"""Shared seed 004: a plain conv block, a MobileNetV1 block and a MobileNetV2 block at batch 3,
64 -> 128 channels, 224x224 — params and Mult-Adds per layer, as torchinfo printed them.

    python examples/mobilenet_blocks.py
"""

import torch.nn as nn
from torchvision.models.mobilenetv2 import InvertedResidual

import fxcost

INPUT = (3, 64, 224, 224)


def plain_block() -> nn.Module:
    return nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True))


def mobilenet_v1_block() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=64, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
    )


def mobilenet_v2_block() -> nn.Module:
    return InvertedResidual(64, 128, stride=2, expand_ratio=2)


BLOCKS = {"plain conv block": plain_block, "MobileNetV1 block": mobilenet_v1_block,
          "MobileNetV2 block": mobilenet_v2_block}


def reports() -> dict[str, fxcost.Report]:
    return {name: fxcost.analyze(factory(), INPUT) for name, factory in BLOCKS.items()}


if __name__ == "__main__":
    for name, report in reports().items():
        print(f"=== {name}: input {list(INPUT)} ===")
        print(report.table(columns=["module", "op", "shape", "params", "macs"], raw=True))
        print()
