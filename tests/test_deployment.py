"""Deployment memory views, one option at a time, on a residual block with a downsample
branch (the shape of every torchvision ResNet stage), worked out by hand."""

import pytest
import torch
import torch.nn as nn
import torchvision

from fxcost import MemoryOptions
from conftest import analyze_quiet

X = 1 * 4 * 8 * 8 * 4  # the input, float32
T = 1 * 8 * 4 * 4 * 4  # every tensor after the strided convolutions


class DownsampleBlock(nn.Module):
    """torchvision's BasicBlock order: main path, then downsample(x), then the add."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.downsample = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
        self.out = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.out(y + self.downsample(x))


# live bytes while each node runs: conv1, bn1, relu, conv2, bn2, downsample.0, downsample.1, add, out
CASES = {
    "eager": (MemoryOptions(),
              [X + T, X + 2 * T, X + 2 * T, X + 2 * T, X + 2 * T, X + 2 * T, X + 3 * T, X + 3 * T, X + 2 * T]),
    # x is freed after its last reader, downsample.0
    "free_inputs": (MemoryOptions(free_inputs=True),
                    [X + T, X + 2 * T, X + 2 * T, X + 2 * T, X + 2 * T, X + 2 * T, 3 * T, 3 * T, 2 * T]),
    # each BN writes into its conv's buffer
    "fold_batchnorm": (MemoryOptions(fold_batchnorm=True),
                       [X + T, X + T, X + 2 * T, X + 2 * T, X + T, X + 2 * T, X + 2 * T, X + 3 * T, X + 2 * T]),
    # relu writes into bn1's buffer, out into the add's
    "inplace_activations": (MemoryOptions(inplace_activations=True),
                            [X + T, X + 2 * T, X + T, X + 2 * T, X + 2 * T, X + 2 * T, X + 3 * T, X + 3 * T,
                             X + T]),
    # no depthwise convolution here: nothing changes
    "inplace_depthwise": (MemoryOptions(inplace_depthwise=True),
                          [X + T, X + 2 * T, X + 2 * T, X + 2 * T, X + 2 * T, X + 2 * T, X + 3 * T, X + 3 * T,
                           X + 2 * T]),
    # with BN folded, the downsample branch (conv -> BN) accumulates into the main path's
    # buffer, which exists before it runs; the main path cannot accumulate into the
    # downsample's buffer, which does not exist yet when conv2 writes
    "fold_and_accumulate": (MemoryOptions(fold_batchnorm=True, residual_accumulate=True),
                            [X + T, X + T, X + 2 * T, X + 2 * T, X + T, X + T, X + T, X + T, X + 2 * T]),
}


@pytest.mark.parametrize("case", CASES)
def test_each_deployment_option_alone_by_hand(case):
    memory, expected = CASES[case]
    report = analyze_quiet(DownsampleBlock().eval(), (1, 4, 8, 8), memory=memory)
    working = [n.live_bytes for n in report.nodes if n.op == "call_module" or n.op == "call_function"]
    assert working == expected
    assert report.peak_activation_bytes == max([X] * (not memory.free_inputs) + expected)


def test_residual_accumulate_alone_needs_the_conv_output_itself():
    # without folding, the add's branch ends in a BN, not a conv: no accumulation
    report = analyze_quiet(DownsampleBlock().eval(), (1, 4, 8, 8), memory=MemoryOptions(residual_accumulate=True))
    assert report.peak_activation_bytes == X + 3 * T


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_deployment_view_of_torchvision_models_with_downsample_blocks(name):
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    eager = analyze_quiet(model, (1, 3, 64, 64))
    deployed = analyze_quiet(model, (1, 3, 64, 64), memory=MemoryOptions.deployment(torch.int8))
    # int8 alone divides by 4; folding, in-place ops and accumulation only take memory away
    int8 = analyze_quiet(model, (1, 3, 64, 64), memory=MemoryOptions(activation_dtype=torch.int8,
                                                                    free_inputs=True))
    assert 0 < deployed.peak_activation_bytes <= int8.peak_activation_bytes < eager.peak_activation_bytes


def working_bytes(model, shape, memory):
    report = analyze_quiet(model, shape, memory=memory)
    return [n.live_bytes for n in report.nodes if n.op in ("call_module", "call_function", "call_method")]


def test_inplace_depthwise_needs_one_channel_of_scratch_by_hand():
    # 1 -> 2 channels (1x1), a 2-channel depthwise 3x3, 2 -> 1 channel (1x1), on an 8x8 image
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False),
                          nn.Conv2d(2, 1, 1)).eval()
    x, a, b = 64 * 4, 2 * 64 * 4, 64 * 4  # float32 bytes: the input, every 2-channel tensor, the result
    eager = working_bytes(model, (1, 1, 8, 8), MemoryOptions())
    assert eager == [x + a, x + a + a, x + a + b]
    # the depthwise layer overwrites its input channel by channel: one 8x8 channel of scratch
    inplace = working_bytes(model, (1, 1, 8, 8), MemoryOptions(inplace_depthwise=True))
    assert inplace == [x + a, x + a + 64 * 4, x + a + b]
    assert all(type(size) is int for size in inplace)
    # int8 activations: every tensor and the scratch channel take 1 byte an element
    int8 = working_bytes(model, (1, 1, 8, 8), MemoryOptions(inplace_depthwise=True, activation_dtype=torch.int8))
    assert int8 == [(x + a) // 4, (x + a) // 4 + 64, (x + a + b) // 4]


def test_inplace_activations_called_as_functions_and_methods_by_hand():
    class Activations(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0, self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.c2(self.c1(nn.functional.relu(self.c0(x))).relu())

    t = 4 * 8 * 8 * 4  # every tensor, float32 (the input too)
    # c0, relu, c1, relu (a method), c2: an eager activation holds its input and its output
    assert working_bytes(Activations(), (1, 4, 8, 8), MemoryOptions()) == [2 * t, 3 * t, 3 * t, 3 * t, 3 * t]
    # in place: each activation writes over its input
    assert working_bytes(Activations(), (1, 4, 8, 8), MemoryOptions(inplace_activations=True)) == [
        2 * t, 2 * t, 3 * t, 2 * t, 3 * t]


def test_a_branch_ending_in_an_activation_accumulates_into_the_skip():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            return nn.functional.relu(self.bn(self.conv(x))) + x

    t = 4 * 8 * 8 * 4
    # conv, bn, relu, add
    assert working_bytes(Residual().eval(), (1, 4, 8, 8), MemoryOptions()) == [2 * t, 3 * t, 3 * t, 3 * t]
    # BN folded into the conv, relu in place, and the conv accumulating into x's buffer: one tensor
    deployed = MemoryOptions(fold_batchnorm=True, inplace_activations=True, residual_accumulate=True)
    assert working_bytes(Residual().eval(), (1, 4, 8, 8), deployed) == [t, t, t, t]
    # and the result returned is that same buffer, not a second one
    assert analyze_quiet(Residual().eval(), (1, 4, 8, 8), memory=deployed).peak_activation_bytes == t
