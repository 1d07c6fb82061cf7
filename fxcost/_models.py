"""Resolving a model spec of the command line to a module and its default example input.

``torchvision:resnet50``, ``timm:convnext_tiny``, ``hf:GPT2Config`` (see :mod:`fxcost._hf`),
``package.module:callable`` (found on ``sys.path`` or in the current directory) and
``path/to/file.py:callable``. Models are built on the ``meta`` device where their
constructors allow it: no memory, no initialisation, nothing downloaded.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ._built import LoadedModel, call_builder, describe_failure
from ._errors import InvalidInputError, InvalidModelError
from ._input_specs import InputSpec

if TYPE_CHECKING:
    pass

SPEC_FORMS = "torchvision:NAME, timm:NAME, hf:CONFIG_OR_MODEL_CLASS, hf:DIRECTORY, package.module:callable or path/to/file.py:callable"


def parse_options(text: str) -> dict[str, Any]:
    """``"n_layer=2,n_embd=64,act='gelu'"`` -> ``{"n_layer": 2, "n_embd": 64, "act": "gelu"}``.

    Values are Python literals (numbers, strings, booleans, None, lists) or bare words.
    A comma inside brackets does not separate options: ``image_size=[224,224]``.
    """
    pieces: list[str] = []
    depth = 0
    for part in text.split(","):
        if pieces and depth > 0:
            pieces[-1] += "," + part
        else:
            pieces.append(part)
        depth += part.count("[") + part.count("(") - part.count("]") - part.count(")")
    options: dict[str, Any] = {}
    for piece in pieces:
        key, eq, value = piece.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise InvalidInputError(f"bad --config item {piece.strip()!r}: write KEY=VALUE,KEY=VALUE, e.g. n_layer=2,n_embd=64")
        try:
            options[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key] = value.strip()
    return options


def build_on_meta(build: Callable[[], Any]) -> Any:
    """``build()`` under the meta device; on CPU when the constructor cannot run on meta."""
    import torch

    try:
        with torch.device("meta"):
            return build()
    except Exception:  # noqa: BLE001 - e.g. a constructor reading a tensor's value; retried for real
        built = build()
        return built.to("meta") if isinstance(built, torch.nn.Module) else built  # the analysis needs no values


def _image_input(size: Any, channels: int = 3) -> tuple[InputSpec, ...]:
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))
    return (InputSpec((1, channels, int(height), int(width))),)


def torchvision_model(name: str, options: dict[str, Any]) -> LoadedModel:
    """A torchvision model built on the meta device; its input is its weights' crop size."""
    import torchvision.models as tvm

    try:
        builder = tvm.get_model_builder(name)
    except ValueError:
        close = [n for n in tvm.list_models() if name.lower() in n or n in name.lower()][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidModelError(f"torchvision has no model {name!r}{hint}; see torchvision.models.list_models()") from None
    kwargs: dict[str, Any] = {}
    size: Any = 224
    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):
        weights = None
    if weights is not None:
        size = getattr(weights.transforms, "keywords", {}).get("crop_size", size)
        if name.startswith("vit_"):
            kwargs["image_size"] = weights.meta["min_size"][0]
    if name == "googlenet":
        kwargs["aux_logits"] = False
    if name == "inception_v3":
        kwargs["init_weights"] = False
    kwargs.update(options)
    model = call_builder(f"torchvision:{name}", lambda: build_on_meta(lambda: builder(**kwargs)))
    size = kwargs.get("image_size", size)
    return LoadedModel(model, _image_input(size))


def timm_model(name: str, options: dict[str, Any]) -> LoadedModel:
    """A timm model (random init, on meta); its input is its pretrained config's ``input_size``."""
    try:
        import timm
    except ImportError:
        raise InvalidModelError(f"timm:{name} needs the timm package: pip install timm") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidModelError(f"timm has no model {name!r}{hint}; see timm.list_models('*{name}*')")
    model = call_builder(f"timm:{name}", lambda: build_on_meta(
        lambda: timm.create_model(name, pretrained=False, **options)))
    channels, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return LoadedModel(model, (InputSpec((1, channels, height, width)),))


def hf_model(target: str, options: dict[str, Any]) -> LoadedModel:
    """A Hugging Face transformers model built from a config (see :mod:`fxcost._hf`)."""
    from ._hf import hf_model as build

    return build(target, options)


_BUILTIN_SOURCES: dict[str, Callable[[str, dict[str, Any]], LoadedModel]] = {
    "torchvision": torchvision_model, "timm": timm_model, "hf": hf_model,
}


@dataclass(frozen=True)
class ModelSpec:
    """A model spec split into its parts (checked without importing torch)."""

    source: str
    """``torchvision``, ``timm``, ``hf``, ``file`` or ``module``."""
    location: str
    """The model name (``resnet50``, ``GPT2Config``, a directory), the file path or the module name."""
    attribute: str = ""
    """For ``file`` and ``module``: the callable or module instance in it (``Net``, ``models.build``)."""


def parse_spec(spec: str) -> ModelSpec:
    """Split ``spec`` (one of :data:`SPEC_FORMS`); an :class:`InvalidModelError` if it is none."""
    source, _, name = spec.partition(":")
    if source in _BUILTIN_SOURCES:
        if not name:
            raise InvalidModelError(f"model {spec!r} names no model: write e.g. {source}:{_EXAMPLE[source]}")
        return ModelSpec(source, name)
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise InvalidModelError(f"model {spec!r} must look like torchvision:resnet50, mynet:Net, path/to/mynet.py:Net "
                                f"(forms: {SPEC_FORMS})")
    is_file = path.endswith(".py") or "/" in path or os.sep in path
    return ModelSpec("file" if is_file else "module", path, name)


def load_model(spec: str, options: dict[str, Any] | None = None) -> LoadedModel:
    """Build the model a spec names (see :data:`SPEC_FORMS`); ``options`` are keyword
    arguments of its builder (for ``hf:``, config attributes)."""
    from torch import nn

    options = dict(options or {})
    parts = parse_spec(spec)
    if parts.source in _BUILTIN_SOURCES:
        weights = [key for key in ("weights", "pretrained", "weights_backbone") if options.get(key)]
        if weights and parts.source != "hf":
            raise InvalidInputError(f"--config {weights[0]}=...: fxcost builds models without weights (their values "
                                    "do not change the costs, and nothing is downloaded); leave it out")
        return _BUILTIN_SOURCES[parts.source](parts.location, options)
    opener = _module_from_file if parts.source == "file" else _module_from_import
    with opener(parts.location, spec) as module:
        factory = _attribute(module, parts.attribute, parts.location)
        model = call_builder(spec, lambda: _build(factory, options, spec))
    if not isinstance(model, nn.Module):
        raise InvalidModelError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return LoadedModel(model)


_EXAMPLE = {"torchvision": "resnet50", "timm": "convnext_tiny", "hf": "GPT2Config"}


def _build(factory: Any, options: dict[str, Any], spec: str) -> Any:
    from torch import nn

    if isinstance(factory, nn.Module):
        if options:
            raise InvalidInputError(f"{spec} is a module instance: --config needs a class or function to call")
        return factory
    if not callable(factory):
        raise InvalidModelError(f"{spec} is a {type(factory).__name__}, not an nn.Module or a callable returning one")
    return build_on_meta(lambda: factory(**options))


@contextlib.contextmanager
def _on_sys_path(directory: str) -> Iterator[None]:
    """``directory`` first on ``sys.path`` for the duration (where Python puts a script's folder)."""
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        sys.path.remove(directory)


@contextlib.contextmanager
def _module_from_import(name: str, spec: str) -> Iterator[Any]:
    """Import ``name`` as Python would from the current directory (as ``python -m`` and
    uvicorn do), the current directory searched first."""
    with _on_sys_path(os.getcwd()):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name and (name == error.name or name.startswith(error.name + ".")):
                raise InvalidModelError(
                    f"cannot import {name!r} for model {spec!r}: no module {error.name!r} on sys.path or in the "
                    f"current directory ({os.getcwd()}); for a file elsewhere write path/to/{name.split('.')[-1]}.py:"
                    f"{spec.rpartition(':')[2]}") from None
            raise InvalidModelError(f"importing {name!r} for model {spec!r} failed: {describe_failure(error)}") from None
        except Exception as error:  # noqa: BLE001 - the user's module failed to run: say where
            raise InvalidModelError(f"importing {name!r} for model {spec!r} failed: {describe_failure(error)}") from None
        yield module


@contextlib.contextmanager
def _module_from_file(path: str, spec: str) -> Iterator[Any]:
    """Run the Python file at ``path`` as a module, with its folder first on ``sys.path`` (as
    ``python path/to/file.py`` would). It is registered in ``sys.modules`` only while in use."""
    file = os.path.abspath(path)
    if not os.path.isfile(file):
        raise InvalidModelError(f"no file {path!r} for model {spec!r} (looked at {file})")
    stem = os.path.splitext(os.path.basename(file))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else f"_fxcost_file_{abs(hash(file))}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    if module_spec is None or module_spec.loader is None:
        raise InvalidModelError(f"cannot load {path!r} as Python code for model {spec!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses, pickle and typing look the module up while it runs
    try:
        with _on_sys_path(os.path.dirname(file)):
            try:
                module_spec.loader.exec_module(module)
            except Exception as error:  # noqa: BLE001 - the user's file failed to run: say where
                raise InvalidModelError(f"running {path} for model {spec!r} failed: {describe_failure(error)}") from None
            yield module
    finally:
        if sys.modules.get(name) is module:
            del sys.modules[name]


def _attribute(module: Any, name: str, where: str) -> Any:
    from torch import nn

    value = module
    for part in name.split("."):
        if not hasattr(value, part):
            candidates = [n for n, v in vars(module).items()
                          if not n.startswith("_") and (isinstance(v, type) and issubclass(v, nn.Module)
                                                        or callable(v) and getattr(v, "__module__", None) == module.__name__)]
            close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5) or candidates[:5]
            hint = f" (it defines {', '.join(close)})" if close else ""
            raise InvalidModelError(f"{where} has no attribute {name!r}{hint}")
        value = getattr(value, part)
    return value
