"""The pipeline's promises: no real kernels, the user's model untouched, meta == real,
inputs in every accepted form, unique parameters, unknown ops never silently zero."""


import pytest
import torch
import torch.fx
import torch.nn as nn
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

import fxcost
from fxcost import Status
from conftest import analyze_quiet


class RealKernelGuard(TorchDispatchMode):
    """Records every aten op that executes on real (non-fake, non-meta) tensors."""

    def __init__(self):
        super().__init__()
        self.real_ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat = torch.utils._pytree.tree_leaves((args, kwargs or {}))
        if any(isinstance(t, torch.Tensor) and type(t) is torch.Tensor and t.device.type != "meta" for t in flat):
            self.real_ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_resnet50_runs_no_real_kernel():
    model = torchvision.models.resnet50()
    x = torch.randn(1, 3, 224, 224)
    with RealKernelGuard() as guard:
        report = fxcost.analyze(model, x)
    assert report.macs > 4e9
    assert not [op for op in guard.real_ops if "convolution" in op or "mm" in op], guard.real_ops[:10]
    assert guard.real_ops == []
    # the guard does see a real forward pass: it is able to fail
    with RealKernelGuard() as guard, torch.no_grad():
        model.layer1[0].conv1(torch.randn(1, 64, 8, 8))
    assert any("convolution" in op for op in guard.real_ops)


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [(id(p), p.device, p.dtype, p.requires_grad) for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "modules": [id(m) for m in model.modules()],
    }


def test_model_is_left_byte_for_byte_unchanged():
    model = torchvision.models.resnet50()
    model.train()
    model.layer2.eval()  # a mixed state must survive too
    before = snapshot(model)
    fxcost.analyze(model, (2, 3, 64, 64), mode="train")
    fxcost.analyze(model, (2, 3, 64, 64))
    after = snapshot(model)
    assert before["params"] == after["params"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert before["modules"] == after["modules"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key  # incl. BatchNorm running stats


class CachedBias(nn.Module):
    """Fills a cache dict in eval mode, as timm's LeViT does with its attention biases."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(4))
        self.cache = {}
        self.seen = []

    def forward(self, x):
        if not self.training:
            if "b" not in self.cache:
                self.cache["b"] = self.bias * 2
            self.seen.append(1)
            return x + self.cache["b"]
        return x + self.bias * 2


def test_caches_a_forward_fills_stay_the_users():
    """The user's dicts and lists are never filled with tracing proxies or fake tensors, and a
    second analysis gives the first one's figures."""
    model = CachedBias().eval()
    first = analyze_quiet(model, (2, 4))
    assert model.cache == {} and model.seen == []
    second = analyze_quiet(model, (2, 4))
    assert first.to_dict() == second.to_dict()
    assert first.flops == 2 * 4 + 4  # the cached bias (4 multiplies) and the add (2 x 4)


def test_meta_model_reports_exactly_like_real_weights():
    real = torchvision.models.mobilenet_v3_small()
    with torch.device("meta"):
        meta = torchvision.models.mobilenet_v3_small()
    a = analyze_quiet(real, (1, 3, 224, 224))
    b = analyze_quiet(meta, torch.empty(1, 3, 224, 224, device="meta"))
    assert a.to_dict() == b.to_dict()
    assert all(p.device.type == "meta" for p in meta.parameters())  # nothing materialised


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x, y, scale: float = 1.0):
        return self.fc(x) * scale + y


@pytest.mark.parametrize(
    "example",
    [
        (torch.randn(2, 8), torch.randn(2, 4)),
        [torch.randn(2, 8), torch.randn(2, 4)],
        {"x": torch.randn(2, 8), "y": torch.randn(2, 4)},
        ((2, 8), torch.Size([2, 4])),
        (torch.empty(2, 8, device="meta"), torch.empty(2, 4, device="meta")),
    ],
)
def test_example_input_forms(example):
    report = analyze_quiet(TwoInputs(), example)
    assert report.macs == 2 * 8 * 4
    assert [shape for _, shape, _ in report.inputs] == [(2, 8), (2, 4)]


def test_shape_shorthand_is_float32():
    report = analyze_quiet(nn.Linear(3, 3), (5, 3))
    assert report.inputs == (("input", (5, 3), "float32"),)
    report = analyze_quiet(nn.Linear(3, 3).half(), torch.empty(5, 3, dtype=torch.float16))
    assert report.nodes[1].dtype == "float16"


def test_input_errors_are_clear():
    with pytest.raises(fxcost.InvalidInputError, match="takes 3 input"):
        fxcost.analyze(TwoInputs(), (torch.randn(2, 8), torch.randn(2, 4), 1.0, 5))
    with pytest.raises(fxcost.InvalidInputError, match="no parameter 'z'"):
        fxcost.analyze(TwoInputs(), {"x": torch.randn(2, 8), "y": torch.randn(2, 4), "z": 1})
    with pytest.raises(fxcost.InvalidInputError, match="needs argument 'y'"):
        fxcost.analyze(TwoInputs(), torch.randn(2, 8))
    with pytest.raises(fxcost.InvalidModelError, match="nn.Module"):
        fxcost.analyze(lambda x: x, torch.randn(1))
    with pytest.raises(fxcost.InvalidModelError, match="TorchScript"):
        fxcost.analyze(torch.jit.script(nn.Linear(2, 2)), (1, 2))


def test_shape_error_names_the_module_and_line():
    model = torchvision.models.resnet18()
    with pytest.raises(fxcost.ShapePropagationError) as info:
        fxcost.analyze(model, (1, 4, 64, 64))  # 4 channels, conv1 expects 3
    message = str(info.value)
    assert "module 'conv1'" in message and "expected input" in message
    assert "example input" in message


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 4)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.head(x))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value
            return x
        return -x


def test_trace_error_names_module_and_source_line():
    with pytest.raises(fxcost.TraceError) as info:
        fxcost.analyze(DataDependent(), (2, 4), fallback=False)
    message = str(info.value)
    assert "module 'gate' (Gate)" in message
    assert "test_analyze.py" in message and "if x.sum() > 0" in message
    assert "concrete_args" in message and "leaf_modules=[Gate]" in message


def test_tied_parameters_count_once():
    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.body = nn.Linear(16, 16)
            self.head = nn.Linear(16, 50, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, tokens):
            return self.head(self.body(self.embed(tokens)))

    model = TiedLM()
    report = analyze_quiet(model, torch.zeros(2, 7, dtype=torch.long))
    unique = sum(p.numel() for p in model.parameters())
    assert report.params == unique == 50 * 16 + 16 * 16 + 16
    assert sum(n.params for n in report.nodes) == unique
    assert report.node("head").params == 0  # already counted at the embedding
    assert report.node("head").weight_bytes == 50 * 16 * 4  # but still read
    assert report.node("head").macs == 2 * 7 * 16 * 50


def test_unused_parameters_are_reported():
    with torch.device("meta"):
        model = torchvision.models.inception_v3(aux_logits=True, init_weights=False)
    report = analyze_quiet(model, (1, 3, 299, 299))  # eval: the aux head is skipped
    aux = sum(p.numel() for name, p in model.named_parameters() if name.startswith("AuxLogits."))
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.unused_param_count == aux > 0
    assert all(name.startswith("AuxLogits.") for name in report.unused_params)
    assert "unused params" in str(report)


def test_trainable_and_non_trainable():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    report = analyze_quiet(model, (1, 4))
    assert report.trainable_params == 10
    assert report.non_trainable_params == 20
    assert report.param_bytes == 30 * 4


class Mystery(nn.Module):
    def forward(self, x, y):
        d = torch.cdist(x, y)
        return torch.cdist(d, d) + 1


def test_unknown_ops_are_listed_marked_and_warned_once():
    with pytest.warns(fxcost.UnsupportedOpWarning, match="cdist") as record:
        report = fxcost.analyze(Mystery(), ((5, 3), (6, 3)))
    assert len([w for w in record if issubclass(w.category, fxcost.UnsupportedOpWarning)]) == 1
    assert set(report.unsupported) == {"torch.functional.cdist"}
    assert len(report.unsupported["torch.functional.cdist"]) == 2
    rows = [n for n in report.nodes if n.status is Status.UNSUPPORTED]
    assert len(rows) == 2 and not report.complete
    assert "unsupported" in str(report) and "UNSUPPORTED" in str(report)
    # the elementwise add is still counted
    assert report.node("add").flops == 5 * 5  # cdist(d, d) of a (5, 6) d is (5, 5)


def test_custom_rule_overrides_and_does_not_mutate_defaults():
    rules = {torch.cdist: lambda call: fxcost.Cost(macs=call.out.numel * call.inputs[0].shape[-1])}
    report = analyze_quiet(Mystery(), ((5, 3), (6, 3)), rules=rules)
    assert report.macs == 5 * 6 * 3 + 5 * 5 * 6
    assert torch.cdist not in fxcost.RULES


def special_attention(q, k):
    """A helper fx keeps as one call (wrapped), like torchvision's shifted_window_attention."""
    scores = torch.matmul(q, k.transpose(-2, -1)).softmax(-1)
    return torch.matmul(scores, k)


torch.fx.wrap("special_attention")


def test_wrapped_function_is_costed_from_its_inner_calls():
    class Model(nn.Module):
        def forward(self, q, k):
            return special_attention(q, k)

    report = analyze_quiet(Model(), ((2, 5, 8), (2, 7, 8)))
    node = report.node("special_attention")
    assert node.status is Status.DECOMPOSED
    assert node.macs == 2 * 5 * 7 * 8 + 2 * 5 * 7 * 8
    assert node.flops == 2 * node.macs + 2 * 5 * 7 * 5  # plus the softmax


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 3)

    def forward(self, x):
        return torch.tanh(self.proj(x))


def test_custom_leaf_module_is_costed_from_its_inner_calls():
    model = nn.Sequential(Custom(), nn.ReLU())
    report = analyze_quiet(model, (4, 6), leaf_modules=[Custom])
    (end,) = [n for n in report.nodes if n.op_type == "Custom"]
    assert end.module_path == "0" and "kept whole" in end.note and end.status is Status.NO_COMPUTE
    rows = [n for n in report.nodes if n.module_path.startswith("0") and n.status is not Status.NO_COMPUTE]
    # one graph node per call it made, each in the submodule that made it, costed by that call's rule
    assert [(n.module_path, n.op_type, n.status) for n in rows] == [("0.proj", "Linear", Status.COUNTED),
                                                                    ("0", "tanh", Status.COUNTED)]
    assert [n.name for n in rows] == ["_0_proj", "_0_tanh"]  # named by submodule and op
    block = report.total("0")
    assert block.macs == 4 * 6 * 3 and block.params == 21
    assert block.flops == 2 * 4 * 6 * 3 + 4 * 3 + 4 * 3  # + bias + tanh
    assert rows[0].params == 21 and rows[0].weight_bytes == 21 * 4
    assert rows[1].input_bytes == 4 * 3 * 4  # tanh reads what proj wrote: the calls are linked by data


def test_json_round_trip_is_lossless():
    report = analyze_quiet(torchvision.models.squeezenet1_1(), (1, 3, 64, 64))
    again = fxcost.Report.from_json(report.to_json())
    assert again == report
    assert again.macs == report.macs and str(again) == str(report)


def test_printed_report_has_table_and_human_totals():
    report = analyze_quiet(torchvision.models.resnet50(), (1, 3, 224, 224))
    text = str(report)
    assert "layer1.0.conv1" in text and "Conv2d" in text
    assert "4.09 GMACs" in text
    assert "25.6 M params" in text
    assert "MiB" in text


def test_mode_defaults_to_eval_and_keeps_the_users_flag():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    model.train()
    evaluated = analyze_quiet(model, (8, 4))
    trained = analyze_quiet(model, (8, 4), mode="train")
    assert model.training
    assert evaluated.mode == "eval" and trained.mode == "train"
    assert evaluated.node("_1").flops == 0 and trained.node("_1").flops == 2 * 8 * 4
    assert trained.node("_2").flops > evaluated.node("_2").flops


def test_value_dependent_control_flow_is_a_clear_error():
    class GateThenHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate, self.head = Gate(), nn.Linear(4, 4)

        def forward(self, x):
            return self.head(self.gate(x))

    with pytest.raises(fxcost.ShapePropagationError) as info:
        fxcost.analyze(GateThenHead(), (2, 4), strict=True)  # strict: no assumption about values
    message = str(info.value)
    assert "module 'gate'" in message and "depends on tensor values" in message
    assert "if x.sum() > 0" in message


def test_value_dependent_tail_is_counted_up_to_the_branch():
    """Strict, when only the output depends on the data-dependent part (a detector's
    post-processing), what runs before it is counted and the node is marked partial."""
    with pytest.warns(fxcost.UnsupportedOpWarning, match="lower bounds"):
        report = fxcost.analyze(DataDependent(), (2, 4), strict=True)
    (end,) = [n for n in report.nodes if n.op_type == "Gate"]
    assert end.status is Status.PARTIAL and "depends on tensor values" in end.note
    # x.sum() (8 FLOPs) and the comparison with 0 (1) ran before the branch
    ran = [(n.op_type, n.flops) for n in report.nodes if n.module_path == "gate" and n.status is Status.COUNTED]
    assert ran == [("sum", 8), ("gt", 1)]
    assert report.total("gate").flops == 2 * 4 + 1
    assert report.macs == 2 * 4 * 4 and not report.complete
    assert "partial" in report.table() and "data-dependent" in report.summary()


class ShapeLoop(nn.Module):
    """Python control flow on shapes: fx cannot trace it, a fake-tensor run can."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        if x.shape[-1] % 2 == 0:
            for _ in range(x.shape[0]):
                x = self.a(x).relu()
        return self.b(x)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(8, 8)
        self.inner = ShapeLoop()

    def forward(self, x):
        return self.inner(self.pre(x))


def test_untraceable_submodule_falls_back_and_totals_stay_complete():
    with pytest.warns(fxcost.TraceFallbackWarning, match="'inner'"):
        report = fxcost.analyze(Outer(), (3, 8))
    assert list(report.fallbacks) == ["inner"] and "control flow" in report.fallbacks["inner"]
    # pre: 3x8x8; the loop runs 3 times (batch 3): 3 x 3x8x8; b: 3x8x4
    assert report.macs == 3 * 64 + 3 * 3 * 64 + 3 * 32
    assert report.params == sum(p.numel() for p in Outer().parameters())
    inner = report.total("inner")
    assert inner.params == 72 + 36
    assert inner.flops == 2 * (3 * 3 * 64 + 3 * 32) + 3 * (3 * 8) + 3 * 4 + 3 * 3 * 8  # + biases, relu
    by_module = {g.key: g for g in report.by_module(depth=2)}
    assert by_module["inner.a"].macs == 3 * 3 * 64 and by_module["inner.b"].macs == 3 * 32  # per submodule
    assert by_module["inner.a"].module_type == "Linear"


def test_untraceable_root_falls_back_to_the_whole_model():
    with pytest.warns(fxcost.TraceFallbackWarning, match="the whole model"):
        report = fxcost.analyze(ShapeLoop(), (2, 8))
    assert list(report.fallbacks) == [""]
    assert report.macs == 2 * (2 * 64) + 2 * 32


def test_fallback_keeps_module_rules_inside():
    """A module kept whole still costs its children by their own rules (MHA, LSTM)."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.rnn = nn.GRU(16, 8, batch_first=True)

        def forward(self, x):
            if x.shape[1] > 1:
                x = self.attn(x, x, x, need_weights=False)[0]
            return self.rnn(x)[0]

    with pytest.warns(fxcost.TraceFallbackWarning):
        report = fxcost.analyze(Block(), (2, 5, 16))
    attention = 2 * (4 * 5 * 16 * 16) + 2 * 2 * 5 * 5 * 8 * 2
    gru = 2 * 5 * 3 * 8 * (16 + 8)
    assert report.macs == attention + gru


def test_peak_node_after_a_module_kept_whole_is_the_graph_node():
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = ShapeLoop()
            self.widen = nn.Linear(4, 512)

        def forward(self, x):
            return self.widen(self.inner(x))

    with pytest.warns(fxcost.TraceFallbackWarning):
        report = fxcost.analyze(Wide(), (3, 8))
    assert report.peak_node == "widen"  # the peak is while the wide output is written
    assert report.node("widen").live_bytes == report.peak_activation_bytes

