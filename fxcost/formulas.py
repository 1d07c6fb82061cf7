"""Cost formulas: pure functions of shapes. Counts are for one call over the whole batch.

Conventions
-----------
* A MAC is one multiply-accumulate of matmul-class work: convolution, linear, matmul and
  its batched and grouped forms, einsum contractions, attention score and value products,
  RNN gates, triangular solves, a selective scan's output product ``C·h``.
  Bias additions are not MACs.
* FLOPs count every floating-point operation: 2 per MAC, plus the per-element counts below.
* Data movement (views, reshapes, concatenation, indexing, padding) is 0 FLOPs.
"""

from __future__ import annotations

import math
import string
from typing import Sequence

Shape = Sequence[int]

#: FLOPs per element of a normalisation whose statistics are computed on the fly
#: (mean: 1, variance: 2, normalise: 2). The affine scale and shift add 2 more.
NORM_STATS_FLOPS = 5
#: FLOPs per element of an affine transform ``x * scale + shift``.
AFFINE_FLOPS = 2
#: FLOPs per element of softmax / log-softmax (max, subtract, exp, sum, divide).
SOFTMAX_FLOPS = 5


def numel(shape: Shape) -> int:
    """Number of elements of a tensor of ``shape``."""
    return math.prod(shape)


def conv_macs(input_shape: Shape, weight_shape: Shape, output_shape: Shape, transposed: bool = False) -> int:
    """MACs of an N-d convolution, any groups, stride, padding or dilation.

    A regular convolution computes ``Cin/groups * prod(kernel)`` MACs for every output
    element; its weight is ``(Cout, Cin/groups, *kernel)``. A transposed convolution
    scatters every *input* element through ``Cout/groups * prod(kernel)`` weights; its
    weight is ``(Cin, Cout/groups, *kernel)``.
    """
    per_element = numel(weight_shape[1:])
    return numel(input_shape if transposed else output_shape) * per_element


def linear_macs(input_shape: Shape, out_features: int) -> int:
    """MACs of ``x @ W.T`` for ``x`` of ``input_shape`` (any leading batch dims)."""
    return numel(input_shape) * out_features


def matmul_macs(a_shape: Shape, output_shape: Shape) -> int:
    """MACs of ``torch.matmul``/``mm``/``bmm`` with broadcasting: output elements x K."""
    return numel(output_shape) * a_shape[-1]


def einsum_macs(equation: str, operand_shapes: Sequence[Shape]) -> int:
    """MACs of ``torch.einsum(equation, *operands)``, contracted left to right.

    Each pairwise contraction costs the product of the sizes of every index of the two
    operands. A single-operand einsum (transpose, trace, sum) does no MACs.
    """
    inputs, output = _parse_einsum(equation, operand_shapes)
    sizes: dict[str, int] = {}
    for letters, shape in zip(inputs, operand_shapes):
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    if len(inputs) < 2:
        return 0
    total = 0
    current = inputs[0]
    for position in range(1, len(inputs)):
        other = inputs[position]
        union = set(current) | set(other)
        total += math.prod(sizes[letter] for letter in union)
        later = set(output).union(*inputs[position + 1:])
        current = "".join(letter for letter in dict.fromkeys(current + other) if letter in later)
    return total


def _parse_einsum(equation: str, shapes: Sequence[Shape]) -> tuple[list[str], str]:
    equation = equation.replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    used = set(equation) - set(".,->")
    spare = [letter for letter in string.ascii_letters if letter not in used]
    ellipsis_rank = max((len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t), default=0)
    ellipsis = "".join(spare[:ellipsis_rank])
    expanded = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            rank = len(shape) - (len(term) - 3)
            term = term.replace("...", ellipsis[ellipsis_rank - rank:])
        expanded.append(term)
    if "->" not in equation:
        counts = {}
        for term in expanded:
            for letter in term:
                counts[letter] = counts.get(letter, 0) + 1
        rhs = ellipsis + "".join(sorted(l for l, c in counts.items() if c == 1 and l not in ellipsis))
    else:
        rhs = rhs.replace("...", ellipsis)
    return expanded, rhs


def attention_macs(query_shape: Shape, key_shape: Shape, value_shape: Shape) -> int:
    """MACs of ``softmax(Q K^T) V``: ``B*L*S*E`` for the scores plus ``B*L*S*Ev`` for the values.

    ``B`` is the product of the query's leading dims (batch and heads; grouped-query
    attention shares key/value heads but still computes every query head).
    """
    batch = numel(query_shape[:-2])
    length, embed = query_shape[-2], query_shape[-1]
    source = key_shape[-2]
    return batch * length * source * (embed + value_shape[-1])


def attention_extra_flops(query_shape: Shape, key_shape: Shape) -> int:
    """Non-MAC FLOPs of attention: scaling the scores (1) and softmax (5) per score element."""
    scores = numel(query_shape[:-2]) * query_shape[-2] * key_shape[-2]
    return scores * (1 + SOFTMAX_FLOPS)


def rnn_macs(kind: str, input_size: int, hidden_size: int, num_layers: int, directions: int, steps: int, batch: int, proj_size: int = 0) -> int:
    """MACs of a multi-layer RNN/LSTM/GRU over ``steps`` time steps.

    Every step of every layer and direction multiplies the input by ``W_ih``
    (``gates*H x I``) and the previous hidden state by ``W_hh`` (``gates*H x H``), with
    ``gates`` = 4 (LSTM), 3 (GRU) or 1 (RNN). An LSTM with ``proj_size`` also projects
    ``h`` (``P x H``) and its recurrent input is ``P`` wide.
    """
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    out = proj_size or hidden_size
    total = 0
    for layer in range(num_layers):
        layer_in = input_size if layer == 0 else out * directions
        per_step = gates * hidden_size * (layer_in + out)
        if proj_size:
            per_step += proj_size * hidden_size
        total += per_step * directions
    return total * steps * batch


def rnn_extra_flops(kind: str, hidden_size: int, num_layers: int, directions: int, steps: int, batch: int, bias: bool) -> int:
    """Non-MAC FLOPs of an RNN: bias adds, gate activations and state updates per step.

    Per hidden unit and step: LSTM 4 gate activations + 5 cell/state ops (``c = f*c + i*g``,
    ``h = o*tanh(c)``); GRU 3 activations + 5 state ops; RNN 1 activation. Bias: 2 adds per gate.
    """
    gates, state = {"LSTM": (4, 5), "GRU": (3, 5), "RNN": (1, 0)}[kind]
    per_unit = gates + state + (2 * gates if bias else 0)
    return per_unit * hidden_size * num_layers * directions * steps * batch


def pool_flops(output_shape: Shape, kernel_size: Sequence[int]) -> int:
    """FLOPs of max or average pooling: ``prod(kernel)`` per output element
    (comparisons for max; additions plus the division for average)."""
    return numel(output_shape) * math.prod(kernel_size)


def adaptive_window(size_in: int, size_out: int) -> int:
    """The widest window of adaptive pooling from ``size_in`` to ``size_out``: window ``j``
    spans ``[floor(j*in/out), ceil((j+1)*in/out))``, one wider than ``ceil(in/out)`` where
    ``out`` does not divide ``in`` (8 -> 3: windows of 3, 4 and 3)."""
    return max(-(-(j + 1) * size_in // size_out) - j * size_in // size_out for j in range(size_out))


def adaptive_pool_flops(input_shape: Shape, output_shape: Shape, spatial: int) -> int:
    """FLOPs of adaptive max/average pooling over the last ``spatial`` dims (and of
    ``interpolate(mode="area")``): the widest window (:func:`adaptive_window`) per output element."""
    window = [adaptive_window(size_in, size_out)
              for size_in, size_out in zip(input_shape[-spatial:], output_shape[-spatial:])]
    return pool_flops(output_shape, window)


def interpolate_flops(output_shape: Shape, mode: str, spatial_dims: int) -> int:
    """FLOPs of ``F.interpolate``: nearest moves data (0); (bi/tri)linear blends ``2^d``
    neighbours and bicubic ``4^d``, each ``2 * taps - 1`` FLOPs per output element."""
    if mode.startswith("nearest"):
        return 0
    taps = 4**spatial_dims if mode == "bicubic" else 2**spatial_dims
    return numel(output_shape) * (2 * taps - 1)


def grouped_mm_macs(a_shape: Shape, b_shape: Shape, output_shape: Shape) -> int:
    """MACs of ``torch._grouped_mm`` / ``F.grouped_mm``: one matmul per group, in the four
    operand layouts torch documents:

    * ``(M, K) x (G, K, N)``, ``offs`` splitting M (the Mixture-of-Experts forward: tokens
      sorted by expert, one weight per expert): ``M*K*N``;
    * ``(G, M, K) x (K, N)``, ``offs`` splitting N: ``M*K*N``;
    * ``(G, M, K) x (G, K, N)``, no ``offs``: a batched matmul, ``G*M*K*N``;
    * ``(M, K) x (K, N)``, ``offs`` splitting K (a weight gradient), output ``(G, M, N)``:
      ``M*K*N``.

    The offsets are data, the group sizes are not known; every row (column) of the split
    operand is counted as belonging to a group. That is exact when ``offs[-1]`` is the split
    size (a Mixture-of-Experts layer routes all ``T * top_k`` token-expert pairs) and an upper
    bound when the kernel skips rows past ``offs[-1]`` (expert-parallel sentinels).
    """
    if len(a_shape) == 2 and len(b_shape) == 2:
        return a_shape[0] * a_shape[1] * b_shape[1]
    return numel(output_shape) * a_shape[-1]


def triangular_solve_macs(size: int, output_shape: Shape) -> int:
    """MACs of solving ``A X = B`` (or ``X A = B``) for ``X`` with ``A`` an ``size x size``
    triangular matrix: substitution does ``size * (size - 1) / 2`` multiply-accumulates per
    right-hand side of ``size`` elements, so ``(size - 1) / 2`` per output element."""
    return numel(output_shape) * (size - 1) // 2


def sort_comparisons(shape: Shape, dim: int) -> int:
    """Comparisons of sorting a tensor of ``shape`` along ``dim``: ``ceil(log2 n)`` per element
    for rows of length ``n`` (the comparison count of a merge sort, ``n log2 n`` per row)."""
    length = shape[dim] if len(shape) else 1
    return numel(shape) * math.ceil(math.log2(length)) if length > 1 else 0


#: FLOPs per ``(token, channel, state)`` element of a selective scan, besides its MAC:
#: ``Δ·A`` and its ``exp`` (2), ``Δ·B`` (1), ``·x`` (1), ``h = dA*h + dBx`` (2).
SCAN_STATE_FLOPS = 6


def selective_scan_macs(batch: int, length: int, channels: int, state: int) -> int:
    """MACs of a Mamba selective scan: the output ``y_t = C_t · h_t``, a dot product over the
    ``state`` entries of every channel's state, at every step."""
    return batch * length * channels * state


def selective_scan_flops(batch: int, length: int, channels: int, state: int, skip: bool = True,
                         gate: bool = True, delta_bias: bool = True, delta_softplus: bool = True) -> int:
    """FLOPs of a Mamba selective scan (Gu & Dao 2023, Algorithm 2) over ``length`` steps of
    ``channels`` channels with ``state`` states each.

    Per step, channel and state: discretisation ``dA = exp(Δ·A)`` (2), ``dB·x = (Δ·B)·x``
    (2), the state update ``h = dA*h + dB·x`` (2) and the output ``y = C·h`` (one MAC, 2
    FLOPs): ``SCAN_STATE_FLOPS + 2``. Per step and channel: the bias and softplus of ``Δ``
    (1 each, when present), the skip ``y + D*x`` (2) and the gate ``y * silu(z)`` (2).
    """
    per_channel = 2 * skip + 2 * gate + delta_bias + delta_softplus
    elements = batch * length * channels
    return elements * state * (SCAN_STATE_FLOPS + 2) + elements * per_channel


#: FLOPs per input element of a normalisation's backward (LayerNorm, GroupNorm, BatchNorm in
#: training): the input gradient ``rstd*(g - mean(g) - x_hat*mean(g*x_hat))`` with ``g = dy*gamma``
#: takes 8 (dy*gamma, two means, g*x_hat, x_hat*m, two subtractions, *rstd); the weight and bias
#: gradients 3 (dy*x_hat accumulated, dy accumulated).
NORM_BACKWARD_FLOPS = 11
#: FLOPs per element of the softmax gradient ``y * (dy - sum(dy * y))``: multiply, accumulate,
#: subtract, multiply.
SOFTMAX_BACKWARD_FLOPS = 4


def attention_backward_macs(query_shape: Shape, key_shape: Shape, value_shape: Shape) -> int:
    """MACs of the backward of fused attention (flash / memory-efficient kernels), counted as
    torch's ``FlopCounterMode`` counts them: the scores are recomputed (``B*L*S*E``), then
    ``dV = P^T dO`` (``B*L*S*Ev``), ``dP = dO V^T`` (``B*L*S*Ev``), ``dQ = dS K`` and
    ``dK = dS^T Q`` (``B*L*S*E`` each)."""
    batch = numel(query_shape[:-2])
    length, embed = query_shape[-2], query_shape[-1]
    source = key_shape[-2]
    return batch * length * source * (3 * embed + 2 * value_shape[-1])


def attention_backward_extra_flops(query_shape: Shape, key_shape: Shape) -> int:
    """Non-MAC FLOPs of fused attention's backward per score element: the recomputed scaling
    and softmax (1 + 5, as the forward counts them) and the softmax gradient (3)."""
    scores = numel(query_shape[:-2]) * query_shape[-2] * key_shape[-2]
    return scores * (1 + SOFTMAX_FLOPS + 3)


# --- ops met in the coverage sweep (benchmarks/coverage.py) ------------------------------------

def fft_flops(points: int, transforms: int, real: bool) -> int:
    """FLOPs of ``transforms`` discrete Fourier transforms of ``points`` points each, by FFTW's
    convention: ``5 N log2 N`` for a complex transform, half that when the input or output is
    real (``rfft``/``irfft``/``hfft``). Rounded to an integer."""
    if points <= 1:
        return 0
    return round((2.5 if real else 5) * points * math.log2(points) * transforms)


def singular_values_flops(rows: int, cols: int) -> int:
    """FLOPs of the singular values of a ``rows x cols`` matrix (no vectors), by the
    Golub-Reinsch bidiagonalisation count ``4mn^2 - 4n^3/3`` with ``m >= n`` (Golub and
    Van Loan, *Matrix Computations*, 4th ed., section 8.6.3). Rounded to an integer."""
    m, n = max(rows, cols), min(rows, cols)
    return round(4 * m * n * n - 4 * n**3 / 3)


def binary_search_comparisons(boundaries: int) -> int:
    """Comparisons of one binary search among ``boundaries`` sorted values: ``ceil(log2(b + 1))``."""
    return boundaries.bit_length()


def mha_projection_macs(length: int, source: int, query_dim: int, key_dim: int, value_dim: int, embed: int) -> int:
    """MACs of the projections of one sequence of multi-head attention: ``length`` queries and
    ``source`` keys and values projected to ``embed`` (a dim of 0: that projection is not
    computed), and the output projection of the ``length`` results."""
    return length * query_dim * embed + source * (key_dim + value_dim) * embed + length * embed * embed
