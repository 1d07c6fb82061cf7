"""Output geometry of common layers as pure functions of input shapes and layer attributes.

What torch's kernels compute for sizes and strides, written out for the cases
:mod:`fxcost._direct` handles (contiguous inputs, the layouts eager PyTorch gives them).
Each function returns None where the arguments are outside those cases or would make the
real op fail: the caller then runs the op on fake tensors, which raises the real error.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

Shape = tuple[int, ...]


def contiguous_strides(shape: Sequence[int]) -> Shape:
    """Row-major strides of ``shape`` (a dimension of size 1 gets the product of the later sizes)."""
    return _contiguous_strides(tuple(shape))


@functools.lru_cache(maxsize=4096)
def _contiguous_strides(shape: Shape) -> Shape:
    strides = [1] * len(shape)
    step = 1
    for dim in range(len(shape) - 1, -1, -1):
        strides[dim] = step
        step *= max(shape[dim], 1)
    return tuple(strides)


def broadcast(*shapes: Sequence[int]) -> Shape | None:
    """Broadcast shape of ``shapes`` (None if they do not broadcast)."""
    ndim = max(len(s) for s in shapes)
    result = [1] * ndim
    for shape in shapes:
        offset = ndim - len(shape)
        for dim, size in enumerate(shape):
            current = result[offset + dim]
            if size == current or size == 1:
                continue
            if current != 1:
                return None
            result[offset + dim] = size
    return tuple(result)


def wrap_dim(dim: int, ndim: int) -> int | None:
    """``dim`` as a non-negative index into ``ndim`` dimensions (None if out of range)."""
    size = max(ndim, 1)
    if not -size <= dim < size:
        return None
    return dim + size if dim < 0 else dim


def expand_tuple(value, count: int) -> tuple | None:
    """A layer argument given once or per spatial dimension, as ``count`` values."""
    if isinstance(value, int):
        return (value,) * count
    if isinstance(value, (tuple, list)) and len(value) == count and all(isinstance(v, int) for v in value):
        return tuple(value)
    if isinstance(value, (tuple, list)) and len(value) == 1 and isinstance(value[0], int):
        return (value[0],) * count
    return None


def conv_output(input_shape: Shape, out_channels: int, kernel: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int]) -> Shape | None:
    """``(N, C_out, *spatial)`` of a convolution (None if a spatial size would be < 1)."""
    spatial = []
    for size, k, s, p, d in zip(input_shape[2:], kernel, stride, padding, dilation):
        out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        if out < 1 or s < 1:
            return None
        spatial.append(out)
    return (input_shape[0], out_channels, *spatial)


def pool_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int | None:
    """One output size of max/avg pooling (torch's ``pooling_output_shape``), None if invalid."""
    if stride < 1 or kernel < 1 or padding < 0 or dilation < 1:
        return None
    out = (size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out if out >= 1 else None


def pool_output(input_shape: Shape, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                dilation: Sequence[int], ceil_mode: bool) -> Shape | None:
    """Shape after pooling the trailing ``len(kernel)`` dimensions of ``input_shape``."""
    spatial_dims = len(kernel)
    spatial = []
    for size, k, s, p, d in zip(input_shape[-spatial_dims:], kernel, stride, padding, dilation):
        if p * 2 > (k - 1) * d + 1:  # torch: "pad should be at most half of effective kernel size"
            return None
        out = pool_size(size, k, s, p, d, ceil_mode)
        if out is None:
            return None
        spatial.append(out)
    return (*input_shape[:-spatial_dims], *spatial)


def view_shape(numel: int, shape: Sequence[int]) -> Shape | None:
    """``shape`` with a ``-1`` inferred so it holds ``numel`` elements (None if impossible)."""
    if not all(isinstance(s, int) and s >= -1 for s in shape) or list(shape).count(-1) > 1:
        return None
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known == 0 or numel % known:
            return None
        return tuple(numel // known if s == -1 else s for s in shape)
    return tuple(shape) if known == numel else None


def flatten_shape(shape: Shape, start: int, end: int) -> Shape:
    """Shape after flattening dimensions ``start..end`` (both wrapped, ``start < end``)."""
    return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])


def unsqueeze_geometry(shape: Shape, strides: Shape, dim: int) -> tuple[Shape, Shape]:
    """Sizes and strides after inserting a dimension of size 1 at ``dim`` (wrapped)."""
    stride = strides[dim] * shape[dim] if dim < len(shape) else 1
    return (*shape[:dim], 1, *shape[dim:]), (*strides[:dim], stride, *strides[dim:])


def expand_geometry(shape: Shape, strides: Shape, sizes: Sequence[int]) -> tuple[Shape, Shape] | None:
    """Sizes and strides of ``expand(*sizes)`` (None if it does not apply)."""
    if len(sizes) < len(shape) or not all(isinstance(s, int) for s in sizes):
        return None
    lead = len(sizes) - len(shape)
    new_shape, new_strides = [], []
    for dim, size in enumerate(sizes):
        if dim < lead:
            if size < 0:
                return None
            new_shape.append(size)
            new_strides.append(0)
            continue
        old = shape[dim - lead]
        if size == -1 or size == old:
            new_shape.append(old)
            new_strides.append(strides[dim - lead])
        elif old == 1 and size >= 0:
            new_shape.append(size)
            new_strides.append(0)
        else:
            return None
    return tuple(new_shape), tuple(new_strides)


def slice_geometry(size: int, stride: int, start, stop, step) -> tuple[int, int, int] | None:
    """``(new size, new stride, offset added)`` of ``[start:stop:step]`` on one dimension."""
    if not all(v is None or type(v) is int for v in (start, stop, step)):
        return None
    step = 1 if step is None else step
    if step < 1:
        return None
    start = 0 if start is None else start
    stop = size if stop is None else stop
    if start < 0:
        start += size
    if stop < 0:
        stop += size
    start = min(max(start, 0), size)
    stop = min(max(stop, start), size)
    length = (stop - start + step - 1) // step
    return length, stride * step, start * stride


def split_sizes(size: int, split: int) -> list[int] | None:
    """Sizes of ``split(split)`` along a dimension of ``size``."""
    if split < 1 and size != 0:
        return None
    if size == 0:
        return [0]
    return [min(split, size - start) for start in range(0, size, split)]


def viewable(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]) -> Shape | None:
    """Whether ``reshape`` can view a tensor (``shape``, ``strides``) as ``new_shape``: the
    strides ATen's ``computeStride`` finds, or None (non-empty tensors only)."""
    if not shape:
        return (1,) * len(new_shape)
    if math.prod(shape) == 0:
        return None
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base_stride = strides[-1]
    tensor_numel = view_numel = 1
    for tensor_d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[tensor_d]
        if tensor_d == 0 or (shape[tensor_d - 1] != 1 and strides[tensor_d - 1] != tensor_numel * chunk_base_stride):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base_stride
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk_base_stride = strides[tensor_d - 1]
                tensor_numel = view_numel = 1
    return tuple(new_strides) if view_d == -1 else None


def channels_last_like(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether a 4-d tensor's strides read as channels-last (ATen's
    ``is_channels_last_strides_2d``, which ``suggest_memory_format`` asks)."""
    if len(shape) != 4 or strides[1] == 0:
        return False
    least = 0
    for dim in (1, 3, 2, 0):
        if shape[dim] == 0 or strides[dim] < least:
            return False
        if dim == 0 and least == strides[1]:
            return False
        least = strides[dim] * shape[dim] if shape[dim] > 1 else strides[dim]
    return True



def is_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Row-major, ignoring dimensions of size 1 (``Tensor.is_contiguous()``)."""
    expected = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def view_geometry(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]) -> Shape | None:
    """Strides of ``view(new_shape)`` as fake tensors compute them (torch's reference
    ``_reshape_view_helper``), or None where it refuses; non-empty tensors of 1+ dimensions."""
    if not shape or math.prod(shape) == 0:
        return None
    if not new_shape:
        return () if all(size == 1 for size in shape) else None
    if is_contiguous(shape, strides):
        if len(new_shape) == 1 and len(shape) > 1:
            return (1,)
        if len(new_shape) == 2 and len(shape) == 1:
            return (new_shape[1], 1)
    sizes, steps = list(shape), list(strides)
    idx = 0
    for length in new_shape:
        if idx >= len(sizes):  # a trailing 1: the last dimension split as (n, 1)
            if length != 1:
                return None
            sizes.append(1)
            steps.append(steps[-1])
            idx += 1
            continue
        if length == sizes[idx]:
            idx += 1
            continue
        accum, end = sizes[idx], idx
        while accum % length:
            end += 1
            if end >= len(sizes):
                return None
            accum *= sizes[end]
        if end != idx:  # collapse dimensions idx..end into one
            for dim in range(end - 1, idx - 1, -1):
                if not (sizes[dim] == 1 or sizes[dim + 1] == 1 or steps[dim] == steps[dim + 1] * sizes[dim + 1]):
                    return None
            stride = steps[end]
            for dim in range(end - 1, idx - 1, -1):
                if sizes[dim] != 1:
                    stride = min(stride, steps[dim])
            sizes[idx:end + 1] = [math.prod(sizes[idx:end + 1])]
            steps[idx:end + 1] = [stride]
        if accum != length:  # split dimension idx as (length, rest)
            inner, stride = sizes[idx] // length, steps[idx]
            sizes[idx:idx + 1] = [length, inner]
            steps[idx:idx + 1] = [stride * inner, stride]
        idx += 1
    while idx < len(sizes):
        if sizes[idx] != 1:
            return None
        del sizes[idx], steps[idx]
    return tuple(steps) if tuple(sizes) == tuple(new_shape) else None
