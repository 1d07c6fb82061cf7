"""Direct shapes (fxcost/_direct.py) against fake-tensor propagation: the same analysis run both
ways must see the same tensors (sizes, strides, offsets, dtypes, storages and their sharing) at
every node and recorded call, the same node temporaries and lifetimes, and give the same report.

The reference is the fake-tensor run itself (``_direct.disabled()``): every op through torch's
dispatcher and meta kernels. A small sample runs by default; the torchvision classification zoo,
a timm sample and the Hugging Face sample are marked slow.
"""

from __future__ import annotations

import contextlib
import operator
import warnings
from dataclasses import dataclass
from unittest import mock

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from hypothesis import given, settings
from hypothesis import strategies as st

import fxcost
from fxcost import _analyze, _direct
from fxcost._compat import new_fake_mode
from fxcost._mirror import mirror_model
from fxcost._graph import CALLS_KEY, INTERNAL_KEY, RELEASED_KEY, RETAINED_KEY, VALUE_KEY
from fxcost._records import TensorMeta
from fxcost._storage import StorageTracker
from fxcost._values import KnownValues
from zoo import build_on_meta, input_size
from torchvision.models import get_model_weights


@dataclass
class Run:
    """What one analysis saw."""

    tensors: list
    """Every tensor propagation described, in order: sizes, strides, offset, dtype, device,
    storage (numbered by first sight) and storage bytes."""
    nodes: list
    """Per graph node: name, value, temporaries, storages released and retained, recorded calls."""
    report: dict
    """The report as JSON data."""
    direct: int
    """Ops whose outputs were computed directly."""
    ran: int
    """Ops (with a direct handler) that ran on fake tensors."""


def observe(model, example, direct: bool, **options) -> Run:
    numbers: dict[int, int] = {}

    def number(key: int) -> int:
        return numbers.setdefault(key, len(numbers))

    tensors: list = []
    counts = {"direct": 0, "ran": 0}
    meta, run_op, build_report = StorageTracker.meta, _direct.Direct._run, _analyze.build_report
    graphs = []

    def spy_meta(self, tensor):
        found = meta(self, tensor)
        tensors.append((found.shape, tensor.stride(), tensor.storage_offset(), found.dtype, str(tensor.device),
                        number(found.storage), found.storage_nbytes, tensor.requires_grad))
        return found

    def spy_run(self, *args):
        result = run_op(self, *args)
        counts["ran" if result is _direct.NOT_DONE else "direct"] += 1
        return result

    def spy_report(subject, traced, graph, *args):
        graphs.append(graph)
        return build_report(subject, traced, graph, *args)

    with mock.patch.object(StorageTracker, "meta", spy_meta), mock.patch.object(_direct.Direct, "_run", spy_run), \
            mock.patch.object(_analyze, "build_report", spy_report), \
            (contextlib.nullcontext() if direct else _direct.disabled()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = fxcost.analyze(model, example, **options)

    def canonical(value):
        if isinstance(value, TensorMeta):
            return (value.shape, value.dtype, number(value.storage), value.storage_nbytes)
        if isinstance(value, (tuple, list)):
            return type(value)(canonical(v) for v in value)
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        return value

    nodes = []
    for node in graphs[0].graph.nodes:
        calls = [(call.kind, str(call.target), canonical(call.output), call.internal,
                  [number(s) for s in call.released]) for call in node.meta.get(CALLS_KEY, ())]
        nodes.append((node.name, canonical(node.meta.get(VALUE_KEY)), node.meta.get(INTERNAL_KEY),
                      [number(s) for s in node.meta.get(RELEASED_KEY, ())],
                      [number(s) for s in node.meta.get(RETAINED_KEY, ())], calls))
    return Run(tensors, nodes, report.to_dict(), counts["direct"], counts["ran"])


def assert_same(model, example, least: float = 0.0, **options) -> Run:
    """Both ways agree; at least ``least`` of the ops with a handler were computed directly."""
    fast = observe(model, example, True, **options)
    slow = observe(model, example, False, **options)
    assert slow.direct == 0
    for index, (a, b) in enumerate(zip(fast.tensors, slow.tensors)):
        assert a == b, f"tensor #{index}: direct {a} != fake {b}"
    assert len(fast.tensors) == len(slow.tensors)
    for a, b in zip(fast.nodes, slow.nodes):
        assert a == b, f"node {b[0]}: direct {a} != fake {b}"
    assert len(fast.nodes) == len(slow.nodes)
    assert fast.report == slow.report
    assert fast.direct >= least * (fast.direct + fast.ran), (fast.direct, fast.ran)
    return fast


# --- a sample that runs by default ----------------------------------------------------------------

class Layers(nn.Module):
    """Most handlers in one small network: convolutions, norms, activations (in place and
    not), pooling, dropout, views, slicing, cat, split, attention, embedding-free heads."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.GroupNorm(2, 8), nn.SiLU(),
                                    nn.Conv2d(8, 8, 1), nn.Hardswish(), nn.Dropout(0.1))
        self.avg = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.adapt = nn.AdaptiveAvgPool2d((3, None))
        self.norm = nn.LayerNorm(16)
        self.proj = nn.Linear(16, 48)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4, 10), nn.GELU(approximate="tanh"), nn.Identity())
        self.act = nn.ReLU6()
        self.leaky = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        x = self.pool(self.stem(x))                      # [1, 8, 8, 8]
        y = self.branch(x)
        x = self.leaky(x + y * 0.5)
        x = torch.cat([x, F.relu(y)], 1)                 # [1, 16, 8, 8]
        x = self.avg(x)                                  # [1, 16, 4, 4]
        t = self.norm(x.flatten(2).transpose(1, 2))      # [1, 16, 16]
        q, k, v = self.proj(t).split(16, dim=-1)
        heads = [a.view(1, 16, 2, 8).transpose(1, 2) for a in (q, k, v)]
        o = F.scaled_dot_product_attention(*heads, is_causal=True)   # [1, 2, 16, 8]
        o = o.transpose(1, 2).contiguous().view(1, 16, 16)
        o = (o + t).softmax(-1)[:, 1:, ::2]              # [1, 15, 8]
        pooled = self.adapt(x[:, :8])                    # [1, 8, 3, 4]
        pooled = pooled.permute(0, 1, 3, 2).contiguous().mean((-1,), keepdim=False)  # [1, 8, 4]
        a, b = pooled.chunk(2, dim=1)
        out = self.head(torch.cat([a, b], 1)) - 1
        return self.act(out) / 2, o.unsqueeze(0)[None, ..., 0].expand(2, -1, -1, -1)


def test_small_network_is_computed_directly():
    run = assert_same(Layers().eval(), (1, 3, 32, 32), least=0.9)
    assert run.direct >= 40


def test_resnet18_and_mobilenet_small_inputs():
    with torch.device("meta"):
        assert_same(tvm.resnet18().eval(), (1, 3, 64, 64), least=0.95)
        assert_same(tvm.mobilenet_v2().eval(), (2, 3, 64, 64), least=0.95)


def test_small_gpt2_recorded_calls(transformers):
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64)
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(config).eval()
    assert_same(model, {"input_ids": torch.zeros(1, 16, dtype=torch.long)}, least=0.7)


class Rotary(nn.Module):
    """Rotary embeddings as Llama applies them, three times over: elementwise ops on sliced and
    transposed tensors (whose layout the first call learns from the fake kernels), a cat with
    an empty constant (as a key/value cache starts), attention with grouped heads."""

    def forward(self, q, k, cos, sin):
        outs = []
        for _ in range(3):
            half = q.shape[-1] // 2
            rotated = torch.cat((-q[..., half:], q[..., :half]), dim=-1)
            q = q * cos + rotated * sin
            keys = torch.cat([torch.tensor([]), k], dim=-2)
            attended = F.scaled_dot_product_attention(q, keys, keys, is_causal=True, enable_gqa=True)
            outs.append(attended.transpose(1, 2).neg().exp() * 2)
        return outs


def test_layouts_learned_from_the_first_call():
    q = torch.randn(1, 8, 4, 6).transpose(1, 2)  # [1, 4 heads, 8 positions, 6], laid out [1, 8, 4, 6]
    k = torch.randn(1, 2, 8, 6)
    cos, sin = torch.randn(1, 1, 8, 6), torch.randn(1, 1, 8, 6)
    run = assert_same(Rotary(), (q, k, cos, sin))
    # Per round, 13 ops with a handler: two slices, neg, cat, two muls, add, cat, attention,
    # transpose, neg, exp, mul. Three read q's permuted layout (the neg of its slice, q * cos,
    # and the add, whose first operand keeps that layout, as torch keeps a dense input's order):
    # the first round runs them on fake tensors; later rounds see the same layouts again.
    assert run.ran == 3 and run.direct == 3 * 13 - 3, (run.direct, run.ran)


def test_channels_last_convolutions_learn_their_layout():
    """Convolutions keep a channels-last input's layout (the backend the fake kernels choose
    decides it): the first of three alike runs on fake tensors, the next two see the same
    geometry (same settings, input and weight layouts) and are computed directly."""
    model = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1, groups=8) for _ in range(3)])
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    run = assert_same(model, x)
    assert (run.ran, run.direct) == (1, 2)


class Attending(nn.Module):
    """``nn.MultiheadAttention`` on its fused fast path, with and without the weights, and off
    it (a mask, then cross-attention: the module's own forward runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x, y):
        a, _ = self.attention(x, x, x, need_weights=False)
        b, w = self.attention(a, a, a)
        c, _ = self.attention(b, b, b, attn_mask=torch.zeros(5, 5, dtype=torch.bool))
        d, _ = self.attention(c, y, y, need_weights=False)
        return d, w


def test_multi_head_attention_fast_path():
    run = assert_same(Attending().eval(), ((2, 5, 16), (2, 7, 16)))
    assert (run.direct, run.ran) == (2, 2)  # the two self-attentions without masks; not the others


def test_training_and_known_values_run_every_op():
    """Nothing is skipped where a step needs autograd, nor where values are known."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    run = assert_same(model, (4, 8), training=fxcost.Training(optimizer=None))
    assert run.direct == 0

    class Masked(nn.Module):
        def forward(self, x):
            mask = torch.arange(4) + 1  # known values: computed, not skipped
            return x * 2, mask * 3

    run = assert_same(Masked(), (2, 4))
    assert run.direct == 1  # x * 2 only


def test_bad_input_gives_the_fake_run_error():
    """A handler refuses what the kernel would refuse: the fake run raises the usual error."""
    for direct in (True, False):
        with (contextlib.nullcontext() if direct else _direct.disabled()):
            with pytest.raises(fxcost.ShapePropagationError, match="expected input.*to have 3 channels"):
                fxcost.analyze(nn.Conv2d(3, 8, 3), (1, 4, 16, 16))


# --- handlers against torch's own kernels, on random arguments --------------------------------------

def both_ways(key, make_args, module=None):
    """``(direct, fake)`` outcomes of one call (of ``key``, or of ``module`` mirrored with fake
    weights): geometry of every output, whether it shares an input's storage or is an input,
    and the scope's temporaries; ``(None, None)`` where the call is not computed directly."""
    outcomes = []
    for direct in (True, False):
        mode = new_fake_mode()
        tracker = StorageTracker()
        tracker.known = KnownValues()
        runner = _direct.Direct(mode, tracker)
        layer = mirror_model(module, mode, torch.device("cpu"), False).module if module is not None else None
        with mode, tracker, torch.no_grad():
            args = make_args()
            inputs = [a for a in args if isinstance(a, torch.Tensor)]
            tracker.open_scope()
            if direct:
                out = runner.module(layer, args, {}) if layer is not None else runner.call(key, args, {})
                if out is _direct.NOT_DONE:
                    return None, None
            else:
                call = layer if layer is not None else (getattr(torch.Tensor, key) if isinstance(key, str) else key)
                out = call(*args)
            internal = tracker.close_scope()
            keys = [t.untyped_storage()._cdata for t in inputs]
            outcomes.append(([(tuple(o.shape), o.stride(), o.storage_offset(), o.dtype, o.untyped_storage().nbytes(),
                               keys.index(o.untyped_storage()._cdata) if o.untyped_storage()._cdata in keys else None,
                               next((i for i, t in enumerate(inputs) if t is o), None))
                              for o in (out if isinstance(out, tuple) else (out,))], internal))
    return outcomes


def assert_like_torch(expected, direct, fake):
    """A layer's direct outcome against torch's: left to the fake run where the kernel
    refuses the arguments (``expected`` None), else torch's output shape and equal to the fake run."""
    if expected is None:
        assert direct is None
    else:
        assert direct is not None and direct[0][0][0] == tuple(expected)
        assert direct == fake


def fake_input(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data())
def test_basic_indexing_matches_torch(shape, data):
    index = []
    for size in shape[:data.draw(st.integers(0, len(shape)))]:
        kind = data.draw(st.sampled_from(["int", "slice", "none", "ellipsis"]))
        if kind == "int":
            index.append(data.draw(st.integers(-size, size - 1)))
        elif kind == "slice":
            bound = st.one_of(st.none(), st.integers(-size - 2, size + 2))
            index.append(slice(data.draw(bound), data.draw(bound), data.draw(st.one_of(st.none(), st.integers(1, 3)))))
        elif kind == "none":
            index.append(None)
        elif Ellipsis not in index:
            index.append(Ellipsis)
    key = tuple(index)
    try:
        torch.empty(shape, device="meta")[key]
    except IndexError:  # (an integer past a dimension's end after Nones moved it)
        assert both_ways(operator.getitem, lambda: (fake_input(shape), key)) == (None, None)
        return
    direct, fake = both_ways(operator.getitem, lambda: (fake_input(shape), key))
    assert direct is not None
    assert direct == fake


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(1, 2), st.booleans(),
       st.sampled_from(["max", "avg"]))
def test_pooling_sizes_match_torch(size, kernel, stride, padding, dilation, ceil_mode, kind):
    if kind == "max":
        module = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    else:
        module = nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    try:
        expected = module(torch.empty(1, 2, size, size + 1, device="meta")).shape
    except RuntimeError:
        expected = None  # the kernel refuses these arguments: the handler must leave them to it
    assert_like_torch(expected, *both_ways(None, lambda: (fake_input((1, 2, size, size + 1)),), module=module))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.lists(st.integers(1, 4), min_size=0, max_size=4),
       st.sampled_from([operator.add, operator.mul, operator.sub, operator.truediv, operator.iadd]))
def test_broadcasting_matches_torch(a, b, op):
    b = [1 if i % 2 else size for i, size in enumerate(b)]
    direct, fake = both_ways(op, lambda: (fake_input(a), fake_input(b)))
    try:
        torch.broadcast_shapes(a, b)
    except RuntimeError:
        assert direct is None
        return
    if op is operator.iadd and tuple(torch.broadcast_shapes(a, b)) != tuple(a):
        assert direct is None
        return
    assert direct is not None and direct == fake


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 3), st.integers(1, 3), st.integers(0, 3), st.integers(1, 2), st.sampled_from([1, 2]))
def test_convolution_sizes_match_torch(size, kernel, stride, padding, dilation, groups):
    with torch.device("meta"):
        conv = nn.Conv2d(4, 6, kernel, stride, padding, dilation, groups)
        try:
            expected = conv(torch.empty(1, 4, size, size + 2)).shape
        except RuntimeError:
            expected = None  # the kernel refuses these arguments: the handler must leave them to it
    assert_like_torch(expected, *both_ways(None, lambda: (fake_input((1, 4, size, size + 2)),), module=conv))


@pytest.mark.parametrize("make", [
    lambda: fake_input((1, 6, 1, 1)).permute(0, 2, 3, 1),   # contiguous, odd strides on size-1 dims (timm heads)
    lambda: fake_input((4, 1, 6)).transpose(0, 1).transpose(0, 1)[:, :],
    lambda: fake_input((1, 4, 6)).transpose(0, 1),          # contiguous: size-1 dimension moved
    lambda: fake_input((5, 2, 6)).transpose(0, 1),          # not contiguous: the output is row-major
    lambda: fake_input((2, 6, 3)).transpose(1, 2),
])
def test_layer_norm_layouts_match_torch(make):
    direct, fake = both_ways(F.layer_norm, lambda: (make(), (make().shape[-1],)))
    assert direct is not None and direct == fake


@pytest.mark.parametrize("shape, args", [((2, 3, 4), (6, 4)), ((2, 3, 4), (-1,)), ((2, 3, 4), ((4, -1, 3),)),
                                         ((2, 3, 4), (5, -1))])
def test_view_shapes_match_torch(shape, args):
    direct, fake = both_ways("view", lambda: (fake_input(shape), *args))
    try:
        torch.empty(shape, device="meta").view(*args)
    except RuntimeError:
        assert direct is None
        return
    assert direct == fake


def test_split_chunk_and_strided_views_match_torch():
    for key, args in [("split", (2, 1)), ("chunk", (3, -1)), ("chunk", (4, 0)), ("permute", (2, 0, 1)),
                      ("transpose", (0, -1)), ("unsqueeze", (3,)), ("expand", (5, 2, 3, 4)), ("flatten", (1,)),
                      ("flatten", (0, 1))]:
        direct, fake = both_ways(key, lambda: (fake_input((2, 3, 4)), *args))
        assert direct is not None and direct == fake, key
    # views of a transposed tensor keep its strides; contiguous() copies it
    direct, fake = both_ways("contiguous", lambda: (fake_input((3, 4)).t(),))
    assert direct == fake and direct[0][0][5] is None


# --- the zoo (slow) ----------------------------------------------------------------------------

@pytest.fixture
def transformers():
    module = pytest.importorskip("transformers")
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", tvm.list_models(module=tvm))
def test_torchvision_classification(name):
    weights = get_model_weights(name).DEFAULT
    size = input_size(weights)
    assert assert_same(build_on_meta(name, weights).eval(), (1, 3, size, size)).direct > 0


TIMM_DIFFERENTIAL = ["resnet18", "efficientnet_b0", "convnext_atto", "vit_base_patch8_224", "swin_s3_tiny_224",
                     "mobilenetv3_large_075", "regnety_002", "levit_128", "mixer_b16_224", "poolformer_m36",
                     "coatnet_0_224", "maxxvitv2_nano_rw_256", "efficientformer_l1", "fastvit_t8", "hiera_base_224",
                     "ghostnet_050", "dla34", "inception_v3", "tiny_vit_5m_224", "convmixer_768_32"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_DIFFERENTIAL)
def test_timm_sample(name):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False).eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    assert_same(model, (1, *size))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "llama", "mistral", "bert", "t5", "vit", "whisper"])
def test_hugging_face_sample(name, transformers):
    from test_coverage import DECODERS, ENCODERS, IDS

    if name in DECODERS:
        build, example = DECODERS[name], {"input_ids": IDS}
    else:
        build, example = ENCODERS[name]
    with torch.device("meta"):
        model = build(transformers).eval()
    assert_same(model, example)


@pytest.mark.slow
def test_real_weights_and_meta_weights_agree():
    """A model with real weights is analysed like its meta twin, with or without direct shapes."""
    torch.manual_seed(0)
    real = tvm.resnet18().eval()
    with torch.device("meta"):
        meta = tvm.resnet18().eval()
    assert observe(real, (1, 3, 64, 64), True).report == observe(meta, (1, 3, 64, 64), True).report


@pytest.mark.parametrize("data, options", [
    ([], {}), (3.0, {}), ([[1, 2], [3, 4]], {}), ([1.5], {"dtype": torch.float16}), ([True, False, True], {}),
    ([], {"dtype": torch.bfloat16}), (7, {"dtype": torch.int8}),
])
def test_tensor_constants_match_torch(data, options):
    """``torch.tensor(data)`` inside fxcost's fake mode makes the fake tensor torch's fake mode
    makes: sizes, strides, dtype, device, storage size, and the values kept where torch keeps them."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def made(mode):
        with mode:
            t = torch.tensor(data, **options)
            doubled = t * 2  # computed from the kept values, where there are some
        constant = getattr(t, "constant", None)
        return (type(t).__name__, tuple(t.shape), t.stride(), t.dtype, t.device, t.untyped_storage().nbytes(),
                t.requires_grad, None if constant is None else constant.tolist(),
                None if getattr(doubled, "constant", None) is None else doubled.constant.tolist())

    assert made(new_fake_mode()) == made(FakeTensorMode(allow_non_fake_inputs=True))
