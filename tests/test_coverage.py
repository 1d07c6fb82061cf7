"""Coverage: torchvision's other families, a fixed sample of timm models and Hugging Face
transformers built from configs — all on the meta device. Figures are compared with what
torchvision publishes with its weights, with torchvision twins of timm models, and with the
analytic 2·N·T transformer formulas."""

import logging
import warnings

import pytest
import torch
import torchvision.models as tvm
from torchvision.models import get_model, get_model_weights

import fxcost
from fxcost import Status


def meta_model(builder, **kwargs):
    try:
        with torch.device("meta"):
            return builder(**kwargs)
    except Exception:  # a few constructors cannot run on the meta device
        return builder(**kwargs).to("meta")


def quiet_analyze(model, example_input):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxcost.TraceFallbackWarning)
        warnings.simplefilter("error", fxcost.UnsupportedOpWarning)
        return fxcost.analyze(model, example_input)


def check_published(name, report):
    published = get_model_weights(name).DEFAULT.meta
    gmacs = report.macs / 1e9
    assert abs(gmacs / published["_ops"] - 1) < 0.005 or round(gmacs, 3) == published["_ops"], (gmacs, published["_ops"])
    assert report.params == published["num_params"]


# --- torchvision ---------------------------------------------------------------------

@pytest.mark.parametrize("name", tvm.list_models(module=tvm.segmentation))
def test_torchvision_segmentation(name):
    kwargs = {"weights_backbone": None} if name.startswith("lraspp") else {"weights_backbone": None, "aux_loss": True}
    report = quiet_analyze(meta_model(lambda **k: get_model(name, **k), **kwargs), (1, 3, 520, 520))
    check_published(name, report)  # published at 520x520, aux classifier included


@pytest.mark.parametrize("name", tvm.list_models(module=tvm.video))
def test_torchvision_video(name):
    crop = get_model_weights(name).DEFAULT.transforms.keywords["crop_size"]
    report = quiet_analyze(meta_model(lambda: get_model(name)), (1, 3, 16, *crop))
    check_published(name, report)


@pytest.mark.parametrize("name", tvm.list_models(module=tvm.optical_flow))
def test_torchvision_optical_flow_through_the_fallback(name):
    report = quiet_analyze(meta_model(lambda: get_model(name)), ((1, 3, 512, 512), (1, 3, 512, 512)))
    assert list(report.fallbacks) == [""]  # RAFT's forward branches on shapes: costed from its calls
    check_published(name, report)  # the published figures are for 512x512 frames


@pytest.mark.parametrize("name", tvm.list_models(module=tvm.quantization))
def test_torchvision_quantizable(name):
    base = name.removeprefix("quantized_")
    kwargs = {"quantize": False}
    if base == "googlenet":
        kwargs["aux_logits"] = False
    if base in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = False
    size = get_model_weights(name).DEFAULT.transforms.keywords["crop_size"]
    report = quiet_analyze(meta_model(lambda: get_model(name, **kwargs)), (1, 3, size, size))
    check_published(name, report)


SINGLE_STAGE = ["fcos_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "ssd300_vgg16",
                "ssdlite320_mobilenet_v3_large"]


@pytest.mark.parametrize("name", tvm.list_models(module=tvm.detection))
def test_torchvision_detection_counts_up_to_postprocessing(name):
    model = meta_model(lambda: get_model(name, weights_backbone=None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = fxcost.analyze(model, ([torch.empty(3, 320, 320)],))
    (root,) = [n for n in report.nodes if n.op == "call_module"]
    assert root.status is Status.PARTIAL and "depends on tensor values" in root.note
    assert not report.complete and report.unsupported
    backbone = fxcost.analyze(model, ([torch.empty(3, 320, 320)],), submodule="backbone")
    assert report.macs > backbone.macs > 0  # backbone, neck and heads are counted
    if name in SINGLE_STAGE:
        # everything but the box decoding/NMS: equal to what torchvision publishes
        assert round(report.macs / 1e9, 3) == get_model_weights(name).DEFAULT.meta["_ops"]


# --- timm ------------------------------------------------------------------------------

timm = pytest.importorskip("timm")

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

#: timm models with a torchvision twin: (torchvision name, input size)
TWINS = {"resnet18": "resnet18", "densenet121": "densenet121", "wide_resnet50_2": "wide_resnet50_2",
         "deit_base_patch16_224": "vit_b_16"}


def test_timm_sample_is_large_enough():
    assert len(TIMM_SAMPLE) == len(set(TIMM_SAMPLE)) >= 100


@pytest.mark.parametrize("name", TIMM_SAMPLE)
def test_timm_model(name):
    model = meta_model(lambda: timm.create_model(name, pretrained=False))
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    report = quiet_analyze(model, (1, *size))
    assert report.complete and report.macs > 0
    assert report.params == sum(p.numel() for p in model.parameters())
    if name in TWINS:
        check_published(TWINS[name], report)


# --- Hugging Face transformers ------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
logging.getLogger("transformers").setLevel(logging.ERROR)

T, LAYERS, D = 16, 2, 64
IDS = torch.zeros(1, T, dtype=torch.long)


def matmul_params(model, skip=("wte", "wpe", "embed", "shared")):
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


DECODERS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=LAYERS, n_embd=D, n_head=4, vocab_size=1000, n_positions=128, bos_token_id=0, eos_token_id=0)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=1000)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=1000)),
}


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_lm_macs_match_the_analytic_formula(name):
    with torch.device("meta"):
        model = DECODERS[name]()
    report = quiet_analyze(model, {"input_ids": IDS})
    assert report.macs == analytic_decoder_macs(model)
    assert report.params == sum(p.numel() for p in model.parameters())


def test_gpt2_formula_by_hand():
    with torch.device("meta"):
        model = DECODERS["gpt2"]()
    per_layer = D * 3 * D + D * D + D * 4 * D + 4 * D * D  # qkv, proj, fc, fc-proj
    n = LAYERS * per_layer + D * 1000  # + the LM head
    assert quiet_analyze(model, {"input_ids": IDS}).macs == T * n + 2 * LAYERS * T * T * D == 2_662_400


ENCODERS = {
    "bert": (lambda: transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=4, intermediate_size=256, vocab_size=1000)),
        {"input_ids": IDS}),
    "t5": (lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        num_layers=LAYERS, d_model=D, num_heads=4, d_kv=16, d_ff=128, vocab_size=1000)),
        {"input_ids": IDS, "decoder_input_ids": IDS}),
    "vit": (lambda: transformers.ViTModel(transformers.ViTConfig(
        num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=4, intermediate_size=128, image_size=32,
        patch_size=8)), {"pixel_values": torch.empty(1, 3, 32, 32)}),
    "whisper": (lambda: transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        encoder_layers=LAYERS, decoder_layers=LAYERS, d_model=D, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=1000, num_mel_bins=16,
        max_source_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)),
        {"input_features": torch.empty(1, 16, 64), "decoder_input_ids": IDS}),
}


@pytest.mark.parametrize("name", ENCODERS)
def test_transformers_models(name):
    build, example = ENCODERS[name]
    with torch.device("meta"):
        model = build()
    report = quiet_analyze(model, example)
    assert report.complete and report.macs > 0
    assert report.params == sum(p.numel() for p in model.parameters())


def test_bert_by_hand():
    build, example = ENCODERS["bert"]
    with torch.device("meta"):
        model = build()
    per_layer = 4 * D * D + 2 * D * 256
    expected = T * LAYERS * per_layer + 2 * LAYERS * T * T * D + D * D  # + the pooler on one token
    assert quiet_analyze(model, example).macs == expected == 1_642_496
