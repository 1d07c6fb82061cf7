"""Property-based tests: random small models from a grammar of common layers, and invariants
that must hold for every one of them. CI runs a fixed, derandomized budget of examples;
``pytest --slow`` runs many more."""


import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxcost
from memory_probe import measure_peak
from reference import torch_macs

settings.register_profile("ci", max_examples=12, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("slow", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Residual(nn.Module):
    def __init__(self, c, inplace):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.ReLU(inplace=inplace)

    def forward(self, x):
        return x + self.act(self.conv(x))


class Concat(nn.Module):
    def __init__(self, c, a, b):
        super().__init__()
        self.left = nn.Conv2d(c, a, 1)
        self.right = nn.Sequential(nn.Conv2d(c, b, 3, padding=1), nn.GELU())

    def forward(self, x):
        return torch.cat([self.left(x), self.right(x)], 1)


class TokenAttention(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)

    def forward(self, x):
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        out = self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return out.transpose(1, 2).reshape(n, c, h, w)


class ChannelLinear(nn.Module):
    def __init__(self, c, out):
        super().__init__()
        self.fc = nn.Linear(c, out)

    def forward(self, x):
        return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@st.composite
def models(draw):
    """(Sequential model, the input shape of each block, the final output shape)."""
    n = draw(st.integers(1, 2))
    c = draw(st.sampled_from([3, 4, 8]))
    h = draw(st.sampled_from([6, 8, 12]))
    blocks, shapes = [], []
    for _ in range(draw(st.integers(1, 5))):
        shapes.append((n, c, h, h))
        kind = draw(st.sampled_from(["conv", "norm", "act", "pool", "residual", "concat", "attention", "linear"]))
        if kind == "conv":
            out = draw(st.sampled_from([4, 8, 12]))
            k = draw(st.sampled_from([1, 3]))
            stride = draw(st.sampled_from([1, 2])) if h >= 4 else 1
            groups = draw(st.sampled_from([g for g in (1, 2, 4) if c % g == 0 and out % g == 0]))
            blocks.append(nn.Conv2d(c, out, k, stride, k // 2, groups=groups, bias=draw(st.booleans())))
            c, h = out, (h + 2 * (k // 2) - k) // stride + 1
        elif kind == "norm":
            choice = draw(st.sampled_from(["bn", "gn", "in"]))
            groups = 2 if c % 2 == 0 else 1
            blocks.append({"bn": nn.BatchNorm2d(c), "gn": nn.GroupNorm(groups, c), "in": nn.InstanceNorm2d(c)}[choice])
        elif kind == "act":
            blocks.append(draw(st.sampled_from([nn.ReLU(), nn.ReLU(inplace=True), nn.GELU(), nn.SiLU(), nn.Sigmoid(),
                                                nn.Hardswish()])))
        elif kind == "pool" and h >= 2:
            pool = draw(st.sampled_from(["max", "avg", "adaptive"]))
            if pool == "adaptive":
                size = draw(st.integers(1, h))
                blocks.append(nn.AdaptiveAvgPool2d(size))
                h = size
            else:
                blocks.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                h //= 2
        elif kind == "residual":
            blocks.append(Residual(c, draw(st.booleans())))
        elif kind == "concat":
            a, b = draw(st.sampled_from([2, 4])), draw(st.sampled_from([2, 4]))
            blocks.append(Concat(c, a, b))
            c = a + b
        elif kind == "attention" and c % 2 == 0:
            blocks.append(TokenAttention(c, draw(st.sampled_from([1, 2]))))
        elif kind == "linear":
            out = draw(st.sampled_from([4, 6, 8]))
            blocks.append(ChannelLinear(c, out))
            c = out
        else:
            blocks.append(nn.Identity())
    return nn.Sequential(*blocks).eval(), shapes, (n, c, h, h)


def _profile():
    import os

    return settings.get_profile("slow" if os.environ.get("FXCOST_FUZZ_SLOW") else "ci")


@settings(_profile())
@given(models())
def test_invariants(generated):
    model, shapes, out_shape = generated
    x = torch.randn(shapes[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    report = fxcost.analyze(model, x)

    # the model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == hooks
    assert not any(m.training for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())

    # every op has a rule and the shapes are right
    assert report.complete
    assert [n for n in report.nodes if n.op == "call_module" or n.op.startswith("call")][-1].output_shapes[0] == out_shape

    # MACs agree with torch's own counter on a real execution
    assert report.macs == torch_macs(model, x)

    # composition: the parts sum to the whole
    parts = [fxcost.analyze(block, shape) for block, shape in zip(model, shapes)]
    assert sum(p.macs for p in parts) == report.macs
    assert sum(p.flops for p in parts) == report.flops
    assert sum(p.params for p in parts) == report.params == sum(p.numel() for p in model.parameters())

    # liveness: bounded, and equal to the measured peak of a real execution
    measured = measure_peak(model, x)
    assert report.peak_activation_bytes == measured["node_peak"]
    assert report.peak_with_temporaries_bytes == measured["op_peak"]
    everything = sum(n.bytes_written for n in report.nodes) + x.numel() * 4
    assert report.peak_activation_bytes <= everything
    inplace = {n.name for n in report.nodes if n.op == "call_module" and getattr(
        model.get_submodule(n.module_path), "inplace", False)}
    largest = max(n.input_bytes + n.bytes_written for n in report.nodes if n.name not in inplace)
    assert report.peak_activation_bytes >= largest

    # JSON round trip
    assert fxcost.Report.from_json(report.to_json()) == report
