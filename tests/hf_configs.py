"""Hugging Face transformers architectures at a reduced size, built on the meta device, with an
example input chosen by the model's ``main_input_name`` and forward signature.

Shared by the CI sample (``test_coverage.py``) and the full sweep (``benchmarks/coverage.py``).
Nothing here is specific to one architecture: config attributes are shrunk by their common
names (layers, hidden sizes, heads, intermediate sizes, experts, vocabulary), in levels from
the smallest to the default config; callers keep the first level at which the model runs (a
shrink can break a constraint between attributes that only the architecture knows, e.g. a
rotary section that must add up to the head size).
"""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

LAYERS, HIDDEN, HEADS, HEAD_DIM, FFN, EXPERTS, TOP_K, VOCAB, SEQ = 2, 64, 4, 16, 128, 4, 2, 1000, 16

_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
               "num_encoder_layers", "num_decoder_layers", "depth", "memory_attention_num_layers",
               "memory_fuser_num_layers")
_HIDDEN_KEYS = ("hidden_size", "d_model", "n_embd", "embed_dim", "hidden_dim", "word_embed_proj_dim")
_HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads",
              "decoder_attention_heads", "attention_heads")
_FFN_KEYS = ("intermediate_size", "ffn_dim", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim",
             "moe_intermediate_size", "shared_expert_intermediate_size", "decoder_intermediate_size")
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
_TOP_K_KEYS = ("num_experts_per_tok", "moe_topk", "top_k")
#: Per-layer index lists: entries past the new depth are dropped (at least the last layer stays).
_INDEX_KEYS = ("global_attn_indexes", "fullatt_block_indexes", "deepstack_visual_indexes", "mlp_only_layers")


#: Attributes some default configs leave unset although the model needs them.
_REQUIRED = {"prediction_length": 24, "backbone": "resnet18"}


@dataclass(frozen=True)
class Level:
    """How far configs are shrunk."""

    name: str
    layers: bool
    dims: bool


LEVELS = (Level("small", True, True), Level("shallow", True, False), Level("default", False, False))


def level(name: str) -> Level:
    """The level called ``name``."""
    return next(item for item in LEVELS if item.name == name)


def _token_ids(values: dict[str, Any]) -> Iterator[int]:
    for key, value in values.items():
        if key.endswith(("token_id", "token_index", "token_ids")):
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, int) and not isinstance(item, bool):
                    yield item


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kept_layers(values: dict[str, Any], depth: int) -> list[int] | None:
    """Layers to keep of a config with per-layer lists (``layer_types``...): the first layer of
    each distinct kind, so every kind of layer is still analysed; None without such lists."""
    lists = [v for k, v in values.items() if isinstance(v, list) and len(v) == depth and depth > LAYERS
             and k.endswith(("layer_types", "layers_block_type", "block_configs", "no_rope_layers"))]
    if not lists:
        return None
    kinds: dict[str, int] = {}
    for index in range(depth):
        kinds.setdefault(repr([values[index] for values in lists]), index)
    kept = sorted(kinds.values())
    return kept if len(kept) >= LAYERS else sorted(set(kept) | set(range(LAYERS)))


def shrink(values: dict[str, Any], level: Level) -> dict[str, Any]:
    """A config dict (``config.to_dict()``) shrunk in place to ``level``; sub-configs too."""
    for value in values.values():
        if isinstance(value, dict) and "model_type" in value:
            shrink(value, level)
    if level.layers:
        _shrink_depth(values)
    if level.dims:
        _shrink_widths(values)
    if "use_pretrained_backbone" in values:
        values["use_pretrained_backbone"] = False  # nothing is downloaded
    return values


def _shrink_depth(values: dict[str, Any]) -> None:
    """Fewer layers (per-layer lists cut to the layers kept), stages, experts and routed experts."""
    depth = next((values[k] for k in ("num_hidden_layers", "num_layers", "n_layer") if _is_int(values.get(k))), 0)
    kept = _kept_layers(values, depth)
    for key in _LAYER_KEYS:
        if _is_int(values.get(key)) and values[key] > LAYERS:
            values[key] = len(kept) if kept and values[key] == depth else LAYERS
    if kept:
        for key, value in values.items():
            if isinstance(value, list) and len(value) == depth:
                values[key] = [value[i] for i in kept]
    new_depth = len(kept) if kept else LAYERS
    for key in _INDEX_KEYS:
        if isinstance(values.get(key), list) and values[key] and all(_is_int(i) for i in values[key]):
            values[key] = [i for i in values[key] if i < new_depth] or [new_depth - 1]
    if _is_int(values.get("first_k_dense_replace")):
        values["first_k_dense_replace"] = min(values["first_k_dense_replace"], 1)  # keep a sparse layer
    _cap(values, _EXPERT_KEYS, EXPERTS)
    _cap(values, _TOP_K_KEYS, TOP_K)
    _cap(values, ("n_group", "topk_group"), 1)
    if isinstance(values.get("depths"), list) and all(_is_int(d) for d in values["depths"]):
        values["depths"] = [min(d, LAYERS) for d in values["depths"]]


def _cap(values: dict[str, Any], keys, limit: int) -> None:
    """Every integer among ``keys`` above ``limit`` becomes ``limit``."""
    for key in keys:
        if _is_int(values.get(key)) and values[key] > limit:
            values[key] = limit


def _shrink_widths(values: dict[str, Any]) -> None:
    """Narrower hidden sizes, fewer heads, smaller head, intermediate and vocabulary sizes."""
    heads = next((values[k] for k in _HEAD_KEYS if _is_int(values.get(k))), None)
    _cap(values, _HIDDEN_KEYS, HIDDEN)
    _cap(values, _HEAD_KEYS, HEADS)
    kv = values.get("num_key_value_heads")
    if _is_int(kv) and heads:
        values["num_key_value_heads"] = HEADS if kv >= heads else min(kv, HEADS // 2)
    for key in ("head_dim", "d_kv"):
        if _is_int(values.get(key)):
            values[key] = HEAD_DIM
    if _is_int(values.get("qk_rope_head_dim")):  # multi-head latent attention (DeepSeek-V2/V3 style)
        rope = values.get("rope_parameters") or {}
        factor = values.get("partial_rotary_factor") or (rope.get("partial_rotary_factor") if isinstance(rope, dict)
                                                         else None) or 1
        rotary = int(HEAD_DIM * factor)
        values.update(qk_rope_head_dim=rotary, qk_nope_head_dim=rotary, v_head_dim=HEAD_DIM)
        for key, size in (("qk_head_dim", 2 * rotary), ("kv_lora_rank", 2 * HEAD_DIM), ("q_lora_rank", 2 * HEAD_DIM)):
            if _is_int(values.get(key)):
                values[key] = size
    _cap(values, _FFN_KEYS, FFN)
    if _is_int(values.get("vocab_size")) and values["vocab_size"] > VOCAB:
        values["vocab_size"] = max([VOCAB, *(i + 1 for i in _token_ids(values))])


def model_types() -> dict[str, str]:
    """Every model type transformers can build from its config class, with the class built:
    the bare model (``AutoModel``), else the first task model of any auto mapping."""
    from transformers.models.auto import configuration_auto, modeling_auto

    found: dict[str, str] = {}
    mappings = [modeling_auto.MODEL_MAPPING_NAMES] + [
        getattr(modeling_auto, name) for name in sorted(dir(modeling_auto))
        if name.startswith("MODEL_FOR_") and name.endswith("_MAPPING_NAMES")]
    for mapping in mappings:
        for model_type, names in mapping.items():
            if model_type in configuration_auto.CONFIG_MAPPING_NAMES and model_type not in found:
                found[model_type] = names if isinstance(names, str) else names[0]
    return dict(sorted(found.items()))


def _quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def build(model_type: str, level: Level, class_name: str | None = None,
          device: str = "meta") -> tuple[torch.nn.Module, Any]:
    """The model of ``model_type`` (its ``class_name``, default: as :func:`model_types`) from its
    config class shrunk to ``level``, on ``device`` (random weights on the CPU), in eval mode;
    and its config."""
    import transformers

    _quiet()
    config_class = transformers.CONFIG_MAPPING[model_type]
    config = config_class()
    for key, value in _REQUIRED.items():
        if hasattr(config, key) and getattr(config, key) is None:
            setattr(config, key, value)
    if level.layers or level.dims:
        config = config_class.from_dict(shrink(copy.deepcopy(config.to_dict()), level))
    model_class = getattr(transformers, class_name or model_types()[model_type])
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class(config)
    return model.eval(), config


# --- inputs -------------------------------------------------------------------------------

def _find(config: Any, *keys: str) -> Any:
    """The first of ``keys`` set on the config or on one of its sub-configs."""
    configs = [config] + [v for v in vars(config).values() if hasattr(v, "to_dict") and hasattr(v, "model_type")]
    for key in keys:
        for item in configs:
            value = getattr(item, key, None)
            if value is not None and not isinstance(value, bool):
                return value
    return None


def _ids(length: int = SEQ) -> torch.Tensor:
    return torch.zeros(1, length, dtype=torch.long, device="meta")


def _float(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, device="meta")


def _image_sizes(config: Any) -> list[tuple[int, int]]:
    sizes = []
    size = _find(config, "image_size", "img_size", "input_size", "pretrain_image_size")
    if isinstance(size, int):
        sizes.append((size, size))
    elif isinstance(size, (list, tuple)) and len(size) >= 2 and all(_is_int(s) for s in size):
        sizes.append((int(size[-2]), int(size[-1])))
    sizes += [(224, 224), (512, 512)]
    return list(dict.fromkeys(sizes))


def _pixels(config: Any) -> list[torch.Tensor]:
    channels = _find(config, "num_channels", "in_channels", "input_channels")
    channels = channels if _is_int(channels) else 3
    return [_float(1, channels, h, w) for h, w in _image_sizes(config)]


def _videos(config: Any) -> list[torch.Tensor]:
    frames = _find(config, "num_frames", "frames_per_clip")
    frames = [frames] if _is_int(frames) else []
    return [_float(1, f, p.shape[1], *p.shape[2:]) for f in frames + [16, 8] for p in _pixels(config)[:1]]


def _audio_values(config: Any) -> list[torch.Tensor]:
    mels = _find(config, "num_mel_bins", "feature_size")
    length = _find(config, "max_length")
    channels = _find(config, "audio_channels", "channels")
    out = [_float(1, 16000)]
    if _is_int(channels):
        out.append(_float(1, channels, 16000))
    if _is_int(mels):
        out.append(_float(1, length if _is_int(length) else 1024, mels))
    return out + [_float(1, 1, 16000)]


def _audio_features(config: Any) -> list[torch.Tensor]:
    features = [f for f in (_find(config, "num_mel_bins"), _find(config, "feature_size"), _find(config, "n_mels"),
                            _find(config, "input_dim")) if _is_int(f)]
    per_channel = _find(config, "input_feat_per_channel")
    if _is_int(per_channel):
        features.append(per_channel * (_find(config, "input_channels") or 1))
    positions = _find(config, "max_source_positions")
    lengths = ([2 * positions] if _is_int(positions) else []) + [100, 3000]
    out = []
    for f in dict.fromkeys(features or [80, 128]):
        for t in lengths:
            out += [_float(1, f, t), _float(1, t, f)]
    return out


def _time_series(config: Any) -> list[dict[str, torch.Tensor]]:
    context = _find(config, "context_length") or 32
    lags = _find(config, "lags_sequence")
    history = context + (max(lags) if isinstance(lags, list) and lags else 0)
    channels = _find(config, "input_size", "num_input_channels")
    channels = channels if _is_int(channels) else 1
    shape = (1, history) if channels == 1 else (1, history, channels)
    features = _find(config, "num_time_features")
    full = {"past_values": _float(*shape), "past_observed_mask": torch.ones(*shape, device="meta")}
    if _is_int(features):
        full["past_time_features"] = _float(1, history, features)
        prediction = _find(config, "prediction_length") or 1
        full["future_time_features"] = _float(1, prediction, features)
    return [full, {"past_values": _float(*shape)}, {"past_values": _float(1, context, channels)}]


def _by_name(name: str, config: Any) -> torch.Tensor | None:
    """A tensor for a forward parameter the input must give, by its name."""
    if name.endswith("input_ids") or name == "token_type_ids":
        return _ids()
    if name.endswith("attention_mask"):
        return torch.ones(1, SEQ, dtype=torch.long, device="meta")
    if name == "bbox":
        return torch.zeros(1, SEQ, 4, dtype=torch.long, device="meta")
    if "pixel_values" in name:
        return _pixels(config)[0]
    if name.endswith("_embeds"):
        hidden = _find(config, "hidden_size", "d_model")
        return _float(1, SEQ, hidden) if _is_int(hidden) else None
    return None


def candidate_inputs(model: torch.nn.Module, config: Any) -> list[dict[str, torch.Tensor]]:
    """Example inputs to try, in order, by the model's ``main_input_name`` and the parameters
    its forward takes (all meta tensors)."""
    parameters = inspect.signature(model.forward).parameters
    main = model.main_input_name
    main = main[0] if isinstance(main, (list, tuple)) else main
    by_name: dict[str, Callable[[], list]] = {
        "pixel_values": lambda: _pixels(config), "pixel_values_videos": lambda: _videos(config),
        "input_values": lambda: _audio_values(config), "input_features": lambda: _audio_features(config),
    }
    if main == "past_values":
        return _time_series(config)
    if main in by_name:
        candidates = [{main: tensor} for tensor in by_name[main]()]
    else:
        candidates = [{"input_ids": _ids()}, {"input_ids": _ids(128)}]
        candidates += [{"input_ids": _ids(), name: by_name[name]()[0]} for name in by_name if name in parameters]
    if "input_ids" not in candidates[0] and "input_ids" in parameters:
        candidates += [{**c, "input_ids": _ids()} for c in candidates[:2]]
    if "bbox" in parameters:
        candidates += [{**c, "bbox": _by_name("bbox", config)} for c in candidates if "input_ids" in c][:1]
    required = [name for name, p in parameters.items() if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    filled = []
    for candidate in candidates:
        missing = {name: _by_name(name, config) for name in required if name not in candidate}
        if all(value is not None for value in missing.values()):
            filled.append({**candidate, **missing})
    candidates = filled or candidates
    if "decoder_input_ids" in parameters and getattr(config, "is_encoder_decoder", False):
        candidates = [{**c, "decoder_input_ids": _ids()} for c in candidates] + candidates
    return candidates


def on_cpu(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Real tensors of the same shapes: token ids 0, masks 1, floats random."""
    generator = torch.Generator().manual_seed(0)
    real = {}
    for name, tensor in inputs.items():
        if tensor.dtype.is_floating_point:
            real[name] = torch.randn(tensor.shape, generator=generator)
        elif "mask" in name:
            real[name] = torch.ones(tensor.shape, dtype=tensor.dtype)
        else:
            real[name] = torch.zeros(tensor.shape, dtype=tensor.dtype)
    return real


def describe(inputs: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in inputs.items())
