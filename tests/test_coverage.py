"""Coverage: torchvision's other families, a fixed sample of timm models and Hugging Face
transformers built from configs, all on the meta device. MACs are compared exactly with torch's
FlopCounterMode run on the same meta model, and with published figures: torchvision's ``_ops``
and ``num_params``, timm's published parameter counts, and parameter counts worked out by hand
from the transformers configs."""

import csv
import logging
import pathlib
import warnings

import pytest
import torch
import torchvision.models as tvm
from torchvision.models import get_model, get_model_weights

import fxcost
from fxcost import Status
from reference import torch_macs
from zoo import assert_published, meta_model, on_meta


def quiet_analyze(model, example_input):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxcost.TraceFallbackWarning)
        warnings.simplefilter("error", fxcost.UnsupportedOpWarning)
        return fxcost.analyze(model, example_input)


def check_exact(model, example_input, **kwargs):
    """Analyses ``model`` (put in eval mode) and checks its MACs against FlopCounterMode on the
    same meta model; returns the report."""
    model.eval()
    report = quiet_analyze(model, example_input)
    assert report.complete
    reference = on_meta(example_input)
    if isinstance(reference, dict):
        assert report.macs == torch_macs(model, **reference)
    else:
        assert report.macs == torch_macs(model, *(reference if isinstance(reference, tuple) else (reference,)))
    return report


# --- torchvision ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", tvm.list_models(module=tvm.segmentation))
def test_torchvision_segmentation(name):
    kwargs = {"weights_backbone": None} if name.startswith("lraspp") else {"weights_backbone": None, "aux_loss": True}
    report = check_exact(meta_model(get_model, name, **kwargs), (1, 3, 520, 520))
    assert_published(report, name)  # published at 520x520, aux classifier included


@pytest.mark.slow
@pytest.mark.parametrize("name", tvm.list_models(module=tvm.video))
def test_torchvision_video(name):
    crop = get_model_weights(name).DEFAULT.transforms.keywords["crop_size"]
    report = check_exact(meta_model(get_model, name), (1, 3, 16, *crop))
    assert_published(report, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", tvm.list_models(module=tvm.optical_flow))
def test_torchvision_optical_flow_through_the_fallback(name):
    report = check_exact(meta_model(get_model, name), ((1, 3, 512, 512), (1, 3, 512, 512)))
    assert list(report.fallbacks) == [""]  # RAFT's forward branches on shapes: costed from its calls
    assert_published(report, name)  # the published figures are for 512x512 frames


@pytest.mark.slow
@pytest.mark.parametrize("name", tvm.list_models(module=tvm.quantization))
def test_torchvision_quantizable(name):
    base = name.removeprefix("quantized_")
    kwargs = {"quantize": False}
    if base == "googlenet":
        kwargs["aux_logits"] = False
    if base in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = False
    size = get_model_weights(name).DEFAULT.transforms.keywords["crop_size"]
    report = check_exact(meta_model(get_model, name, **kwargs), (1, 3, size, size))
    assert_published(report, name)


SINGLE_STAGE = ["fcos_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "ssd300_vgg16",
                "ssdlite320_mobilenet_v3_large"]


@pytest.mark.slow
@pytest.mark.parametrize("name", tvm.list_models(module=tvm.detection))
def test_torchvision_detection_is_complete_at_the_upper_bound(name):
    """Post-processing depends on values (score thresholds, NMS): every box is assumed kept,
    and the model's own limits (post_nms_top_n, detections_per_img) then apply."""
    model = meta_model(get_model, name, weights_backbone=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = fxcost.analyze(model, ([torch.empty(3, 320, 320)],))
    assert report.complete and not any(n.status is Status.PARTIAL for n in report.nodes)
    assert any("NMS keeps all" in a.what for a in report.assumptions)
    backbone = fxcost.analyze(model, ([torch.empty(3, 320, 320)],), submodule="backbone")
    assert report.macs > backbone.macs > 0
    if name in SINGLE_STAGE:
        # box decoding and NMS do no MACs: equal to what torchvision publishes
        assert round(report.macs / 1e9, 3) == get_model_weights(name).DEFAULT.meta["_ops"]


def forced_to_the_upper_bound(model):
    """The detector with every filter open: scores above any threshold, NMS suppressing
    nothing, no box too small; a real run then keeps what the analysis assumed."""
    if hasattr(model, "rpn"):
        model.rpn.score_thresh, model.rpn.min_size, model.rpn.nms_thresh = 0.0, 0.0, 1.0
        model.roi_heads.score_thresh, model.roi_heads.nms_thresh = -1.0, 1.0
    else:
        model.score_thresh, model.nms_thresh = -1.0, 1.0
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn",
                                  "ssdlite320_mobilenet_v3_large"])
def test_detection_upper_bound_equals_a_real_run_forced_to_it(name):
    torch.manual_seed(0)
    model = forced_to_the_upper_bound(get_model(name, weights_backbone=None).eval())
    images = [torch.rand(3, 320, 320)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = fxcost.analyze(model, (images,))
        with torch.no_grad():
            detections = model(images)[0]
    limit = model.roi_heads.detections_per_img if hasattr(model, "rpn") else model.detections_per_img
    assert detections["boxes"].shape[0] == limit  # the real run did reach the bound
    assert report.macs == torch_macs(model, images)


# --- timm ------------------------------------------------------------------------------

@pytest.fixture
def timm():
    """timm, or a skip of this test alone when it is not installed."""
    return pytest.importorskip("timm")


@pytest.fixture
def transformers():
    """transformers, or a skip of this test alone when it is not installed."""
    module = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return module


#: A fixed sample across timm's families: the shortest-named one or two models of each.
TIMM_SAMPLE = [
    "vit_base_mci_224", "vit_base_patch8_224", "deit_base_patch16_224", "deit_base_patch16_384",
    "deit3_base_patch16_224", "swin_s3_base_224", "swin_s3_tiny_224", "swinv2_cr_base_224", "convnext_atto",
    "convnext_base", "convnextv2_atto", "efficientnet_b0", "efficientnet_b1", "tf_efficientnet_b0",
    "efficientnetv2_l", "regnetx_002", "regnetx_004", "regnety_002", "regnety_004", "resnet18", "resnet26",
    "resnetv2_18", "resnext26ts", "seresnet18", "wide_resnet50_2", "mobilenetv3_rw", "mobilenetv3_large_075",
    "mobilenetv4_conv_large", "mobilenetv4_conv_small", "eva02_base_patch14_224", "eva02_base_patch14_448",
    "eva_giant_patch14_224", "coatnet_0_224", "coatnet_1_224", "coat_mini", "maxvit_base_tf_224",
    "maxvit_base_tf_384", "maxxvitv2_nano_rw_256", "beit_base_patch16_224", "beit_base_patch16_384",
    "cait_m36_384", "levit_128", "levit_192", "mixer_b16_224", "resmlp_12_224", "poolformer_m36",
    "convmixer_768_32", "densenet121", "densenet161", "dla34", "dla60", "dpn68", "ghostnet_050", "hrnet_w18",
    "hrnet_w30", "inception_v3", "mnasnet_050", "nfnet_f0", "pit_b_224", "rexnet_100", "repvgg_a0", "res2net50d",
    "selecsls42", "tnt_b_patch16_224", "twins_svt_base", "visformer_tiny", "volo_d1_224", "xcit_nano_12_p8_224",
    "xcit_nano_12_p8_384", "edgenext_base", "edgenext_small", "efficientformer_l1", "fastvit_t8", "fastvit_s12",
    "mobilevit_s", "tiny_vit_5m_224", "tiny_vit_11m_224", "hgnet_base", "cspdarknet53", "cspresnet50",
    "darknet17", "dm_nfnet_f0", "gcvit_base", "nest_base", "sequencer2d_l", "crossvit_9_240", "mvitv2_base",
    "mvitv2_tiny", "focalnet_base_lrf", "focalnet_base_srf", "davit_base", "davit_huge", "efficientvit_b0",
    "efficientvit_b1", "repvit_m1", "vgg11", "convit_base", "convit_tiny", "lcnet_035", "mobileone_s0",
    "inception_next_atto", "hiera_base_224", "hiera_huge_224", "vitamin_base_224", "starnet_s1",
]

#: Parameter counts timm publishes for these models (millions, 2 decimals): the param_count column
#: of timm's inference benchmark, results/benchmark-infer-amp-nchw-pt291-cu130-pro6000maxq.csv in
#: github.com/huggingface/pytorch-image-models (commit 90cae8c, January 2026).
TIMM_PARAMS = {row["model"]: float(row["param_count"]) for row in csv.DictReader(
    open(pathlib.Path(__file__).parent / "data" / "timm_param_counts.csv"))}

#: Models timm's benchmark counts in their re-parameterized inference form (branches and
#: BatchNorms fused into one convolution or linear: ``timm.utils.reparameterize_model``).
REPARAMETERIZED = {"levit_128", "levit_192", "repvgg_a0", "fastvit_t8", "fastvit_s12", "repvit_m1", "mobileone_s0"}

#: timm models with a torchvision twin (same architecture, same published figures)
TWINS = {"resnet18": "resnet18", "densenet121": "densenet121", "wide_resnet50_2": "wide_resnet50_2",
         "deit_base_patch16_224": "vit_b_16"}


def test_timm_sample_is_large_enough():
    assert len(TIMM_SAMPLE) == len(set(TIMM_SAMPLE)) >= 100
    assert set(TIMM_PARAMS) == set(TIMM_SAMPLE)


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_SAMPLE)
def test_timm_model(name, timm):
    model = meta_model(timm.create_model, name, pretrained=False)
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    report = check_exact(model, (1, *size))
    params = report.params
    if name in REPARAMETERIZED:  # fusing computes new weights: real ones are needed
        fused = timm.utils.reparameterize_model(timm.create_model(name, pretrained=False).eval())
        params = quiet_analyze(fused, (1, *size)).params
    assert abs(params - round(TIMM_PARAMS[name] * 1e6)) <= 5_000, (params, TIMM_PARAMS[name])  # printed precision
    if name in TWINS:
        assert_published(report, TWINS[name])


# --- Hugging Face transformers ------------------------------------------------------------------

T, LAYERS, D = 16, 2, 64
VOCAB, FFN, HEADS = 1000, 128, 4
IDS = torch.zeros(1, T, dtype=torch.long)
LN = 2 * D  # a LayerNorm's weight and bias


def matmul_params(model):
    """Weights of every matmul (Linear / GPT-2's Conv1D), embeddings excluded; the LM head
    counts even when tied to the embedding (it is still a matmul)."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            total += module.weight.numel()
    return total


def analytic_decoder_macs(model):
    """MACs of a decoder LM on T tokens: T·N (every token through every matmul weight) plus
    the attention scores and weighted values: 2·L·T²·d (full T x T, the causal mask is applied
    after the product)."""
    return T * matmul_params(model) + 2 * LAYERS * T * T * D


def llama_like(tf, family):
    config = getattr(tf, f"{family}Config")(num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=HEADS,
                                            num_key_value_heads=2, intermediate_size=FFN, vocab_size=VOCAB)
    return getattr(tf, f"{family}ForCausalLM")(config)


DECODERS = {
    "gpt2": lambda tf: tf.GPT2LMHeadModel(tf.GPT2Config(
        n_layer=LAYERS, n_embd=D, n_head=HEADS, vocab_size=VOCAB, n_positions=128, bos_token_id=0, eos_token_id=0)),
    "llama": lambda tf: llama_like(tf, "Llama"),
    "mistral": lambda tf: llama_like(tf, "Mistral"),
}

ENCODERS = {
    "bert": (lambda tf: tf.BertModel(tf.BertConfig(
        num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=HEADS, intermediate_size=256, vocab_size=VOCAB)),
        {"input_ids": IDS}),
    "t5": (lambda tf: tf.T5ForConditionalGeneration(tf.T5Config(
        num_layers=LAYERS, d_model=D, num_heads=HEADS, d_kv=16, d_ff=FFN, vocab_size=VOCAB)),
        {"input_ids": IDS, "decoder_input_ids": IDS}),
    "vit": (lambda tf: tf.ViTModel(tf.ViTConfig(
        num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=HEADS, intermediate_size=FFN, image_size=32,
        patch_size=8)), {"pixel_values": torch.empty(1, 3, 32, 32)}),
    "whisper": (lambda tf: tf.WhisperForConditionalGeneration(tf.WhisperConfig(
        encoder_layers=LAYERS, decoder_layers=LAYERS, d_model=D, encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, vocab_size=VOCAB, num_mel_bins=16,
        max_source_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)),
        {"input_features": torch.empty(1, 16, 64), "decoder_input_ids": IDS}),
}

#: Parameters of each configuration above, by hand from the architecture and its defaults.
PARAMS_BY_HAND = {
    # token + position (n_positions) embeddings; per layer: LN, qkv, proj, LN, fc (4d), fc-proj, all
    # with bias; final LN; the LM head is tied to the token embedding
    "gpt2": VOCAB * D + 128 * D + LAYERS * (LN + D * 3 * D + 3 * D + D * D + D + LN + D * 4 * D + 4 * D + 4 * D * D + D)
    + LN,
    # embedding; per layer: q (4 heads x 16), k and v (2 kv heads x 16), o, gate/up/down, two RMSNorm
    # weights, no biases; final RMSNorm; an untied LM head
    "llama": VOCAB * D + LAYERS * (D * 64 + 2 * D * 32 + 64 * D + 3 * D * FFN + 2 * D) + D + VOCAB * D,
    # word, position (512) and token-type (2) embeddings + LN; per layer: q, k, v, out with bias, LN,
    # intermediate (256) and output with bias, LN; the pooler
    "bert": VOCAB * D + 512 * D + 2 * D + LN + LAYERS * (4 * (D * D + D) + LN + D * 256 + 256 + 256 * D + D + LN)
    + D * D + D,
    # shared embedding (tied to the LM head); encoder layers: q, k, v, o (4 heads x 16), RMS weight,
    # wi/wo (d_ff), RMS weight; decoder layers add cross-attention and its RMS weight; the first
    # self-attention of each stack has a relative bias table (32 buckets x 4 heads); final RMS weights
    "t5": VOCAB * D + LAYERS * (4 * D * 64 + D + 2 * D * FFN + D) + 32 * HEADS + D
    + LAYERS * (2 * (4 * D * 64 + D) + 2 * D * FFN + D) + 32 * HEADS + D,
    # CLS token, position embeddings (16 patches + CLS), 8x8 patch conv with bias; per layer: LN, q, k,
    # v, out with bias, LN, intermediate and output with bias; final LN; the pooler
    "vit": D + 17 * D + 3 * 8 * 8 * D + D + LAYERS * (LN + 4 * (D * D + D) + LN + D * FFN + FFN + FFN * D + D) + LN
    + D * D + D,
    # encoder: two k=3 convs with bias, positions (32); per layer: q, v, out with bias and k without
    # (4d² + 3d), LN, fc1/fc2 with bias, LN; final LN. decoder: tokens, positions (448); per layer:
    # self- and cross-attention, 3 LNs, fc1/fc2; final LN; the output projection is tied to the tokens
    "whisper": 16 * D * 3 + D + D * D * 3 + D + 32 * D + LAYERS * (4 * D * D + 3 * D + LN + D * FFN + FFN + FFN * D + D + LN)
    + LN + VOCAB * D + 448 * D + LAYERS * (2 * (4 * D * D + 3 * D) + 3 * LN + D * FFN + FFN + FFN * D + D) + LN,
}
PARAMS_BY_HAND["mistral"] = PARAMS_BY_HAND["llama"]


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_lm_macs_match_the_analytic_formula(name, transformers):
    with torch.device("meta"):
        model = DECODERS[name](transformers)
    report = check_exact(model, {"input_ids": IDS})
    assert report.macs == analytic_decoder_macs(model)
    assert report.params == PARAMS_BY_HAND[name]


def test_gpt2_formula_by_hand(transformers):
    with torch.device("meta"):
        model = DECODERS["gpt2"](transformers)
    per_layer = D * 3 * D + D * D + D * 4 * D + 4 * D * D  # qkv, proj, fc, fc-proj
    n = LAYERS * per_layer + D * 1000  # + the LM head
    assert quiet_analyze(model, {"input_ids": IDS}).macs == T * n + 2 * LAYERS * T * T * D == 2_662_400


@pytest.mark.parametrize("name", ENCODERS)
def test_transformers_models(name, transformers):
    build, example = ENCODERS[name]
    with torch.device("meta"):
        model = build(transformers)
    report = check_exact(model, example)
    assert report.params == PARAMS_BY_HAND[name]


def test_bert_by_hand(transformers):
    build, example = ENCODERS["bert"]
    with torch.device("meta"):
        model = build(transformers)
    per_layer = 4 * D * D + 2 * D * 256
    expected = T * LAYERS * per_layer + 2 * LAYERS * T * T * D + D * D  # + the pooler on one token
    assert quiet_analyze(model, example).macs == expected == 1_642_496


# --- a fixed sample of transformers architectures, each from its config class ----------------------

#: model type -> (config level of ``hf_configs``, example input as {name: shape}), across families:
#: encoders, decoders, encoder-decoders, vision, audio, vision-language, mixture-of-experts and
#: state-space models. ``benchmarks/coverage.py`` runs every architecture the same way.
HF_SAMPLE = {
    "bert": ("small", {"input_ids": (1, 16)}),
    "albert": ("small", {"input_ids": (1, 16)}),
    "modernbert": ("small", {"input_ids": (1, 16)}),
    "qwen3": ("small", {"input_ids": (1, 16)}),
    "gemma3_text": ("small", {"input_ids": (1, 16)}),
    "phi3": ("small", {"input_ids": (1, 16)}),
    "falcon": ("small", {"input_ids": (1, 16)}),
    "bloom": ("small", {"input_ids": (1, 16)}),
    "gpt_neox": ("small", {"input_ids": (1, 16)}),
    "pegasus_x": ("small", {"input_ids": (1, 16), "decoder_input_ids": (1, 16)}),
    "fsmt": ("small", {"input_ids": (1, 16), "decoder_input_ids": (1, 16)}),
    "convnext": ("small", {"pixel_values": (1, 3, 224, 224)}),
    "swin": ("shallow", {"pixel_values": (1, 3, 224, 224)}),
    "segformer": ("small", {"pixel_values": (1, 3, 224, 224)}),
    "mobilevit": ("small", {"pixel_values": (1, 3, 256, 256)}),
    "levit": ("small", {"pixel_values": (1, 3, 224, 224)}),
    "hubert": ("small", {"input_values": (1, 16000)}),
    "speech_to_text": ("small", {"input_features": (1, 100, 80), "decoder_input_ids": (1, 16)}),
    "audio-spectrogram-transformer": ("small", {"input_values": (1, 1024, 128)}),
    "clip": ("small", {"input_ids": (1, 16), "pixel_values": (1, 3, 224, 224)}),
    "llava": ("small", {"input_ids": (1, 16)}),
    "nllb-moe": ("small", {"input_ids": (1, 16), "decoder_input_ids": (1, 16)}),
    "mamba": ("small", {"input_ids": (1, 16)}),
    "mamba2": ("shallow", {"input_ids": (1, 16)}),
    "rwkv": ("shallow", {"input_ids": (1, 16)}),
}


def meta_inputs(shapes):
    """Token inputs (``*_ids``) as int64 zeros, the others float32, on meta."""
    return {name: torch.zeros(shape, dtype=torch.long if name.endswith("_ids") else torch.float32, device="meta")
            for name, shape in shapes.items()}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", HF_SAMPLE)
def test_transformers_architecture(model_type, transformers):
    import hf_configs

    level, shapes = HF_SAMPLE[model_type]
    model, _ = hf_configs.build(model_type, hf_configs.level(level))
    inputs = meta_inputs(shapes)
    report = quiet_analyze(model, inputs)
    assert report.complete and not any(n.status is Status.PARTIAL for n in report.nodes)
    assert report.params == sum(p.numel() for p in model.parameters())  # unique: tied weights once
    assert report.macs == torch_macs(model, **inputs)
