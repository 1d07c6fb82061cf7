"""The cost rule of every supported op, registered in :data:`fxcost.RULES`.

Each rule unpacks an :class:`~fxcost.OpCall` into shapes and calls a pure formula from
:mod:`fxcost.formulas`. To support a new op, add one function here (or pass
``rules={target: fn}`` to :func:`fxcost.analyze`). Per-element FLOP counts:

======================================  =========================================
op family                               FLOPs per output element
======================================  =========================================
add, mul, compare, activations (any)    1 (transcendentals count as one)
addcmul / addcdiv / lerp                2
BatchNorm (eval)                        2 (scale and shift, statistics folded)
BatchNorm (train), Layer/Group/Instance 5 for statistics + 2 if affine
RMSNorm                                 3 + 1 if affine
softmax / log_softmax                   5
reductions (sum, mean, max, var...)     1 per *input* element (also cumsum, histc, bincount,
                                        topk, kthvalue: one pass over the input)
sort / argsort / msort                  ceil(log2 n) per element, rows of length n
scatter_add / index_add / ...reduce     1 per accumulated element
pooling                                 prod(kernel)
interpolation                           0 nearest, 2*taps-1 (bi/tri)linear, bicubic
dropout                                 0 in eval, 2 in training
views, copies, cat, pad, indexing       0 (also gather, one_hot, plain scatter)
======================================  =========================================
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import formulas as fm
from ._records import Cost
from ._registry import RULES, OpCall
from ._runtime import expect_input, rebuild_output

register = RULES.register


def _bias_flops(call: OpCall, has_bias: bool) -> int:
    return call.out.numel if has_bias else 0


# --- convolution ---------------------------------------------------------------------

@register(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_module(call: OpCall) -> Cost:
    module = call.module
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    macs = fm.conv_macs(call.inputs[0].shape, module.weight.shape, call.out.shape, transposed)
    return Cost(macs, 2 * macs + _bias_flops(call, module.bias is not None))


@register(F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d)
def conv_function(call: OpCall) -> Cost:
    weight, bias = call.arg(1, "weight"), call.arg(2, "bias")
    macs = fm.conv_macs(call.arg(0, "input").shape, weight.shape, call.out.shape)
    return Cost(macs, 2 * macs + _bias_flops(call, bias is not None))


@register(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
def conv_transpose_function(call: OpCall) -> Cost:
    weight, bias = call.arg(1, "weight"), call.arg(2, "bias")
    macs = fm.conv_macs(call.arg(0, "input").shape, weight.shape, call.out.shape, transposed=True)
    return Cost(macs, 2 * macs + _bias_flops(call, bias is not None))


# --- linear and matmul ----------------------------------------------------------------

@register(nn.Linear)
def linear_module(call: OpCall) -> Cost:
    module = call.module
    macs = fm.linear_macs(call.inputs[0].shape, module.out_features)
    return Cost(macs, 2 * macs + _bias_flops(call, module.bias is not None))


@register(F.linear)
def linear_function(call: OpCall) -> Cost:
    weight, bias = call.arg(1, "weight"), call.arg(2, "bias")
    out_features = weight.shape[0] if len(weight.shape) == 2 else 1
    macs = fm.linear_macs(call.arg(0, "input").shape, out_features)
    return Cost(macs, 2 * macs + _bias_flops(call, bias is not None))


@register(nn.Bilinear)
def bilinear_module(call: OpCall) -> Cost:
    module = call.module
    # y_k = x1^T A_k x2: A_k x2 (in1*in2) then the dot with x1 (in1), per output feature.
    per_output = module.in1_features * module.in2_features + module.in1_features
    macs = call.out.numel * per_output
    return Cost(macs, 2 * macs + _bias_flops(call, module.bias is not None))


@register(torch.matmul, operator.matmul, "matmul", "__matmul__", torch.mm, "mm", torch.bmm, "bmm",
          torch.mv, "mv", torch.dot, "dot", torch.vdot, "vdot")
def matmul(call: OpCall) -> Cost:
    macs = fm.matmul_macs(call.inputs[0].shape, call.out.shape)
    return Cost(macs, 2 * macs)


@register(torch.addmm, "addmm", torch.baddbmm, "baddbmm")
def matmul_accumulate(call: OpCall) -> Cost:
    macs = fm.matmul_macs(call.inputs[1].shape, call.out.shape)
    return Cost(macs, 2 * macs + call.out.numel)


@register(torch.einsum)
def einsum(call: OpCall) -> Cost:
    equation = call.args[0]
    operands = call.args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    shapes = [operand.shape for operand in operands]
    macs = fm.einsum_macs(equation, shapes)
    if macs == 0:  # transpose / trace / reduction of one operand
        return Cost(0, fm.numel(shapes[0]) if call.out.numel < fm.numel(shapes[0]) else 0)
    return Cost(macs, 2 * macs)


@register(torch.linalg.solve_triangular, torch.triangular_solve, "triangular_solve")
def triangular_solve(call: OpCall) -> Cost:
    """Forward/back substitution: see :func:`formulas.triangular_solve_macs`; one division per
    output element unless the diagonal is ones (``unitriangular``)."""
    legacy = call.target in (torch.triangular_solve, "triangular_solve")  # triangular_solve(B, A)
    matrix = call.arg(1, "A") if legacy else call.arg(0, "input")  # linalg's A is named input
    macs = fm.triangular_solve_macs(matrix.shape[-1], call.out.shape)
    unit = call.kwargs.get("unitriangular", call.args[4] if legacy and len(call.args) > 4 else False)
    return Cost(macs, 2 * macs + (0 if unit else call.out.numel))


_GROUPED_MM = tuple(fn for fn in (getattr(torch, "_grouped_mm", None), getattr(F, "grouped_mm", None)) if fn)


@register(*_GROUPED_MM)
def grouped_mm(call: OpCall) -> Cost:
    """One matmul per group (Mixture-of-Experts experts): see :func:`formulas.grouped_mm_macs`."""
    a = call.arg(0, "mat_a" if "mat_a" in call.kwargs else "input")  # (F.grouped_mm's names; torch._grouped_mm's)
    b = call.arg(1, "mat_b" if "mat_b" in call.kwargs else "mat2")
    macs = fm.grouped_mm_macs(a.shape, b.shape, call.out.shape)
    return Cost(macs, 2 * macs + _bias_flops(call, call.arg(3, "bias") is not None))


# --- attention ------------------------------------------------------------------------

@register(F.scaled_dot_product_attention)
def scaled_dot_product_attention(call: OpCall) -> Cost:
    query, key, value = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
    macs = fm.attention_macs(query.shape, key.shape, value.shape)
    mask = call.arg(3, "attn_mask")
    extra = fm.attention_extra_flops(query.shape, key.shape)
    if mask is not None:
        extra += fm.numel(query.shape[:-2]) * query.shape[-2] * key.shape[-2]
    return Cost(macs, 2 * macs + extra)


@register(nn.MultiheadAttention)
def multihead_attention(call: OpCall) -> Cost:
    module: nn.MultiheadAttention = call.module
    query, key, value = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
    batched = len(query.shape) == 3
    if batched and not module.batch_first:
        length, batch = query.shape[0], query.shape[1]
        source = key.shape[0]
    elif batched:
        batch, length = query.shape[0], query.shape[1]
        source = key.shape[1]
    else:
        batch, length, source = 1, query.shape[0], key.shape[0]
    embed, heads = module.embed_dim, module.num_heads
    head_dim = embed // heads
    q_shape = (batch, heads, length, head_dim)
    k_shape = (batch, heads, source, head_dim)
    projections = fm.mha_projection_macs(length, source, query.shape[-1], key.shape[-1], value.shape[-1], embed)
    macs = batch * projections + fm.attention_macs(q_shape, k_shape, k_shape)
    biases = 0
    if module.in_proj_bias is not None:
        biases += batch * (length + 2 * source) * embed
    if module.out_proj.bias is not None:
        biases += batch * length * embed
    return Cost(macs, 2 * macs + biases + fm.attention_extra_flops(q_shape, k_shape))


# --- recurrent ------------------------------------------------------------------------

@register(nn.LSTM, nn.GRU, nn.RNN)
def recurrent(call: OpCall) -> Cost:
    module = call.module
    data = call.inputs[0]
    if len(data.shape) == 2:
        steps, batch = data.shape[0], 1
    elif module.batch_first:
        batch, steps = data.shape[0], data.shape[1]
    else:
        steps, batch = data.shape[0], data.shape[1]
    kind = type(module).__name__ if type(module).__name__ in ("LSTM", "GRU", "RNN") else module.mode.split("_")[0]
    kind = {"RNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}.get(kind, "RNN")
    directions = 2 if module.bidirectional else 1
    proj = getattr(module, "proj_size", 0)
    macs = fm.rnn_macs(kind, module.input_size, module.hidden_size, module.num_layers, directions, steps, batch, proj)
    extra = fm.rnn_extra_flops(kind, module.hidden_size, module.num_layers, directions, steps, batch, module.bias)
    return Cost(macs, 2 * macs + extra)


@register(nn.LSTMCell, nn.GRUCell, nn.RNNCell)
def recurrent_cell(call: OpCall) -> Cost:
    module = call.module
    data = call.inputs[0]
    batch = data.shape[0] if len(data.shape) == 2 else 1
    kind = {nn.LSTMCell: "LSTM", nn.GRUCell: "GRU"}.get(type(module), "RNN")
    macs = fm.rnn_macs(kind, module.input_size, module.hidden_size, 1, 1, 1, batch)
    extra = fm.rnn_extra_flops(kind, module.hidden_size, 1, 1, 1, batch, module.bias)
    return Cost(macs, 2 * macs + extra)


# --- normalisation --------------------------------------------------------------------

@register(nn.modules.batchnorm._BatchNorm)
def batch_norm_module(call: OpCall) -> Cost:
    module = call.module
    uses_batch_stats = module.training or not module.track_running_stats
    if uses_batch_stats:
        per_element = fm.NORM_STATS_FLOPS + (fm.AFFINE_FLOPS if module.affine else 0)
    else:
        per_element = fm.AFFINE_FLOPS
    return Cost(0, call.out.numel * per_element)


@register(F.batch_norm)
def batch_norm_function(call: OpCall) -> Cost:
    training = call.arg(5, "training", False)
    affine = call.arg(3, "weight") is not None
    per_element = fm.NORM_STATS_FLOPS + (fm.AFFINE_FLOPS if affine else 0) if training else fm.AFFINE_FLOPS
    return Cost(0, call.out.numel * per_element)


@register(nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
def norm_module(call: OpCall) -> Cost:
    module = call.module
    affine = getattr(module, "elementwise_affine", getattr(module, "affine", False))
    return Cost(0, call.out.numel * (fm.NORM_STATS_FLOPS + (fm.AFFINE_FLOPS if affine else 0)))


@register(F.layer_norm, F.group_norm, F.instance_norm)
def norm_function(call: OpCall) -> Cost:
    index = 2 if call.target is not F.instance_norm else 3
    affine = call.arg(index, "weight") is not None
    return Cost(0, call.out.numel * (fm.NORM_STATS_FLOPS + (fm.AFFINE_FLOPS if affine else 0)))


@register(nn.RMSNorm)
def rms_norm_module(call: OpCall) -> Cost:
    return Cost(0, call.out.numel * (3 + (1 if call.module.weight is not None else 0)))


@register(F.rms_norm)
def rms_norm_function(call: OpCall) -> Cost:
    return Cost(0, call.out.numel * (3 + (1 if call.arg(2, "weight") is not None else 0)))


@register(torch._weight_norm)
def weight_norm(call: OpCall) -> Cost:
    """``g * v / ||v||`` with the norm taken over every dim but ``dim``: square and
    accumulate (2) and scale (1) per element of ``v``; a square root and a divide per norm."""
    v, g = call.arg(0, "v"), call.arg(1, "g")
    return Cost(0, 3 * v.numel + 2 * g.numel)


@register(nn.LocalResponseNorm, F.local_response_norm)
def local_response_norm(call: OpCall) -> Cost:
    size = call.module.size if call.module is not None else call.arg(1, "size")
    # square, windowed sum over `size` channels, scale/pow, divide
    return Cost(0, call.out.numel * (size + 3))


# --- pooling --------------------------------------------------------------------------

def _ntuple(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


_POOL_DIMS = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.LPPool1d: 1, nn.LPPool2d: 2,
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
    F.max_pool1d_with_indices: 1, F.max_pool2d_with_indices: 2, F.max_pool3d_with_indices: 3,
    torch.max_pool1d: 1, torch.max_pool2d: 2, torch.max_pool3d: 3, torch.avg_pool1d: 1,
    F.lp_pool1d: 1, F.lp_pool2d: 2,
}


def _dims(call: OpCall, table: dict) -> int:
    """Spatial dims of a pooling call: by function, or by the module's (base) class."""
    if call.module is None:
        return table[call.target]
    return next(table[cls] for cls in type(call.module).__mro__ if cls in table)


@register(*_POOL_DIMS)
def pool(call: OpCall) -> Cost:
    kernel = call.module.kernel_size if call.module is not None else call.arg(1, "kernel_size")
    return Cost(0, fm.pool_flops(call.out.shape, _ntuple(kernel, _dims(call, _POOL_DIMS))))


_ADAPTIVE_DIMS = {
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
    F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
    torch.adaptive_avg_pool1d: 1,
}


@register(*_ADAPTIVE_DIMS)
def adaptive_pool(call: OpCall) -> Cost:
    return Cost(0, fm.adaptive_pool_flops(call.inputs[0].shape, call.out.shape, _dims(call, _ADAPTIVE_DIMS)))


# --- interpolation --------------------------------------------------------------------

@register(F.interpolate, F.upsample, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def interpolate(call: OpCall) -> Cost:
    mode = call.module.mode if call.module is not None else call.arg(3, "mode", "nearest")
    data = call.inputs[0]
    spatial = len(data.shape) - 2
    if mode == "area":
        return Cost(0, fm.adaptive_pool_flops(data.shape, call.out.shape, spatial))
    return Cost(0, fm.interpolate_flops(call.out.shape, mode, spatial))


# --- softmax and reductions ---------------------------------------------------------------

@register(nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, F.softmax, F.log_softmax, F.softmin,
          torch.softmax, torch.log_softmax, "softmax", "log_softmax")
def softmax(call: OpCall) -> Cost:
    return Cost(0, call.out.numel * fm.SOFTMAX_FLOPS)


_REDUCTIONS = ("sum", "mean", "amax", "amin", "max", "min", "prod", "norm", "logsumexp", "all", "any",
               "argmax", "argmin", "cumsum", "cumprod", "nansum", "nanmean", "count_nonzero", "aminmax",
               "cummax", "cummin", "logcumsumexp", "histc", "bincount", "topk", "kthvalue")


@register(*_REDUCTIONS, *(getattr(torch, name) for name in _REDUCTIONS), torch.linalg.vector_norm)
def reduction(call: OpCall) -> Cost:
    return Cost(0, call.inputs[0].numel)


@register("sort", "argsort", "msort", torch.sort, torch.argsort, torch.msort)
def sort(call: OpCall) -> Cost:
    """Comparisons of a sort along ``dim`` (default the last): ``ceil(log2 n)`` per element."""
    data = call.inputs[0]
    dim = 0 if call.target in ("msort", torch.msort) else call.arg(1, "dim", -1)
    return Cost(0, fm.sort_comparisons(data.shape, dim))


@register("var", "std", torch.var, torch.std, "var_mean", "std_mean", torch.var_mean, torch.std_mean)
def variance(call: OpCall) -> Cost:
    return Cost(0, call.inputs[0].numel * 3)  # sum, subtract mean, square-accumulate


# --- elementwise ----------------------------------------------------------------------

_ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardshrink, nn.Softshrink,
    nn.Tanhshrink, nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Threshold, nn.GLU,
)
_ACTIVATION_FUNCTIONS = (
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.prelu, F.rrelu, F.elu, F.elu_, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.sigmoid, F.tanh, F.hardtanh, F.hardtanh_, F.hardswish, F.hardsigmoid,
    F.hardshrink, F.softshrink, F.tanhshrink, F.softplus, F.softsign, F.logsigmoid, F.threshold, F.glu,
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.selu, torch.celu, torch.prelu, torch.rrelu,
)
_ELEMENTWISE_NAMES = (
    "add", "sub", "mul", "div", "true_divide", "floor_divide", "remainder", "fmod", "pow", "neg", "abs",
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "square", "reciprocal",
    "sin", "cos", "tan", "sinh", "cosh", "asin", "acos", "atan", "atan2", "erf", "erfc", "erfinv",
    "sigmoid", "tanh", "relu", "clamp", "clip", "clamp_min", "clamp_max", "maximum", "minimum", "sign",
    "floor", "ceil", "round", "trunc", "frac", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
    "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not", "where",
    "masked_fill", "nan_to_num", "isnan", "isinf", "isfinite", "hardtanh", "rsub", "sgn", "xlogy",
    "logaddexp", "hypot", "copysign", "heaviside", "softplus", "gelu", "silu", "mish", "hardswish",
    "hardsigmoid", "leaky_relu", "elu", "sigmoid", "threshold",
    # NumPy-style aliases
    "greater", "greater_equal", "less", "less_equal", "not_equal", "multiply", "divide", "subtract",
    "negative", "absolute", "arcsin", "arccos", "arctan", "arctan2", "asinh", "acosh", "atanh", "arcsinh",
    "arccosh", "arctanh", "fix",
)
_ELEMENTWISE_OPERATORS = (
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
    operator.pow, operator.neg, operator.pos, operator.abs, operator.invert, operator.eq, operator.ne,
    operator.lt, operator.le, operator.gt, operator.ge, operator.and_, operator.or_, operator.xor,
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.imod,
    operator.ipow, operator.iand, operator.ior, operator.ixor,
)
_BINARY_DUNDERS = ("add", "sub", "mul", "truediv", "div", "floordiv", "mod", "pow", "and", "or", "xor",
                   "lshift", "rshift")
_ELEMENTWISE_METHODS = tuple(
    dict.fromkeys(
        [*_ELEMENTWISE_NAMES, *(name + "_" for name in _ELEMENTWISE_NAMES),
         *(f"__{prefix}{name}__" for name in _BINARY_DUNDERS for prefix in ("", "r", "i")),
         "__neg__", "__pos__", "__abs__", "__invert__",
         "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"]
    )
)


def _torch_functions(names):
    seen = set()
    for name in names:
        for owner in (torch, torch.special):
            fn = getattr(owner, name, None)
            if callable(fn) and fn not in seen and fn not in _ACTIVATION_FUNCTIONS:
                seen.add(fn)
                yield fn


@register(*_ACTIVATION_MODULES, *_ACTIVATION_FUNCTIONS, *_ELEMENTWISE_OPERATORS, *_ELEMENTWISE_METHODS,
          *_torch_functions(_ELEMENTWISE_NAMES))
def elementwise(call: OpCall) -> Cost:
    """1 FLOP per output element."""
    return Cost(0, sum(out.numel for out in call.outputs[:1]))


@register("addcmul", "addcdiv", "addcmul_", "addcdiv_", "lerp", "lerp_", torch.addcmul, torch.addcdiv, torch.lerp)
def fused_elementwise(call: OpCall) -> Cost:
    return Cost(0, 2 * call.out.numel)


@register(torch.polar)
def polar(call: OpCall) -> Cost:
    """``abs * (cos(angle) + i sin(angle))``: a cosine, a sine and two products per element."""
    return Cost(0, 4 * call.out.numel)


@register(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
          F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.dropout)
def dropout(call: OpCall) -> Cost:
    """Training: a mask and a scaled multiply (2 per element). Eval: the input itself comes
    back (no kernel, nothing read or written)."""
    training = call.module.training if call.module is not None else call.arg(2, "training", True)
    return Cost(0, 2 * call.out.numel) if training else Cost(moves_data=True)


# --- data movement: no arithmetic -----------------------------------------------------------

def _data_movement(call: OpCall) -> Cost:
    return Cost(moves_data=True)

_MOVEMENT_NAMES = (
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t", "mT",
    "contiguous", "expand", "expand_as", "repeat", "repeat_interleave", "tile", "squeeze", "unsqueeze",
    "chunk", "split", "tensor_split", "unbind", "narrow", "select", "index_select", "gather", "take",
    "cat", "concat", "concatenate", "stack", "hstack", "vstack", "flip", "roll", "movedim", "moveaxis",
    "swapaxes", "swapdims", "clone", "detach", "to", "type", "type_as", "float", "half", "double",
    "bfloat16", "int", "long", "bool", "cpu", "cuda", "masked_select", "masked_scatter", "masked_scatter_",
    "index_fill", "index_fill_", "index_copy", "index_copy_", "take_along_dim", "fill_", "zero_", "copy_",
    "new_zeros", "new_ones", "new_empty", "new_full",
    "new_tensor", "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "zeros",
    "ones", "empty", "full", "arange", "linspace", "eye", "tensor", "as_tensor", "rand", "randn",
    "randint", "triu", "tril", "diagonal", "diag", "unfold", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_channel_shuffle", "broadcast_to", "atleast_1d", "atleast_2d", "atleast_3d",
    "flatten", "ravel", "split_with_sizes", "unsafe_split", "unsafe_chunk", "requires_grad_", "numpy",
    "nonzero", "dsplit", "hsplit", "vsplit", "column_stack", "__getitem__",
    "bernoulli_", "normal_", "uniform_", "view_as_complex", "view_as_real",
)


register(
    operator.getitem, *_MOVEMENT_NAMES,
    *(fn for fn in (getattr(torch, name, None) for name in _MOVEMENT_NAMES) if callable(fn)),
    F.pad, F.pixel_shuffle, F.pixel_unshuffle, F.embedding, F.one_hot, torch.nn.functional.unfold,
    torch.nn.functional.fold,
    nn.Identity, nn.Flatten, nn.Unflatten, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
    nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d, nn.Unfold, nn.Fold,
    expect_input, rebuild_output,  # fxcost's own: an input checked, a return value rebuilt (no data moved)
)(_data_movement)


@register("scatter", "scatter_", torch.scatter)
def scatter(call: OpCall) -> Cost:
    """Writes ``src`` at ``index``: data movement, or 1 FLOP per scattered element with
    ``reduce="add"``/``"multiply"``."""
    index = call.arg(2, "index")
    return Cost(0, index.numel if call.kwargs.get("reduce") is not None else 0)


@register("scatter_add", "scatter_add_", torch.scatter_add, "scatter_reduce", "scatter_reduce_",
          torch.scatter_reduce)
def scatter_accumulate(call: OpCall) -> Cost:
    """Accumulates ``src`` into the output at ``index``: 1 FLOP per scattered element (as many
    as ``index`` has), plus the division per output element of ``reduce="mean"``."""
    index = call.arg(2, "index")
    mean = call.arg(4, "reduce") == "mean"
    return Cost(0, index.numel + (call.out.numel if mean else 0))


@register("index_add", "index_add_", torch.index_add, "index_reduce", "index_reduce_", torch.index_reduce)
def index_accumulate(call: OpCall) -> Cost:
    """Accumulates the slices of ``source`` into the output along ``dim``: 1 FLOP per element of
    ``source`` (2 with ``alpha`` != 1: the scaling), plus the division per output element of
    ``reduce="mean"``."""
    source = call.arg(3, "source")
    scaled = call.kwargs.get("alpha", 1) != 1
    mean = call.arg(4, "reduce") == "mean"
    return Cost(0, source.numel * (2 if scaled else 1) + (call.out.numel if mean else 0))


@register("index_put_", "index_put", torch.index_put, torch.index_put_)
def index_put(call: OpCall) -> Cost:
    """Writes ``values`` at ``indices``: data movement, or 1 FLOP per written element with
    ``accumulate=True`` (the indexed positions: the broadcast index shape times the dims
    after the indexed ones; a boolean mask counts as if it selected every position, an upper
    bound)."""
    if not call.arg(3, "accumulate", False):
        return Cost()
    data, indices = call.arg(0, "input"), call.arg(1, "indices")
    masks = [i for i in indices if i.dtype == torch.bool]  # each selects up to its numel, over its dims
    index_shape = torch.broadcast_shapes(*(tuple(i.shape) for i in indices if i.dtype != torch.bool))
    consumed = len(indices) - len(masks) + sum(len(m.shape) for m in masks)
    return Cost(0, fm.numel(index_shape) * math.prod(m.numel for m in masks) * fm.numel(data.shape[consumed:]))


@register(nn.Embedding)
def embedding(call: OpCall) -> Cost:
    """A lookup: reads only the selected rows, so weight bytes read = output bytes."""
    return Cost(0, 0, weight_bytes_read=call.out.nbytes)


@register(nn.EmbeddingBag, F.embedding_bag)
def embedding_bag(call: OpCall) -> Cost:
    indices = call.inputs[0]
    width = call.out.shape[-1]
    return Cost(0, indices.numel * width, weight_bytes_read=indices.numel * width * call.out.itemsize)


@register(F.normalize)
def normalize(call: OpCall) -> Cost:
    """Lp normalisation: power, sum and divide per element (the root per vector is ignored)."""
    return Cost(0, 3 * call.out.numel)


@register(F.grid_sample)
def grid_sample(call: OpCall) -> Cost:
    """Sampling at grid points: nearest moves data; bilinear/bicubic blend 4^d... taps per
    output element (``2 * taps - 1`` FLOPs), as interpolation does."""
    mode = call.arg(2, "mode", "bilinear")
    spatial = len(call.out.shape) - 2
    if mode == "bicubic":
        return Cost(0, call.out.numel * (2 * 4**spatial - 1))
    return Cost(0, fm.interpolate_flops(call.out.shape, mode, spatial))


register(torch.meshgrid, torch.functional.meshgrid)(_data_movement)


# --- detection post-processing (torchvision ops) ---------------------------------------------

import torchvision  # noqa: E402, F401 - registers the torch.ops.torchvision ops costed below

#: FLOPs of the IoU of one pair of boxes and its comparison with the threshold: four max/min
#: for the intersection corners, two clamped widths (2 each), the intersection area (1),
#: the union (2) and the ratio (1), then the compare (1).
IOU_FLOPS = 13


@register(torch.ops.torchvision.nms, torch.ops.torchvision.nms.default)
def nms(call: OpCall) -> Cost:
    """Non-maximum suppression of N boxes, at its upper bound: box areas (3 each), a sort
    (N*ceil(log2 N) comparisons), and the IoU of every pair (N*(N-1)/2)."""
    count = call.arg(0, "dets").shape[0]
    return Cost(0, 3 * count + count * max(1, (count - 1).bit_length()) + IOU_FLOPS * count * (count - 1) // 2)


@register(torch.ops.torchvision.roi_align, torch.ops.torchvision.roi_align.default)
def roi_align(call: OpCall) -> Cost:
    """RoIAlign: every output bin averages ``sampling_ratio`` x ``sampling_ratio`` bilinear
    samples (4 taps: 7 FLOPs each, plus the sum) and divides once. An adaptive sampling
    ratio (<= 0) depends on each RoI's size: counted as 2, torchvision's usual setting."""
    ratio = call.arg(5, "sampling_ratio", 2)
    samples = (ratio if ratio > 0 else 2) ** 2
    return Cost(0, call.out.numel * (samples * (fm.interpolate_flops((1,), "bilinear", 2) + 1) + 1))


@register(torch.unique, "unique", torch.unique_consecutive, "unique_consecutive")
def unique(call: OpCall) -> Cost:
    """Sorting the input (n*ceil(log2 n) comparisons) and comparing neighbours (n)."""
    count = call.inputs[0].numel
    return Cost(0, count * max(1, (count - 1).bit_length()) + count)


# --- aten ops: what runs in a backward pass, an optimizer step or a recomputed forward ----------
# Costed where fxcost follows a training step op by op (see fxcost._training). An aten op
# without a rule here counts 1 FLOP per output element if torch tags it pointwise, nothing if it
# only views or moves data, and is listed as unsupported otherwise.

aten = torch.ops.aten

register(aten.mm, aten.bmm, aten.dot, aten.mv, aten.vdot)(matmul)
register(aten.addmm, aten.baddbmm)(matmul_accumulate)
register(aten.sum, aten.mean, aten.amax, aten.amin, aten.max, aten.min, aten.prod, aten.norm,
         aten.linalg_vector_norm, aten.cumsum, aten.logsumexp, aten.any, aten.all, aten.argmax, aten.argmin)(reduction)
register(aten.var, aten.std, aten.var_mean, aten.std_mean)(variance)


@register(aten.convolution, aten._convolution)
def aten_convolution(call: OpCall) -> Cost:
    """A convolution (recomputed under activation checkpointing)."""
    input, weight, bias = call.args[0], call.args[1], call.args[2]
    macs = fm.conv_macs(input.shape, weight.shape, call.out.shape, bool(call.args[6]))
    return Cost(macs, 2 * macs + _bias_flops(call, bias is not None))


@register(aten.convolution_backward)
def convolution_backward(call: OpCall) -> Cost:
    """Input and weight gradients each cost the forward's MACs (the input gradient is the
    transposed convolution, the weight gradient the correlation of input and output gradient,
    groups included); the bias gradient sums the output gradient."""
    grad_output, input, weight = call.args[0], call.args[1], call.args[2]
    transposed, mask = bool(call.args[7]), call.args[10]
    macs = fm.conv_macs(input.shape, weight.shape, grad_output.shape, transposed) * (int(mask[0]) + int(mask[1]))
    return Cost(macs, 2 * macs + (grad_output.numel if mask[2] else 0))


_FUSED_ATTENTION = [getattr(aten, name) for name in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention", "_flash_attention_forward",
    "_efficient_attention_forward") if hasattr(aten, name)]
_FUSED_ATTENTION_BACKWARD = [getattr(aten, name) for name in (
    "_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_efficient_attention_backward", "_scaled_dot_product_cudnn_attention_backward",
    "_flash_attention_backward", "_efficient_attention_backward") if hasattr(aten, name)]


@register(*_FUSED_ATTENTION, aten._scaled_dot_product_attention_math)
def fused_attention(call: OpCall) -> Cost:
    """A fused attention kernel (recomputed under activation checkpointing)."""
    query, key, value = call.args[0], call.args[1], call.args[2]
    macs = fm.attention_macs(query.shape, key.shape, value.shape)
    return Cost(macs, 2 * macs + fm.attention_extra_flops(query.shape, key.shape))


@register(*_FUSED_ATTENTION_BACKWARD)
def fused_attention_backward(call: OpCall) -> Cost:
    """The backward of fused attention: scores recomputed, then four gradient matmuls (see
    :func:`fxcost.formulas.attention_backward_macs`)."""
    query, key, value = call.args[1], call.args[2], call.args[3]
    macs = fm.attention_backward_macs(query.shape, key.shape, value.shape)
    return Cost(macs, 2 * macs + fm.attention_backward_extra_flops(query.shape, key.shape))


@register(aten.native_layer_norm_backward, aten.native_group_norm_backward, aten.native_batch_norm_backward,
          aten._fused_rms_norm_backward if hasattr(aten, "_fused_rms_norm_backward") else aten.native_layer_norm_backward)
def norm_backward(call: OpCall) -> Cost:
    """The backward of a normalisation (see :data:`fxcost.formulas.NORM_BACKWARD_FLOPS`)."""
    return Cost(0, call.args[1].numel * fm.NORM_BACKWARD_FLOPS)


@register(aten.native_layer_norm, aten.native_group_norm, aten.native_batch_norm, aten._native_batch_norm_legit,
          aten._native_batch_norm_legit_no_training)
def aten_norm(call: OpCall) -> Cost:
    """A normalisation (recomputed under activation checkpointing): statistics and affine."""
    return Cost(0, call.args[0].numel * (fm.NORM_STATS_FLOPS + fm.AFFINE_FLOPS))


@register(aten._softmax_backward_data)
def softmax_backward(call: OpCall) -> Cost:
    return Cost(0, call.out.numel * fm.SOFTMAX_BACKWARD_FLOPS)


@register(aten._log_softmax_backward_data)
def log_softmax_backward(call: OpCall) -> Cost:
    """``dy - exp(y) * sum(dy)``: exponent, accumulate, multiply, subtract... 3 per element."""
    return Cost(0, call.out.numel * 3)


@register(aten._softmax, aten._log_softmax)
def aten_softmax(call: OpCall) -> Cost:
    return Cost(0, call.out.numel * fm.SOFTMAX_FLOPS)


@register(aten.embedding_dense_backward, aten.max_pool2d_with_indices_backward,
          aten.max_pool3d_with_indices_backward, aten._adaptive_avg_pool2d_backward,
          aten._adaptive_avg_pool3d_backward, aten.index_add, aten.index_put)
def scatter_backward(call: OpCall) -> Cost:
    """Gradients scattered into place, one add per incoming element."""
    return Cost(0, call.args[0].numel)


@register(aten.avg_pool2d_backward, aten.avg_pool3d_backward)
def avg_pool_backward(call: OpCall) -> Cost:
    """Each output gradient is spread over its window: ``prod(kernel)`` per output element."""
    kernel = call.args[2]
    return Cost(0, fm.pool_flops(call.args[0].shape, tuple(kernel) if isinstance(kernel, (list, tuple)) else (kernel,)))


@register(aten.max_pool2d_with_indices, aten.max_pool3d_with_indices, aten.avg_pool2d, aten.avg_pool3d)
def aten_pool(call: OpCall) -> Cost:
    """Pooling (recomputed under activation checkpointing): ``prod(kernel)`` per output element."""
    kernel = call.args[1]
    return Cost(0, fm.pool_flops(call.out.shape, tuple(kernel) if isinstance(kernel, (list, tuple)) else (kernel,)))


@register(aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d)
def aten_adaptive_pool(call: OpCall) -> Cost:
    spatial = len(call.out.shape) - 2
    return Cost(0, fm.adaptive_pool_flops(call.args[0].shape, call.out.shape, spatial))


@register(aten.native_dropout)
def aten_dropout(call: OpCall) -> Cost:
    return Cost(0, 2 * call.out.numel)


# --- ops met in the coverage sweep (benchmarks/coverage.py) --------------------------------------

#: ``Tensor`` properties that return a view (a transpose, the real or imaginary part): read
#: through the property's getter, which is what a torch function mode sees. ``conj`` is a view
#: too (it sets the conjugate bit; the op reading it conjugates on the fly).
_VIEW_PROPERTIES = ("T", "mT", "H", "mH", "real", "imag")

register(
    *(getattr(torch.Tensor, name).__get__ for name in _VIEW_PROPERTIES),
    torch.broadcast_tensors, torch.scalar_tensor, torch.ops.aten.lift_fresh.default, torch.conj, "conj",
    torch.as_strided, "as_strided",
    *(getattr(nn.init, name) for name in ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
                                          "eye_", "dirac_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                                          "kaiming_normal_")),
)(_data_movement)


@register(torch.diff, "diff")
def diff(call: OpCall) -> Cost:
    """``n``-th forward difference along ``dim`` (``prepend``/``append`` concatenated first):
    one subtraction per element of each intermediate difference, ``L - 1``, ..., ``L - n``
    along ``dim`` for ``L`` elements."""
    order, dim = call.arg(1, "n", 1), call.arg(2, "dim", -1)
    length = call.out.shape[dim]
    rows = call.out.numel // length if length else 0
    return Cost(0, rows * sum(length + order - k for k in range(1, order + 1)))


@register(torch._is_all_true, "_is_all_true", torch._is_any_true, "_is_any_true")
def all_true(call: OpCall) -> Cost:
    """``torch._check`` and friends reduce a boolean tensor: 1 per input element, as reductions."""
    return Cost(0, call.inputs[0].numel)


@register(torch.outer, "outer", torch.ger, "ger")
def outer(call: OpCall) -> Cost:
    """Outer product: one multiply per output element. No MACs: nothing is accumulated."""
    return Cost(0, call.out.numel)


@register(F.mse_loss, F.l1_loss)
def pointwise_loss(call: OpCall) -> Cost:
    """Difference and square (or absolute value) per element, 2 FLOPs; with ``reduction`` sum or
    mean, 1 more per element to accumulate, and one division for the mean."""
    elements = call.inputs[0].numel
    reduction = call.arg(4, "reduction", "mean")
    if reduction == "none":
        return Cost(0, 2 * elements)
    return Cost(0, 3 * elements + (1 if reduction == "mean" else 0))


@register(torch.isin, "isin")
def isin(call: OpCall) -> Cost:
    """Membership test: every element compared with every test element (the direct count;
    torch sorts instead when the test set is large)."""
    elements, test = call.arg(0, "elements"), call.arg(1, "test_elements")
    return Cost(0, fm.numel(getattr(elements, "shape", ())) * fm.numel(getattr(test, "shape", ())))


@register(torch.bucketize, "bucketize", torch.searchsorted)
def binary_search(call: OpCall) -> Cost:
    """A binary search per looked-up value among the sorted boundaries of its row."""
    if call.target is torch.searchsorted:
        boundaries, values = call.arg(0, "sorted_sequence"), call.arg(1, "input")
    else:
        values, boundaries = call.arg(0, "input"), call.arg(1, "boundaries")
    count = fm.numel(getattr(values, "shape", ()))
    return Cost(0, count * fm.binary_search_comparisons(boundaries.shape[-1]))


@register(torch.linalg.norm, torch.linalg.matrix_norm)
def linalg_norm(call: OpCall) -> Cost:
    """Vector norms and the Frobenius, 1, infinity matrix norms: 1 per input element, as every
    reduction (``torch.linalg.vector_norm``, ``Tensor.norm``). The spectral and nuclear matrix
    norms (``ord`` 2, -2, ``"nuc"``) need the singular values of every matrix:
    :func:`formulas.singular_values_flops` each."""
    data = call.inputs[0]
    matrix_norm = call.target is torch.linalg.matrix_norm
    order, dims = call.arg(1, "ord", "fro" if matrix_norm else None), call.arg(2, "dim")
    if dims is None and (matrix_norm or (order is not None and len(data.shape) == 2)):
        dims = (-2, -1)
    matrix = isinstance(dims, (tuple, list)) and len(dims) == 2
    if matrix and order in (2, -2, "nuc"):
        rows, cols = data.shape[dims[0]], data.shape[dims[1]]
        return Cost(0, data.numel // (rows * cols) * fm.singular_values_flops(rows, cols))
    return Cost(0, data.numel)


_FFT_DIMS = {  # function: (transformed dims when not given, real input or output)
    torch.fft.fft: (1, False), torch.fft.ifft: (1, False), torch.fft.fft2: (2, False), torch.fft.ifft2: (2, False),
    torch.fft.fftn: (None, False), torch.fft.ifftn: (None, False), torch.fft.rfft: (1, True),
    torch.fft.irfft: (1, True), torch.fft.rfft2: (2, True), torch.fft.irfft2: (2, True),
    torch.fft.rfftn: (None, True), torch.fft.irfftn: (None, True), torch.fft.hfft: (1, True),
    torch.fft.ihfft: (1, True),
}


@register(*_FFT_DIMS)
def fft(call: OpCall) -> Cost:
    """Discrete Fourier transforms over the transformed dims (``dim``, else the last one, two or
    all): :func:`formulas.fft_flops` of the signal size (the larger of input and output along
    each dim: the real side of a real transform), once per other element. No MACs."""
    default, real = _FFT_DIMS[call.target]
    data, out = call.inputs[0], call.out
    dims = call.arg(2, "dim", None)
    if dims is None:
        dims = tuple(range(-(default or len(out.shape)), 0))
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    points = math.prod(max(out.shape[d], data.shape[d] if len(data.shape) == len(out.shape) else 0) for d in dims)
    return Cost(0, fm.fft_flops(points, out.numel // math.prod(out.shape[d] for d in dims), real))


@register(F.multi_head_attention_forward)
def multi_head_attention_forward(call: OpCall) -> Cost:
    """The functional form of ``nn.MultiheadAttention`` (sequence-first ``(L, N, E)`` or
    unbatched): the same count as the module, with precomputed ``static_k``/``static_v`` not
    projected, and ``bias_k``/``add_zero_attn`` each adding a key to attend to."""
    query, key, value = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
    embed, heads = call.arg(3, "embed_dim_to_check"), call.arg(4, "num_heads")
    batched = len(query.shape) == 3
    batch = query.shape[1] if batched else 1
    length, source = query.shape[0], key.shape[0]
    static_k, static_v = call.arg(21, "static_k"), call.arg(22, "static_v")
    key_dim = 0 if static_k is not None else key.shape[-1]
    value_dim = 0 if static_v is not None else value.shape[-1]
    projections = fm.mha_projection_macs(length, source, query.shape[-1], key_dim, value_dim, embed)
    attended = (static_k.shape[1] if static_k is not None else source) + (call.arg(7, "bias_k") is not None) \
        + bool(call.arg(9, "add_zero_attn", False))
    q_shape = (batch, heads, length, embed // heads)
    k_shape = (batch, heads, attended, embed // heads)
    macs = batch * projections + fm.attention_macs(q_shape, k_shape, k_shape)
    biases = 0
    if call.arg(6, "in_proj_bias") is not None:
        biases += batch * (length + (source if key_dim else 0) + (source if value_dim else 0)) * embed
    if call.arg(12, "out_proj_bias") is not None:
        biases += batch * length * embed
    return Cost(macs, 2 * macs + biases + fm.attention_extra_flops(q_shape, k_shape))
