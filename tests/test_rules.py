"""Each rule family against numbers worked out by hand from the layer's definition,
and matmul-class MACs against torch's own FlopCounterMode on a real (small) execution."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fxcost import formulas
from conftest import analyze_quiet
from reference import torch_macs


def conv_out(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution, from the PyTorch documentation's formula."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def single(report, op_type):
    (node,) = [n for n in report.nodes if n.op_type == op_type]
    return node


# --- convolution ---------------------------------------------------------------------

def test_conv2d_grouped_dilated_strided_by_hand():
    model = nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1, dilation=2, groups=4, bias=True)
    report = analyze_quiet(model, (2, 8, 32, 32))
    side = conv_out(32, 3, stride=2, padding=1, dilation=2)
    assert side == 15
    outputs = 2 * 16 * side * side
    per_output = (8 // 4) * 3 * 3
    node = single(report, "Conv2d")
    assert node.output_shapes == ((2, 16, 15, 15),)
    assert node.macs == outputs * per_output == 129_600
    assert node.flops == 2 * outputs * per_output + outputs  # bias adds are FLOPs, not MACs
    assert node.params == 16 * (8 // 4) * 9 + 16


def test_conv_transpose2d_by_hand():
    model = nn.ConvTranspose2d(6, 4, kernel_size=3, stride=2, groups=2, bias=False)
    report = analyze_quiet(model, (1, 6, 5, 5))
    node = single(report, "ConvTranspose2d")
    # every input element is scattered through Cout/groups * k*k weights
    assert node.macs == (1 * 6 * 5 * 5) * (4 // 2) * 9 == 2_700
    assert node.output_shapes == (((1, 4, (5 - 1) * 2 + 3, (5 - 1) * 2 + 3)),)


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv1d(3, 5, 4, stride=2, padding=1), (2, 3, 20)),
        (nn.Conv3d(2, 4, (3, 3, 2), padding=(1, 0, 1), groups=2), (1, 2, 6, 7, 8)),
        (nn.ConvTranspose1d(4, 6, 3, stride=3, dilation=2), (2, 4, 9)),
        (nn.ConvTranspose3d(2, 2, 2, stride=2), (1, 2, 3, 3, 3)),
        (nn.Conv2d(4, 4, 3, groups=4, padding=1), (3, 4, 9, 9)),
        (nn.Linear(7, 3), (2, 5, 7)),
    ],
)
def test_matmul_class_modules_agree_with_torch_flop_counter(module, shape):
    report = analyze_quiet(module, shape)
    assert report.macs == torch_macs(module, torch.randn(shape))


def test_conv1d_and_conv3d_by_hand():
    report = analyze_quiet(nn.Conv1d(3, 5, 4, stride=2, padding=1, bias=False), (2, 3, 20))
    length = conv_out(20, 4, stride=2, padding=1)
    assert report.macs == 2 * 5 * length * 3 * 4
    report = analyze_quiet(nn.Conv3d(2, 4, (3, 3, 2), groups=2, bias=False), (1, 2, 6, 7, 8))
    assert report.macs == 4 * (6 - 2) * (7 - 2) * (8 - 1) * (2 // 2) * 3 * 3 * 2


def test_functional_conv_matches_module():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 2, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.weight, None, 1, 1, 1, 2)

    report = analyze_quiet(Functional(), (1, 4, 10, 10))
    assert report.macs == 8 * 10 * 10 * 2 * 9
    assert single(report, "conv2d").params == 8 * 2 * 9


# --- linear, matmul, einsum ----------------------------------------------------------------

def test_linear_with_batch_dims_by_hand():
    report = analyze_quiet(nn.Linear(64, 32), (4, 10, 64))
    node = single(report, "Linear")
    assert node.macs == 4 * 10 * 64 * 32
    assert node.flops == 2 * 4 * 10 * 64 * 32 + 4 * 10 * 32
    assert node.params == 64 * 32 + 32


class Binary(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, a, b):
        return self.fn(a, b)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((5,), (5,), 5),  # dot product
        ((3, 5), (5,), 3 * 5),  # matrix-vector
        ((5,), (5, 4), 5 * 4),  # vector-matrix
        ((3, 5), (5, 4), 3 * 5 * 4),
        ((2, 1, 3, 5), (7, 5, 4), 2 * 7 * 3 * 5 * 4),  # broadcast batch (2,1) x (7) -> (2,7)
        ((6, 3, 5), (5, 4), 6 * 3 * 5 * 4),
    ],
)
def test_matmul_broadcasting_by_hand(a, b, expected):
    report = analyze_quiet(Binary(torch.matmul), (torch.empty(a), torch.empty(b)))
    assert report.macs == expected
    assert report.flops == 2 * expected


def test_matmul_operator_and_bmm_baddbmm():
    class Model(nn.Module):
        def forward(self, a, b, c):
            x = a @ b
            y = torch.bmm(a, b)
            z = torch.baddbmm(c, a, b)
            return x + y + z

    report = analyze_quiet(Model(), (torch.empty(2, 3, 4), torch.empty(2, 4, 5), torch.empty(2, 3, 5)))
    assert report.macs == 3 * (2 * 3 * 4 * 5)
    baddbmm = single(report, "baddbmm")
    assert baddbmm.flops == 2 * 2 * 3 * 4 * 5 + 2 * 3 * 5  # plus the accumulation into c


@pytest.mark.parametrize(
    "equation, shapes, expected",
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5),
        ("bhqd,bhkd->bhqk", [(2, 4, 6, 8), (2, 4, 7, 8)], 2 * 4 * 6 * 7 * 8),
        ("i,i->", [(9,), (9,)], 9),
        ("...ij,...jk", [(3, 2, 4), (3, 4, 6)], 3 * 2 * 4 * 6),
        # left to right: (ij,jk) costs i*j*k, then (ik,kl) costs i*k*l
        ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)], 2 * 3 * 4 + 2 * 4 * 5),
    ],
)
def test_einsum_by_hand(equation, shapes, expected):
    assert formulas.einsum_macs(equation, shapes) == expected

    class Two(nn.Module):
        def forward(self, a, b):
            return torch.einsum(equation, a, b)

    class Three(nn.Module):
        def forward(self, a, b, c):
            return torch.einsum(equation, a, b, c)

    Model = Two if len(shapes) == 2 else Three

    report = analyze_quiet(Model(), tuple(torch.empty(s) for s in shapes))
    assert report.macs == expected


# --- attention -----------------------------------------------------------------------

def test_scaled_dot_product_attention_by_hand():
    class Model(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.empty(2, 4, 10, 16), torch.empty(2, 4, 12, 16), torch.empty(2, 4, 12, 8)
    report = analyze_quiet(Model(), (q, k, v))
    scores = 2 * 4 * 10 * 12
    assert report.macs == scores * 16 + scores * 8
    assert report.macs == torch_macs(Model(), torch.randn(2, 4, 10, 16), torch.randn(2, 4, 12, 16), torch.randn(2, 4, 12, 8))


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_by_hand(batch_first):
    embed, heads, length, source, batch = 32, 4, 10, 6, 3
    model = nn.MultiheadAttention(embed, heads, batch_first=batch_first)
    q_shape = (batch, length, embed) if batch_first else (length, batch, embed)
    kv_shape = (batch, source, embed) if batch_first else (source, batch, embed)
    report = analyze_quiet(model, (torch.empty(q_shape), torch.empty(kv_shape), torch.empty(kv_shape)))
    projections = batch * (length * embed * embed + 2 * source * embed * embed + length * embed * embed)
    attention = batch * heads * length * source * (embed // heads) * 2
    assert report.macs == projections + attention
    assert report.params == 4 * embed * embed + 4 * embed


def test_multihead_attention_fast_path_counts_the_same():
    """In eval with batch_first and no grad, MHA takes its fused kernel; the count must not change."""
    model = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    report = analyze_quiet(model, (x, x, x))
    assert report.macs == 2 * (4 * 5 * 16 * 16) + 2 * 2 * 5 * 5 * 8 * 2


# --- recurrent -----------------------------------------------------------------------

@pytest.mark.parametrize("kind, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_by_hand(kind, gates):
    model = kind(input_size=10, hidden_size=20, num_layers=2, bidirectional=True)
    steps, batch = 7, 3
    report = analyze_quiet(model, (steps, batch, 10))
    layer0 = gates * 20 * (10 + 20)
    layer1 = gates * 20 * (2 * 20 + 20)
    assert report.macs == (layer0 + layer1) * 2 * steps * batch


def test_lstm_cell_by_hand():
    report = analyze_quiet(nn.LSTMCell(8, 16), (5, 8))
    assert report.macs == 5 * 4 * 16 * (8 + 16)


# --- pooling, norms, elementwise ------------------------------------------------------------

def test_pooling_by_hand():
    model = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1))
    report = analyze_quiet(model, (1, 4, 16, 16))
    maxpool, avgpool, adaptive = (n for n in report.nodes if n.op.startswith("call"))
    assert maxpool.output_shapes == ((1, 4, 8, 8),)
    assert maxpool.flops == 4 * 8 * 8 * 9
    assert avgpool.flops == 4 * 4 * 4 * 4
    assert adaptive.flops == 4 * 4 * 4  # one window of 4x4 per channel
    assert report.macs == 0


def test_adaptive_pool_uses_the_widest_window():
    report = analyze_quiet(nn.AdaptiveAvgPool2d(3), (1, 1, 8, 8))
    # rows/columns of the 3 windows: [0, 3), [2, 6), [5, 8) -> the widest is 4
    assert report.flops == 3 * 3 * 4 * 4


def test_eval_dropout_moves_no_bytes():
    x = torch.randn(1, 3, 5, 4)
    assert nn.Dropout(0.2).eval()(x) is x  # torch hands the input back
    node = single(analyze_quiet(nn.Dropout(0.2), (1, 3, 5, 4)), "Dropout")
    assert (node.bytes_read, node.bytes_written, node.flops) == (0, 0, 0)


def test_norms_by_hand():
    shape = (2, 8, 5, 5)
    elements = math.prod(shape)
    model = nn.Sequential(nn.BatchNorm2d(8), nn.GroupNorm(2, 8), nn.InstanceNorm2d(8))
    eval_report = analyze_quiet(model, shape)
    bn, gn, inorm = (n for n in eval_report.nodes if n.op == "call_module")
    assert bn.flops == 2 * elements  # eval: folded scale and shift
    assert gn.flops == (5 + 2) * elements  # statistics + affine
    assert inorm.flops == 5 * elements  # InstanceNorm2d has no affine by default
    train_report = analyze_quiet(model, shape, mode="train")
    assert train_report.nodes[1].flops == (5 + 2) * elements
    ln = analyze_quiet(nn.LayerNorm(16), (3, 4, 16))
    assert ln.flops == (5 + 2) * 3 * 4 * 16
    assert ln.params == 32


def test_elementwise_softmax_and_movement():
    class Model(nn.Module):
        def forward(self, x):
            y = torch.relu(x) + 1
            z = y.softmax(-1).transpose(0, 1).reshape(-1)
            return torch.cat([z, z]).sum()

    report = analyze_quiet(Model(), (3, 4))
    flops = {n.op_type: n.flops for n in report.nodes if n.op.startswith("call")}
    assert flops == {"relu": 12, "add": 12, "softmax": 12 * 5, "transpose": 0, "reshape": 0, "cat": 0, "sum": 24}
    transpose = report.node("transpose")
    assert transpose.bytes_read == transpose.bytes_written == 0  # a view moves nothing
    reshape = report.node("reshape")  # reshape of a transposed tensor copies
    assert reshape.bytes_written == 12 * 4 and reshape.bytes_read == 12 * 4


def test_interpolate_and_embedding():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 8)

        def forward(self, idx, img):
            up = F.interpolate(img, scale_factor=2, mode="bilinear")
            near = F.interpolate(img, scale_factor=2, mode="nearest")
            return self.emb(idx), up, near

    report = analyze_quiet(Model(), (torch.zeros(2, 5, dtype=torch.long), torch.empty(1, 3, 4, 4)))
    up, near = (n for n in report.nodes if n.op_type == "interpolate")
    assert up.flops == 3 * 8 * 8 * 7  # 4 taps: 4 multiplies + 3 adds
    assert near.flops == 0
    emb = report.node("emb")
    assert emb.params == 800
    assert emb.weight_bytes == 2 * 5 * 8 * 4  # only the looked-up rows are read


def test_bilinear_by_hand():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.bilinear = nn.Bilinear(3, 4, 5)

        def forward(self, a, b):
            return self.bilinear(a, b)

    report = analyze_quiet(Model(), ((2, 3), (2, 4)))
    # each of the 2 x 5 outputs: A_k x2 (3*4 MACs), then the dot with x1 (3 MACs)
    assert report.macs == 2 * 5 * (3 * 4 + 3)
    assert report.params == 5 * 3 * 4 + 5
