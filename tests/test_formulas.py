"""The pure shape formulas of ``fxcost.formulas``, each against a count worked out by hand from
the operation's definition (the arithmetic is written out next to every number). They run in
milliseconds, so the mutation run (``python tools/mutation.py run``, see the README) leans on
them to pin every constant and operator of the formulas."""

import math
import string

import pytest

from fxcost import formulas as fm


# --- convolution, linear, matmul ---------------------------------------------------------

def test_conv_macs_regular_and_transposed():
    # regular: every output element costs Cin/groups * kernel = 2 * 3 * 3 MACs
    assert fm.conv_macs((2, 8, 32, 32), (16, 2, 3, 3), (2, 16, 15, 15)) == (2 * 16 * 15 * 15) * (2 * 3 * 3)
    # transposed: every *input* element is scattered through Cout/groups * kernel = 2 * 3 * 3 weights
    assert fm.conv_macs((1, 6, 5, 5), (6, 2, 3, 3), (1, 4, 11, 11), transposed=True) == (6 * 5 * 5) * (2 * 3 * 3)
    assert fm.conv_macs((1, 6, 5, 5), (6, 2, 3, 3), (1, 4, 11, 11), False) == (4 * 11 * 11) * (2 * 3 * 3)


def test_linear_and_matmul_macs():
    assert fm.linear_macs((4, 10, 64), 32) == 4 * 10 * 64 * 32
    assert fm.matmul_macs((2, 3, 4), (2, 3, 5)) == 2 * 3 * 5 * 4  # output elements x K


# --- einsum ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "equation, shapes, expected",
    [
        # a size-1 dim broadcasts against the other operand's size: b is 4, not 1
        ("bij,bjk->bik", [(4, 2, 3), (1, 3, 5)], 4 * 2 * 3 * 5),
        ("bij,bjk->bik", [(1, 2, 3), (4, 3, 5)], 4 * 2 * 3 * 5),
        # a size-1 dim on both sides stays 1
        ("bij,bjk->bik", [(1, 2, 3), (1, 3, 5)], 1 * 2 * 3 * 5),
        # spaces are allowed anywhere
        ("ij, jk -> ik", [(2, 3), (3, 4)], 2 * 3 * 4),
        # the explicit output keeps b after the first contraction, though the last operand has no b:
        # (bij,bjk) costs b*i*j*k, then (bik,kl) costs b*i*k*l
        ("bij,bjk,kl->bil", [(5, 2, 4), (5, 4, 6), (6, 7)], 5 * 2 * 4 * 6 + 5 * 2 * 6 * 7),
        # implicit output ("il": letters seen once): i must survive the first contraction, the
        # contracted X must not
        ("iX,Xk,kl", [(2, 3), (3, 4), (4, 5)], 2 * 3 * 4 + 2 * 4 * 5),
        # ellipses of different ranks broadcast from the right: (5, 3) against (3,)
        ("...ij,...jk->...ik", [(5, 3, 2, 4), (3, 4, 6)], 5 * 3 * 2 * 4 * 6),
        # three ellipsis dims of different sizes
        ("...ij,...jk", [(2, 3, 5, 4, 6), (2, 3, 5, 6, 7)], 2 * 3 * 5 * 4 * 6 * 7),
        # the ellipsis dims stay in the output through a contraction with an operand without them
        ("...ij,...jk,kl->...il", [(5, 3, 2, 4), (3, 4, 6), (6, 7)], 5 * 3 * 2 * 4 * 6 + 5 * 3 * 2 * 6 * 7),
    ],
)
def test_einsum_macs_by_hand(equation, shapes, expected):
    assert fm.einsum_macs(equation, shapes) == expected


def test_einsum_ellipsis_letter_is_one_the_equation_does_not_use():
    # the equation uses every lowercase letter, A to W and X: the ellipsis (size 5) must be
    # named Y, not X (size 3), or the two would merge into one index of size 5
    others = string.ascii_lowercase + string.ascii_uppercase[:23]
    equation = f"...X,X{others}->..."
    shapes = [(5, 3), (3,) + (1,) * len(others)]
    assert fm.einsum_macs(equation, shapes) == 5 * 3


@pytest.mark.parametrize("equation, shape", [("ij->ji", (3, 4)), ("ii->i", (5, 5)), ("ij->", (3, 4))])
def test_single_operand_einsum_does_no_macs(equation, shape):
    assert fm.einsum_macs(equation, [shape]) == 0


# --- attention ------------------------------------------------------------------------

def test_attention_forward_by_hand():
    q, k, v = (2, 4, 10, 16), (2, 4, 12, 16), (2, 4, 12, 8)
    scores = 2 * 4 * 10 * 12  # batch * heads * L * S
    assert fm.attention_macs(q, k, v) == scores * 16 + scores * 8  # Q K^T, then P V
    assert fm.attention_extra_flops(q, k) == scores * (1 + 5)  # scale, then softmax


def test_attention_of_three_dim_inputs_by_hand():
    # (batch, length, embed) without heads: index 2 is the embedding, not the length
    q, k, v = (3, 10, 16), (3, 12, 16), (3, 12, 8)
    scores = 3 * 10 * 12
    assert fm.attention_macs(q, k, v) == scores * (16 + 8)
    assert fm.attention_extra_flops(q, k) == scores * (1 + 5)
    assert fm.attention_backward_macs(q, k, v) == scores * (3 * 16 + 2 * 8)
    assert fm.attention_backward_extra_flops(q, k) == scores * (1 + 5 + 3)
    # five dims: (batch, groups, heads, length, embed)
    q5, k5, v5 = (2, 2, 3, 4, 6), (2, 2, 3, 5, 6), (2, 2, 3, 5, 7)
    scores5 = 2 * 2 * 3 * 4 * 5
    assert fm.attention_macs(q5, k5, v5) == scores5 * (6 + 7)
    assert fm.attention_backward_macs(q5, k5, v5) == scores5 * (3 * 6 + 2 * 7)
    assert fm.attention_extra_flops(q5, k5) == scores5 * 6


def test_attention_backward_by_hand():
    q, k, v = (3, 2, 6, 8), (3, 2, 7, 8), (3, 2, 7, 5)
    scores = 3 * 2 * 6 * 7
    # recomputed scores (E), dV = P^T dO (Ev), dP = dO V^T (Ev), dQ = dS K (E), dK = dS^T Q (E)
    assert fm.attention_backward_macs(q, k, v) == scores * (8 + 5 + 5 + 8 + 8)
    # recomputed scale and softmax (1 + 5), softmax gradient (3)
    assert fm.attention_backward_extra_flops(q, k) == scores * (1 + 5 + 3)


# --- recurrent ------------------------------------------------------------------------

def test_lstm_with_projection_macs_by_hand():
    # LSTM(10 -> hidden 20, proj 5, 2 layers, bidirectional): the recurrent input and the layer
    # output are 5 wide; every step also projects h (5 x 20)
    layer0 = 4 * 20 * (10 + 5) + 5 * 20
    layer1 = 4 * 20 * (2 * 5 + 5) + 5 * 20
    steps, batch = 7, 3
    assert fm.rnn_macs("LSTM", 10, 20, 2, 2, steps, batch, proj_size=5) == (layer0 + layer1) * 2 * steps * batch


@pytest.mark.parametrize(
    "kind, per_unit",
    [
        ("LSTM", 4 + 5),  # 4 gate activations; c = f*c + i*g (3), h = o*tanh(c) (2)
        ("GRU", 3 + 5),  # 3 gate activations; n's reset product, h = (1-z)*n + z*h (4)
        ("RNN", 1),  # one activation
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_rnn_extra_flops_by_hand(kind, per_unit, bias):
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    per_unit += 2 * gates if bias else 0  # two bias vectors added per gate
    hidden, layers, directions, steps, batch = 6, 2, 2, 5, 3
    assert fm.rnn_extra_flops(kind, hidden, layers, directions, steps, batch, bias) == (
        per_unit * hidden * layers * directions * steps * batch)


# --- pooling and interpolation -------------------------------------------------------------

def test_pool_and_adaptive_windows_by_hand():
    assert fm.pool_flops((1, 4, 8, 8), (3, 3)) == 4 * 8 * 8 * 9
    # 8 -> 3: windows [0, 3), [2, 6), [5, 8): the widest is 4
    assert [fm.adaptive_window(8, 3)] == [4]
    assert fm.adaptive_window(8, 4) == 2 and fm.adaptive_window(7, 7) == 1 and fm.adaptive_window(5, 1) == 5
    # 10 -> 4: [0, 3), [2, 5), [5, 8), [7, 10): 3; 6 -> 4: [0, 2), [1, 3), [3, 5), [4, 6): 2
    assert fm.adaptive_pool_flops((1, 2, 10, 6), (1, 2, 4, 4), 2) == (2 * 4 * 4) * (3 * 2)
    assert fm.adaptive_pool_flops((2, 3, 9), (2, 3, 2), 1) == (2 * 3 * 2) * 5  # [0, 5), [4, 9)


@pytest.mark.parametrize(
    "mode, spatial, taps",
    [
        ("linear", 1, 2), ("bilinear", 2, 4), ("trilinear", 3, 8), ("bicubic", 2, 16),
        ("nearest", 2, None), ("nearest-exact", 3, None),
    ],
)
def test_interpolate_flops_by_hand(mode, spatial, taps):
    shape = (2, 3) + (4,) * spatial
    expected = 0 if taps is None else math.prod(shape) * (2 * taps - 1)  # taps products, taps - 1 sums
    assert fm.interpolate_flops(shape, mode, spatial) == expected


# --- grouped matmul, triangular solve, sort ----------------------------------------------------

def test_grouped_mm_macs_in_each_layout_torch_documents():
    # (M, K) x (G, K, N), offs splitting M: every row meets one expert's K x N weight
    assert fm.grouped_mm_macs((12, 8), (3, 8, 5), (12, 5)) == 12 * 8 * 5
    # (G, M, K) x (K, N), offs splitting N
    assert fm.grouped_mm_macs((3, 6, 8), (8, 10), (6, 10)) == 6 * 8 * 10
    # (G, M, K) x (G, K, N): a batched matmul
    assert fm.grouped_mm_macs((3, 6, 8), (3, 8, 5), (3, 6, 5)) == 3 * 6 * 8 * 5
    # (M, K) x (K, N), offs splitting K, output (G, M, N): still M*K*N
    assert fm.grouped_mm_macs((6, 12), (12, 5), (4, 6, 5)) == 6 * 12 * 5


def test_triangular_solve_macs_by_hand():
    # substitution of one right-hand side of an n x n system: 0 + 1 + ... + (n-1) MACs
    n, rhs = 6, 4
    assert fm.triangular_solve_macs(n, (2, n, rhs)) == 2 * rhs * sum(range(n))
    assert fm.triangular_solve_macs(1, (1, 3)) == 0
    assert type(fm.triangular_solve_macs(n, (2, n, rhs))) is int  # a count, never a float


def test_sort_comparisons_by_hand():
    # rows of 8: ceil(log2 8) = 3 comparisons per element; rows of 3 (dim 0): ceil(log2 3) = 2
    assert fm.sort_comparisons((3, 8), -1) == 3 * 8 * 3
    assert fm.sort_comparisons((3, 8), 0) == 3 * 8 * 2
    assert fm.sort_comparisons((5, 2), 1) == 5 * 2 * 1
    assert fm.sort_comparisons((4, 1), 1) == 0  # rows of one element need no comparison
    assert fm.sort_comparisons((), 0) == 0  # a 0-d tensor
    assert fm.sort_comparisons((3, 0), 1) == 0  # empty rows


# --- selective scan (Mamba) -------------------------------------------------------------

def test_selective_scan_by_hand():
    batch, length, channels, state = 2, 5, 3, 4
    elements = batch * length * channels
    assert fm.selective_scan_macs(batch, length, channels, state) == elements * state
    # per state: exp(dt*A) (2), (dt*B)*x (2), h = dA*h + dBx (2), y += C*h (2);
    # per channel: skip y + D*x (2), gate y*silu(z) (2), dt bias (1), softplus (1)
    assert fm.selective_scan_flops(batch, length, channels, state) == elements * (state * 8 + 2 + 2 + 1 + 1)
    assert fm.selective_scan_flops(batch, length, channels, state, skip=False, gate=False, delta_bias=False,
                                   delta_softplus=False) == elements * state * 8
    assert fm.selective_scan_flops(batch, length, channels, state, skip=True, gate=False, delta_bias=True,
                                   delta_softplus=False) == elements * (state * 8 + 2 + 1)
    assert fm.selective_scan_flops(batch, length, channels, state, skip=False, gate=True, delta_bias=False,
                                   delta_softplus=True) == elements * (state * 8 + 2 + 1)


def test_numel():
    assert fm.numel((2, 3, 4)) == 24 and fm.numel(()) == 1
