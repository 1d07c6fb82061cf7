"""Peak-minimising schedules: the reordered graph computes the same outputs, the peak predicted
for it equals a measured run, each algorithm builds the order worked out by hand, and the
search never ends above any algorithm's order."""

import logging
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

from memory_probe import measure_analysed, measure_peak

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


# --- fxcost's own graph: modules fx cannot trace --------------------------------------------

#: Module classes fxcost costs whole by a rule: one call when a real run is measured call by call.
WHOLE = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.Dropout, nn.GELU, nn.ReLU, nn.Tanh, nn.Softmax, nn.Conv1d, nn.Conv2d)


class Heads(nn.Module):
    """TwoHeads inside a module fx cannot trace (control flow on a shape): fxcost captures its
    torch calls, and the reordered graph replays them."""

    def __init__(self):
        super().__init__()
        self.f1, self.f2 = nn.Conv2d(4, 64, 1), nn.Conv2d(4, 64, 1)
        self.g1, self.g2 = nn.Conv2d(64, 4, 1), nn.Conv2d(64, 4, 1)

    def forward(self, x):
        if x.shape[-1] > 1:
            a, b = self.f1(x), self.f2(x)
            return torch.cat([self.g1(a), self.g2(b)], 1)
        return x


class WithHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = Heads()

    def forward(self, x):
        return self.heads(x)


def test_a_module_fx_cannot_trace_is_reordered_call_by_call():
    x = torch.randn(1, 4, 16, 16)  # float32: 4 channels 4,096 B, 64 channels 65,536 B, the cat 8,192 B
    model = WithHeads().eval()
    schedule = check_reordered(model, x)
    assert schedule.replayed == ("heads",) and not schedule.kept_whole
    # the captured calls in their recorded order, each tensor freed after its last use:
    # at g1, x + a + b + g1 (as TwoHeads); one 64-channel map at a time after reordering
    assert schedule.peak_before_bytes == 4_096 + 2 * 65_536 + 4_096 == 139_264
    assert schedule.peak_after_bytes == 4_096 + 4_096 + 65_536 + 4_096 == 77_824
    # as Python runs it, a and b are locals alive until forward returns: at the cat,
    # x + a + b + g1 + g2 + cat
    assert schedule.peak_as_written_bytes == 4_096 + 2 * 65_536 + 2 * 4_096 + 8_192 == 151_552
    assert measure_analysed(model, {"x": x}, ["heads"], whole=WHOLE)["node_peak"] == 151_552
    # the graph carries sizes of the example: another shape is refused, not miscomputed
    with pytest.raises(fxcost.InvalidInputError, match="built for a \\(1, 4, 16, 16\\)"):
        schedule.graph_module(torch.randn(1, 4, 8, 8))
    assert "specialised to the example input's shapes" in str(schedule)


class Gate(nn.Module):
    """Branches on a tensor value: fxcost assumes the branch, so its calls are not replayed."""

    def __init__(self):
        super().__init__()
        self.f, self.g = nn.Conv2d(4, 64, 1), nn.Conv2d(64, 4, 1)

    def forward(self, x):
        if x.sum() > 0:
            return self.g(self.f(x))
        return -x


class GatedHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = Gate()
        self.f2, self.g2 = nn.Conv2d(4, 64, 1), nn.Conv2d(64, 4, 1)

    def forward(self, x):
        b = self.f2(x)  # written first: its 64-channel map is alive while the gate runs
        a = self.gate(x)
        return torch.cat([a, self.g2(b)], 1)


def test_a_module_that_cannot_be_replayed_stays_one_call():
    torch.manual_seed(0)
    model = GatedHeads().eval()
    x = torch.rand(1, 4, 16, 16)  # positive: the branch fxcost assumes is the one taken
    with pytest.warns(fxcost.AssumptionWarning):
        schedule = schedule_for_peak(model, x)
    (kept,) = schedule.kept_whole
    assert kept.path == "gate" and "assumed" in kept.reason and schedule.replayed == ()
    assert "kept whole: 'gate' is one call" in str(schedule)
    reordered = schedule.graph_module
    with torch.no_grad():
        for sample in (x, -x):  # the real gate runs: its other branch too
            torch.testing.assert_close(reordered(sample), model(sample))
    # Inside the gate, f's 64-channel map and g's output are alive together (69,632 B).
    # Graph order: at the gate, x + b + 69,632; the gate first: at g2, x + a + b + g2.
    assert schedule.peak_before_bytes == 4_096 + 65_536 + 69_632 == 139_264
    assert schedule.peak_after_bytes == 4_096 + 4_096 + 65_536 + 4_096 == 77_824
    # a real run, measured inside the gate after every torch call as Python runs it
    assert measure_peak(reordered, x, kept_whole=["gate"], whole=WHOLE)["node_peak"] == 77_824


def test_hooks_keep_a_module_whole_and_still_fire():
    model = WithHeads().eval()
    seen = []
    handle = model.heads.f1.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    try:
        schedule = schedule_for_peak(model, torch.randn(1, 4, 16, 16))
        assert [k.path for k in schedule.kept_whole] == ["heads"] and "hooks" in schedule.kept_whole[0].reason
        seen.clear()
        with torch.no_grad():
            schedule.graph_module(torch.randn(1, 4, 16, 16))
        assert seen == [torch.Size([1, 64, 16, 16])]
    finally:
        handle.remove()


def test_analysing_a_graph_module_leaves_its_graph_alone():
    gm = fx.GraphModule(WithHeads(), _LeafHeads().trace(WithHeads()))
    names = [n.name for n in gm.graph.nodes]
    report = fxcost.analyze(gm, (1, 4, 16, 16))
    assert "heads_f1" in {n.name for n in report.nodes}  # the module's calls were spliced in...
    assert [n.name for n in gm.graph.nodes] == names and gm.graph.owning_module is gm  # ...into fxcost's copy


class _LeafHeads(fx.Tracer):
    def is_leaf_module(self, m, qualified_name):
        return qualified_name == "heads" or super().is_leaf_module(m, qualified_name)


@pytest.fixture(scope="module")
def transformers():
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers


def _ids(length=32):
    return torch.randint(0, 1000, (1, length), generator=torch.Generator().manual_seed(0))


def test_hugging_face_bert_reordered_on_fxcost_graph(transformers):
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=256, vocab_size=1000)).eval()
    ids = _ids()
    schedule = schedule_for_peak(model, {"input_ids": ids})
    assert set(schedule.replayed) == {"embeddings", "encoder.layer.0.attention.self", "encoder.layer.1.attention.self"}
    reordered = schedule.graph_module
    assert len(reordered.graph.nodes) > 60  # the captured calls are nodes, not one call of the model
    with torch.no_grad():
        got, expected = reordered(input_ids=ids), model(input_ids=ids)
    torch.testing.assert_close(got["last_hidden_state"], expected.last_hidden_state)
    torch.testing.assert_close(got["pooler_output"], expected.pooler_output)
    assert schedule.peak_after_bytes == measure_peak(reordered, ids)["node_peak"]
    assert schedule.peak_as_written_bytes == measure_analysed(
        model, {"input_ids": ids}, list(schedule.replayed), whole=WHOLE)["node_peak"]
    with pytest.raises(fxcost.InvalidInputError, match="input_ids"):
        reordered(input_ids=_ids(16))


@pytest.mark.slow
def test_hugging_face_gpt2_reordered_on_fxcost_graph(transformers):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128)).eval()
    ids = _ids()
    inputs = {"input_ids": ids, "use_cache": False}
    schedule = schedule_for_peak(model, inputs)
    assert schedule.replayed == ("transformer",) and not schedule.kept_whole
    reordered = schedule.graph_module
    with torch.no_grad():
        torch.testing.assert_close(reordered(**inputs)["logits"], model(**inputs).logits)
    assert schedule.peak_after_bytes == measure_peak(reordered, ids)["node_peak"]
    assert schedule.peak_after_bytes < schedule.peak_before_bytes  # the graph order is not the best
    with pytest.raises(fxcost.InvalidInputError, match="use_cache"):
        reordered(input_ids=ids, use_cache=True)
    # with its cache (the default), the transformer returns a cache object fxcost does not
    # rebuild: it stays one call, measured inside as Python runs it
    cached = schedule_for_peak(model, {"input_ids": ids})
    (kept,) = cached.kept_whole
    assert kept.path == "transformer" and "DynamicCache" in kept.reason
    with torch.no_grad():
        torch.testing.assert_close(cached.graph_module(input_ids=ids)["logits"], model(input_ids=ids).logits)
    assert cached.peak_after_bytes == measure_peak(cached.graph_module, ids, kept_whole=["transformer"],
                                                   whole=WHOLE)["node_peak"]


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
