"""Peak-minimising schedules: the reordered graph computes the same outputs, the peak predicted
for it equals a measured run, each algorithm builds the order worked out by hand, and the
search never ends above any algorithm's order."""

import os
import sys

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

import fxcost
from fxcost._graph_values import fake_run
from fxcost._reorder import ALGORITHMS
from fxcost._schedule_model import ScheduleModel
from fxcost._trace import trace
from fxcost.passes import reorder_for_peak, schedule_for_peak

from memory_probe import measure_peak

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from reorder import MultiHead, Program, UNet  # noqa: E402 - the benchmark's models


def check_reordered(model, x, memory=None):
    """Same outputs; fxcost's predicted peak for the new order equals a measured run of it."""
    model = model.eval()
    schedule = schedule_for_peak(model, x, memory=memory)
    reordered = schedule.graph_module
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(reordered(x), expected)
    assert schedule.peak_after_bytes == measure_peak(reordered, x)["node_peak"]
    assert schedule.peak_after_bytes == min(c.peak_bytes for c in schedule.candidates)
    assert schedule.lower_bound_bytes <= schedule.peak_after_bytes <= schedule.peak_before_bytes
    return schedule


def orders(model, x):
    gm = trace(model)
    buffers = ScheduleModel.build(gm, fake_run(gm, x))
    named = {name: build(buffers) for name, build in ALGORITHMS.items()}
    return gm, buffers, {name: [buffers.nodes[i].name for i in order] for name, order in named.items()}, named


class TwoHeads(nn.Module):
    """x -> f1 (64 ch) -> g1 (4 ch), x -> f2 (64 ch) -> g2 (4 ch), concatenated; written
    breadth-first, so both 64-channel maps are alive together."""

    def __init__(self):
        super().__init__()
        self.f1, self.f2 = nn.Conv2d(4, 64, 1), nn.Conv2d(4, 64, 1)
        self.g1, self.g2 = nn.Conv2d(64, 4, 1), nn.Conv2d(64, 4, 1)

    def forward(self, x):
        a, b = self.f1(x), self.f2(x)
        return torch.cat([self.g1(a), self.g2(b)], 1)


def test_two_heads_by_hand():
    x = torch.randn(1, 4, 16, 16)  # float32: 4 channels 4,096 B, 64 channels 65,536 B
    gm, buffers, names, _ = orders(TwoHeads(), x)
    small, big = 4 * 16 * 16 * 4, 64 * 16 * 16 * 4
    # graph order: at g1, x + f1 + f2 + g1
    assert buffers.peak(buffers.steps) == small + 2 * big + small == 139_264
    # LPMF: after f1 (size 64 ch > gap), g1 frees f1 -> preferred over f2; then f2, g2, cat
    assert names["lpmf"] == ["f1", "g1", "f2", "g2", "cat"]
    # BFS: f1 and f2 have no scheduled predecessors (priority []), g1's is [0]: f1, f2 first
    assert names["bfs"] == ["f1", "f2", "g1", "g2", "cat"]
    # DFS: cat writes and reads the least, its inputs g1, g2 tie (by index): g1's chain first
    assert names["dfs"] == ["f1", "g1", "f2", "g2", "cat"]
    schedule = check_reordered(TwoHeads(), x)
    # one 64-channel map at a time: at g2, x + g1 + f2 + g2
    assert schedule.peak_before_bytes == 139_264
    assert schedule.peak_after_bytes == small + small + big + small == 77_824
    assert schedule.inductor_peak_bytes == 77_824


class Unbalanced(nn.Module):
    """Two branches joined by an add: branch A has a large intermediate and a small output,
    branch B small intermediates and a large output; the forward computes B first."""

    def __init__(self):
        super().__init__()
        self.a1, self.a2 = nn.Conv2d(2, 100, 1), nn.Conv2d(100, 1, 1)
        self.b1, self.b2 = nn.Conv2d(2, 10, 1), nn.Conv2d(10, 50, 1)

    def forward(self, x):
        b = self.b2(self.b1(x))
        a = self.a2(self.a1(x))
        return b + a


def test_memory_aware_order_beats_inductors_on_unbalanced_branches():
    """Per pixel (8x8 map, float32: 256 B per channel), with the input (2 ch) held:
    B then A: x + b2 (50) + a1 (100) + a2 (1) at a2 = 153 channels;
    A then B (decreasing peak - output, Liu's rule): x + a1 + a2 at a2 = 103, then x + a2 + b1 + b2 = 63."""
    x = torch.randn(1, 2, 8, 8)
    _, buffers, names, built = orders(Unbalanced(), x)
    channel = 8 * 8 * 4
    peaks = {name: buffers.peak(order) for name, order in built.items()}
    assert peaks["baseline"] == peaks["lpmf"] == peaks["dfs"] == 153 * channel
    assert peaks["bfs"] >= 153 * channel
    assert names["memory-aware dfs"][:2] == ["a1", "a2"]
    assert peaks["memory-aware dfs"] == 103 * channel
    schedule = check_reordered(Unbalanced(), x)
    assert schedule.inductor_peak_bytes == 153 * channel and schedule.peak_after_bytes == 103 * channel


def test_writes_in_place_keep_their_order_with_every_reader():
    class InPlace(nn.Module):
        def forward(self, x):
            a = x + 1
            b = a * 2          # reads a before it is changed in place
            c = torch.sigmoid(x)
            a.mul_(3)          # must stay after b and before d
            d = a + c
            return b + d

    x = torch.randn(2, 8)
    _, buffers, _, built = orders(InPlace(), x)
    for name, order in built.items():
        assert buffers.is_valid(order), name
    check_reordered(InPlace(), x)
    # every algorithm's order, rebuilt, computes the same
    gm = trace(InPlace())
    for order in built.values():
        graph = fx.Graph()
        env = {}
        for i in buffers.full_order(order):
            env[buffers.nodes[i]] = graph.node_copy(buffers.nodes[i], lambda n: env[n])
        torch.testing.assert_close(fx.GraphModule(gm, graph)(x), InPlace()(x))


@pytest.mark.parametrize("build, shape", [
    (lambda: torchvision.models.googlenet(aux_logits=False, init_weights=False), (1, 3, 64, 64)),
    pytest.param(lambda: torchvision.models.densenet121(), (1, 3, 64, 64), marks=pytest.mark.slow),
    (lambda: UNet(width=8, depth=3), (1, 3, 32, 32)),
    (lambda: MultiHead(heads=3, width=8), (1, 3, 32, 32)),
    (lambda: torchvision.models.resnet18(), (1, 3, 32, 32)),  # in-place ReLUs
])
def test_real_models_reordered_and_measured(build, shape):
    torch.manual_seed(0)
    check_reordered(build(), torch.randn(shape))


@pytest.mark.slow
def test_inception_v3_reordered_and_measured():
    torch.manual_seed(0)
    check_reordered(torchvision.models.inception_v3(aux_logits=False, init_weights=False), torch.randn(1, 3, 96, 96))


def test_multi_head_written_stage_by_stage():
    x = torch.randn(1, 3, 32, 32)
    schedule = check_reordered(MultiHead(heads=3, width=8), x)
    # By hand, float32: input 3x32x32 = 12,288 B; after the stride-2 stem 16x16 maps, 1,024 B per
    # channel: stem 8 ch, each expansion and its ReLU 32 ch, each projection 8 ch.
    # Graph order peaks at the third ReLU: input + two earlier ReLU outputs + expansion + ReLU.
    assert schedule.peak_before_bytes == 12_288 + 4 * 32 * 1024
    # One head at a time: at the second ReLU, input + stem + first projection + expansion + ReLU
    # (the same at the third, where the stem is freed but two projections are held).
    assert schedule.peak_after_bytes == 12_288 + 8 * 1024 + 8 * 1024 + 2 * 32 * 1024


def test_deployment_options_are_applied_to_the_result():
    x = torch.randn(1, 4, 16, 16)
    eager = schedule_for_peak(TwoHeads(), x)
    int8 = schedule_for_peak(TwoHeads(), x, memory=fxcost.MemoryOptions(activation_dtype=torch.int8))
    assert int8.peak_after_bytes * 4 == eager.peak_after_bytes
    assert fxcost.analyze(int8.graph_module, x, memory=int8.memory).peak_activation_bytes == int8.peak_after_bytes


def test_table_and_summary():
    schedule = schedule_for_peak(TwoHeads(), torch.randn(1, 4, 16, 16))
    table = schedule.table()
    for name in ("baseline", "lpmf", "bfs", "dfs", "memory-aware dfs", "local search", "<- kept"):
        assert name in table
    assert str(schedule).startswith(table)
    assert "136 KiB -> 76 KiB" in str(schedule)


def test_graph_module_input_and_errors():
    gm = torch.fx.symbolic_trace(TwoHeads())
    assert isinstance(reorder_for_peak(gm, torch.randn(1, 4, 8, 8)), torch.fx.GraphModule)
    with pytest.raises(fxcost.InvalidModelError):
        reorder_for_peak(lambda x: x, (1, 4))


# --- random graphs -------------------------------------------------------------------------

@st.composite
def programs(draw):
    steps = []
    for index in range(draw(st.integers(3, 12))):
        kind = draw(st.sampled_from(["conv", "conv", "cat", "relu_", "scale"]))
        a, b = draw(st.integers(0, index)), draw(st.integers(0, index))
        steps.append((kind, a, b, draw(st.sampled_from([2, 8, 32]))))
    return steps


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(programs())
def test_random_graphs(steps):
    model = Program(steps)
    x = torch.randn(1, 4, 6, 6)
    gm, buffers, _, built = orders(model, x)
    for name, order in built.items():
        assert buffers.is_valid(order), name
    schedule = check_reordered(model, x)
    assert schedule.peak_after_bytes <= schedule.inductor_peak_bytes
