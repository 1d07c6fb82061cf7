"""Example inputs written as text, as the command line takes them.

``1x3x224x224`` is a positional float input, ``input_ids=1x128:int64`` a keyword input of
another dtype. ``--batch`` replaces the first size of every input, ``--seq`` the second size of
every token input (int64/int32). Parsing needs no torch; :func:`example_input` builds meta
tensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from ._errors import InvalidInputError

_SHAPE = re.compile(r"^\d+(x\d+)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: dtype names accepted after ``:`` -> torch attribute name.
DTYPES = {
    "float32": "float32", "float": "float32", "float16": "float16", "half": "float16", "bfloat16": "bfloat16",
    "float64": "float64", "double": "float64", "int64": "int64", "long": "int64", "int32": "int32", "int": "int32",
    "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
}
#: dtypes of token inputs, whose second size is the sequence length.
TOKEN_DTYPES = ("int64", "int32")


@dataclass(frozen=True)
class InputSpec:
    """One example input tensor, described by its shape."""

    shape: tuple[int, ...]
    """Sizes of the tensor."""
    name: str | None = None
    """Keyword-argument name in ``forward()``; None for a positional input."""
    dtype: str | None = None
    """torch dtype name (``int64``); None means float32, or the ``--dtype`` of the analysis."""

    @property
    def is_tokens(self) -> bool:
        """True for token ids and masks (int64/int32), whose second size ``--seq`` sets."""
        return self.dtype in TOKEN_DTYPES

    def __str__(self) -> str:
        text = "x".join(map(str, self.shape)) + (f":{self.dtype}" if self.dtype else "")
        return f"{self.name}={text}" if self.name else text


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``; every size must be a positive integer."""
    text = text.strip().lower().replace("×", "x").replace(",", "x")
    if not _SHAPE.match(text):
        raise InvalidInputError(f"bad input shape {text!r}: write sizes separated by 'x', e.g. 1x3x224x224")
    shape = tuple(int(part) for part in text.split("x"))
    if 0 in shape:
        raise InvalidInputError(f"bad input shape {text!r}: every size must be at least 1")
    return shape


def parse_input(text: str) -> InputSpec:
    """``1x3x224x224``, ``1x3x224x224:float16`` or ``input_ids=1x128:int64``."""
    name, eq, rest = text.partition("=")
    if not eq:
        name, rest = "", text
    name = name.strip()
    if eq and not _NAME.match(name):
        raise InvalidInputError(f"bad input {text!r}: {name!r} is not a parameter name; write NAME=SHAPE[:DTYPE], "
                                "e.g. input_ids=1x128:int64")
    shape_text, colon, dtype = rest.partition(":")
    dtype = dtype.strip().lower()
    if colon and dtype not in DTYPES:
        raise InvalidInputError(f"bad input {text!r}: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return InputSpec(parse_shape(shape_text), name or None, DTYPES[dtype] if colon else None)


def parse_sizes(text: str, option: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> ``(1, 8, 32)`` for ``--batch``/``--seq``."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise InvalidInputError(f"bad {option} {text!r}: write positive sizes separated by commas, e.g. 1,8,32")
    return tuple(int(part) for part in parts)


def resize(specs: tuple[InputSpec, ...], batch: int | None = None, seq: int | None = None) -> tuple[InputSpec, ...]:
    """``specs`` with the batch size (first size of every input) and the sequence length
    (second size of every token input) replaced where given."""
    if seq is not None and not any(spec.is_tokens and len(spec.shape) >= 2 for spec in specs):
        raise InvalidInputError("--seq sets the second size of token inputs (int64/int32), and this model has none: "
                                "give one with --input, e.g. --input input_ids=1x128:int64")
    resized = []
    for spec in specs:
        shape = list(spec.shape)
        if batch is not None:
            shape[0] = batch
        if seq is not None and spec.is_tokens and len(shape) >= 2:
            shape[1] = seq
        resized.append(replace(spec, shape=tuple(shape)))
    return tuple(resized)


def batch_and_seq(specs: tuple[InputSpec, ...]) -> tuple[int, int | None]:
    """The batch size (first size of the first input) and the sequence length (second size
    of the first token input, None without one)."""
    seq = next((spec.shape[1] for spec in specs if spec.is_tokens and len(spec.shape) >= 2), None)
    return specs[0].shape[0], seq


def example_input(specs: tuple[InputSpec, ...], float_dtype: Any = None) -> tuple | dict:
    """Meta tensors for ``specs``: a tuple of positional inputs or a dict of keyword inputs.
    Inputs without a dtype are float32, or ``float_dtype`` when given."""
    import torch

    named = [spec.name is not None for spec in specs]
    if any(named) and not all(named):
        raise InvalidInputError("inputs are either all positional (1x3x224x224) or all named "
                                "(input_ids=1x128:int64), not a mix")
    names = [spec.name for spec in specs if spec.name]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"input {next(n for n in names if names.count(n) > 1)!r} is given twice")

    def tensor(spec: InputSpec) -> torch.Tensor:
        dtype = getattr(torch, spec.dtype) if spec.dtype else (float_dtype or torch.float32)
        return torch.empty(spec.shape, dtype=dtype, device="meta")

    if all(named) and specs:
        return {spec.name: tensor(spec) for spec in specs}
    return tuple(tensor(spec) for spec in specs)
