"""Hugging Face transformers models for the command line, built from configs on ``meta``.

``hf:GPT2Config`` builds the bare model of a config class (``AutoModel``) at the config's
default sizes, ``hf:GPT2LMHeadModel`` a model class (with its head) from its config class,
``hf:path/to/dir`` the architecture named in a local ``config.json``. Nothing is downloaded
and no weight is allocated; ``--config KEY=VALUE`` changes config attributes.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from typing import Any, Iterator

import torch

from ._errors import InvalidInputError, InvalidModelError
from ._input_specs import InputSpec
from ._built import LoadedModel, call_builder

#: Default sequence length of text models (``--seq`` changes it).
DEFAULT_SEQ = 128
#: Config sizes named in the note printed for the user (standard names; a config's own
#: spelling, e.g. GPT-2's ``n_layer``, is shown).
_SIZES = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
          "vocab_size", "max_position_embeddings", "image_size", "patch_size")


def hf_model(target: str, options: dict[str, Any]) -> LoadedModel:
    """The model ``hf:TARGET`` names (see the module docstring) and its default inputs."""
    try:
        import transformers
    except ImportError:
        raise InvalidModelError(f"hf:{target} needs the transformers package: pip install transformers") from None
    if os.path.isdir(target) or "/" in target or os.sep in target or target.startswith("."):
        config, model_class, origin = _from_directory(transformers, target, options)
    else:
        config, model_class, origin = _from_class_name(transformers, target, options)
    with _quiet_transformers(transformers):
        build = transformers.AutoModel.from_config if model_class is None else model_class
        with torch.device("meta"):  # never on CPU: a default-size config may have billions of parameters
            model = call_builder(f"hf:{target}", lambda: build(config))
    shown = {_spelling(config, key): getattr(config, key) for key in _SIZES if getattr(config, key, None) is not None}
    sizes = ", ".join(f"{key}={value}" for key, value in shown.items())
    note = (f"hf:{target}: {type(model).__name__} from {origin} ({sizes}); "
            "change sizes with --config KEY=VALUE,...")
    return LoadedModel(model, _default_inputs(model, config), (note,), getattr(config, "max_position_embeddings", None),
                       _spelling(config, "max_position_embeddings"))


def _spelling(config: Any, key: str) -> str:
    return getattr(config, "attribute_map", {}).get(key, key)


def _check_options(config_class: type, options: dict[str, Any]) -> None:
    """Refuse a misspelled config attribute (transformers would silently keep it)."""
    defaults = config_class()
    unknown = [key for key in options if not hasattr(defaults, key)]
    if unknown:
        known = sorted(k for k in vars(defaults) if not k.startswith("_"))
        close = difflib.get_close_matches(unknown[0], known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidInputError(f"{config_class.__name__} has no attribute {unknown[0]!r}{hint}")


def _from_class_name(transformers: Any, name: str, options: dict[str, Any]) -> tuple[Any, Any, str]:
    value = getattr(transformers, name, None) if name.isidentifier() else None
    if isinstance(value, type) and issubclass(value, transformers.PretrainedConfig):
        _check_options(value, options)
        return value(**options), None, f"the defaults of {name}"
    if isinstance(value, type) and issubclass(value, transformers.PreTrainedModel):
        _check_options(value.config_class, options)
        return value.config_class(**options), value, f"the defaults of {value.config_class.__name__}"
    names = [n for n in dir(transformers) if n.endswith("Config") or "For" in n or n.endswith("Model")]
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise InvalidModelError(f"hf:{name}: transformers has no config or model class {name!r}{hint}, and there is no "
                            f"directory {name!r}; write hf:GPT2Config, hf:LlamaForCausalLM or hf:path/to/model_dir")


def _from_directory(transformers: Any, path: str, options: dict[str, Any]) -> tuple[Any, Any, str]:
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise InvalidModelError(f"hf:{path}: no config.json in {os.path.abspath(path)}")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, OSError, KeyError) as error:
        raise InvalidModelError(f"hf:{path}: transformers cannot read {file}: {str(error).splitlines()[0]}") from None
    _check_options(type(config), options)
    for key, value in options.items():
        setattr(config, key, value)
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    return config, model_class, file


def _default_inputs(model: Any, config: Any) -> tuple[InputSpec, ...] | None:
    """The inputs ``forward()`` needs, by the model's ``main_input_name``: token ids of
    ``DEFAULT_SEQ`` tokens, or pixel values / audio features at the config's sizes; encoder-
    decoder models also get ``decoder_input_ids``."""
    seq = min(DEFAULT_SEQ, getattr(config, "max_position_embeddings", None) or DEFAULT_SEQ)
    main = getattr(model, "main_input_name", "input_ids")
    if main == "input_ids":
        inputs = [InputSpec((1, seq), "input_ids", "int64")]
    elif main == "pixel_values" and getattr(config, "image_size", None):
        size = config.image_size
        height, width = (size, size) if isinstance(size, int) else (size[0], size[-1])
        inputs = [InputSpec((1, getattr(config, "num_channels", 3), height, width), "pixel_values")]
    elif main == "input_features" and getattr(config, "num_mel_bins", None) and getattr(config, "max_source_positions", None):
        inputs = [InputSpec((1, config.num_mel_bins, 2 * config.max_source_positions), "input_features")]  # Whisper
    else:
        return None
    if getattr(config, "is_encoder_decoder", False):
        inputs.append(InputSpec((1, seq), "decoder_input_ids", "int64"))
    return tuple(inputs)


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """transformers' own log lines (advice about generation configs...) silenced while building."""
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
