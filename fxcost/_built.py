"""A model built from a command-line spec, and turning a failing constructor into one clear line."""

from __future__ import annotations

import os
import sysconfig
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ._errors import InvalidInputError, InvalidModelError
from ._input_specs import InputSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class LoadedModel:
    """A model built from a spec, with what the command line needs to analyse it."""

    model: "nn.Module"
    """The module (on ``meta`` unless its constructor could not run there)."""
    inputs: tuple[InputSpec, ...] | None = None
    """Its default example input; None when the spec says nothing about it (``--input`` needed)."""
    notes: tuple[str, ...] = ()
    """Assumptions made while building it, for the user (e.g. the config sizes used)."""
    max_seq: int | None = None
    """Longest sequence its position table holds (None: no limit known)."""
    max_seq_option: str = ""
    """The ``--config`` key that sets :attr:`max_seq` (``n_positions``)."""


def call_builder(spec: str, call: Callable[[], Any]) -> Any:
    """``call()``, with an exception from the model's own code turned into a one-line error."""
    try:
        return call()
    except (InvalidModelError, InvalidInputError):
        raise
    except Exception as error:  # noqa: BLE001 - the user's constructor failed: say where
        raise InvalidModelError(f"building the model {spec!r} failed: {describe_failure(error)}") from None


def describe_failure(error: BaseException) -> str:
    """``TypeError: message (at file.py:12)``, the place being the innermost frame of the
    user's code (not the standard library's, an installed package's or fxcost's)."""
    library = (sysconfig.get_paths()["stdlib"], os.path.dirname(__file__), "site-packages", "dist-packages", "<")
    frames = traceback.extract_tb(error.__traceback__)
    if isinstance(error, SyntaxError) and error.filename:
        return f"SyntaxError: {error.msg} (at {error.filename}:{error.lineno})"
    own = [f for f in frames if not any(part in f.filename or f.filename.startswith(part) for part in library)]
    frame = (own or frames or [None])[-1]
    where = f" (at {frame.filename}:{frame.lineno})" if frame else ""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message}{where}"
