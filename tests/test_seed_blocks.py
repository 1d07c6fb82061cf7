"""The torchinfo summaries of shared seed 004: a plain conv block, a MobileNetV1 block and
a MobileNetV2 block at batch 3, 64 -> 128 channels, 224x224 input. The expected figures are
the seed's printed torchinfo "Param #" and "Mult-Adds" columns for Conv2d."""

import torch.nn as nn
from torchvision.models.mobilenetv2 import InvertedResidual

from conftest import analyze_quiet

INPUT = (3, 64, 224, 224)


def conv_rows(report):
    return [(n.params, n.macs) for n in report.nodes if n.op_type == "Conv2d"]


def plain_block():
    return nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True))


def mobilenet_v1_block():
    return nn.Sequential(
        nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=64, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
    )


class MobileNetV2Block(nn.Module):
    """The seed's hand-written block (expand 1x1, depthwise 3x3 stride 2, project 1x1)."""

    def __init__(self, cin=64, cout=128, expand=2, stride=2):
        super().__init__()
        hidden = cin * expand
        self.conv1x1Begin = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True))
        self.convDepthWise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True))
        self.conv1x1Last = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        out = self.conv1x1Last(self.convDepthWise(self.conv1x1Begin(x)))
        return out + x if self.use_res_connect else out


def test_plain_conv_block():
    report = analyze_quiet(plain_block(), INPUT)
    assert conv_rows(report) == [(73_728, 2_774_532_096)]
    assert report.params == 73_984  # "Total params" (BatchNorm adds 256)
    (conv,) = [n for n in report.nodes if n.module_path == "0"]
    assert conv.output_shapes == ((3, 128, 112, 112),)


def test_mobilenet_v1_block():
    report = analyze_quiet(mobilenet_v1_block(), INPUT)
    assert conv_rows(report) == [(576, 21_676_032), (8_192, 308_281_344)]
    assert report.params == 9_152


def test_mobilenet_v2_block_hand_written_and_torchvision():
    expected = [(8_192, 1_233_125_376), (1_152, 43_352_064), (16_384, 616_562_688)]
    report = analyze_quiet(MobileNetV2Block(), INPUT)
    assert conv_rows(report) == expected
    assert report.params == 26_496
    torchvision_block = InvertedResidual(64, 128, stride=2, expand_ratio=2)
    report = analyze_quiet(torchvision_block, INPUT)
    assert conv_rows(report) == expected
    assert report.params == 26_496
