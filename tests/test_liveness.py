"""Static peak activation memory against the measured peak of a real execution."""

import pytest
import torch
import torch.fx
import torch.nn as nn
import torchvision

from fxcost import MemoryOptions
from conftest import analyze_quiet
from memory_probe import measure_peak


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.c = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        out = self.relu(self.conv1(x))
        out = self.conv2(out)
        out += x
        return self.relu(out)


class Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(4, 8, 1)
        self.b2 = nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(4, 8, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)


class InplaceOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        y = self.fc(x)
        y.relu_()
        y += 1
        y.mul_(2)
        return torch.sigmoid(y)


class Views(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        y = self.conv(x)
        z = y.permute(0, 2, 3, 1)  # a view: keeps y's buffer alive
        w = z.reshape(z.shape[0], -1)  # not viewable: a copy
        f = torch.flatten(y, 1)  # viewable: no copy
        return self.fc(w) + self.fc(f)


class ChunkSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 24)

    def forward(self, x):
        a, b = self.fc(x).chunk(2, dim=-1)
        c, d, e = torch.split(b, [4, 4, 4], dim=-1)
        return a[:, :4] * c + d.exp(), e


class MultiOutput(nn.Module):
    def forward(self, x):
        values, indices = torch.max(x * 2, dim=1)  # indices never used: freed at once
        top = torch.topk(x, 3, dim=1)
        return values + top.values.sum(1)


HAND_MADE = [
    (Chain, (2, 3, 16, 16)),
    (Residual, (2, 8, 10, 10)),
    (Inception, (1, 4, 12, 12)),
    (InplaceOps, (4, 16)),
    (Views, (2, 3, 8, 8)),
    (ChunkSplit, (5, 12)),
    (MultiOutput, (6, 10)),
]


@pytest.mark.parametrize("factory, shape", HAND_MADE, ids=[f.__name__ for f, _ in HAND_MADE])
def test_hand_made_models_match_measured_peak(factory, shape):
    model = factory().eval()
    x = torch.randn(shape)
    report = analyze_quiet(model, x)
    measured = measure_peak(model, x)
    assert report.peak_activation_bytes == measured["node_peak"]
    assert [n.live_bytes for n in report.nodes] == measured["node_live"]
    assert report.peak_with_temporaries_bytes == measured["op_peak"]  # the peak at every aten op


def test_chain_peak_by_hand():
    report = analyze_quiet(Chain(), (2, 3, 16, 16))
    x, a, b, c = 2 * 3 * 16 * 16 * 4, 2 * 8 * 16 * 16 * 4, 2 * 16 * 8 * 8 * 4, 2 * 4 * 8 * 8 * 4
    # input held by the caller; while `b` runs, a (its input) and b (its output) are alive
    assert report.peak_activation_bytes == max(x + a, x + a + b, x + b + c)
    assert report.peak_node == "b"
    assert {buf.producer for buf in report.peak_buffers} == {"x", "a", "b"}
    freed = analyze_quiet(Chain(), (2, 3, 16, 16), memory=MemoryOptions(free_inputs=True))
    assert freed.peak_activation_bytes == max(x + a, a + b, b + c)


TORCHVISION = ["resnet18", "mobilenet_v2", "googlenet", "densenet121", "vit_b_16", "swin_t"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_match_measured_peak(name):
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, **kwargs).eval()
    size = 224 if name in ("vit_b_16", "swin_t") else 64
    x = torch.randn(1, 3, size, size)
    report = analyze_quiet(model, x)
    measured = measure_peak(model, x)
    assert report.peak_activation_bytes == measured["node_peak"]
    assert report.peak_with_temporaries_bytes == measured["op_peak"]  # the peak at every aten op
    assert report.peak_with_temporaries_bytes >= report.peak_activation_bytes


def test_peak_memory_adds_parameters_and_buffers():
    model = torchvision.models.resnet18()
    report = analyze_quiet(model, (1, 3, 64, 64))
    weights = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())
    assert report.weight_memory_bytes == weights
    assert report.peak_memory_bytes == report.peak_activation_bytes + weights


def test_deployment_dtypes_scale_activations_and_weights():
    fp32 = analyze_quiet(Chain(), (2, 3, 16, 16))
    int8 = analyze_quiet(Chain(), (2, 3, 16, 16), memory=MemoryOptions(activation_dtype=torch.int8, weight_dtype=torch.float16))
    assert int8.peak_activation_bytes * 4 == fp32.peak_activation_bytes
    params = sum(p.numel() for p in Chain().parameters())
    assert int8.weight_memory_bytes == params * 2


def two_steps(x):
    """A helper fx keeps as one call: two x-sized temporaries, a scalar result."""
    doubled = x * 2
    shifted = doubled + 1
    return shifted.mean()


torch.fx.wrap("two_steps")


def test_node_internal_temporaries_by_hand():
    class Model(nn.Module):
        def forward(self, x):
            return two_steps(x)

    report = analyze_quiet(Model(), (4, 8))
    node = report.node("two_steps")
    # `doubled` and `shifted` (4x8 float32 each) are alive together inside the call
    assert node.temporary_bytes == 2 * 4 * 8 * 4
    assert report.peak_with_temporaries_bytes == 4 * 8 * 4 + 4 + 2 * 4 * 8 * 4  # input + result + temporaries
    assert report.peak_activation_bytes == 4 * 8 * 4 + 4


def test_temporaries_do_not_depend_on_allocator_address_reuse():
    """Inside a shifted-window block, `mask[a:b, c:d] = count` lifts a Python scalar into a
    tensor that dies at once; a storage created later in the same node may get its address.
    Every analysis must still count that storage as a temporary: equal to the measured peak
    each time, whatever the allocator's state (this once depended on the tests run before)."""
    block = torchvision.models.swin_transformer.SwinTransformerBlock(16, 2, [4, 4], [2, 2]).eval()
    x = torch.randn(1, 8, 8, 16)
    measured = measure_peak(block, x)["op_peak"]
    assert [analyze_quiet(block, x).peak_with_temporaries_bytes for _ in range(10)] == [measured] * 10
