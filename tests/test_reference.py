"""The MACs reference itself (tests/reference.py): torch's FlopCounterMode, completed with torch's
own formula for the CPU attention kernel it misses, and refusing ops it cannot count."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from reference import torch_flops, torch_macs


def test_cpu_flash_attention_is_counted_with_torchs_formula():
    q, k, v = torch.randn(2, 4, 10, 16), torch.randn(2, 4, 12, 16), torch.randn(2, 4, 12, 16)
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, k, v)
    assert plain.get_total_flops() == 0  # torch 2.14 has no formula for the CPU flash kernel
    # scores (B·H·L·S·E) and weighted values (B·H·L·S·Ev)
    assert torch_macs(F.scaled_dot_product_attention, q, k, v) == 2 * 4 * 10 * 12 * (16 + 16)


def test_an_op_without_a_formula_is_refused():
    model = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad(), pytest.raises(AssertionError, match="_native_multi_head_attention"):
        torch_flops(lambda: model(x, x, x, need_weights=False))  # the fused fast path: one opaque op
    # with gradients on, the unfused path: 4 projections of 5 tokens and 2 attention products per head
    assert torch_macs(model, x, x, x, need_weights=False) == 2 * (4 * 5 * 16 * 16) + 2 * 2 * 5 * 5 * 8 * 2


def test_a_triangular_solve_is_refused():
    # FlopCounterMode counts 0 for it, although substitution multiply-accumulates every coefficient
    a, b = torch.randn(6, 6).triu() + 6 * torch.eye(6), torch.randn(6, 3)
    with FlopCounterMode(display=False) as plain:
        torch.linalg.solve_triangular(a, b, upper=True)
    assert plain.get_total_flops() == 0
    with pytest.raises(AssertionError, match="linalg_solve_triangular"):
        torch_flops(lambda: torch.linalg.solve_triangular(a, b, upper=True))
