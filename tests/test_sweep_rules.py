"""Rules for the ops the timm / transformers coverage sweep met without one
(``benchmarks/coverage.py``), each against a count worked out by hand from the op's definition,
and matmul-class MACs against torch's FlopCounterMode on a real run."""

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxcost
from conftest import analyze_quiet
from reference import torch_macs


class Fn(nn.Module):
    """A model whose forward is ``fn``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def flops_of(fn, *inputs):
    """MACs and FLOPs of ``fn`` on inputs given as shapes (float32) or tensors."""
    report = analyze_quiet(Fn(fn), tuple(inputs))
    assert report.complete
    return report.macs, report.flops


@pytest.mark.parametrize("name", ["T", "mT", "H", "mH"])
def test_view_properties_move_no_data(name):
    # x.T + 1: only the add computes
    assert flops_of(lambda x: getattr(x, name) + 1, (3, 4)) == (0, 12)


def test_real_and_imag_are_views():
    z = torch.empty(5, dtype=torch.complex64)
    assert flops_of(lambda z: z.real * 2 + z.imag, z) == (0, 5 + 5)


def test_conj_is_a_view():
    # Autoformer's autocorrelation: rfft of both series, a product with the conjugate, irfft
    def correlation(x, y):
        return torch.fft.irfft(torch.fft.rfft(x) * torch.conj(torch.fft.rfft(y)))

    per_transform = 2.5 * 16 * 4  # 16 real points, 3 series of transforms (2 forward, 1 inverse) per row
    assert flops_of(correlation, (2, 16), (2, 16)) == (0, 3 * 2 * per_transform + 2 * 9)  # + the complex product


def test_diff_by_hand():
    # n=2 along a dim of 5: differences of lengths 4, then 3, for each of the 2 x 7 rows
    assert flops_of(lambda x: torch.diff(x, n=2, dim=1), (2, 5, 7)) == (0, 2 * 7 * (4 + 3))
    # one column prepended: 8 elements, 7 differences, 2 x 5 rows
    assert flops_of(lambda x, p: torch.diff(x, dim=-1, prepend=p), (2, 5, 7), (2, 5, 1)) == (0, 2 * 5 * 7)


def test_outer_product_multiplies_without_accumulating():
    assert flops_of(torch.outer, (5,), (3,)) == (0, 15)
    assert torch_macs(Fn(torch.outer), torch.ones(5), torch.ones(3)) == 0  # no matmul for torch either


@pytest.mark.parametrize("reduction, flops", [("none", 2 * 24), ("sum", 3 * 24), ("mean", 3 * 24 + 1)])
@pytest.mark.parametrize("loss", [F.mse_loss, F.l1_loss])
def test_pointwise_losses(loss, reduction, flops):
    # difference and square (abs) per element; accumulate per element; one division for the mean
    assert flops_of(lambda x, y: loss(x, y, reduction=reduction), (4, 6), (4, 6)) == (0, flops)


def test_isin_compares_every_pair():
    assert flops_of(torch.isin, (3, 4), (5,)) == (0, 3 * 4 * 5)


def test_binary_searches():
    # 7 boundaries: 3 comparisons (2^3 = 8 slots); 8 boundaries: 4
    assert flops_of(torch.bucketize, (2, 3), (7,)) == (0, 6 * 3)
    assert flops_of(torch.bucketize, (2, 3), (8,)) == (0, 6 * 4)
    # rows of 10 sorted values: 4 comparisons (11 slots) for each of the 2 x 5 values
    assert flops_of(torch.searchsorted, (2, 10), (2, 5)) == (0, 10 * 4)


def test_linalg_norms():
    assert flops_of(lambda x: torch.linalg.norm(x, dim=-1), (3, 4)) == (0, 12)
    assert flops_of(lambda x: torch.linalg.norm(x, ord=1), (3, 4)) == (0, 12)  # a matrix 1-norm
    assert flops_of(torch.linalg.matrix_norm, (3, 3)) == (0, 9)  # Frobenius
    # spectral norm of two 6x4 matrices: 4*6*4^2 - 4*4^3/3 = 384 - 85.33 -> 299 each
    assert flops_of(lambda x: torch.linalg.norm(x, ord=2, dim=(-2, -1)), (2, 6, 4)) == (0, 2 * 299)
    assert flops_of(lambda x: torch.linalg.matrix_norm(x, ord="nuc"), (4, 6)) == (0, 299)


def test_fourier_transforms_by_fftw_convention():
    # complex: 5 N log2 N per transform; real: half
    assert flops_of(torch.fft.fftn, (2, 8, 16)) == (0, 5 * 256 * 8)  # one transform over all dims
    assert flops_of(lambda x: torch.fft.fftn(x, dim=(1, 2)), (2, 8, 16)) == (0, 2 * 5 * 128 * 7)  # FNet's
    assert flops_of(torch.fft.fft, (3, 8)) == (0, 3 * 5 * 8 * 3)
    assert flops_of(torch.fft.rfft, (4, 16)) == (0, 4 * 2.5 * 16 * 4)
    spectrum = torch.empty(4, 9, dtype=torch.complex64)  # 9 = 16 // 2 + 1 frequencies of 16 real points
    assert flops_of(torch.fft.irfft, spectrum) == (0, 4 * 2.5 * 16 * 4)
    assert torch_macs(Fn(torch.fft.fftn), torch.ones(2, 8, 16)) == 0


class FunctionalAttention(nn.Module):
    """``F.multi_head_attention_forward`` with the weights of an ``nn.MultiheadAttention``."""

    def __init__(self, embed=8, heads=2, bias_k=False):
        super().__init__()
        self.mha = nn.MultiheadAttention(embed, heads, add_bias_kv=bias_k)

    def forward(self, query, key):
        m = self.mha
        return F.multi_head_attention_forward(
            query, key, key, m.embed_dim, m.num_heads, m.in_proj_weight, m.in_proj_bias, m.bias_k, m.bias_v,
            m.add_zero_attn, 0.0, m.out_proj.weight, m.out_proj.bias, training=False)[0]


@pytest.mark.parametrize("bias_k", [False, True])
def test_functional_multi_head_attention_by_hand_and_against_a_real_run(bias_k):
    # L=5 queries, S=7 keys, batch 2, E=8, 2 heads of 4
    model = FunctionalAttention(bias_k=bias_k).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxcost.TraceFallbackWarning)
        report = analyze_quiet(model, ((5, 2, 8), (7, 2, 8)))
    projections = 5 * 8 * 8 + 7 * 2 * 8 * 8 + 5 * 8 * 8  # q, k and v, out
    attended = 7 + (1 if bias_k else 0)  # bias_k appends one key
    attention = 2 * 2 * 5 * attended * 4 * 2  # scores and weighted values per batch and head
    assert report.macs == 2 * projections + attention == (4192 if not bias_k else 4352)
    assert report.macs == torch_macs(model, torch.ones(5, 2, 8), torch.ones(7, 2, 8))


def test_module_initialised_inside_forward_costs_its_math_only():
    def forward(x):
        weight = torch.empty(4, 3)
        nn.init.kaiming_uniform_(weight)  # a random fill: no arithmetic of the model
        return x @ weight

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxcost.TraceFallbackWarning)
        assert flops_of(forward, (2, 4)) == (2 * 4 * 3, 2 * 2 * 4 * 3)


def test_as_strided_is_a_view():
    # Longformer's sliding chunks: overlapping windows of a (2, 8) tensor, then a sum over each
    assert flops_of(lambda x: x.as_strided((2, 3, 4), (8, 2, 1)).sum(-1), (2, 8)) == (0, 2 * 3 * 4)


def test_broadcast_and_scalar_tensors_move_data():
    def forward(x, y):
        a, b = torch.broadcast_tensors(x, y)
        return a + b * torch.scalar_tensor(2.0)

    assert flops_of(forward, (3, 1), (1, 4)) == (0, 12 + 12)


def test_is_all_true_reduces():
    assert flops_of(lambda x: x.gt(0)._is_all_true(), (3, 5)) == (0, 15 + 15)  # the compare, then the reduction
