"""The options of one analysis, validated once, up front."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from ._errors import InvalidInputError, InvalidModelError
from ._records import dtype_from_name, dtype_name
from ._registry import RULES, OpCall, RuleRegistry


@dataclass(frozen=True)
class MemoryOptions:
    """How activations are laid out in memory. The defaults describe eager PyTorch."""

    free_inputs: bool = False
    """Free the model inputs after their last use (a memory planner's view) instead of
    holding them for the whole call as the caller does in eager PyTorch."""
    activation_dtype: torch.dtype | None = None
    """Count floating-point activations at this dtype's size (e.g. ``torch.int8``)."""
    fold_batchnorm: bool = False
    """BatchNorm right after a conv/linear is folded into it: no buffer of its own."""
    inplace_activations: bool = False
    """Elementwise activations write into their input when nothing else reads it."""
    inplace_depthwise: bool = False
    """Depthwise convolutions overwrite their input channel by channel, needing one output
    channel of scratch space, when nothing else reads the input."""
    residual_accumulate: bool = False
    """``conv/linear (-> folded BN) -> add(skip)`` accumulates into the skip buffer when the
    skip has no later reader."""
    weight_dtype: torch.dtype | None = None
    """Count floating-point parameters and buffers at this dtype's size in ``peak_memory_bytes``."""
    stream_inputs: bool = False
    """The model's inputs are not held in activation memory (a camera or frame buffer outside
    it, read on demand, as TinyEngine's patch-based inference reads the image): a view of an
    input that the graph reads (a patch) is a buffer of its own size from that view to its last
    reader, and an input read whole is held until its last direct reader."""

    @classmethod
    def deployment(cls, activation_dtype: torch.dtype | None = torch.int8,
                   stream_inputs: bool = False) -> "MemoryOptions":
        """Every assumption of a microcontroller int8 runtime (MCUNet's analytic profiling);
        ``stream_inputs=True`` also reads the input patch by patch (MCUNetV2's patch-based stage)."""
        return cls(free_inputs=True, activation_dtype=activation_dtype, fold_batchnorm=True,
                   inplace_activations=True, inplace_depthwise=True, residual_accumulate=True,
                   weight_dtype=activation_dtype, stream_inputs=stream_inputs)

    @property
    def rewrites(self) -> bool:
        """Whether any option makes a node share another node's buffer."""
        return self.fold_batchnorm or self.inplace_activations or self.inplace_depthwise or self.residual_accumulate

    def activation_size(self, nbytes: int, dtype: torch.dtype) -> int:
        """``nbytes`` of a ``dtype`` activation, counted at ``activation_dtype``."""
        if self.activation_dtype is not None and dtype.is_floating_point:
            return nbytes // dtype.itemsize * self.activation_dtype.itemsize
        return nbytes

    def to_dict(self) -> dict[str, Any]:
        """Plain values, dtypes as names."""
        return {k: (dtype_name(v) if isinstance(v, torch.dtype) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MemoryOptions":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: (dtype_from_name(v) if k.endswith("dtype") and v is not None else v) for k, v in data.items()})


#: Optimizers by name: class and the keyword arguments fxcost builds them with.
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {"lr": 0.01}),
    "sgd-momentum": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", {"lr": 1e-3}),
}
_AMP = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Training:
    """Analyse one steady-state training step: forward, loss, backward, optimizer step.

    The optimizer's state already exists, the batch is held by the caller, the step ends with
    ``zero_grad(set_to_none=True)``; eager PyTorch semantics throughout (see README, *Training*).
    """

    optimizer: str | type | None = "adamw"
    """``"sgd"``, ``"sgd-momentum"``, ``"adam"``, ``"adamw"``, a ``torch.optim.Optimizer``
    class (built with :attr:`optimizer_kwargs`), or None (forward and backward only)."""
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of the optimizer (over the named optimizers' defaults)."""
    loss: Callable[..., Any] | None = None
    """``loss(output, target) -> scalar tensor``; None: the output's ``.loss`` (Hugging Face
    models given labels), else the sum of the (first) output tensor."""
    target: Any = None
    """A tensor or a shape (float32) handed to :attr:`loss` as its second argument."""
    amp: torch.dtype | None = None
    """``torch.bfloat16`` or ``torch.float16``: forward and loss under ``torch.autocast``."""
    checkpoint: tuple = ()
    """Module classes or module paths run under ``torch.utils.checkpoint`` (non-reentrant):
    their activations are not saved but recomputed in the backward."""

    def checked(self, model: nn.Module) -> "Training":
        """Validate against ``model``; raise a clear error naming the fix."""
        optimizer = self.optimizer
        if isinstance(optimizer, str) and optimizer not in OPTIMIZERS:
            raise InvalidInputError(f"unknown optimizer {optimizer!r}: use one of {', '.join(map(repr, OPTIMIZERS))}, "
                                    "a torch.optim.Optimizer class, or None")
        if not (optimizer is None or isinstance(optimizer, str) or
                (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer))):
            raise InvalidInputError(f"optimizer must be a name, a torch.optim.Optimizer class or None, got {optimizer!r}")
        if not isinstance(self.optimizer_kwargs, Mapping):
            raise InvalidInputError(f"optimizer_kwargs must be a dict, got {type(self.optimizer_kwargs).__name__}")
        if self.loss is not None and not callable(self.loss):
            raise InvalidInputError(f"loss must be a function loss(output, target) -> scalar, got {self.loss!r}")
        if self.amp is not None and self.amp not in _AMP:
            raise InvalidInputError(f"amp={self.amp!r}: use torch.bfloat16 or torch.float16 (or None)")
        checkpoint = tuple(self.checkpoint) if isinstance(self.checkpoint, (list, tuple)) else (self.checkpoint,)
        for entry in checkpoint:
            if isinstance(entry, str):
                check_path(model, entry)
            elif not (isinstance(entry, type) and issubclass(entry, nn.Module)):
                raise InvalidInputError(f"checkpoint entries must be module classes or module paths, got {entry!r}")
        if not any(p.requires_grad for p in model.parameters()):
            raise InvalidInputError(f"{type(model).__name__} has no parameter with requires_grad=True: nothing to "
                                    "train (unfreeze some, e.g. model.requires_grad_(True), or analyse inference)")
        return Training(optimizer, dict(self.optimizer_kwargs), self.loss, self.target, self.amp, checkpoint)

    def build_optimizer(self, parameters: list) -> torch.optim.Optimizer | None:
        """The optimizer over ``parameters`` (None when there is none)."""
        if self.optimizer is None:
            return None
        if isinstance(self.optimizer, str):
            name, defaults = OPTIMIZERS[self.optimizer]
            return getattr(torch.optim, name)(parameters, **{**defaults, **self.optimizer_kwargs})
        return self.optimizer(parameters, **self.optimizer_kwargs)

    @property
    def optimizer_name(self) -> str:
        """The optimizer as the report names it."""
        if self.optimizer is None or isinstance(self.optimizer, str):
            return self.optimizer or "none"
        return self.optimizer.__name__


#: ``mode=`` values -> the ``training`` flag the mirror gets (None: each module keeps its own).
MODES: dict[str, bool | None] = {"eval": False, "train": True, "as-is": None}


@dataclass(frozen=True)
class AnalysisOptions:
    """Everything ``analyze()`` was asked to do, checked against the model."""

    mode: str = "eval"
    """``eval``, ``train`` or ``as-is``: the module mode analysed."""
    leaf_modules: tuple[type[nn.Module], ...] = ()
    """Module classes kept whole."""
    concrete_args: Mapping[str, Any] = field(default_factory=dict)
    """Arguments fx traces as constants."""
    rules: RuleRegistry = RULES
    """The default rules merged with the per-call ``rules=``."""
    memory: MemoryOptions = MemoryOptions()
    """Memory layout behind the liveness figures."""
    exclude: tuple[str, ...] = ()
    """Module paths replaced by identity."""
    submodule: str | None = None
    """Module path analysed alone, with the input it receives inside the model."""
    fallback: bool = True
    """Keep modules fx cannot trace whole instead of raising."""
    assume: Mapping[str, Any] | Callable[[Any], Any] | None = None
    """Values to assume at value-dependent call sites (``{"file.py:9": False}`` or a callable)."""
    strict: bool = False
    """Raise on value-dependent code instead of assuming."""
    training: Training | None = None
    """Analyse a training step too."""

    @property
    def training_flag(self) -> bool | None:
        """The ``training`` flag every module of the mirror gets (None: its own)."""
        return MODES[self.mode]

    @classmethod
    def checked(cls, model: nn.Module, *, mode: str | None = None, leaf_modules: Iterable[type[nn.Module]] = (),
                concrete_args: Mapping[str, Any] | None = None,
                rules: Mapping[Any, Callable[[OpCall], Any]] | None = None, memory: MemoryOptions | None = None,
                exclude: Iterable[str] = (), submodule: str | None = None, fallback: bool = True,
                assume: Mapping[str, Any] | Callable[[Any], Any] | None = None, strict: bool = False,
                training: Training | None = None) -> "AnalysisOptions":
        """Validate every option against ``model``; raise a clear error naming the fix."""
        check_model(model)
        if training is not None and not isinstance(training, Training):
            raise InvalidInputError(f"training must be a fxcost.Training(...), got {type(training).__name__}")
        if mode is None:
            mode = "train" if training is not None else "eval"
        if mode not in MODES:
            raise InvalidInputError(f"mode={mode!r} is not one of {', '.join(map(repr, MODES))}")
        leaf_modules = tuple(leaf_modules)
        for leaf in leaf_modules:
            if not (isinstance(leaf, type) and issubclass(leaf, nn.Module)):
                raise InvalidInputError(f"leaf_modules must hold nn.Module subclasses, got {leaf!r}")
        if memory is not None and not isinstance(memory, MemoryOptions):
            raise InvalidInputError(f"memory must be a fxcost.MemoryOptions, got {type(memory).__name__}")
        exclude = tuple(exclude)
        for path in (*exclude, *([submodule] if submodule is not None else [])):
            check_path(model, path)
        if assume is not None and not callable(assume):
            if not isinstance(assume, Mapping) or not all(isinstance(key, str) and ":" in key for key in assume):
                raise InvalidInputError("assume must map 'file.py:LINE' call sites to values (e.g. {'mynet.py:9': False}), "
                                        f"or be a callable taking the site; got {assume!r}")
        if assume is not None and strict:
            raise InvalidInputError("strict=True makes value-dependent code an error: pass assume= or strict=True, not both")
        subject = model.get_submodule(submodule) if submodule else model
        return cls(mode=mode, leaf_modules=leaf_modules, concrete_args=dict(concrete_args or {}),
                   rules=RULES.merged(rules), memory=memory or MemoryOptions(), exclude=exclude,
                   submodule=submodule, fallback=fallback, assume=assume, strict=strict,
                   training=training.checked(subject) if training is not None else None)

    def excluded(self, name: str) -> bool:
        """Whether the parameter/buffer/module ``name`` lies inside an excluded module."""
        return any(name == path or name.startswith(path + ".") for path in self.exclude)


def check_model(model: Any) -> None:
    """Refuse what cannot be analysed, saying what to pass instead."""
    if isinstance(model, torch.jit.ScriptModule):
        raise InvalidModelError(
            "a TorchScript module cannot be traced by torch.fx: analyse the original nn.Module "
            "(before torch.jit.script/trace) instead"
        )
    if not isinstance(model, nn.Module):
        raise InvalidModelError(
            f"expected a torch.nn.Module, got {type(model).__name__}: wrap the function in an nn.Module"
        )
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise InvalidModelError(
            "this module was compiled with torch.compile: pass the original module (model._orig_mod)"
        )


def check_path(model: nn.Module, path: str) -> None:
    """Raise :class:`InvalidInputError` unless ``path`` names a submodule of ``model``."""
    if not path:
        raise InvalidInputError("an empty module path names the whole model")
    try:
        model.get_submodule(path)
    except AttributeError:
        owner, _, _ = path.rpartition(".")
        try:
            children = [name for name, _ in model.get_submodule(owner).named_children()]
        except AttributeError:
            children = [name for name, _ in model.named_children()]
        raise InvalidInputError(
            f"{type(model).__name__} has no submodule {path!r}; "
            f"submodules{' of ' + repr(owner) if owner else ''} are: {', '.join(children) or 'none'}"
        ) from None
