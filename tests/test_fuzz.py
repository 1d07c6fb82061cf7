"""Property-based tests: random small models from a grammar of common layers. The generator
works out, by hand from the README's counting conventions, the MACs, FLOPs and parameters of
every block it builds, and each model is checked against them block by block, against torch's
FlopCounterMode and the measured peak of a real run, and for being left untouched. CI runs a
fixed, derandomized budget of examples; ``pytest --slow`` runs many more."""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import fxcost
from memory_probe import measure_peak
from reference import torch_macs

settings.register_profile("ci", max_examples=16, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("slow", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Expected:
    """MACs, FLOPs and parameters of one block, worked out by hand."""

    macs: int = 0
    flops: int = 0
    params: int = 0


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


def widest_window(size_in, size_out):
    """Widest window of adaptive pooling: window j spans [floor(j*in/out), ceil((j+1)*in/out))."""
    return max(-(-(j + 1) * size_in // size_out) - j * size_in // size_out for j in range(size_out))


# --- one block of each kind: (module, Expected, output shape) -----------------------------------

def conv(draw, n, c, h, w):
    out = draw(st.sampled_from([4, 8, 12]))
    k = draw(st.sampled_from([1, 3]))
    dilation = draw(st.sampled_from([1, 2])) if k > 1 else 1
    stride = draw(st.sampled_from([1, 2]))
    padding = draw(st.sampled_from([0, dilation * (k // 2)]))
    groups = draw(st.sampled_from([g for g in (1, 2, 4) if c % g == 0 and out % g == 0]))
    bias = draw(st.booleans())
    oh, ow = ((size + 2 * padding - dilation * (k - 1) - 1) // stride + 1 for size in (h, w))
    if min(oh, ow) < 1:
        return None
    module = nn.Conv2d(c, out, k, stride, padding, dilation, groups, bias)
    outputs = n * out * oh * ow
    macs = outputs * (c // groups) * k * k  # every output: Cin/groups x k x k weights
    return module, Expected(macs, 2 * macs + outputs * bias, out * (c // groups) * k * k + out * bias), (n, out, oh, ow)


def transposed_conv(draw, n, c, h, w):
    out = draw(st.sampled_from([4, 6, 8]))
    k = draw(st.sampled_from([2, 3]))
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2]))
    padding = draw(st.sampled_from([0, 1]))
    output_padding = draw(st.sampled_from([0, 1])) if max(stride, dilation) > 1 else 0
    groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0 and out % g == 0]))
    bias = draw(st.booleans())
    oh, ow = ((size - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1 for size in (h, w))
    if min(oh, ow) < 1:
        return None
    module = nn.ConvTranspose2d(c, out, k, stride, padding, output_padding, groups, bias, dilation)
    macs = n * c * h * w * (out // groups) * k * k  # every input scattered through Cout/groups x k x k
    flops = 2 * macs + n * out * oh * ow * bias
    return module, Expected(macs, flops, c * (out // groups) * k * k + out * bias), (n, out, oh, ow)


def norm(draw, n, c, h, w, training):
    kind = draw(st.sampled_from(["batch", "group", "instance", "layer"]))
    affine = draw(st.booleans())
    elements = n * c * h * w
    if kind == "batch":
        if training and n * h * w == 1:
            return None  # batch statistics of one value per channel: torch refuses
        # eval: statistics folded into one scale and shift (2); train: statistics (5) + affine (2)
        per_element = (5 + 2 * affine) if training else 2
        return nn.BatchNorm2d(c, affine=affine), Expected(0, per_element * elements, 2 * c * affine), (n, c, h, w)
    if kind == "group":
        groups = draw(st.sampled_from([g for g in (1, 2, 4) if c % g == 0]))
        return (nn.GroupNorm(groups, c, affine=affine), Expected(0, (5 + 2 * affine) * elements, 2 * c * affine),
                (n, c, h, w))
    if kind == "instance":
        if h * w == 1:
            return None  # one spatial value: torch refuses
        return (nn.InstanceNorm2d(c, affine=affine), Expected(0, (5 + 2 * affine) * elements, 2 * c * affine),
                (n, c, h, w))
    return (nn.LayerNorm([h, w], elementwise_affine=affine), Expected(0, (5 + 2 * affine) * elements, 2 * h * w * affine),
            (n, c, h, w))


def activation(draw, n, c, h, w):
    module = draw(st.sampled_from([nn.ReLU(), nn.ReLU(inplace=True), nn.GELU(), nn.SiLU(), nn.Sigmoid(),
                                   nn.Hardswish(), nn.Tanh(), nn.LeakyReLU(0.1)]))
    return copy.deepcopy(module), Expected(0, n * c * h * w), (n, c, h, w)


def dropout(draw, n, c, h, w, training):
    return nn.Dropout(0.25), Expected(0, 2 * n * c * h * w if training else 0), (n, c, h, w)


def pool(draw, n, c, h, w):
    kind = draw(st.sampled_from(["max", "avg", "adaptive-avg", "adaptive-max"]))
    if kind.startswith("adaptive"):
        oh = draw(st.integers(1, h))
        ow = draw(st.integers(1, w))
        module = (nn.AdaptiveAvgPool2d if kind == "adaptive-avg" else nn.AdaptiveMaxPool2d)((oh, ow))
        window = widest_window(h, oh) * widest_window(w, ow)
        return module, Expected(0, n * c * oh * ow * window), (n, c, oh, ow)
    k = draw(st.sampled_from([2, 3]))
    stride = draw(st.sampled_from([1, 2]))
    padding = draw(st.sampled_from([0, k // 2]))
    oh, ow = ((size + 2 * padding - k) // stride + 1 for size in (h, w))
    if min(oh, ow) < 1:
        return None
    module = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(k, stride, padding)
    return module, Expected(0, n * c * oh * ow * k * k), (n, c, oh, ow)  # k x k per output


def residual(draw, n, c, h, w):
    elements = n * c * h * w
    macs = elements * c * 9
    # conv (2 per MAC + bias), ReLU and the add: 1 per element each
    return Residual(c, draw(st.booleans())), Expected(macs, 2 * macs + 3 * elements, c * c * 9 + c), (n, c, h, w)


def concat(draw, n, c, h, w):
    a, b = draw(st.sampled_from([2, 4])), draw(st.sampled_from([2, 4]))
    pixels = n * h * w
    macs = pixels * a * c + pixels * b * c * 9
    flops = 2 * macs + pixels * (a + b) + pixels * b  # biases, then GELU on the right branch
    return Concat(c, a, b), Expected(macs, flops, a * c + a + b * c * 9 + b), (n, a + b, h, w)


def attention(draw, n, c, h, w):
    if c % 2:
        return None
    heads = draw(st.sampled_from([1, 2]))
    tokens = h * w
    projections = n * tokens * c * c * 4  # q, k, v and out
    scores = n * heads * tokens * tokens
    macs = projections + scores * (c // heads) * 2  # Q K^T and the weighted values
    # biases of the 3 input projections and the output one, then scaling (1) + softmax (5) per score
    flops = 2 * macs + n * tokens * c * 4 + scores * 6
    return TokenAttention(c, heads), Expected(macs, flops, 4 * c * c + 4 * c), (n, c, h, w)


def linear(draw, n, c, h, w):
    out = draw(st.sampled_from([4, 6, 8]))
    macs = n * h * w * c * out
    return ChannelLinear(c, out), Expected(macs, 2 * macs + n * h * w * out, c * out + out), (n, out, h, w)


BLOCKS = {"conv": conv, "transposed-conv": transposed_conv, "norm": norm, "activation": activation,
          "dropout": dropout, "pool": pool, "residual": residual, "concat": concat, "attention": attention,
          "linear": linear}
MODE_DEPENDENT = {"norm", "dropout"}


@dataclass
class Generated:
    model: nn.Sequential
    input_shape: tuple
    output_shape: tuple
    expected: list
    training: bool
    free_inputs: bool


def build(draw, input_shape, kinds, training, free_inputs):
    """The model made of ``kinds`` (blocks not valid at their input shape are left out), with the
    hand-computed cost of each block; ``draw`` picks every option."""
    shape, blocks, expected = input_shape, [], []
    for kind in kinds:
        built = BLOCKS[kind](draw, *shape, training) if kind in MODE_DEPENDENT else BLOCKS[kind](draw, *shape)
        if built is None or math.prod(built[2]) > 4096:
            continue  # not valid at this shape, or too large for a quick real run
        module, cost, shape = built
        blocks.append(module)
        expected.append(cost)
    if not blocks:
        blocks.append(nn.Identity())
        expected.append(Expected())
    return Generated(nn.Sequential(*blocks).eval(), input_shape, shape, expected, training, free_inputs)


@st.composite
def models(draw):
    training, free_inputs = draw(st.booleans()), draw(st.booleans())
    shape = (draw(st.integers(1, 2)), draw(st.sampled_from([3, 4, 8])), draw(st.sampled_from([5, 6, 8])),
             draw(st.sampled_from([4, 6, 7])))
    kinds = draw(st.lists(st.sampled_from(sorted(BLOCKS)), min_size=1, max_size=5))
    return build(draw, shape, kinds, training, free_inputs)


def scripted(kinds_and_choices, input_shape, training, free_inputs):
    """A fixed model: the choices each block would draw are given in order."""
    choices = [choice for _, block_choices in kinds_and_choices for choice in block_choices]
    return build(lambda strategy: choices.pop(0), input_shape, [kind for kind, _ in kinds_and_choices],
                 training, free_inputs)


#: Every normalisation in both modes, with and without affine, whatever the random draws cover.
NORMS = [("norm", ["batch", True]), ("norm", ["group", False, 2]), ("norm", ["instance", True]),
         ("norm", ["layer", True]), ("dropout", []), ("norm", ["batch", False]), ("norm", ["layer", False]),
         ("pool", ["max", 3, 2, 1]), ("norm", ["group", True, 4]), ("pool", ["avg", 2, 1, 0]),
         ("norm", ["instance", False])]


def _profile():
    import os

    return settings.get_profile("slow" if os.environ.get("FXCOST_FUZZ_SLOW") else "ci")


@settings(_profile())
@given(models())
@example(scripted(NORMS, (2, 4, 8, 7), training=False, free_inputs=False))
@example(scripted(NORMS, (2, 4, 8, 7), training=True, free_inputs=True))
def test_invariants(generated):
    model, mode = generated.model, "train" if generated.training else "eval"
    x = torch.randn(generated.input_shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    memory = fxcost.MemoryOptions(free_inputs=generated.free_inputs)
    report = fxcost.analyze(model, x, mode=mode, memory=memory)
    event(f"mode={mode}, free_inputs={generated.free_inputs}")
    for block in model:
        event(type(block).__name__)

    # the model is untouched (it stays in eval mode even when train mode is analysed)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == hooks
    assert not any(m.training for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())

    # every op has a rule and the shapes are right
    assert report.complete
    assert [n for n in report.nodes if n.op.startswith("call")][-1].output_shapes[0] == generated.output_shape

    # every block costs what the conventions say, and the whole is their sum
    for index, expected in enumerate(generated.expected):
        block = report.total(str(index))
        assert (block.macs, block.flops, block.params) == (expected.macs, expected.flops, expected.params), (
            index, model[index])
    assert report.macs == sum(e.macs for e in generated.expected)
    assert report.flops == sum(e.flops for e in generated.expected)
    assert report.params == sum(e.params for e in generated.expected) == sum(p.numel() for p in model.parameters())

    # MACs agree with torch's own counter on a real execution in the analysed mode
    assert report.macs == torch_macs(copy.deepcopy(model).train(generated.training), x)

    # liveness: equal to the measured peak of a real execution, and bounded
    measured = measure_peak(copy.deepcopy(model), x, training=generated.training, free_inputs=generated.free_inputs)
    assert report.peak_activation_bytes == measured["node_peak"]
    assert report.peak_with_temporaries_bytes == measured["op_peak"]
    everything = sum(n.bytes_written for n in report.nodes) + x.numel() * 4
    assert report.peak_activation_bytes <= everything
    def aliases(module):  # writes into its input, or returns it (eval dropout)
        return getattr(module, "inplace", False) or (isinstance(module, nn.Dropout) and not generated.training)

    aliasing = {n.name for n in report.nodes if n.op == "call_module" and aliases(model.get_submodule(n.module_path))}
    largest = max(n.input_bytes + n.bytes_written for n in report.nodes if n.name not in aliasing)
    assert report.peak_activation_bytes >= largest

    # JSON round trip
    assert fxcost.Report.from_json(report.to_json()) == report
