"""The rules the rest of the suite reaches only through whole models (or not at all), each on a
call small enough to count by hand from the op's definition and the convention in the
``fxcost.rules`` docstring (the arithmetic is written out next to every number). They run in
well under a second each, so the mutation run (see the README) uses them to pin every rule."""


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from conftest import analyze_quiet

import fxcost

# nms and unique depend on tensor values (fxcost assumes and says so); roi_align is costed from
# the calls it makes: both are stated elsewhere, here only the counts matter
pytestmark = pytest.mark.filterwarnings("ignore::fxcost.AssumptionWarning", "ignore::fxcost.TraceFallbackWarning")


class Calls(nn.Module):
    """A model whose forward is ``fn(self, *inputs)``; keyword modules become submodules."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, *inputs):
        return self.fn(self, *inputs)


def flops(fn, *inputs, **modules):
    """FLOPs of every counted node of ``Calls(fn)`` by node name, with the unsupported-op
    warning an error; the ops measured with it do no multiply-accumulate (0 MACs)."""
    report = analyze_quiet(Calls(fn, **modules), tuple(inputs))
    called = [node for node in report.nodes if node.op in ("call_function", "call_method", "call_module")]
    assert [node.macs for node in called] == [0] * len(called)
    return {node.name: node.flops for node in called}


def node(fn, *inputs, **modules):
    """The single costed call of ``Calls(fn)``."""
    report = analyze_quiet(Calls(fn, **modules), tuple(inputs))
    (found,) = [n for n in report.nodes if n.op in ("call_function", "call_method", "call_module")
                and n.status is fxcost.Status.COUNTED and not n.name.endswith("_return")]
    return found


# --- convolution and triangular solves ----------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_functional_transposed_convolution_by_hand(bias):
    weight, b = torch.ones(6, 2, 3, 3), torch.ones(4) if bias else None
    found = node(lambda m, x: F.conv_transpose2d(x, weight, b, stride=2, groups=2), torch.randn(1, 6, 5, 5))
    assert found.output_shapes == ((1, 4, 11, 11),)  # (5 - 1) * 2 + 3
    macs = (6 * 5 * 5) * (4 // 2) * 3 * 3  # every input element through Cout/groups * k*k weights
    assert found.macs == macs == 2_700
    assert found.flops == 2 * macs + (4 * 11 * 11 if bias else 0)  # one bias add per output element


def test_triangular_solves_by_hand():
    a = torch.randn(2, 5, 5).triu() + 5 * torch.eye(5)
    b = torch.randn(2, 5, 3)
    macs = 2 * 3 * (0 + 1 + 2 + 3 + 4)  # batch * rhs * the substitution's 0 + 1 + ... + (n-1)
    divisions = 2 * 5 * 3  # one per output element, unless the diagonal is ones
    solve = node(lambda m, a, b: torch.linalg.solve_triangular(a, b, upper=True), a, b)
    assert (solve.macs, solve.flops) == (macs, 2 * macs + divisions) == (60, 150)
    unit = node(lambda m, a, b: torch.linalg.solve_triangular(a, b, upper=True, unitriangular=True), a, b)
    assert (unit.macs, unit.flops) == (macs, 2 * macs)
    # the legacy spelling takes (B, A) and unitriangular fifth
    legacy = node(lambda m, a, b: torch.triangular_solve(b, a, True, False, False), a, b)
    assert (legacy.macs, legacy.flops) == (macs, 2 * macs + divisions)
    legacy_unit = node(lambda m, a, b: torch.triangular_solve(b, a, True, False, True), a, b)
    assert (legacy_unit.macs, legacy_unit.flops) == (macs, 2 * macs)


# --- normalisation ----------------------------------------------------------------------

X = torch.randn(2, 4, 3, 3)  # 72 elements
N = 72


@pytest.mark.parametrize(
    "fn, per_element",
    [
        # training: statistics (5) + scale and shift (2) when affine
        (lambda m, x: F.batch_norm(x, torch.zeros(4), torch.ones(4), torch.ones(4), torch.zeros(4), True), 5 + 2),
        (lambda m, x: F.batch_norm(x, torch.zeros(4), torch.ones(4), None, None, True), 5),
        # eval: the statistics are folded into one scale and shift, affine or not
        (lambda m, x: F.batch_norm(x, torch.zeros(4), torch.ones(4), torch.ones(4), None, False), 2),
        (lambda m, x: F.batch_norm(x, torch.zeros(4), torch.ones(4)), 2),
        (lambda m, x: F.layer_norm(x, (3, 3)), 5),
        (lambda m, x: F.layer_norm(x, (3,), torch.ones(3)), 5 + 2),
        (lambda m, x: F.group_norm(x, 2, torch.ones(4)), 5 + 2),
        (lambda m, x: F.group_norm(x, 2), 5),
        # instance_norm's weight is its fourth argument, after the running statistics
        (lambda m, x: F.instance_norm(x, None, None, torch.ones(4)), 5 + 2),
        (lambda m, x: F.instance_norm(x, weight=torch.ones(4)), 5 + 2),
        (lambda m, x: F.instance_norm(x, torch.zeros(4), torch.ones(4)), 5),
        # mean of squares (2), root and divide (1... counted as 3 in all), weight (1)
        (lambda m, x: F.rms_norm(x, (3,)), 3),
        (lambda m, x: F.rms_norm(x, (3,), torch.ones(3)), 3 + 1),
        # square, windowed sum over `size` channels, scale/pow, divide
        (lambda m, x: F.local_response_norm(x, 2), 2 + 3),
        (lambda m, x: F.normalize(x), 3),  # power, sum, divide
    ],
)
def test_functional_normalisations_by_hand(fn, per_element):
    found = node(fn, X)
    assert (found.macs, found.flops) == (0, N * per_element)


@pytest.mark.parametrize(
    "module, per_element",
    [
        (nn.RMSNorm(3), 3 + 1), (nn.RMSNorm(3, elementwise_affine=False), 3),
        (nn.LocalResponseNorm(3), 3 + 3), (nn.LocalResponseNorm(5), 5 + 3),
        (nn.InstanceNorm2d(4, affine=True), 5 + 2), (nn.InstanceNorm2d(4), 5),
        (nn.GroupNorm(2, 4, affine=False), 5), (nn.LayerNorm((3, 3), elementwise_affine=False), 5),
    ],
)
def test_normalisation_modules_by_hand(module, per_element):
    found = node(lambda m, x: m.norm(x), X, norm=module)
    assert (found.macs, found.flops) == (0, N * per_element)


def test_weight_norm_by_hand():
    v, g = torch.randn(4, 3, 2), torch.randn(4, 1, 1)
    # square and accumulate (2) and scale (1) per element of v; a root and a divide per norm
    found = node(lambda m, v, g: torch._weight_norm(v, g, 0), v, g)
    assert (found.macs, found.flops) == (0, 3 * 24 + 2 * 4)


# --- sorting, statistics, elementwise -----------------------------------------------------------

def test_sorts_count_ceil_log2_comparisons_per_element_along_their_dim():
    x = torch.randn(3, 8)
    found = flops(lambda m, x: (torch.sort(x, dim=0)[0], x.argsort(), torch.msort(x), x.sort(1, descending=True)[0],
                                torch.argsort(x, dim=0)), x)
    rows_of_3, rows_of_8 = 24 * 2, 24 * 3  # ceil(log2 3) = 2, ceil(log2 8) = 3
    assert found["sort"] == rows_of_3 and found["argsort"] == rows_of_8  # dim=0; default the last
    assert found["msort"] == rows_of_3  # msort sorts along dim 0
    assert found["sort_1"] == rows_of_8 and found["argsort_1"] == rows_of_3


def test_variance_fused_elementwise_and_polar_by_hand():
    x = torch.randn(3, 8)
    found = flops(lambda m, x: (torch.var(x, 1), x.std(1), torch.addcmul(x, x, x, value=2), x.lerp(x, 0.5),
                                torch.addcdiv(x, x, x)), x)
    assert found["var"] == found["std"] == 24 * 3  # sum, subtract mean, square-accumulate per input element
    assert found["addcmul"] == found["lerp"] == found["addcdiv"] == 24 * 2  # a product and a sum
    polar = node(lambda m, a, b: torch.polar(a, b), torch.rand(3, 4), torch.rand(3, 4))
    assert (polar.macs, polar.flops) == (0, 12 * 4)


# --- scatter and index accumulation ------------------------------------------------------------

def test_scatters_count_one_flop_per_accumulated_element():
    x, index, src = torch.randn(3, 8), torch.tensor([[0, 1], [2, 3], [4, 5]]), torch.ones(3, 2)
    found = flops(lambda m, x, i, s: (x.scatter(1, i, s), x.scatter(1, i, s, reduce="add"), torch.scatter_add(x, 1, i, s),
                                      x.scatter_reduce(1, i, s, "mean"), x.scatter_reduce(1, i, s, "amax")), x, index, src)
    assert found["scatter"] == 0  # a plain scatter only writes
    assert found["scatter_1"] == found["scatter_add"] == found["scatter_reduce_1"] == 6  # index has 6 elements
    assert found["scatter_reduce"] == 6 + 24  # mean: the division per output element


def test_index_accumulation_by_hand():
    x, index, source = torch.randn(3, 8), torch.tensor([0, 2]), torch.ones(2, 8)
    found = flops(lambda m, x, i, s: (x.index_add(0, i, s), x.index_add(0, i, s, alpha=2), x.index_reduce(0, i, s, "mean"),
                                      x.index_reduce(0, i, s, "prod")), x, index, source)
    assert found["index_add"] == 16  # one add per element of source
    assert found["index_add_1"] == 2 * 16  # and a scaling with alpha != 1
    assert found["index_reduce"] == 16 + 24  # mean: the division per output element
    assert found["index_reduce_1"] == 16


def test_index_put_by_hand():
    x = torch.randn(3, 8)
    found = flops(lambda m, x, i, v: (x.index_put((i,), v, accumulate=True), x.index_put((i,), v)),
                  x, torch.tensor([0, 2, 2, 1]), torch.ones(4, 8))
    assert found["index_put"] == 4 * 8  # 4 indexed rows of 8
    assert found["index_put_1"] == 0  # without accumulate it only writes
    # a boolean mask counts every position it could select (an upper bound): 3 rows of 8
    mask = node(lambda m, x, k, v: x.index_put((k,), v, accumulate=True), x, torch.tensor([True, False, True]),
                torch.ones(8))
    assert (mask.macs, mask.flops) == (0, 3 * 8)
    # two integer indices broadcast to (2, 2) positions, each selecting one element
    grid = node(lambda m, x, r, c, v: x.index_put((r, c), v, accumulate=True), x, torch.tensor([[0], [2]]),
                torch.tensor([1, 5]), torch.ones(2, 2))
    assert (grid.macs, grid.flops) == (0, 2 * 2)


# --- embeddings, sampling, detection ops -------------------------------------------------------

def test_embedding_bags_read_only_the_selected_rows():
    bag = node(lambda m, i: m.bag(i), torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]), bag=nn.EmbeddingBag(10, 6, mode="sum"))
    assert (bag.macs, bag.flops) == (0, 8 * 6)  # 8 looked-up rows of 6 summed into their bags
    assert bag.weight_bytes == 8 * 6 * 4  # float32 rows read
    functional = node(lambda m, i, o, w: F.embedding_bag(i, w, o), torch.tensor([1, 2, 3, 4, 5]), torch.tensor([0, 2]),
                      torch.randn(10, 6))
    assert (functional.flops, functional.weight_bytes) == (5 * 6, 5 * 6 * 4)
    lookup = node(lambda m, i: m.emb(i), torch.tensor([[1, 2, 3]]), emb=nn.Embedding(10, 6))
    assert (lookup.flops, lookup.weight_bytes) == (0, 3 * 6 * 4)  # rows read, not the whole table


def test_grid_sample_by_hand():
    image, grid = torch.randn(2, 3, 4, 4), torch.rand(2, 5, 6, 2) * 2 - 1
    found = flops(lambda m, x, g: (F.grid_sample(x, g, align_corners=False),
                                   F.grid_sample(x, g, mode="bicubic", align_corners=False),
                                   F.grid_sample(x, g, mode="nearest", align_corners=False)), image, grid)
    outputs = 2 * 3 * 5 * 6
    assert found["grid_sample"] == outputs * (2 * 4 - 1)  # bilinear: 4 taps, 4 products and 3 sums
    assert found["grid_sample_1"] == outputs * (2 * 16 - 1)  # bicubic: 16 taps
    assert found["grid_sample_2"] == 0  # nearest moves data


def test_grid_sample_volumetric_bicubic_is_not_a_torch_mode_but_trilinear_is_counted():
    volume, grid = torch.randn(1, 2, 3, 3, 3), torch.rand(1, 2, 2, 2, 3) * 2 - 1
    found = node(lambda m, x, g: F.grid_sample(x, g, align_corners=True), volume, grid)
    assert (found.macs, found.flops) == (0, (1 * 2 * 2 * 2 * 2) * (2 * 8 - 1))  # 8 taps in 3-d


@pytest.mark.parametrize("count", [5, 8, 1])
def test_nms_at_its_upper_bound_by_hand(count):
    boxes = torch.rand(count, 2) * 50
    boxes = torch.cat([boxes, boxes + 10], 1)
    comparisons = {5: 3, 8: 3, 1: 1}[count]  # ceil(log2 n), at least one
    # box areas (3 each), the sort, and the IoU of every pair (13: see fxcost.rules.IOU_FLOPS)
    expected = 3 * count + count * comparisons + 13 * count * (count - 1) // 2
    found = node(lambda m, b, s: torchvision.ops.nms(b, s, 0.5), boxes, torch.rand(count))
    assert (found.macs, found.flops) == (0, expected)


@pytest.mark.parametrize("ratio, samples", [(2, 4), (-1, 4), (3, 9), (1, 1)])
def test_roi_align_by_hand(ratio, samples):
    rois = torch.tensor([[0, 0, 0, 3, 3], [1, 1, 1, 4, 4], [0, 0, 0, 2, 2]], dtype=torch.float)
    found = node(lambda m, f, r: torchvision.ops.roi_align(f, r, (2, 2), 1.0, ratio), torch.randn(2, 3, 8, 8), rois)
    bins = 3 * 3 * 2 * 2  # rois * channels * output size
    # every bin averages `samples` bilinear samples (4 taps: 7 FLOPs, plus the sum) and divides once;
    # an adaptive ratio (-1) is counted as 2
    assert (found.macs, found.flops) == (0, bins * (samples * (7 + 1) + 1))


@pytest.mark.parametrize("values, log2", [([3, 1, 2, 3, 1, 5, 6, 7, 8, 9], 4), ([2, 2, 2, 2], 2), ([7], 1)])
def test_unique_sorts_then_compares_neighbours(values, log2):
    n = len(values)
    found = node(lambda m, x: torch.unique(x), torch.tensor(values))
    assert (found.macs, found.flops) == (0, n * log2 + n)  # ceil(log2 n) comparisons per element (at least one), then n


def test_grouped_mm_by_hand():
    """Two experts' weights (2, 8, 5) applied to 6 tokens split 4 + 2: every token meets one
    8 x 5 weight; with a bias, one add per output element."""
    grouped_mm = getattr(F, "grouped_mm", None) or torch._grouped_mm
    a, b, offs = torch.randn(6, 8), torch.randn(2, 8, 5), torch.tensor([4, 6], dtype=torch.int32)
    found = node(lambda m, a, b, o: grouped_mm(a, b, offs=o), a, b, offs)
    assert found.output_shapes == ((6, 5),)
    assert (found.macs, found.flops) == (6 * 8 * 5, 2 * 6 * 8 * 5)
    found = node(lambda m, a, b, o: torch._grouped_mm(input=a, mat2=b, offs=o), a, b, offs)  # torch's own names
    assert (found.macs, found.flops) == (6 * 8 * 5, 2 * 6 * 8 * 5)


def test_softmax_family_and_dropout_by_hand():
    x = torch.randn(3, 8)
    found = flops(lambda m, x: (F.softmax(x, -1), F.log_softmax(x, 1), F.softmin(x, 0), m.soft(x), F.dropout(x, 0.2, True),
                                F.dropout(x, 0.2, False), m.drop(x)), x, soft=nn.Softmax(-1), drop=nn.Dropout(0.1).eval())
    assert found["softmax"] == found["log_softmax"] == found["softmin"] == found["soft"] == 24 * 5
    assert found["dropout"] == 24 * 2  # training: a mask and a scaled multiply
    assert found["dropout_1"] == found["drop"] == 0  # eval: the input comes back


# --- training: the backward rules and the recomputed forward of activation checkpointing ---------

class Block(nn.Module):
    """A conv and one call of every op whose aten form has a rule of its own."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.LayerNorm(2)

    def forward(self, x):
        y = self.conv(x)  # (1, 4, 8, 8)
        y = F.avg_pool2d(y, 2)  # (1, 4, 4, 4)
        y = F.adaptive_avg_pool2d(y, 3)  # (1, 4, 3, 3)
        y = F.max_pool2d(y, 2, 1)  # (1, 4, 2, 2)
        y = F.dropout(y, 0.5, True)
        y = self.norm(y)
        y = torch.log_softmax(y, -1)
        y = torch.softmax(y, -1)
        return F.scaled_dot_product_attention(y, y, y)


class Checkpointed(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=False)


# forward FLOPs of Block by hand, node by node
CONV_MACS = 4 * 8 * 8 * 2 * 3 * 3  # output elements * Cin * k*k
BLOCK_FLOPS = {
    "conv": 2 * CONV_MACS + 4 * 8 * 8,  # and the bias
    "avg_pool2d": 4 * 4 * 4 * 2 * 2,  # prod(kernel) per output element
    "adaptive_avg_pool2d": 4 * 3 * 3 * 2 * 2,  # 4 -> 3: windows [0, 2), [1, 3), [2, 4)
    "max_pool2d": 4 * 2 * 2 * 2 * 2,
    "dropout": 16 * 2,
    "norm": 16 * (5 + 2),
    "log_softmax": 16 * 5,
    "softmax": 16 * 5,
    # (1, 4, 2, 2) attention: scores 4 * 2 * 2 = 16, two matmuls of E = 2, scale and softmax
    "scaled_dot_product_attention": 2 * (16 * 2 + 16 * 2) + 16 * (1 + 5),
}


def test_backward_rules_by_hand():
    report = fxcost.analyze(Block(), (1, 2, 8, 8), training=fxcost.Training("sgd"))
    backward = {n.name: (n.backward_macs, n.backward_flops) for n in report.nodes}
    assert {name: report.node(name).flops for name in BLOCK_FLOPS} == BLOCK_FLOPS
    # the input needs no gradient: the weight gradient (the forward's MACs) and the bias's sum
    assert backward["conv"] == (CONV_MACS, 2 * CONV_MACS + 4 * 8 * 8)
    assert backward["avg_pool2d"] == (0, 4 * 4 * 4 * 2 * 2)  # every output gradient spread over its window
    assert backward["adaptive_avg_pool2d"] == (0, 4 * 3 * 3)  # one add per incoming gradient element
    assert backward["max_pool2d"] == (0, 4 * 2 * 2)
    assert backward["dropout"] == (0, 16)  # the mask multiply
    assert backward["norm"] == (0, 16 * 11)  # input gradient (8) and weight and bias gradients (3)
    assert backward["log_softmax"] == (0, 16 * 3)
    assert backward["softmax"] == (0, 16 * 4)
    # recomputed scores (E = 2), dV, dP (Ev = 2), dQ, dK (E): 16 * 10; scale and softmax recomputed,
    # the softmax gradient (1 + 5 + 3); q, k and v are one tensor: its three gradients summed (2 * 16)
    assert backward["scaled_dot_product_attention"] == (16 * 10, 2 * 16 * 10 + 16 * 9 + 2 * 16)


def test_checkpointed_block_recomputes_its_forward_in_the_backward():
    plain = fxcost.analyze(Block(), (1, 2, 8, 8), training=fxcost.Training("sgd"))
    checkpointed = fxcost.analyze(Checkpointed(), (1, 2, 8, 8), training=fxcost.Training("sgd"))
    sdpa = 2 * (16 * 2 + 16 * 2) // 2
    assert checkpointed.backward_macs == plain.backward_macs + CONV_MACS + sdpa
    assert checkpointed.backward_flops == plain.backward_flops + sum(BLOCK_FLOPS.values())


def test_linear_and_bilinear_functions_by_hand():
    weight, bias = torch.randn(5, 7), torch.randn(5)
    found = {name: flops for name, (_, flops) in macs_and_flops(
        lambda m, x: (F.linear(x, weight, bias), F.linear(x, weight), F.linear(x, torch.randn(7))), torch.randn(2, 3, 7)).items()}
    assert found["linear"] == 2 * (2 * 3 * 7 * 5) + 2 * 3 * 5
    assert found["linear_1"] == 2 * (2 * 3 * 7 * 5)
    assert found["linear_2"] == 2 * (2 * 3 * 7)  # a 1-d weight: one output feature, and a 1-d result
    bilinear = node(lambda m, a, b: m.bi(a, b), torch.randn(4, 3), torch.randn(4, 5), bi=nn.Bilinear(3, 5, 2))
    # y_k = x1^T A_k x2: A_k x2 (3 * 5) then the dot with x1 (3), per output feature, and the bias
    assert bilinear.macs == 4 * 2 * (3 * 5 + 3)
    assert bilinear.flops == 2 * bilinear.macs + 4 * 2
    plain = node(lambda m, a, b: m.bi(a, b), torch.randn(4, 3), torch.randn(4, 5), bi=nn.Bilinear(3, 5, 2, bias=False))
    assert plain.flops == 2 * 4 * 2 * (3 * 5 + 3)


def test_functional_convolution_bias_by_hand():
    weight = torch.randn(6, 3, 3, 3)
    found = {name: flops for name, (_, flops) in macs_and_flops(
        lambda m, x: (F.conv2d(x, weight, torch.ones(6), padding=1), F.conv2d(x, weight), torch.conv2d(x, weight, None, 2)),
        torch.randn(1, 3, 5, 5)).items()}
    macs = 6 * 5 * 5 * 3 * 3 * 3
    assert found["conv2d"] == 2 * macs + 6 * 5 * 5
    assert found["conv2d_1"] == 2 * (6 * 3 * 3 * 3 * 3 * 3)  # no padding: 3 x 3 outputs
    assert found["conv2d_2"] == 2 * (6 * 2 * 2 * 3 * 3 * 3)  # stride 2: 2 x 2 outputs


def test_einsum_costs_by_hand():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    report = analyze_quiet(Calls(lambda m, a, b: (torch.einsum("bij,bjk->bik", a, b), torch.einsum("bij,bjk->bik", [a, b]),
                                                  torch.einsum("bij->bji", a), torch.einsum("bij->b", a))), (a, b))
    found = {n.name: (n.macs, n.flops) for n in report.nodes if n.op_type == "einsum"}
    macs = 2 * 3 * 4 * 5
    assert found["einsum"] == found["einsum_1"] == (macs, 2 * macs)  # operands spread or in one list
    assert found["einsum_2"] == (0, 0)  # a transpose moves data
    assert found["einsum_3"] == (0, 24)  # a sum over 24 elements: one add each


def test_pooling_kernel_spellings_by_hand():
    x = torch.randn(1, 2, 9, 9)
    found = flops(lambda m, x: (F.max_pool2d(x, 3), F.avg_pool2d(x, (3, 1)), m.pool(x), m.pool3(x.unsqueeze(2)),
                                F.max_pool1d(x[0], 2)), x, pool=nn.MaxPool2d((2, 3)), pool3=nn.AvgPool3d((1, 2, 2)))
    assert found["max_pool2d"] == 2 * 3 * 3 * 9  # 3 x 3 outputs, a 3 x 3 kernel
    assert found["avg_pool2d"] == 2 * 3 * 9 * 3  # 3 x 9 outputs, a 3 x 1 kernel
    assert found["pool"] == 2 * 4 * 3 * 6  # kernel (2, 3), stride the kernel: 4 x 3 outputs
    assert found["pool3"] == 2 * 1 * 4 * 4 * 4  # kernel (1, 2, 2): 1 x 4 x 4 outputs
    assert found["max_pool1d"] == 2 * 9 * 4 * 2  # rows of 9 -> 4, kernel 2


def test_interpolation_modes_by_hand():
    x = torch.randn(1, 2, 4, 4)
    found = flops(lambda m, x: (F.interpolate(x, scale_factor=2), F.interpolate(x, scale_factor=2, mode="bilinear"),
                                F.interpolate(x, size=(2, 2), mode="area"), m.up(x), m.bi(x),
                                F.interpolate(x, scale_factor=2, mode="bicubic")),
                  x, up=nn.Upsample(scale_factor=2, mode="nearest"), bi=nn.UpsamplingBilinear2d(scale_factor=2))
    outputs = 2 * 8 * 8
    assert found["interpolate"] == found["up"] == 0  # nearest moves data
    assert found["interpolate_1"] == found["bi"] == outputs * (2 * 4 - 1)  # 4 taps: 4 products, 3 sums
    assert found["interpolate_2"] == 2 * 2 * 2 * (2 * 2)  # area 4 -> 2: an average over 2 x 2 windows
    assert found["interpolate_3"] == outputs * (2 * 16 - 1)
    one_d = node(lambda m, x: F.interpolate(x, scale_factor=3, mode="linear"), torch.randn(2, 3, 5))
    assert one_d.flops == 2 * 3 * 15 * (2 * 2 - 1)
    volume = node(lambda m, x: F.interpolate(x, scale_factor=2, mode="trilinear"), torch.randn(1, 1, 2, 2, 2))
    assert volume.flops == 4 * 4 * 4 * (2 * 8 - 1)


def macs_and_flops(fn, *inputs, **modules):
    report = analyze_quiet(Calls(fn, **modules), tuple(inputs))
    return {n.name: (n.macs, n.flops) for n in report.nodes if n.op in ("call_function", "call_method", "call_module")}


def test_arguments_passed_by_keyword_and_by_position():
    x, weight, bias = torch.randn(1, 3, 5, 5), torch.randn(6, 3, 3, 3), torch.ones(6)
    conv = macs_and_flops(lambda m, x: (F.conv2d(input=x, weight=weight, bias=bias), F.conv2d(x, weight=weight),
                                        F.conv2d(x, weight, bias=bias)), x)
    macs = 6 * 3 * 3 * 3 * 3 * 3  # 3 x 3 outputs of 6 channels, 3 * 3 * 3 MACs each
    assert conv["conv2d"] == conv["conv2d_2"] == (macs, 2 * macs + 6 * 3 * 3)
    assert conv["conv2d_1"] == (macs, 2 * macs)
    w, b = torch.randn(5, 7), torch.randn(5)
    linear = macs_and_flops(lambda m, x: (F.linear(input=x, weight=w, bias=b), F.linear(x, weight=w),
                                          F.linear(x, w, bias=b)), torch.randn(3, 7))
    assert linear["linear"] == linear["linear_2"] == (3 * 7 * 5, 2 * 3 * 7 * 5 + 3 * 5)
    assert linear["linear_1"] == (3 * 7 * 5, 2 * 3 * 7 * 5)


def test_scaled_dot_product_attention_masks_and_ranks_by_hand():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    mask = torch.randn(5, 7)
    found = macs_and_flops(lambda m, q, k, v, a: (
        F.scaled_dot_product_attention(q, k, v, a), F.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=a),
        F.scaled_dot_product_attention(q, k, v, None, 0.0), F.scaled_dot_product_attention(q, k, v)), q, k, v, mask)
    scores = 2 * 3 * 5 * 7  # batch * heads * L * S
    macs = scores * 4 + scores * 6  # Q K^T (E = 4), then P V (Ev = 6)
    unmasked = 2 * macs + scores * (1 + 5)  # scale, softmax
    assert found["scaled_dot_product_attention"] == found["scaled_dot_product_attention_1"] == (macs, unmasked + scores)
    assert found["scaled_dot_product_attention_2"] == found["scaled_dot_product_attention_3"] == (macs, unmasked)
    # (batch, length, embed): no heads
    three = node(lambda m, q, k, v, a: F.scaled_dot_product_attention(q, k, v, attn_mask=a),
                 torch.randn(2, 5, 4), torch.randn(2, 7, 4), torch.randn(2, 7, 6), mask)
    scores = 2 * 5 * 7
    assert (three.macs, three.flops) == (scores * 10, 2 * scores * 10 + scores * (1 + 5) + scores)


def test_unbatched_multihead_attention_with_its_own_key_and_value_widths():
    attention = nn.MultiheadAttention(8, 2, kdim=6, vdim=4)
    report = analyze_quiet(Calls(lambda m, q, k, v: m.attn(q, k, v, need_weights=False)[0], attn=attention),
                           (torch.randn(5, 8), torch.randn(7, 6), torch.randn(7, 4)))
    found = report.node("attn")
    length, source, embed, heads = 5, 7, 8, 2
    projections = length * 8 * embed + source * 6 * embed + source * 4 * embed + length * embed * embed  # q, k, v, out
    scores = heads * length * source
    macs = projections + scores * (embed // heads) * 2  # Q K^T and P V per head
    assert found.macs == macs == 1_760
    biases = (length + 2 * source) * embed + length * embed  # in_proj and out_proj biases
    assert found.flops == 2 * macs + biases + scores * (1 + 5)


@pytest.mark.parametrize(
    "cell, shape, gates, per_unit, batch",
    [
        # LSTM: 4 gates; activations 4, c = f*c + i*g and h = o*tanh(c) 5, two bias adds per gate
        (nn.LSTMCell(5, 4), (3, 5), 4, 4 + 5 + 2 * 4, 3),
        (nn.GRUCell(5, 4, bias=False), (5,), 3, 3 + 5, 1),  # unbatched: one sample
        (nn.GRUCell(5, 4), (2, 5), 3, 3 + 5 + 2 * 3, 2),
        (nn.RNNCell(5, 4), (2, 5), 1, 1 + 2, 2),
        (nn.RNNCell(5, 4, bias=False), (5,), 1, 1, 1),
    ],
)
def test_recurrent_cells_by_hand(cell, shape, gates, per_unit, batch):
    found = node(lambda m, x: m.cell(x), torch.randn(shape), cell=cell)
    macs = batch * gates * 4 * (5 + 4)  # W_ih (gates*H x I) and W_hh (gates*H x H) per sample
    assert (found.macs, found.flops) == (macs, 2 * macs + per_unit * 4 * batch)


def test_ops_without_multiply_accumulates_count_none():
    found = macs_and_flops(lambda m, x, i: (F.softmax(x, -1), m.emb(i), F.interpolate(x.unsqueeze(0), scale_factor=2,
                                                                                        mode="linear"),
                                            F.interpolate(x.unsqueeze(0), None, 2, "linear"),
                                            F.interpolate(x.unsqueeze(0), size=2, mode="area")),
                           torch.randn(3, 8), torch.tensor([1, 2]), emb=nn.Embedding(10, 4))
    assert found["softmax"] == (0, 24 * 5)
    assert found["emb"] == (0, 0)
    # linear: 2 taps, one product each and a sum; mode passed by keyword or fourth
    assert found["interpolate"] == found["interpolate_1"] == (0, 3 * 16 * 3)
    assert found["interpolate_2"] == (0, 3 * 2 * 4)  # area 8 -> 2: windows of 4


# --- the same calls spelled with keywords, other positions and other names ----------------------
# (functions of torch.nn.functional written in Python hand every argument to torch by keyword,
# so only the builtins below can be spelled several ways in a graph)

def test_builtin_calls_spelled_with_keywords_by_hand():
    x, w, b = torch.randn(1, 6, 5, 5), torch.ones(6, 2, 3, 3), torch.ones(4)
    transposed = macs_and_flops(lambda m, x: F.conv_transpose2d(input=x, weight=w, bias=b, stride=2, groups=2), x)
    macs = (6 * 5 * 5) * (4 // 2) * 3 * 3
    assert transposed == {"conv_transpose2d": (macs, 2 * macs + 4 * 11 * 11)}
    a, bb, offs = torch.randn(6, 8), torch.randn(2, 8, 5), torch.tensor([4, 6], dtype=torch.int32)
    grouped_mm = getattr(F, "grouped_mm", None) or torch._grouped_mm
    found = macs_and_flops(lambda m, a, b, o: (grouped_mm(a, b, offs=o, bias=torch.ones(2, 5)),
                                               torch._grouped_mm(a, b, o, torch.ones(2, 5))), a, bb, offs)
    # 6 tokens through one 8 x 5 expert weight each, and a bias add per output element
    assert list(found.values()) == [(6 * 8 * 5, 2 * 6 * 8 * 5 + 6 * 5)] * 2
    v, g = torch.randn(4, 3, 2), torch.randn(4, 1, 1)
    assert macs_and_flops(lambda m, v, g: torch._weight_norm(v=v, g=g, dim=0), v, g) == {"_weight_norm": (0, 3 * 24 + 2 * 4)}
    boxes = torch.rand(5, 2) * 50
    nms = macs_and_flops(lambda m, b, s: torch.ops.torchvision.nms(dets=b, scores=s, iou_threshold=0.5),
                         torch.cat([boxes, boxes + 10], 1), torch.rand(5))
    assert list(nms.values()) == [(0, 3 * 5 + 5 * 3 + 13 * 5 * 4 // 2)]
    # sampling_ratio 0 is adaptive too: counted as 2, so 4 samples a bin
    roi = macs_and_flops(lambda m, f, r: torch.ops.torchvision.roi_align(
        input=f, rois=r, spatial_scale=1.0, pooled_height=2, pooled_width=2, sampling_ratio=0, aligned=False),
        torch.randn(2, 3, 8, 8), torch.tensor([[0, 0, 0, 3, 3.0]]))
    assert list(roi.values()) == [(0, 1 * 3 * 2 * 2 * (4 * (7 + 1) + 1))]


def test_indexing_ops_spelled_with_keywords_by_hand():
    x, index, wide = torch.randn(3, 8), torch.tensor([[0, 1], [2, 3], [4, 5]]), torch.ones(3, 4)
    # src may be larger than index: only index's 6 elements are scattered
    found = flops(lambda m, x, i, s: (x.scatter(dim=1, index=i, src=s, reduce="add"), x.scatter(1, i, s, reduce="add"),
                                      torch.scatter_add(x, dim=1, index=i, src=s), x.scatter_add(1, i, s),
                                      x.scatter_reduce(1, i, s, reduce="mean"), x.scatter_reduce(1, i, s, "mean")),
                  x, index, wide)
    assert list(found.values()) == [6, 6, 6, 6, 6 + 24, 6 + 24]
    found = flops(lambda m, x, i, s: (x.index_add(0, i, source=s), x.index_reduce(0, i, s, reduce="mean"),
                                      torch.index_add(x, 0, i, s, alpha=3)), x, torch.tensor([0, 2]), torch.ones(2, 8))
    assert list(found.values()) == [16, 16 + 24, 2 * 16]
    found = flops(lambda m, x, i, v: (torch.index_put(input=x, indices=(i,), values=v, accumulate=True),
                                      x.index_put((i,), v, True)), x, torch.tensor([0, 2, 2, 1]), torch.ones(4, 8))
    assert list(found.values()) == [4 * 8, 4 * 8]
    # a 1-d mask over the first dim of a 3-d tensor: each of its 3 positions selects a 4 x 5 slice
    found = flops(lambda m, x, k, v: x.index_put((k,), v, accumulate=True), torch.randn(3, 4, 5),
                  torch.tensor([True, False, True]), torch.ones(4, 5))
    assert list(found.values()) == [3 * 4 * 5]


def test_sorts_and_solves_spelled_other_ways_by_hand():
    x = torch.randn(3, 4, 8)
    found = flops(lambda m, x: (torch.sort(x, 0)[0], x.argsort(), x.msort(), torch.argsort(x, 1)), x)
    # rows of 3 (dim 0): ceil(log2 3) = 2; the default, the last dim: rows of 8, 3; rows of 4: 2
    assert list(found.values())[0] == 96 * 2
    assert found["argsort"] == 96 * 3 and found["msort"] == 96 * 2 and found["argsort_1"] == 96 * 2
    a = torch.randn(2, 3, 5, 5).triu() + 5 * torch.eye(5)
    b = torch.randn(2, 3, 5, 4)
    macs = 2 * 3 * 4 * (0 + 1 + 2 + 3 + 4)  # a 4-d batch of 5 x 5 systems with 4 right-hand sides
    divisions = 2 * 3 * 5 * 4
    found = macs_and_flops(lambda m, a, b: (torch.linalg.solve_triangular(input=a, B=b, upper=True),
                                            torch.triangular_solve(b, A=a), b.triangular_solve(a),
                                            torch.triangular_solve(b, a, True, False)), a, b)
    solves = [cost for name, cost in found.items() if "solve" in name]
    assert solves == [(macs, 2 * macs + divisions)] * 4


@pytest.mark.parametrize("count, log2", [(5, 3), (9, 4), (2, 1)])
def test_unique_of_counts_just_past_a_power_of_two(count, log2):
    found = node(lambda m, x: torch.unique(x), torch.arange(count))
    assert (found.macs, found.flops) == (0, count * log2 + count)
