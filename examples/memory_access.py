"""Shared seed 003 (memory access added to yolov5's thop profiler), done with fxcost: per-layer
memory access (weights + activations read, outputs written), arithmetic intensity and the
roofline verdict per layer, for a YOLO-style CSP-Darknet backbone and neck written here.

    python examples/memory_access.py [--hardware laptop-cpu] [--size 640]
"""

import argparse

import torch
import torch.nn as nn

import fxcost


class Conv(nn.Module):
    """Conv2d -> BatchNorm2d -> SiLU ('same' padding unless given)."""

    def __init__(self, cin, cout, k=1, s=1, p=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 1), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with 3 convolutions."""

    def __init__(self, cin, cout, n=1, shortcut=True):
        super().__init__()
        hidden = cout // 2
        self.cv1, self.cv2, self.cv3 = Conv(cin, hidden), Conv(cin, hidden), Conv(2 * hidden, cout)
        self.m = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools."""

    def __init__(self, cin, cout):
        super().__init__()
        hidden = cin // 2
        self.cv1, self.cv2 = Conv(cin, hidden), Conv(hidden * 4, cout)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class CSPDarknetNeck(nn.Module):
    """A yolov5n-sized backbone (stride 32) and a top-down neck with upsample + concat."""

    def __init__(self, width=16):
        super().__init__()
        w = width
        self.stem = Conv(3, w, 6, 2, 2)
        self.stage1 = nn.Sequential(Conv(w, 2 * w, 3, 2), C3(2 * w, 2 * w, 1))
        self.stage2 = nn.Sequential(Conv(2 * w, 4 * w, 3, 2), C3(4 * w, 4 * w, 2))
        self.stage3 = nn.Sequential(Conv(4 * w, 8 * w, 3, 2), C3(8 * w, 8 * w, 3))
        self.stage4 = nn.Sequential(Conv(8 * w, 16 * w, 3, 2), C3(16 * w, 16 * w, 1), SPPF(16 * w, 16 * w))
        self.lateral = Conv(16 * w, 8 * w, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = C3(16 * w, 8 * w, 1, shortcut=False)

    def forward(self, x):
        p3 = self.stage2(self.stage1(self.stem(x)))
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        top = self.lateral(p5)
        return self.fuse(torch.cat([self.up(top), p4], 1)), top


def analyse(size: int = 640) -> fxcost.Report:
    with torch.device("meta"):
        model = CSPDarknetNeck()
    return fxcost.analyze(model, (1, 3, size, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="laptop-cpu", choices=sorted(fxcost.HARDWARE))
    parser.add_argument("--size", type=int, default=640)
    args = parser.parse_args()
    report = analyse(args.size)
    print(report.table(columns=["module", "op", "shape", "flops", "read", "written", "intensity"]))
    print()
    # The blog's definition: memory access of a layer = its weight bytes + its output bytes.
    layers = [n for n in report.nodes if n.op_type in ("Conv2d", "BatchNorm2d", "SiLU", "MaxPool2d", "Upsample")]
    blog = sum(n.weight_bytes + n.bytes_written for n in layers)
    print(f"memory access as the blog counts it (weights + outputs of its layer types): {blog / 2**20:.1f} MiB")
    print(f"memory access with inputs read too (all nodes):                             "
          f"{report.bytes_moved / 2**20:.1f} MiB")
    print()
    print(report.roofline(args.hardware).table(top=15))


if __name__ == "__main__":
    main()
