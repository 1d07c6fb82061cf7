"""Direct shapes: the outputs of common layers computed from their inputs' shapes and the
layer's attributes, without running the op through torch's dispatcher on fake tensors.

Running an op on fake tensors costs 100-300 µs (argument hashing, the meta kernel, output
wrapping); most nodes of a vision model or a transformer are convolutions, norms,
activations, pooling, linear layers, elementwise arithmetic, ``cat`` and views, whose output
sizes, strides and storage (a new one, a view of an input's, or the input itself when the op
works in place) follow from the input shapes alone (:mod:`fxcost._shapes`). For those, this
module makes the output fake tensors directly and tells the :class:`StorageTracker` what the
op would have made (its outputs, and the outputs it drops at once, such as max-pool
indices), so storage identities, liveness and node temporaries are those of the fake run.

Every handler accepts only the cases whose result it knows exactly (contiguous inputs of one
dtype and device, eval-mode layers, values fxcost does not know) and returns None for
anything else; the op then runs on fake tensors as before, which also raises the real error
for bad input. ``tests/test_direct.py`` checks, node by node over the model zoo, that both
ways give the same shapes, strides, dtypes, storages and temporaries.
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import _shapes as sh
from ._compat import FakeFactory, bump_version, empty_like_strides, is_constant_of, is_fake_of, storage_key
from ._walk import modules_of

#: Whether direct shapes are used (``disabled()`` turns them off, to compare with fake runs).
_ENABLED = [True]

#: Returned by :meth:`Direct.call` / :meth:`Direct.module` when the op must run on fake tensors.
NOT_DONE = object()


@contextlib.contextmanager
def disabled():
    """Run every op on fake tensors (the reference the direct shapes are tested against)."""
    _ENABLED.append(False)
    try:
        yield
    finally:
        _ENABLED.pop()


#: ``New.stride`` of an output laid out as the fake kernel lays it out for inputs of this
#: geometry: the first call with inputs of a given geometry runs on fake tensors, and the
#: strides it gives are used for the later ones (see :meth:`Direct.learn`).
AS_FAKE = "as-fake"


class New(NamedTuple):
    """An output with a storage of its own, row-major unless ``stride`` is given (or
    :data:`AS_FAKE`)."""

    shape: tuple
    dtype: torch.dtype
    stride: Any = None


class View(NamedTuple):
    """An output viewing ``base``'s storage."""

    base: torch.Tensor
    shape: tuple
    stride: tuple
    offset: int


class InPlace(NamedTuple):
    """The input ``tensor`` itself, written in place (its version counter moves)."""

    tensor: torch.Tensor


class Made(NamedTuple):
    """What a handler says the op returns."""

    value: Any
    """A :class:`New`, :class:`View`, :class:`InPlace`, an input tensor returned as it is, or
    a tuple of those."""
    temporaries: tuple = ()
    """``(dtype, nbytes)`` of outputs the op makes and drops before returning."""
    reads: tuple = ()
    """Tensors the op reads beyond its arguments (a module's weights)."""


Handler = Callable[..., "Made | None"]
_CALLS: dict[Any, Handler] = {}
_MODULES: dict[type, Handler] = {}


def _registering(table: dict) -> Callable[..., Callable[[Handler], Handler]]:
    """A decorator factory entering a handler in ``table`` under each key it is given."""
    def keys(*keys: Any) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            for key in keys:
                table[key] = handler
            return handler
        return decorate
    return keys


_calls = _registering(_CALLS)
_modules = _registering(_MODULES)


def has_call(key: Any) -> bool:
    """Whether calls of ``key`` (a function or a ``Tensor`` method name) may be computed directly."""
    try:
        return key in _CALLS
    except TypeError:  # unhashable target
        return False


def has_module(module: nn.Module) -> bool:
    """Whether calls of ``module`` may be computed directly (its own class's forward, no hooks)."""
    return type(module) in _MODULES


class Direct:
    """Computes the outputs of supported ops for one propagation (one fake mode, one tracker)."""

    def __init__(self, fake_mode: Any, tracker: Any) -> None:
        self.fake_mode = fake_mode
        self.tracker = tracker
        self.factories: dict[torch.device, FakeFactory] = {}
        self.layouts: dict[tuple, tuple] = {}  # (op, input geometry) -> output strides the fake kernel gave
        self.learning: tuple | None = None  # the key of the call left to the fake kernels to learn from

    def active(self) -> bool:
        """Whether ops may be skipped now (not while gradients are recorded or a listener
        must see every op, as in a training step)."""
        return _ENABLED[-1] and not torch.is_grad_enabled() and not self.tracker.sees_every_op()

    def call(self, key: Any, args: tuple, kwargs: dict) -> Any:
        """The result of calling ``key`` (function or method name) on ``args``, or NOT_DONE."""
        self.learning = None
        handler = _CALLS.get(key)
        if handler is None or not self.active() or (key is operator.getitem and not isinstance(args[0], torch.Tensor)):
            return NOT_DONE  # (picking an item out of a tuple runs no op)
        return self._run(handler, None, args, kwargs, key)

    def fallback(self, run: Callable[[], Any]) -> Any:
        """``run()``: the op :meth:`call` or :meth:`module` just left to the fake kernels. Where
        a handler takes the output's layout from them (:data:`AS_FAKE`), the strides the run
        gives are remembered for later calls on inputs of the same geometry (op, sizes,
        strides, dtypes, device, the types of the other arguments: everything a meta kernel's
        layout depends on)."""
        layout, self.learning = self.learning, None
        result = run()
        if layout is not None and is_fake_of(result, self.fake_mode):
            self.layouts[layout] = result.stride()
        return result

    def module(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """The result of calling ``module`` on ``args``, or NOT_DONE."""
        self.learning = None
        handler = _MODULES.get(type(module))
        forward = module.__dict__.get("forward")
        if handler is None or (forward is not None and type(forward) is not DirectForward) or not self.active():
            return NOT_DONE
        return self._run(handler, module, args, kwargs)

    def install(self, root: nn.Module, whole: Callable[[], bool]) -> list[nn.Module]:
        """Give every module under ``root`` whose calls may be computed directly a
        :class:`DirectForward` (fxcost's mirror only), used while ``whole()`` says its call is
        not recorded call by call. Returns the modules, for :func:`uninstall`."""
        installed = []
        for module in modules_of(root):
            if type(module) in _MODULES and "forward" not in module.__dict__:
                module.__dict__["forward"] = DirectForward(self, module, whole)
                installed.append(module)
        return installed

    def _run(self, handler: Handler, module: nn.Module | None, args: tuple, kwargs: dict, key: Any = None) -> Any:
        inputs = _tensors(args, kwargs)
        if not inputs:
            return NOT_DONE
        device = inputs[0].device
        known = self.tracker.known.buffers if self.tracker.known is not None else {}
        opaque = not known
        # (an input made from a constant is fine beside one whose values are unknown: the fake
        # kernels only compute values where every input is a constant)
        unknown = False
        for tensor in inputs:
            if is_fake_of(tensor, self.fake_mode):
                unknown = True
            elif not is_constant_of(tensor, self.fake_mode):
                return NOT_DONE
            if len(inputs) > 1 and tensor.device != device:
                return NOT_DONE
            if not opaque and storage_key(tensor) not in known:
                opaque = True
        if not opaque or not unknown:  # every input known: its values are computed (see fxcost._values)
            return NOT_DONE
        try:
            made = handler(module, *args, **kwargs) if module is not None else handler(*args, **kwargs)
        except TypeError:  # a signature the handler does not take (out=..., unusual keywords)
            return NOT_DONE
        if made is None:
            return NOT_DONE
        reads = [tensor for tensor in made.reads if tensor is not None]
        for tensor in reads:
            if not is_fake_of(tensor, self.fake_mode) or tensor.device != device:
                return NOT_DONE
        if type(made.value) is New and made.value.stride is AS_FAKE:
            # (the op: a function, or a module's class and settings; the output's shape, and
            # the geometry of everything it reads)
            op = key if module is None else (type(module), module.extra_repr())
            layout = (op, device, made.value.shape, tuple((tuple(t.shape), t.stride(), t.dtype) for t in (*inputs, *reads)),
                      tuple(type(v) for v in args if not isinstance(v, torch.Tensor)),
                      tuple((k, type(v)) for k, v in kwargs.items() if not isinstance(v, torch.Tensor)))
            stride = self.layouts.get(layout)
            if stride is None:
                self.learning = layout
                return NOT_DONE
            made = made._replace(value=made.value._replace(stride=stride))
        factory = self.factories.get(device)
        if factory is None:
            factory = self.factories[device] = FakeFactory(self.fake_mode, device)
        created: list[torch.Tensor] = []
        value = _materialise(made.value, factory, created)
        self.tracker.made(inputs + reads, created, made.temporaries)
        return value


def uninstall(modules: list[nn.Module]) -> None:
    """Undo :meth:`Direct.install`."""
    for module in modules:
        if type(module.__dict__.get("forward")) is DirectForward:
            del module.__dict__["forward"]


class DirectForward:
    """The forward of a module of fxcost's mirror while code is recorded: where the module's
    call is not recorded call by call (it is one call, or runs inside one), its output is
    computed directly; otherwise its own forward runs."""

    def __init__(self, direct: Direct, module: nn.Module, whole: Callable[[], bool]) -> None:
        self.direct = direct
        self.module = module
        self.whole = whole

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.whole():
            result = self.direct.module(self.module, args, kwargs)
            if result is not NOT_DONE:
                return result
            return self.direct.fallback(lambda: type(self.module).forward(self.module, *args, **kwargs))
        return type(self.module).forward(self.module, *args, **kwargs)


def _materialise(spec: Any, factory: FakeFactory, created: list) -> Any:
    if isinstance(spec, New):
        tensor = factory.new(spec.shape, spec.stride or sh.contiguous_strides(spec.shape), spec.dtype)
    elif isinstance(spec, View):
        tensor = factory.view(spec.base, spec.shape, spec.stride, spec.offset)
    elif isinstance(spec, InPlace):
        bump_version(spec.tensor)
        created.append(spec.tensor)
        return spec.tensor
    elif isinstance(spec, tuple):
        return tuple(_materialise(item, factory, created) for item in spec)
    else:
        return spec  # an input returned as it is
    created.append(tensor)
    return tensor


def _tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


# --- checks ------------------------------------------------------------------------------

def _standard(tensor: Any) -> bool:
    """A tensor laid out row-major (every stride the product of the later sizes)."""
    return isinstance(tensor, torch.Tensor) and tensor.stride() == sh.contiguous_strides(tensor.shape)


def _floating(tensor: torch.Tensor) -> bool:
    return tensor.dtype.is_floating_point


def _same_as(tensor: torch.Tensor, *others: Any) -> bool:
    """Whether every tensor in ``others`` (None skipped) has ``tensor``'s dtype."""
    return all(other is None or (isinstance(other, torch.Tensor) and other.dtype == tensor.dtype) for other in others)


def _elementwise(x: Any, inplace: bool = False) -> Made | None:
    """A floating-point op computing one output element per input element."""
    if not (_standard(x) and _floating(x) and x.numel() > 0):
        return None
    return Made(InPlace(x) if inplace else New(tuple(x.shape), x.dtype))


# --- elementwise arithmetic ----------------------------------------------------------------

_SCALARS = (int, float, bool)


def _binary(a: Any, b: Any, inplace: bool = False, floating_only: bool = False, **extra: Any) -> Made | None:
    """``a (op) b`` with broadcasting: tensors of one dtype, or a tensor and a Python number."""
    if not isinstance(a, torch.Tensor) or any(k not in ("alpha",) for k in extra):
        return None
    if a.dtype in (torch.bool,) or a.dtype.is_complex:
        return None
    floating = a.dtype.is_floating_point
    if floating_only and not floating:
        return None
    operands = [a]
    if isinstance(b, torch.Tensor):
        if b.dtype != a.dtype:
            return None
        operands.append(b)
        shape = sh.broadcast(tuple(a.shape), tuple(b.shape))
    elif type(b) in _SCALARS and (floating or type(b) is not float):
        shape = tuple(a.shape)
    else:
        return None
    alpha = extra.get("alpha", 1)
    if type(alpha) not in _SCALARS or (not floating and type(alpha) is float):
        return None
    if shape is None or math.prod(shape) == 0:
        return None
    if inplace:
        return Made(InPlace(a)) if shape == tuple(a.shape) and _standard(a) else None
    if all(_standard(t) for t in operands):
        return Made(New(shape, a.dtype))
    # (other layouts: as the fake kernels lay them out; their rules for sizes of 1 and ties are their own)
    return Made(New(shape, a.dtype, AS_FAKE))


_calls(operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub, "add", "mul", "sub",
       "__add__", "__mul__", "__sub__", "__radd__", "__rmul__")(_binary)


@_calls(operator.iadd, operator.imul, operator.isub, "add_", "mul_", "sub_", "__iadd__", "__imul__", "__isub__")
def _binary_inplace(a: Any, b: Any, **extra: Any) -> Made | None:
    return _binary(a, b, inplace=True, **extra)


@_calls(operator.truediv, torch.div, "div", "__truediv__")
def _divide(a: Any, b: Any, **extra: Any) -> Made | None:
    return _binary(a, b, floating_only=True, **extra) if not extra else None


@_calls(operator.itruediv, "div_", "__itruediv__")
def _divide_inplace(a: Any, b: Any, **extra: Any) -> Made | None:
    return _binary(a, b, inplace=True, floating_only=True) if not extra else None


# --- activations and other elementwise functions -------------------------------------------

@_calls(torch.relu, F.relu, "relu", torch.sigmoid, F.sigmoid, "sigmoid", torch.tanh, F.tanh, "tanh",
        torch.neg, operator.neg, "neg", "__neg__", torch.exp, "exp", torch.rsqrt, "rsqrt", torch.sqrt, "sqrt",
        torch.sin, "sin", torch.cos, "cos", torch.erf, "erf")
def _unary(x: Any, inplace: bool = False) -> Made | None:
    if inplace is True or _standard(x):
        return _elementwise(x, inplace is True)
    if not (isinstance(x, torch.Tensor) and _floating(x) and x.numel() > 0):
        return None
    shape = tuple(x.shape)  # (laid out as torch's reference implementations lay it out)
    return Made(New(shape, x.dtype, AS_FAKE))


@_calls(torch.relu_, F.relu_, "relu_", "sigmoid_", "tanh_")
def _unary_inplace(x: Any) -> Made | None:
    return _elementwise(x, inplace=True)


@_calls(F.silu, F.hardswish, F.hardsigmoid, F.mish)
def _activation(x: Any, inplace: bool = False) -> Made | None:
    return _elementwise(x, inplace is True)


@_calls(F.gelu)
def _gelu(x: Any, approximate: str = "none") -> Made | None:
    return _elementwise(x) if approximate in ("none", "tanh") else None


@_calls(F.relu6)
def _relu6(x: Any, inplace: bool = False) -> Made | None:
    return _elementwise(x, inplace is True)


@_calls(F.hardtanh)
def _hardtanh(x: Any, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Made | None:
    return _elementwise(x, inplace is True) if min_val <= max_val else None


@_calls(F.leaky_relu)
def _leaky_relu(x: Any, negative_slope: float = 0.01, inplace: bool = False) -> Made | None:
    return _elementwise(x, inplace is True)


@_calls(torch.pow, "pow", operator.pow, "__pow__")
def _power(x: Any, exponent: Any) -> Made | None:
    return _elementwise(x) if type(exponent) in (int, float) else None


@_modules(nn.ReLU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU,
          nn.SELU)
def _activation_module(module: nn.Module, x: Any) -> Made | None:
    return _elementwise(x, getattr(module, "inplace", False) is True)


@_modules(nn.Hardtanh)
def _hardtanh_module(module: nn.Module, x: Any) -> Made | None:
    return _elementwise(x, module.inplace is True) if module.min_val <= module.max_val else None


@_modules(nn.GELU)
def _gelu_module(module: nn.Module, x: Any) -> Made | None:
    return _gelu(x, module.approximate)


@_modules(nn.Sigmoid, nn.Tanh)
def _plain_module(module: nn.Module, x: Any) -> Made | None:
    return _elementwise(x)


@_calls(F.softmax, torch.softmax, "softmax")
def _softmax(x: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> Made | None:
    if dtype is not None or type(dim) is not int or not isinstance(x, torch.Tensor):
        return None
    return _elementwise(x) if sh.wrap_dim(dim, x.dim()) is not None else None


@_modules(nn.Softmax)
def _softmax_module(module: nn.Module, x: Any) -> Made | None:
    return _softmax(x, module.dim)


# --- layers that return their input ----------------------------------------------------------

@_modules(nn.Identity)
def _identity(module: nn.Module, x: Any, *args: Any, **kwargs: Any) -> Made | None:
    return Made(x) if isinstance(x, torch.Tensor) else None


@_modules(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
def _dropout_module(module: nn.Module, x: Any) -> Made | None:
    if module.training or not 0 <= module.p <= 1 or not isinstance(x, torch.Tensor):
        return None
    if type(module) is not nn.Dropout and x.dim() not in {nn.Dropout1d: (2, 3), nn.Dropout2d: (3, 4),
                                                          nn.Dropout3d: (4, 5)}.get(type(module), (x.dim(),)):
        return None  # dropout2d warns about such inputs: leave them to the fake run
    return Made(x)


@_calls(F.dropout)
def _dropout(x: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Made | None:
    if training is not False or not 0 <= p <= 1 or not isinstance(x, torch.Tensor):
        return None
    return Made(x)


# --- convolution, linear, embedding ---------------------------------------------------------

@_modules(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(module: nn.Module, x: Any) -> Made | None:
    weight, bias = module.weight, module.bias
    spatial = weight.dim() - 2
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        return None
    if not (isinstance(x, torch.Tensor) and _standard(weight) and x.dim() == spatial + 2 and _floating(x)
            and _same_as(x, weight, bias) and x.shape[1] == weight.shape[1] * module.groups and x.numel() > 0):
        return None
    shape = sh.conv_output(tuple(x.shape), weight.shape[0], weight.shape[2:], module.stride, module.padding,
                           module.dilation)
    if shape is None:
        return None
    # (an input laid out otherwise, channels-last: the layout the fake kernels' choice of backend gave)
    return Made(New(shape, x.dtype, None if _standard(x) else AS_FAKE), reads=(weight, bias))


@_modules(nn.Linear)
def _linear_module(module: nn.Module, x: Any) -> Made | None:
    return _linear(x, module.weight, module.bias)


@_calls(F.linear)
def _linear(x: Any, weight: Any, bias: Any = None) -> Made | None:
    """ATen's linear: ``addmm`` / ``mm`` on the rows of ``x`` viewed as a matrix; for an input
    that is not contiguous, a matmul then an out-of-place bias add (the product is dropped)."""
    if not (isinstance(weight, torch.Tensor) and weight.dim() == 2 and (bias is None or (
            isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.shape[0] == weight.shape[0]))):
        return None
    if not (isinstance(x, torch.Tensor) and x.dim() >= 2 and _floating(x) and _same_as(x, weight, bias)
            and x.shape[-1] == weight.shape[1] and x.numel() > 0):
        return None
    out = New((*x.shape[:-1], weight.shape[0]), x.dtype)
    if x.dim() == 2 or (bias is not None and x.is_contiguous()):
        return Made(out, reads=(weight, bias))
    shape, strides = x.shape, x.stride()
    if any(strides[i] != strides[i + 1] * shape[i + 1] for i in range(x.dim() - 2)):
        return None  # matmul would not fold the batch dimensions into one matrix
    temporaries = ((x.dtype, math.prod(out.shape) * x.element_size()),) if bias is not None else ()
    return Made(out, temporaries, reads=(weight, bias))


@_calls(torch.addmm)
def _addmm(bias: Any, mat1: Any, mat2: Any, *, beta: Any = 1, alpha: Any = 1) -> Made | None:
    if not all(isinstance(t, torch.Tensor) for t in (bias, mat1, mat2)) or not _same_as(mat1, mat2, bias):
        return None
    if mat1.dim() != 2 or mat2.dim() != 2 or mat1.shape[1] != mat2.shape[0] or not _floating(mat1):
        return None
    shape = (mat1.shape[0], mat2.shape[1])
    if bias.dim() > 2 or sh.broadcast(tuple(bias.shape), shape) != shape or math.prod(shape) == 0:
        return None
    return Made(New(shape, mat1.dtype))


@_modules(nn.Embedding)
def _embedding(module: nn.Module, ids: Any) -> Made | None:
    weight = module.weight
    if module.max_norm is not None or module.sparse or not isinstance(ids, torch.Tensor):
        return None
    if ids.dtype not in (torch.int64, torch.int32) or not _standard(ids) or weight.dim() != 2:
        return None
    return Made(New((*ids.shape, weight.shape[1]), weight.dtype), reads=(weight,))


# --- normalisation -----------------------------------------------------------------------------

_BATCH_NORM_DIMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


@_modules(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batch_norm(module: nn.Module, x: Any) -> Made | None:
    """Eval mode with running statistics: one output (the saved statistics are empty)."""
    stats = (module.running_mean, module.running_var)
    if module.training or stats[0] is None or stats[1] is None:
        return None
    if not (_standard(x) and x.dim() in _BATCH_NORM_DIMS[type(module)] and _floating(x)
            and _same_as(x, module.weight, module.bias, *stats) and x.shape[1] == module.num_features
            and x.numel() > 0):
        return None
    return Made(New(tuple(x.shape), x.dtype), reads=(module.weight, module.bias, *stats))


@_modules(nn.LayerNorm)
def _layer_norm_module(module: nn.Module, x: Any) -> Made | None:
    return _layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


@_calls(F.layer_norm)
def _layer_norm(x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Made | None:
    """float32: the output plus the per-row mean and reciprocal deviation it drops."""
    shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list, torch.Size)) else (normalized_shape,)
    if not (isinstance(x, torch.Tensor) and x.dtype == torch.float32 and _same_as(x, weight, bias) and shape
            and x.numel() > 0):
        return None
    if len(shape) > x.dim() or tuple(x.shape[x.dim() - len(shape):]) != shape:
        return None
    for param in (weight, bias):
        if param is not None and tuple(param.shape) != shape:
            return None
    rows = math.prod(x.shape[:x.dim() - len(shape)]) * 4
    # the output is like the input made contiguous: a contiguous input (size-1 dimensions may
    # have any stride) keeps its strides exactly, any other is row-major
    stride = x.stride() if x.is_contiguous() else None
    return Made(New(tuple(x.shape), x.dtype, stride), ((torch.float32, rows), (torch.float32, rows)),
                reads=(weight, bias))


@_modules(nn.GroupNorm)
def _group_norm(module: nn.Module, x: Any) -> Made | None:
    """float32: the output plus the per-group mean and reciprocal deviation it drops."""
    weight, bias = module.weight, module.bias
    if not (isinstance(x, torch.Tensor) and x.dtype == torch.float32 and _same_as(x, weight, bias) and x.dim() >= 2
            and x.shape[1] == module.num_channels and module.num_channels % module.num_groups == 0 and x.numel() > 0):
        return None
    groups = x.shape[0] * module.num_groups * 4
    return Made(New(tuple(x.shape), x.dtype), ((torch.float32, groups), (torch.float32, groups)), reads=(weight, bias))


# --- pooling ----------------------------------------------------------------------------------

def _max_pool(x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any,
              return_indices: Any) -> Made | None:
    """2-d max pooling: the output plus the int64 indices it drops."""
    if return_indices is not False or type(ceil_mode) is not bool:
        return None
    if not (_standard(x) and x.dim() in (3, 4) and _floating(x) and x.numel() > 0):
        return None
    geometry = [sh.expand_tuple(v, 2) for v in (kernel_size, stride if stride not in (None, [], ()) else kernel_size,
                                                padding, dilation)]
    if any(g is None for g in geometry) or any(p > k // 2 for p, k in zip(geometry[2], geometry[0])):
        return None
    shape = sh.pool_output(tuple(x.shape), *geometry, ceil_mode)
    if shape is None:
        return None
    return Made(New(shape, x.dtype), ((torch.int64, math.prod(shape) * 8),))


@_modules(nn.MaxPool2d)
def _max_pool_module(module: nn.Module, x: Any) -> Made | None:
    return _max_pool(x, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode,
                     module.return_indices)


@_calls(F.max_pool2d)
def _max_pool_function(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                       ceil_mode: bool = False, return_indices: bool = False) -> Made | None:
    return _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _avg_pool(x: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any, divisor_override: Any) -> Made | None:
    if type(ceil_mode) is not bool or divisor_override == 0:
        return None
    if not (_standard(x) and x.dim() in (3, 4) and _floating(x) and x.numel() > 0):
        return None
    geometry = [sh.expand_tuple(v, 2) for v in (kernel_size, stride if stride not in (None, [], ()) else kernel_size,
                                                padding)]
    if any(g is None for g in geometry) or any(p > k // 2 for p, k in zip(geometry[2], geometry[0])):
        return None
    shape = sh.pool_output(tuple(x.shape), *geometry, (1, 1), ceil_mode)
    return Made(New(shape, x.dtype)) if shape is not None else None


@_modules(nn.AvgPool2d)
def _avg_pool_module(module: nn.Module, x: Any) -> Made | None:
    return _avg_pool(x, module.kernel_size, module.stride, module.padding, module.ceil_mode, module.divisor_override)


@_calls(F.avg_pool2d)
def _avg_pool_function(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True, divisor_override: Any = None) -> Made | None:
    return _avg_pool(x, kernel_size, stride, padding, ceil_mode, divisor_override)


@_calls(F.adaptive_avg_pool2d)
def _adaptive_avg_pool(x: Any, output_size: Any) -> Made | None:
    if not (_standard(x) and x.dim() in (3, 4) and _floating(x) and x.numel() > 0):
        return None
    sizes = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size) \
        if isinstance(output_size, (tuple, list)) and len(output_size) == 2 else None
    if sizes is None:
        return None
    spatial = tuple(x.shape[-2 + i] if s is None else s for i, s in enumerate(sizes))
    if not all(type(s) is int and s >= 1 for s in spatial):
        return None
    return Made(New((*x.shape[:-2], *spatial), x.dtype))


@_modules(nn.AdaptiveAvgPool2d)
def _adaptive_avg_pool_module(module: nn.Module, x: Any) -> Made | None:
    return _adaptive_avg_pool(x, module.output_size)


@_calls(torch.mean, "mean")
def _mean(x: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Made | None:
    if dtype is not None or type(keepdim) is not bool or not (_standard(x) and _floating(x) and x.numel() > 0):
        return None
    if dim is None:
        return Made(New((), x.dtype))
    dims = (dim,) if type(dim) is int else tuple(dim) if isinstance(dim, (tuple, list)) else None
    if not dims or not all(type(d) is int for d in dims):
        return None
    wrapped = {sh.wrap_dim(d, x.dim()) for d in dims}
    if None in wrapped or len(wrapped) != len(dims):
        return None
    shape = tuple(1 if i in wrapped else s for i, s in enumerate(x.shape) if keepdim or i not in wrapped)
    return Made(New(shape, x.dtype))


# --- attention ---------------------------------------------------------------------------------

@_calls(F.scaled_dot_product_attention)
def _attention(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
               is_causal: bool = False, scale: Any = None, enable_gqa: bool = False) -> Made | None:
    """The CPU flash kernel's case (no mask, no dropout, equal head sizes, as many key and
    value heads as query heads, or a divisor of them with ``enable_gqa``): an output laid out
    like the query, and a float32 log-sum-exp per query position it drops."""
    if attn_mask is not None or dropout_p != 0.0 or type(enable_gqa) is not bool or type(is_causal) is not bool:
        return None
    if not (isinstance(query, torch.Tensor) and isinstance(key, torch.Tensor) and isinstance(value, torch.Tensor)):
        return None
    if query.device.type != "cpu" or not torch.backends.cuda.flash_sdp_enabled():
        return None
    if not (query.dtype == torch.float32 and _same_as(query, key, value)
            and query.dim() == key.dim() == value.dim() == 4):
        return None
    (b, h, lq, e), (bk, hk, lk, ek), (bv, hv, lv, ev) = query.shape, key.shape, value.shape
    if not (b == bk == bv and hk == hv and e == ek == ev and lk == lv and min(b, h, hk, lq, lk, e) > 0):
        return None
    if h != hk and not (enable_gqa and h % hk == 0):
        return None
    if any(t.stride(-1) != 1 for t in (query, key, value)):
        return None
    shape = tuple(query.shape)
    return Made(New(shape, query.dtype, empty_like_strides(query)), ((torch.float32, b * h * lq * 4),))


@_modules(nn.MultiheadAttention)
def _multi_head_attention(module: nn.Module, query: Any, key: Any, value: Any, key_padding_mask: Any = None,
                          need_weights: bool = True, attn_mask: Any = None, average_attn_weights: bool = True,
                          is_causal: bool = False) -> Made | None:
    """Self-attention on ``nn.MultiheadAttention``'s fast path (what its forward runs in
    inference without masks: one fused op): the output, and the weights averaged over heads
    (with ``need_weights``) or an empty tensor in their place."""
    weight, bias, out = module.in_proj_weight, module.in_proj_bias, module.out_proj
    if not (query is key and key is value and isinstance(query, torch.Tensor) and query.dim() == 3
            and query.device.type in ("cpu", "cuda") and not module.training and module.batch_first
            and module.kdim == module.vdim == module.embed_dim and weight is not None and bias is not None and out.bias is not None
            and module.bias_k is None and module.bias_v is None and not module.add_zero_attn
            and module.num_heads % 2 == 0 and _floating(query) and _same_as(query, weight, bias, out.weight, out.bias)
            and _standard(query) and query.shape[-1] == module.embed_dim and query.numel() > 0):
        return None
    if key_padding_mask is not None or attn_mask is not None or is_causal is not False \
            or type(need_weights) is not bool or average_attn_weights is not True or torch.is_autocast_enabled():
        return None
    batch, length, _ = query.shape
    weights = New((batch, length, length), query.dtype) if need_weights else New((0,), query.dtype)
    return Made((New(tuple(query.shape), query.dtype), weights), reads=(weight, bias, out.weight, out.bias))


# --- joining and views -------------------------------------------------------------------------

@_calls(torch.cat, torch.concat, torch.concatenate)
def _cat(tensors: Any, dim: int = 0, axis: Any = None) -> Made | None:
    if axis is not None:
        dim = axis
    if not isinstance(tensors, (tuple, list)) or not tensors or type(dim) is not int:
        return None
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    dtype = tensors[0].dtype
    if any(t.dtype != dtype for t in tensors):
        return None
    tensors = [t for t in tensors if tuple(t.shape) != (0,)]  # (skipped by cat, as torch always has)
    if not tensors:
        return None
    first = tensors[0]
    if first.dim() == 0:
        return None
    ndim = first.dim()
    axis_ = sh.wrap_dim(dim, ndim)
    if axis_ is None:
        return None
    total = 0
    channels_last = ndim == 4
    for tensor in tensors:
        if not (isinstance(tensor, torch.Tensor) and tensor.dim() == ndim and tensor.dtype == first.dtype
                and tensor.numel() > 0 and (ndim != 5 or _standard(tensor))):
            return None
        channels_last = channels_last and sh.channels_last_like(tuple(tensor.shape), tensor.stride())
        if channels_last:
            return None  # the output would be channels-last: left to the fake run
        if any(a != b for i, (a, b) in enumerate(zip(tensor.shape, first.shape)) if i != axis_):
            return None
        total += tensor.shape[axis_]
    shape = tuple(total if i == axis_ else s for i, s in enumerate(first.shape))
    return Made(New(shape, first.dtype))


def _sizes(args: tuple) -> Any:
    """``view(2, 3)`` and ``view((2, 3))`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return args


@_calls("view")
def _view(x: Any, *shape: Any) -> Made | None:
    """A view with the strides ATen computes (None where it would refuse to view)."""
    return _reshaped(x, shape, copy=False)


@_calls("reshape", torch.reshape)
def _reshape(x: Any, *shape: Any) -> Made | None:
    """A view where one exists, else a row-major copy."""
    return _reshaped(x, shape, copy=True)


def _reshaped(x: Any, shape: tuple, copy: bool) -> Made | None:
    if not isinstance(x, torch.Tensor) or not shape or x.numel() == 0:
        return None
    new = sh.view_shape(x.numel(), _sizes(shape))
    if new is None or x.dim() == 0:
        return None
    old, old_strides = tuple(x.shape), x.stride()
    if copy and sh.viewable(old, old_strides, new) is None:  # reshape copies: a row-major clone, viewed
        strides = sh.view_geometry(old, sh.contiguous_strides(old), new)
        return Made(New(new, x.dtype, strides)) if strides is not None else None
    strides = sh.view_geometry(old, old_strides, new)
    return Made(View(x, new, strides, x.storage_offset())) if strides is not None else None


@_calls("flatten", torch.flatten)
def _flatten(x: Any, start_dim: int = 0, end_dim: int = -1) -> Made | None:
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or type(start_dim) is not int or type(end_dim) is not int:
        return None
    start, end = sh.wrap_dim(start_dim, x.dim()), sh.wrap_dim(end_dim, x.dim())
    if start is None or end is None or start > end:
        return None
    if start == end:
        return Made(x)  # returned as it is
    return _reshaped(x, (sh.flatten_shape(tuple(x.shape), start, end),), copy=True)


@_modules(nn.Flatten)
def _flatten_module(module: nn.Module, x: Any) -> Made | None:
    return _flatten(x, module.start_dim, module.end_dim)


@_calls("permute", torch.permute)
def _permute(x: Any, *dims: Any) -> Made | None:
    if not isinstance(x, torch.Tensor):
        return None
    order = _sizes(dims)
    wrapped = [sh.wrap_dim(d, x.dim()) if type(d) is int else None for d in order]
    if len(wrapped) != x.dim() or None in wrapped or len(set(wrapped)) != len(wrapped):
        return None
    shape, strides = x.shape, x.stride()
    return Made(View(x, tuple(shape[d] for d in wrapped), tuple(strides[d] for d in wrapped), x.storage_offset()))


@_calls("transpose", torch.transpose)
def _transpose(x: Any, dim0: Any, dim1: Any) -> Made | None:
    if not isinstance(x, torch.Tensor) or type(dim0) is not int or type(dim1) is not int:
        return None
    a, b = sh.wrap_dim(dim0, x.dim()), sh.wrap_dim(dim1, x.dim())
    if a is None or b is None or x.dim() == 0:
        return None
    shape, strides = list(x.shape), list(x.stride())
    shape[a], shape[b] = shape[b], shape[a]
    strides[a], strides[b] = strides[b], strides[a]
    return Made(View(x, tuple(shape), tuple(strides), x.storage_offset()))


@_calls("unsqueeze", torch.unsqueeze)
def _unsqueeze(x: Any, dim: Any) -> Made | None:
    if not isinstance(x, torch.Tensor) or type(dim) is not int:
        return None
    wrapped = sh.wrap_dim(dim, x.dim() + 1)
    if wrapped is None:
        return None
    shape, strides = sh.unsqueeze_geometry(tuple(x.shape), x.stride(), wrapped)
    return Made(View(x, shape, strides, x.storage_offset()))


@_calls("expand")
def _expand(x: Any, *sizes: Any) -> Made | None:
    if not isinstance(x, torch.Tensor):
        return None
    geometry = sh.expand_geometry(tuple(x.shape), x.stride(), _sizes(sizes))
    return Made(View(x, *geometry, x.storage_offset())) if geometry is not None else None


@_calls("contiguous")
def _contiguous(x: Any) -> Made | None:
    if not isinstance(x, torch.Tensor) or x.numel() == 0:
        return None
    if x.is_contiguous():
        return Made(x)  # returned as it is, no op runs
    return Made(New(tuple(x.shape), x.dtype))  # a row-major copy


@_calls("split", torch.split)
def _split(x: Any, split_size_or_sections: Any, dim: int = 0) -> Made | None:
    if not isinstance(x, torch.Tensor) or type(split_size_or_sections) is not int or type(dim) is not int:
        return None
    axis = sh.wrap_dim(dim, x.dim())
    if axis is None or x.dim() == 0:
        return None
    sizes = sh.split_sizes(x.shape[axis], split_size_or_sections)
    return _pieces(x, axis, sizes) if sizes is not None else None


@_calls("chunk", torch.chunk)
def _chunk(x: Any, chunks: Any, dim: int = 0) -> Made | None:
    if not isinstance(x, torch.Tensor) or type(chunks) is not int or chunks < 1 or type(dim) is not int:
        return None
    axis = sh.wrap_dim(dim, x.dim())
    if axis is None or x.dim() == 0 or x.shape[axis] == 0:
        return None
    sizes = sh.split_sizes(x.shape[axis], (x.shape[axis] + chunks - 1) // chunks)
    return _pieces(x, axis, sizes) if sizes is not None else None


def _pieces(x: torch.Tensor, axis: int, sizes: list[int]) -> Made:
    shape, strides, offset = list(x.shape), x.stride(), x.storage_offset()
    views = []
    for size in sizes:
        shape[axis] = size
        views.append(View(x, tuple(shape), strides, offset))
        offset += size * strides[axis]
    return Made(tuple(views))


@_calls(operator.getitem, "__getitem__")
def _getitem(x: Any, index: Any) -> Made | None:
    """Basic indexing (integers, slices with positive steps, None, Ellipsis): a view."""
    if not isinstance(x, torch.Tensor):
        return None
    items = index if type(index) is tuple else (index,)
    if any(not (type(i) is int or type(i) is slice or i is None or i is Ellipsis) for i in items):
        return None
    if sum(1 for i in items if i is Ellipsis) > 1:
        return None
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if consumed > x.dim():
        return None
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = (*items[:at], *[slice(None)] * (x.dim() - consumed), *items[at + 1:])
    shape, strides, offset = list(x.shape), list(x.stride()), x.storage_offset()
    new_shape, new_strides, dim = [], [], 0
    for item in items:
        if item is None:  # unsqueeze at this position of the result
            new_shape.append(1)
            new_strides.append(strides[dim] * shape[dim] if dim < len(shape) else 1)
            continue
        if type(item) is int:
            position = item + shape[dim] if item < 0 else item
            if not 0 <= position < shape[dim]:
                return None
            offset += position * strides[dim]
        else:
            sliced = sh.slice_geometry(shape[dim], strides[dim], item.start, item.stop, item.step)
            if sliced is None:
                return None
            new_shape.append(sliced[0])
            new_strides.append(sliced[1])
            offset += sliced[2]
        dim += 1
    new_shape.extend(shape[dim:])
    new_strides.extend(strides[dim:])
    return Made(View(x, tuple(new_shape), tuple(new_strides), offset))


@_calls("to")
def _to(x: Any, *args: Any, **kwargs: Any) -> Made | None:
    """``to(dtype)``: the tensor itself if nothing changes, else a row-major copy."""
    if not isinstance(x, torch.Tensor) or kwargs or len(args) != 1 or not isinstance(args[0], torch.dtype):
        return None
    return _cast(x, args[0])


@_calls("float")
def _float(x: Any) -> Made | None:
    return _cast(x, torch.float32) if isinstance(x, torch.Tensor) else None


@_calls("type_as")
def _type_as(x: Any, other: Any) -> Made | None:
    return _cast(x, other.dtype) if isinstance(x, torch.Tensor) and isinstance(other, torch.Tensor) else None


def _cast(x: torch.Tensor, dtype: torch.dtype) -> Made | None:
    if x.dtype == dtype:
        return Made(x)
    return Made(New(tuple(x.shape), dtype)) if _standard(x) and x.numel() > 0 else None
