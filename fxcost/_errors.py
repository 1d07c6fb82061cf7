"""The exceptions fxcost raises. All derive from :class:`FxcostError`."""

from __future__ import annotations


class FxcostError(Exception):
    """Base class of every error fxcost raises on purpose."""


class InvalidModelError(FxcostError, TypeError):
    """The object to analyse is not something fxcost can analyse."""


class InvalidInputError(FxcostError, ValueError):
    """The example input (or an option) is malformed."""


class TraceError(FxcostError):
    """``torch.fx`` could not trace the model."""

    module_path: str = ""
    """Path of the innermost module being traced when it failed ('' = the root's forward)."""
    source_line: str | None = None
    """``file:line: code`` of the user's line that broke tracing."""
    reason: str = ""
    """One line saying what went wrong."""


class PatchError(FxcostError):
    """A stage cannot be computed patch by patch, or no patch plan fits the memory limit."""


class ShapePropagationError(FxcostError):
    """A node failed while its output shapes were being computed on fake tensors."""
