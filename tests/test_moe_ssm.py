"""Mixture-of-experts and state-space models: the grouped matmuls and routing ops of MoE
layers, the selective scan of Mamba, each against counts worked out by hand from the
definitions (and, where torch's FlopCounterMode counts the ops, against a real execution)."""

import logging
import math
from itertools import pairwise

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fxcost import formulas
from conftest import analyze_quiet


def nodes_of(report, op_type):
    return [n for n in report.nodes if n.op_type == op_type]


def real_macs(model, **inputs):
    """MACs of a real CPU forward as torch's FlopCounterMode counts them (2 FLOPs per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs)
    return counter.get_total_flops() // 2


# --- grouped matmul -----------------------------------------------------------------------

class Grouped(nn.Module):
    """``F.grouped_mm(a, b, offs=offs)`` with the offsets as a buffer (they are data)."""

    def __init__(self, offs):
        super().__init__()
        self.register_buffer("offs", None if offs is None else torch.tensor(offs, dtype=torch.int32))

    def forward(self, a, b):
        return F.grouped_mm(a, b, offs=self.offs)


def groups_by_hand(a, b, offs):
    """The per-group matmuls the grouped matmul stands for, run one by one: (output, MACs)."""
    offs = [0, *offs] if offs is not None else None
    if a.dim() == 2 and b.dim() == 3:      # rows of a split by offs, one (K, N) matrix per group
        parts = [a[s:e] @ b[g] for g, (s, e) in enumerate(pairwise(offs))]
        return torch.cat(parts), sum((e - s) * a.shape[1] * b.shape[2] for s, e in pairwise(offs))
    if a.dim() == 3 and b.dim() == 2:      # columns of b split by offs, one (M, K) matrix per group
        parts = [a[g] @ b[:, s:e] for g, (s, e) in enumerate(pairwise(offs))]
        return torch.cat(parts, 1), sum(a.shape[1] * a.shape[2] * (e - s) for s, e in pairwise(offs))
    if a.dim() == 3:                       # one matmul per group: bmm
        return a @ b, a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    # both 2-D: the contracted dim split by offs, one (M, N) output per group
    parts = [a[:, s:e] @ b[s:e] for s, e in pairwise(offs)]
    return torch.stack(parts), sum(a.shape[0] * (e - s) * b.shape[1] for s, e in pairwise(offs))


@pytest.mark.parametrize("a_shape, b_shape, offs", [
    ((12, 8), (3, 8, 4), [4, 8, 12]),      # MoE forward: tokens sorted by expert
    ((3, 4, 8), (8, 12), [4, 8, 12]),      # 3-D x 2-D, offsets on N
    ((3, 4, 8), (3, 8, 4), None),          # 3-D x 3-D: batched
    ((4, 12), (12, 8), [4, 8, 12]),        # 2-D x 2-D, offsets on K (a weight gradient)
    ((16, 8), (4, 8, 12), [0, 4, 4, 16]),  # empty groups
])
def test_grouped_mm_every_layout_by_hand(a_shape, b_shape, offs):
    torch.manual_seed(0)
    a, b = torch.randn(a_shape), torch.randn(b_shape)
    model = Grouped(offs)
    expected, macs = groups_by_hand(a, b, offs)
    torch.testing.assert_close(model(a, b), expected)  # the layout is what the kernel computes
    report = analyze_quiet(model, (a, b))  # float32: the CPU kernel's dtype, refused by torch's meta kernel
    (node,) = nodes_of(report, "_grouped_mm")
    assert node.output_shapes == (tuple(expected.shape),)
    assert (node.macs, node.flops) == (macs, 2 * macs)


def test_grouped_mm_bfloat16_and_rows_past_the_last_offset():
    # bfloat16 goes through torch's own meta kernel; rows past offs[-1] are skipped by the
    # kernel but counted (the stated upper bound: the offsets are data).
    a, b = torch.empty(16, 8, dtype=torch.bfloat16), torch.empty(3, 8, 8, dtype=torch.bfloat16)
    report = analyze_quiet(Grouped([4, 8, 12]), (a, b))
    (node,) = nodes_of(report, "_grouped_mm")
    assert node.macs == 16 * 8 * 8 > 12 * 8 * 8
    assert node.bytes_written == 16 * 8 * 2


# --- routing ops --------------------------------------------------------------------------

T, E, K = 12, 6, 2


class Routing(nn.Module):
    """The ops MoE routers and dispatchers use, one per line."""

    def forward(self, scores, index, rows):
        values, _ = torch.topk(scores, K, dim=-1)               # (T, K)
        sorted_ids, order = torch.sort(index.reshape(-1))       # (T*K,)
        by_column = torch.argsort(scores, dim=0)                # (T, E)
        counts = torch.histc(sorted_ids.float(), bins=E, min=0, max=E - 1)
        offsets = torch.cumsum(counts, dim=0)
        hit = torch.greater(counts, 0)
        mask = F.one_hot(index, num_classes=E)                  # (T, K, E)
        picked = scores.gather(1, index)                        # (T, K)
        added = torch.zeros(T, E).scatter_add_(1, index, values)
        written = torch.zeros(T, E).scatter_(1, index, values)
        multiplied = torch.ones(T, E).scatter_(1, index, values, reduce="multiply")
        means = torch.zeros(T, E).scatter_reduce(1, index, values, reduce="mean")
        summed = torch.zeros(4, E).index_add_(0, rows, scores)
        scaled = torch.zeros(4, E).index_add(0, rows, scores, alpha=0.5)
        return (order, by_column, offsets, hit, mask, picked, added, written, multiplied, means, summed, scaled)


def test_routing_ops_by_hand():
    report = analyze_quiet(Routing(), (torch.randn(T, E), torch.randint(0, E, (T, K)), torch.randint(0, 4, (T,))))
    flops = {n.op_type: n.flops for n in report.nodes}
    assert flops["topk"] == T * E                                 # a selection pass, like max: 1 per input
    assert flops["sort"] == T * K * math.ceil(math.log2(T * K))  # 24 ids: 5 comparisons each
    assert flops["argsort"] == T * E * math.ceil(math.log2(T))   # columns of 12: 4 comparisons each
    assert flops["histc"] == T * K                               # 1 per binned element
    assert flops["cumsum"] == E
    assert flops["greater"] == E
    assert flops["one_hot"] == flops["gather"] == 0              # data movement
    assert flops["scatter_add_"] == T * K                        # one add per scattered value
    scatters = [n.flops for n in nodes_of(report, "scatter_")]
    assert scatters == [0, T * K]                                # a plain write; reduce="multiply"
    assert flops["scatter_reduce"] == T * K + T * E              # the adds, then one division per output
    assert flops["index_add_"] == T * E                          # every element of the source is added
    assert flops["index_add"] == 2 * T * E                       # scaled by alpha, then added
    assert report.macs == 0


def test_bincount_and_index_put_rules_by_hand():
    # bincount's output size is data (no fake tensor has it): its rule, called directly.
    from fxcost import RULES, OpCall
    from fxcost._records import TensorMeta

    ids = TensorMeta((30,), torch.int64)
    call = OpCall(torch.bincount, (ids,), {}, (TensorMeta((7,), torch.int64),))
    assert RULES.lookup(torch.bincount)(call).flops == 30

    class Accumulate(nn.Module):
        def forward(self, x, rows, cols, values):
            x.index_put_((rows, cols), values, accumulate=True)   # 5 positions of a (4, 6, 3) tensor: 5 x 3
            x.index_put_((x[..., 0] > 0,), torch.ones(3), accumulate=True)  # up to all 4 x 6 rows of 3
            return x.index_put((rows,), torch.ones(5, 6, 3))      # a plain write

    report = analyze_quiet(Accumulate(), (torch.zeros(4, 6, 3), torch.zeros(5, dtype=torch.long),
                                          torch.zeros(5, dtype=torch.long), torch.ones(5, 3)))
    assert [n.flops for n in report.nodes if n.op_type.startswith("index_put")] == [15, 4 * 6 * 3, 0]


def test_triangular_solve_by_hand():
    class Solve(nn.Module):
        def forward(self, a, b, c):
            x = torch.linalg.solve_triangular(a, b, upper=False)                     # A X = B
            y = torch.linalg.solve_triangular(a, c, upper=False, left=False, unitriangular=True)  # Y A = C
            return x, y

    a = torch.randn(2, 5, 5).tril() + 5 * torch.eye(5)
    b, c = torch.randn(2, 5, 3), torch.randn(2, 4, 5)
    report = analyze_quiet(Solve(), (a, b, c))
    first, second = nodes_of(report, "linalg_solve_triangular")
    # substitution: row i of each right-hand side takes i multiply-adds (0+1+2+3+4 = 10)
    # and, unless the diagonal is ones, a division
    assert (first.macs, first.flops) == (2 * 3 * 10, 2 * 2 * 3 * 10 + 2 * 3 * 5)
    assert (second.macs, second.flops) == (2 * 4 * 10, 2 * 2 * 4 * 10)
    assert formulas.triangular_solve_macs(5, (2, 5, 3)) == 60


def test_complex_rotary_ops_by_hand():
    """Llama 4's rotary embedding: angles to unit complex numbers, pairs of reals viewed as complex."""
    class Rotary(nn.Module):
        def forward(self, x, angles):
            turns = torch.polar(torch.ones_like(angles), angles)           # cos, sin, two products
            pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))  # a view
            return torch.view_as_real(pairs * turns).flatten(-2)

    report = analyze_quiet(Rotary(), (torch.randn(3, 8), torch.randn(3, 4)))
    flops = {n.op_type: n.flops for n in report.nodes}
    assert flops["polar"] == 4 * 3 * 4
    assert flops["view_as_complex"] == flops["view_as_real"] == 0


# --- Mixture-of-experts models ----------------------------------------------------------------

transformers = pytest.importorskip("transformers")
logging.getLogger("transformers").setLevel(logging.ERROR)

TOKENS, LAYERS, D, HEADS, KV_HEADS, VOCAB = 16, 2, 64, 4, 2, 1000
IDS = torch.zeros(1, TOKENS, dtype=torch.long)
COMMON = dict(num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
              vocab_size=VOCAB)


def attention_macs(head_dim=D // HEADS, heads=HEADS, kv_heads=KV_HEADS):
    """One layer, all tokens: q, k, v, o projections and the full T x T scores and values."""
    projections = TOKENS * (D * heads * head_dim + 2 * D * kv_heads * head_dim + heads * head_dim * D)
    return projections + 2 * heads * TOKENS * TOKENS * head_dim


def swiglu_macs(intermediate):
    """A gated MLP on one token: gate and up (d -> I each), down (I -> d)."""
    return 3 * D * intermediate


def mixtral():
    config = transformers.MixtralConfig(**COMMON, intermediate_size=128, num_local_experts=4, num_experts_per_tok=2)
    # every token: a router (d -> E) and k experts
    per_token = D * 4 + 2 * swiglu_macs(128)
    expected = LAYERS * (attention_macs() + TOKENS * per_token) + TOKENS * D * VOCAB
    return transformers.MixtralForCausalLM, config, expected


def qwen2_moe():
    config = transformers.Qwen2MoeConfig(**COMMON, intermediate_size=96, moe_intermediate_size=32,
                                         shared_expert_intermediate_size=48, num_experts=4, num_experts_per_tok=2)
    # router, k experts, the shared expert and its sigmoid gate (d -> 1); every layer is sparse
    per_token = D * 4 + 2 * swiglu_macs(32) + swiglu_macs(48) + D
    expected = LAYERS * (attention_macs() + TOKENS * per_token) + TOKENS * D * VOCAB
    return transformers.Qwen2MoeForCausalLM, config, expected


def qwen3_moe():
    config = transformers.Qwen3MoeConfig(**COMMON, head_dim=32, intermediate_size=96, moe_intermediate_size=32,
                                         num_experts=8, num_experts_per_tok=3)
    per_token = D * 8 + 3 * swiglu_macs(32)  # q/k norms do no MACs
    expected = LAYERS * (attention_macs(head_dim=32) + TOKENS * per_token) + TOKENS * D * VOCAB
    return transformers.Qwen3MoeForCausalLM, config, expected


def deepseek_v3():
    q_rank, kv_rank, nope, rope, v = 32, 16, 8, 8, 16
    config = transformers.DeepseekV3Config(
        **{**COMMON, "num_key_value_heads": HEADS}, intermediate_size=96, moe_intermediate_size=32,
        n_routed_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1,
        first_k_dense_replace=1, q_lora_rank=q_rank, kv_lora_rank=kv_rank, qk_rope_head_dim=rope,
        qk_nope_head_dim=nope, v_head_dim=v)
    # multi-head latent attention: q through its low rank, k/v from one shared latent + a rope key
    projections = (D * q_rank + q_rank * HEADS * (nope + rope) + D * (kv_rank + rope)
                   + kv_rank * HEADS * (nope + v) + HEADS * v * D)
    attention = TOKENS * projections + HEADS * TOKENS * TOKENS * ((nope + rope) + v)
    dense = TOKENS * swiglu_macs(96)                                # layer 0 (first_k_dense_replace)
    moe = TOKENS * (D * 4 + 2 * swiglu_macs(32) + swiglu_macs(32))  # router, 2 routed, 1 shared expert
    expected = LAYERS * attention + dense + moe + TOKENS * D * VOCAB
    return transformers.DeepseekV3ForCausalLM, config, expected


MOE = {"mixtral": mixtral, "qwen2_moe": qwen2_moe, "qwen3_moe": qwen3_moe, "deepseek_v3": deepseek_v3}


def build(family, implementation, device="meta"):
    cls, config, expected = MOE[family]()
    config._experts_implementation = implementation
    with torch.device(device):
        model = cls(config)
    return model, expected


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm"])
@pytest.mark.parametrize("family", MOE)
def test_moe_macs_equal_the_analytic_count(family, implementation):
    """attention + router + T x top-k experts (+ shared experts, dense layers) + LM head, exactly:
    both implementations route every one of the T x k token-expert pairs, whatever the routing."""
    model, expected = build(family, implementation)
    report = analyze_quiet(model, {"input_ids": IDS})
    assert report.complete
    assert report.macs == expected
    assert report.params == sum(p.numel() for p in model.parameters())


def test_mixtral_defaults_to_grouped_mm_on_cpu_and_its_experts_are_the_grouped_matmuls():
    model, _ = build("mixtral", None)
    assert model.config._experts_implementation == "grouped_mm"
    report = analyze_quiet(model, {"input_ids": IDS})
    grouped = [n for n in report.nodes if n.op_type == "_grouped_mm" and n.module_path == "model.layers.0.mlp.experts"]
    # up (d -> 2I) and down (I -> d) over the T x k routed rows
    assert [n.macs for n in grouped] == [TOKENS * 2 * D * 2 * 128, TOKENS * 2 * 128 * D]


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm"])
def test_mixtral_router_and_experts_flops_by_hand(implementation):
    """What each implementation does, op by op, for T = 16 tokens, k = 2, E = 4, d = 64, I = 128."""
    model, _ = build("mixtral", implementation)
    report = analyze_quiet(model, {"input_ids": IDS})
    pairs, d, inter, experts = TOKENS * 2, D, 128, 4
    router = (2 * TOKENS * d * experts      # linear d -> E
              + 5 * TOKENS * experts        # softmax
              + TOKENS * experts            # topk: one pass over the scores
              + pairs + pairs)              # sum of the top-k weights, and the division by it
    assert report.total("model.layers.0.mlp.gate").flops == router
    common = (2 * pairs * d * 2 * inter     # up projection, gate and up together, per pair
              + pairs * inter * 2           # silu(gate) * up
              + 2 * pairs * inter * d       # down projection
              + pairs * d                   # times the routing weight
              + pairs * d)                  # sum over the k pairs of each token
    # grouped_mm sorts the pairs by expert (32 ids: 5 comparisons each), finds each pair's token
    # (perm // k), counts the pairs per expert (histc) and their running total (cumsum)
    routing = pairs * 5 + pairs + pairs + experts if implementation == "grouped_mm" else 0
    experts_cost = report.total("model.layers.0.mlp.experts")
    assert experts_cost.macs == pairs * 3 * d * inter
    assert experts_cost.flops == common + routing


def test_batched_mm_moe_equals_a_real_run():
    torch.manual_seed(0)
    cls, config, expected = mixtral()
    config._experts_implementation = "batched_mm"
    config._attn_implementation = "eager"  # FlopCounterMode does not count the CPU SDPA kernel
    model = cls(config)
    ids = torch.randint(0, VOCAB, (1, TOKENS))
    assert analyze_quiet(model, {"input_ids": ids}).macs == real_macs(model, input_ids=ids) == expected


#: Sizes shrunk wherever a config has them (the rest stay at the family's defaults).
SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, moe_intermediate_size=32, head_dim=16,
             num_attention_heads=4, num_key_value_heads=4, vocab_size=1000, pad_token_id=0, num_experts=4,
             num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2, shared_expert_intermediate_size=32,
             n_group=1, topk_group=1, first_k_dense_replace=1, n_shared_experts=1, num_shared_experts=1,
             moe_num_experts=4, moe_k=2, moe_topk=2, max_position_embeddings=256)
MORE_MOE = ["olmoe", "granitemoe", "granitemoeshared", "phimoe", "gpt_oss", "glm4_moe", "ernie4_5_moe",
            "hunyuan_v1_moe", "dots1", "afmoe", "exaone_moe", "cohere2_moe", "minimax", "llama4_text"]


@pytest.mark.parametrize("model_type", MORE_MOE)
def test_more_moe_families_equal_a_real_run(model_type):
    """Each family's own router (softmax or sigmoid top-k, grouped top-k, shared experts, dense
    experts for every token in Llama 4) with the batched_mm experts, against FlopCounterMode."""
    config = transformers.AutoConfig.for_model(model_type)
    for name, value in SMALL.items():
        if hasattr(config, name):
            setattr(config, name, value)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    if model.config._experts_implementation != "eager":  # Llama 4's experts are dense bmm over all experts
        model.config._experts_implementation = "batched_mm"
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, 1000, (1, TOKENS))
    report = analyze_quiet(model, {"input_ids": ids})
    assert report.complete
    assert report.macs == real_macs(model, input_ids=ids)


def test_eager_experts_are_not_counted_silently():
    """The eager experts loop over the experts a token picked (``nonzero``, ``torch.where`` on the
    routing mask): sizes that are data. The report must not pass for complete with the experts
    missing: either it says it stopped there, or its count is at least the routed work."""
    import fxcost

    model, expected = build("mixtral", "eager")
    report = fxcost.analyze(model, {"input_ids": IDS})
    assert report.complete is False or report.macs >= expected
    if not report.complete:
        assert report.macs < expected and report.unsupported


# --- state-space models -----------------------------------------------------------------------

B, L = 2, 8


def test_selective_scan_formula_by_hand():
    # batch 1, 2 steps, 3 channels, 4 states: 24 (step, channel, state) elements and 6 (step, channel)
    assert formulas.selective_scan_macs(1, 2, 3, 4) == 24                  # y = C.h: one MAC per state
    # per state: dt*A, exp, dt*B, *x, dA*h, + dBx, and the MAC's 2; per channel: dt bias, softplus,
    # the skip (D*x, +) and the gate (silu, *)
    assert formulas.selective_scan_flops(1, 2, 3, 4) == 24 * (6 + 2) + 6 * (1 + 1 + 2 + 2) == 228
    assert formulas.selective_scan_flops(1, 2, 3, 4, skip=False, gate=False, delta_bias=False,
                                         delta_softplus=False) == 24 * 8


def mamba_config():
    return transformers.MambaConfig(num_hidden_layers=2, hidden_size=32, state_size=8, expand=2, conv_kernel=4,
                                    vocab_size=100, time_step_rank=4)


def test_mamba_mixer_equals_the_selective_scan_by_hand():
    config = mamba_config()
    with torch.device("meta"):
        model = transformers.MambaModel(config)
    report = analyze_quiet(model, {"input_ids": torch.zeros(B, L, dtype=torch.long)})
    mixer = report.total("layers.0.mixer")
    d, e, n, r, k = config.hidden_size, config.intermediate_size, config.state_size, config.time_step_rank, 4
    assert e == 64
    tokens = B * L
    projections = tokens * (d * 2 * e + e * (r + 2 * n) + r * e + e * d)  # in, x (dt, B, C), dt, out
    conv_length = L + k - 1  # the causal conv pads k-1 on both sides, then keeps the first L outputs
    conv = B * e * conv_length * k  # depthwise
    scan = tokens * e * n  # y_t = C_t . h_t per channel
    assert mixer.macs == projections + conv + scan
    scan_flops = (tokens * e * n * (2 + 2 + 2 + 2)  # exp(dt*A), dt*B*x, dA*h + dBx, C.h
                  + tokens * e * (1 + 1 + 2 + 2))    # dt bias, softplus, + D*x, * silu(z)
    assert scan_flops == formulas.selective_scan_flops(B, L, e, n)
    flops = (2 * (projections + conv)
             + B * e * conv_length  # conv bias
             + tokens * e           # silu after the conv
             + 2 * e * n            # A = -exp(A_log)
             + scan_flops)
    assert mixer.flops == flops
    assert report.macs == 2 * mixer.macs  # two identical layers, nothing else multiplies


def jamba():
    """Mamba and attention layers, the attention layer's MLP a mixture of experts."""
    config = transformers.JambaConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        vocab_size=100, num_experts=4, num_experts_per_tok=2, attn_layer_period=2, attn_layer_offset=1,
        expert_layer_period=2, expert_layer_offset=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4,
        use_mamba_kernels=False)
    config._experts_implementation = "batched_mm"  # FlopCounterMode does not count grouped matmuls
    config._attn_implementation = "eager"           # nor the CPU SDPA kernel
    return transformers.JambaForCausalLM(config)


SSM = {
    "mamba": lambda: transformers.MambaModel(mamba_config()),
    "mamba2": lambda: transformers.Mamba2Model(transformers.Mamba2Config(
        num_hidden_layers=2, hidden_size=32, state_size=8, expand=2, conv_kernel=4, vocab_size=100, num_heads=4,
        head_dim=16, n_groups=1, chunk_size=4)),
    "jamba": jamba,
}


@pytest.mark.parametrize("family", SSM)
def test_ssm_macs_equal_a_real_run(family):
    torch.manual_seed(0)
    model = SSM[family]()
    ids = torch.randint(0, 100, (B, L))
    report = analyze_quiet(model, {"input_ids": ids})
    assert report.complete
    assert report.macs == real_macs(model, input_ids=ids)


def test_split_by_router_counts_is_split_evenly():
    """Experts fed the token counts their router chose (``.tolist()`` then ``split``, as
    JetMoE does): the assumed counts do not add up, the split is made even, and the experts'
    matmuls add up to what a real run costs, whatever the routing."""
    import fxcost

    class SplitExperts(nn.Module):
        def __init__(self, experts=4, top_k=2, d=8, inner=16):
            super().__init__()
            self.router = nn.Linear(d, experts, bias=False)
            self.weight = nn.Parameter(torch.randn(experts, inner, d))
            self.experts, self.top_k = experts, top_k

        def forward(self, x):  # x: (tokens, d)
            _, chosen = self.router(x).topk(self.top_k, dim=1)
            counts = torch.zeros(x.shape[0], self.experts).scatter(1, chosen, 1).long().sum(0).tolist()
            order = chosen.flatten().sort(0)[1]
            parts = x[order.div(self.top_k, rounding_mode="trunc")].split(counts, dim=0)
            return torch.cat([F.linear(part, self.weight[i]) for i, part in enumerate(parts)])

    model, x = SplitExperts(), torch.randn(10, 8)
    with pytest.warns(fxcost.AssumptionWarning):
        report = fxcost.analyze(model, x)
    # router 10 x 8 x 4; the experts see 10 x 2 = 20 token slots of 8 -> 16
    assert report.macs == 10 * 8 * 4 + 20 * 8 * 16 == real_macs(model, x=x)
    assert any("split evenly into 4 parts of 5" in a.what for a in report.assumptions)


def test_jetmoe_equals_a_real_run():
    config = transformers.AutoConfig.for_model("jetmoe")
    for name, value in SMALL.items():
        if hasattr(config, name):
            setattr(config, name, value)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.config._attn_implementation = "eager"  # FlopCounterMode does not count the CPU SDPA kernel
    ids = torch.randint(0, 1000, (1, TOKENS))
    report = analyze_quiet(model, {"input_ids": ids})
    assert report.macs == real_macs(model, input_ids=ids)
