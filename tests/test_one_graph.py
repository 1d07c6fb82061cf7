"""One model, one graph: the torch calls recorded inside modules fx cannot trace (every
Hugging Face model) are graph nodes, so liveness, per-module views, deployment views and
budgets work on them as on traced code. Peaks are checked against a real eager run."""

import logging
import warnings

import pytest
import torch
import torch.nn as nn

import fxcost
from fxcost import Status
from memory_probe import measure_analysed

T = 32

#: Module classes fxcost costs whole by a rule: one call in the eager measurement too.
WHOLE = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.Dropout, nn.GELU, nn.SiLU, nn.ReLU, nn.Tanh, nn.Softmax,
         nn.Conv1d, nn.Conv2d)


@pytest.fixture(scope="module")
def transformers():
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers


def build(transformers, name):
    ids = torch.randint(0, 1000, (1, T), generator=torch.Generator().manual_seed(0))
    configs = {
        "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128)),
        "bert": lambda: transformers.BertModel(transformers.BertConfig(
            num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=256, vocab_size=1000)),
        "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
            num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=1000)),
        "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
            num_layers=2, d_model=64, num_heads=4, d_kv=16, d_ff=128, vocab_size=1000)),
    }
    torch.manual_seed(0)
    model = configs[name]().eval()
    inputs = {"input_ids": ids} if name != "t5" else {"input_ids": ids, "decoder_input_ids": ids}
    return model, inputs


def analyze(model, inputs, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxcost.TraceFallbackWarning)
        warnings.simplefilter("error", fxcost.UnsupportedOpWarning)
        return fxcost.analyze(model, inputs, **options)


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "t5"])
def test_hugging_face_peaks_equal_a_real_eager_run(transformers, name):
    model, inputs = build(transformers, name)
    report = analyze(model, inputs)
    measured = measure_analysed(model, inputs, report.fallbacks, whole=WHOLE)
    assert report.peak_activation_bytes == measured["node_peak"]
    assert report.peak_with_temporaries_bytes == measured["op_peak"]
    # the peak is a node inside the model, not the model as one call
    peak = report.node(report.peak_node)
    assert peak.module_path and peak.status is not Status.NO_COMPUTE


def test_captured_calls_are_graph_nodes_named_by_submodule_and_op(transformers):
    model, inputs = build(transformers, "gpt2")
    report = analyze(model, inputs)
    assert list(report.fallbacks)  # fx cannot trace it: the calls were captured
    names = {n.name for n in report.nodes}
    assert {"transformer_h_0_mlp_c_fc_addmm", "transformer_h_0_attn_scaled_dot_product_attention",
            "lm_head"} <= names
    # linked by data: the MLP's projection reads what its activation wrote (1 x T x 256 float32)
    (proj,) = [n for n in report.nodes if n.name == "transformer_h_0_mlp_c_proj_addmm"]
    assert proj.input_bytes == T * 256 * 4
    # live bytes differ from node to node: a schedule, not one number for the whole model
    assert len({n.live_bytes for n in report.nodes if n.status is not Status.NO_COMPUTE}) > 10


def test_module_views_of_a_captured_model(transformers):
    model, inputs = build(transformers, "bert")
    report = analyze(model, inputs)
    peaks = report.module_peaks(["encoder.layer.0", "encoder.layer.1", "embeddings"])
    assert len(set(peaks.values())) > 1  # each block has its own peak
    layer = {g.key: g for g in report.by_module(depth=3)}["encoder.layer.0"]
    d, ff = 64, 256
    assert layer.macs == T * (4 * d * d + 2 * d * ff) + 2 * T * T * d  # projections, FFN, scores, values
    assert all(b.module_path == "" or b.module_path.startswith(("embeddings", "encoder", "pooler"))
               for b in report.peak_buffers)


def test_deployment_view_and_budget_on_a_captured_model(transformers):
    model, inputs = build(transformers, "llama")
    eager = analyze(model, inputs)
    int8 = analyze(model, inputs, memory=fxcost.MemoryOptions(activation_dtype=torch.int8))
    float_bytes = sum(b.nbytes for b in eager.peak_buffers if b.producer != "input_ids")
    assert int8.peak_activation_bytes <= eager.peak_activation_bytes - float_bytes * 3 // 4 + 1
    with pytest.raises(fxcost.BudgetExceeded, match="peak_activation"):
        fxcost.assert_within(eager, peak_activation=eager.peak_activation_bytes - 1)
    fxcost.assert_within(eager, peak_activation=eager.peak_activation_bytes)


def test_a_module_kept_whole_holds_its_inputs_until_it_returns():
    class Block(nn.Module):
        def forward(self, x):
            y = x * 2
            return y + 1 if x.shape[0] > 1 else y  # shape control flow: fx cannot trace it

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return self.block(x).exp()

    with pytest.warns(fxcost.TraceFallbackWarning):
        report = fxcost.analyze(Model(), (4, 8))
    x = 4 * 8 * 4
    # x (held by the caller), y, then y + 1 while y is still referenced: three buffers
    assert report.node("block_add").live_bytes == 3 * x
    # after the block returns, its y is gone: x, the block's output and exp's output
    assert report.node("exp").live_bytes == 3 * x
    assert report.peak_activation_bytes == 3 * x
