"""The command line, run in-process through ``main(argv)`` (stdout and stderr captured), and a
few real runs of the installed console script (marked slow).

Expected figures are worked out by hand from the architectures or taken from what torchvision
publishes with its weights, never copied from fxcost's output.
"""

import csv
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torchvision

import fxcost
from fxcost.cli import main

R18 = torchvision.models.ResNet18_Weights.DEFAULT.meta  # published: _ops (GMACs, 3 decimals), num_params
R34 = torchvision.models.ResNet34_Weights.DEFAULT.meta
R18_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
#: resnet18's BatchNorm layers: running mean and variance (float32) and num_batches_tracked (int64) each
R18_BN_CHANNELS = [64] + [64] * 4 + [128] * 5 + [256] * 5 + [512] * 5
R18_BUFFER_BYTES = sum(8 * c for c in R18_BN_CHANNELS) + 8 * len(R18_BN_CHANNELS)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def error_lines(self):
        return [line for line in self.err.splitlines() if line.startswith("fxcost: error:")]


@pytest.fixture
def cli(capsys, tmp_path_factory):
    """Run ``main(args)``; the model files a test writes and imports are forgotten after it."""
    base = str(tmp_path_factory.getbasetemp())

    def run(*args):
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)
    yield run
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None)).startswith(base):
            del sys.modules[name]


def table(text):
    """(headers, rows) of the first tabulate 'simple' table in ``text``; cells are cut at the
    column spans of the dashed rule under the headers; rows stop at the next rule or blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---"))
    rule = lines[start]
    spans, i = [], 0
    while i < len(rule):
        if rule[i] == "-":
            j = i
            while j < len(rule) and rule[j] == "-":
                j += 1
            spans.append((i, j))
            i = j
        else:
            i += 1
    cut = lambda line: [line[a:b].strip() for a, b in spans]  # noqa: E731
    rows = []
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("---"):
            break
        rows.append(cut(line))
    return cut(lines[start - 1]), rows


def integer(cell):
    return int(cell.replace(",", "")) if cell else 0


def summary_value(text, label):
    """The raw integer after ``label:`` in the summary (with --raw)."""
    line = next(line for line in text.splitlines() if line.startswith(label + ":"))
    return int(line.split(":", 1)[1].split()[0].replace(",", ""))


def write_module(directory, name, source):
    path = pathlib.Path(directory) / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


TINY = """
import torch.nn as nn

class Net(nn.Module):
    # 1x3x10x10 input: conv 3->8 k3 gives 8x8x8 outputs of 27 MACs each = 13,824 MACs
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)

    def forward(self, x):
        return self.conv(x).relu()

def broken():
    return nn.Linear(2)

class Tokens(nn.Module):
    # embedding lookups (0 MACs) then a linear 16 -> 4 on every token
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.proj = nn.Linear(16, 4)

    def forward(self, input_ids):
        return self.proj(self.embed(input_ids))

class NeedsValues(nn.Module):
    # reads a weight's value while being built: cannot be built on the meta device
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.scale = float(self.lin.weight.abs().max().item())

    def forward(self, x):
        return self.lin(x) * self.scale

instance = Net()
"""


# --- the per-node table and its views ---------------------------------------------------------

def test_node_table_has_one_row_per_computing_node(cli):
    result = cli("torchvision:resnet18", "--raw")
    assert result.code == 0 and result.err == ""
    headers, rows = table(result.out)
    assert headers == ["module", "op", "output shape", "params", "MACs", "FLOPs", "moved"]
    ops = [row[1] for row in rows]
    # 1 stem conv + 8 blocks x 2 convs + 3 downsample convs, each followed by a BatchNorm;
    # ReLU after the stem and twice per block; one residual add per block
    assert (ops.count("Conv2d"), ops.count("BatchNorm2d"), ops.count("ReLU"), ops.count("add")) == (20, 20, 17, 8)
    assert len(rows) == 20 + 20 + 17 + 8 + 4  # + maxpool, avgpool, flatten, fc
    assert rows[0][:3] == ["conv1", "Conv2d", "[1, 64, 112, 112]"]
    assert integer(rows[0][4]) == 112 * 112 * 64 * 3 * 7 * 7  # conv1: 118,013,952 MACs
    assert rows[-1][:3] == ["fc", "Linear", "[1, 1000]"] and integer(rows[-1][4]) == 512 * 1000
    total = result.out.splitlines()[len(rows) + 3]
    assert total.startswith("total")
    macs = summary_value(result.out, "MACs")
    assert sum(integer(row[4]) for row in rows) == macs and round(macs / 1e9, 3) == R18["_ops"]
    assert f"{R18['num_params']:,} params" in result.out


@pytest.mark.parametrize("depth", [1, 2])
def test_depth_rows_are_the_modules_at_that_depth(cli, depth):
    result = cli("torchvision:resnet18", "--depth", str(depth), "--raw")
    assert result.code == 0
    headers, rows = table(result.out)
    assert headers == ["module", "type", "params", "MACs", "FLOPs", "moved", "peak live"]
    names = [row[0].replace("· ", "") for row in rows]
    expected = set(R18_CHILDREN) | {"(root ops)"}  # (root ops): the functional flatten in forward()
    if depth == 2:
        expected |= {f"layer{i}.{j}" for i in range(1, 5) for j in range(2)}
    assert set(names) == expected and len(names) == len(expected)
    assert all(name.count(".") <= depth - 1 for name in names)
    if depth == 1:  # the top-level rows partition the model
        assert sum(integer(row[3]) for row in rows) == summary_value(result.out, "MACs")
        assert sum(integer(row[2]) for row in rows) == R18["num_params"]
        assert integer(rows[names.index("fc")][2]) == 512 * 1000 + 1000


def test_by_op_counts_and_order(cli):
    result = cli("torchvision:resnet18", "--by", "op", "--raw")
    headers, rows = table(result.out)
    assert headers[:4] == ["op", "count", "params", "MACs"]
    counts = {row[0]: integer(row[1]) for row in rows}
    assert (counts["Conv2d"], counts["BatchNorm2d"], counts["ReLU"], counts["add"], counts["Linear"]) == (20, 20, 17, 8, 1)
    keys = [(integer(row[3]), integer(row[5])) for row in rows]
    assert keys == sorted(keys, reverse=True)  # most MACs first, then most FLOPs
    assert integer(rows[0][2]) == R18["num_params"] - 513_000 - 2 * sum(R18_BN_CHANNELS)  # conv weights


def test_sort_top_and_columns(cli):
    result = cli("torchvision:resnet18", "--sort", "flops", "--top", "3", "--columns", "name,op,flops", "--raw")
    headers, rows = table(result.out)
    assert headers == ["node", "op", "FLOPs"] and len(rows) == 3
    flops = [integer(row[2]) for row in rows]
    assert flops == sorted(flops, reverse=True)
    assert rows[0][0] == "conv1" and flops[0] == 2 * 112 * 112 * 64 * 147  # the stem conv, no bias
    assert flops[1] == 2 * 56 * 56 * 64 * 64 * 9  # every 3x3 conv of layer1


def test_roofline_view(cli):
    result = cli("torchvision:resnet18", "--roofline", "cortex-m7", "--top", "3")
    headers, rows = table(result.out)
    assert headers == ["module", "op", "FLOPs", "moved", "FLOP/B", "time >=", "bound"] and len(rows) == 3
    assert rows[0][0] == "conv1" and rows[0][-1] == "compute"
    # 236,027,904 FLOPs at 0.96 GFLOP/s
    assert rows[0][5] == f"{2 * 112 * 112 * 64 * 147 / 0.96e9 * 1e3:.0f} ms"


def test_markdown_tables(cli):
    result = cli("torchvision:resnet18", "--format", "markdown", "--top", "2")
    lines = result.out.splitlines()
    assert lines[0].startswith("| module") and set(lines[1]) <= set("|-: ") and len(lines) == 2 + 2 + 1
    result = cli("torchvision:resnet18", "--format", "markdown", "--depth", "1")
    lines = result.out.splitlines()
    assert lines[0].startswith("| module") and len(lines) == 2 + len(R18_CHILDREN) + 1  # + (root ops), no summary


def test_exclude_dtype_and_int8(cli):
    result = cli("torchvision:resnet18", "--exclude", "fc", "--raw")
    assert f"{R18['num_params'] - 512 * 1000 - 1000:,} params" in result.out
    result = cli("torchvision:resnet18", "--dtype", "float16", "--columns", "name,dtype,macs", "--raw")
    _, rows = table(result.out)
    assert {row[1] for row in rows} == {"float16"}
    assert f"{2 * R18['num_params']:,} B" in result.out  # two bytes per parameter
    int8 = cli("torchvision:resnet18", "--dtype", "int8", "--format", "json")
    totals = json.loads(int8.out)["totals"]
    # float parameters and BatchNorm statistics at one byte; num_batches_tracked is an integer: stays 8 bytes
    assert totals["weight_memory_bytes"] == R18["num_params"] + sum(2 * c for c in R18_BN_CHANNELS) + 8 * 20


# --- JSON and CSV ---------------------------------------------------------------------------------

def test_json_totals_and_batch(cli):
    one = json.loads(cli("torchvision:resnet18", "--format", "json").out)
    assert one["format"] == "fxcost.report/2"
    totals = one["totals"]
    assert round(totals["macs"] / 1e9, 3) == R18["_ops"] and totals["params"] == R18["num_params"]
    assert totals["param_bytes"] == 4 * R18["num_params"] and totals["buffer_bytes"] == R18_BUFFER_BYTES
    assert totals["peak_memory_bytes"] == totals["peak_activation_bytes"] + 4 * R18["num_params"] + R18_BUFFER_BYTES
    four = json.loads(cli("torchvision:resnet18", "--format", "json", "--input", "1x3x64x64", "--batch", "4").out)
    assert four["inputs"][0][1] == [4, 3, 64, 64]
    single = json.loads(cli("torchvision:resnet18", "--format", "json", "--input", "1x3x64x64").out)
    assert four["totals"]["macs"] == 4 * single["totals"]["macs"]  # every op works per sample
    assert fxcost.Report.from_dict(four).macs == four["totals"]["macs"]


def test_csv_has_every_node(cli):
    result = cli("torchvision:resnet18", "--format", "csv")
    lines = result.out.splitlines()
    assert lines[0].startswith("name,op,target")
    assert len(lines) == 1 + 69 + 2  # the 69 computing nodes, the input and the output
    macs = lines[0].split(",").index("macs")
    assert round(sum(int(line.split(",")[macs]) for line in lines[1:]) / 1e9, 3) == R18["_ops"]


# --- sweeps ------------------------------------------------------------------------------------

def test_batch_sweep_table(cli):
    result = cli("torchvision:resnet18", "--batch", "1,8,32", "--raw")
    assert result.code == 0
    headers, rows = table(result.out)
    assert headers == ["batch", "MACs", "FLOPs", "peak activation", "peak memory"]
    assert [row[0] for row in rows] == ["1", "8", "32"]
    macs = [integer(row[1]) for row in rows]
    assert round(macs[0] / 1e9, 3) == R18["_ops"] and macs == [macs[0], 8 * macs[0], 32 * macs[0]]
    for row in rows:  # parameters and buffers do not grow with the batch
        assert integer(row[4]) - integer(row[3]) == 4 * R18["num_params"] + R18_BUFFER_BYTES


def test_batch_sweep_formats(cli):
    data = json.loads(cli("torchvision:resnet18", "--batch", "1,2", "--format", "json").out)
    assert data["format"] == "fxcost.sweep/1" and data["model"] == "ResNet"
    assert [(row["batch"], row["seq"], row["inputs"]) for row in data["rows"]] == [(1, None, "1x3x224x224"),
                                                                                  (2, None, "2x3x224x224")]
    assert data["rows"][1]["macs"] == 2 * data["rows"][0]["macs"]
    csv = cli("torchvision:resnet18", "--batch", "1,2", "--format", "csv").out.splitlines()
    assert csv[0].startswith("batch,seq,inputs,macs,flops,params") and len(csv) == 3
    assert csv[2].split(",")[:3] == ["2", "", "2x3x224x224"]
    markdown = cli("torchvision:resnet18", "--batch", "1,2", "--format", "markdown").out.splitlines()
    assert markdown[0].replace(" ", "") == "|batch|MACs|FLOPs|peakactivation|peakmemory|" and len(markdown) == 4


# --- model specs: files, modules, timm, Hugging Face ------------------------------------------------

def test_module_in_the_current_directory(cli, tmp_path, monkeypatch):
    write_module(tmp_path, "cwdnet_a", TINY)
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    result = cli("cwdnet_a:Net", "--input", "1x3x10x10", "--raw")
    assert result.code == 0, result.err
    assert summary_value(result.out, "MACs") == 8 * 8 * 8 * 27
    assert sys.path == path_before
    result = cli("cwdnet_a:Net", "--input", "1x3x10x10", "--raw", "--config", "width=16")
    assert summary_value(result.out, "MACs") == 8 * 8 * 16 * 27
    result = cli("cwdnet_a:instance", "--input", "1x3x10x10", "--raw")  # a module instance is used as is
    assert summary_value(result.out, "MACs") == 8 * 8 * 8 * 27
    result = cli("cwdnet_a:NeedsValues", "--input", "2x4", "--raw")  # built on the CPU instead
    assert result.code == 0 and summary_value(result.out, "MACs") == 2 * 4 * 3


def test_model_from_a_file_path(cli, tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    write_module(folder, "filenet_b", TINY)
    write_module(folder, "filenet_helper", "import torch.nn as nn\ndef make():\n    return nn.Linear(4, 2)\n")
    write_module(folder, "filenet_c", "from filenet_helper import make\ndef build():\n    return make()\n")
    monkeypatch.chdir(tmp_path)
    path_before, modules_before = list(sys.path), set(sys.modules)
    result = cli("models/filenet_b.py:Net", "--input", "1x3x10x10", "--raw")
    assert result.code == 0, result.err
    assert summary_value(result.out, "MACs") == 8 * 8 * 8 * 27
    result = cli(str(folder / "filenet_c.py") + ":build", "--input", "3x4", "--raw")  # imports a sibling
    assert summary_value(result.out, "MACs") == 3 * 4 * 2
    assert sys.path == path_before
    assert not {"filenet_b", "filenet_c"} & set(sys.modules)  # the files were registered only while loading
    assert set(sys.modules) - modules_before <= {"filenet_helper"}  # what they import stays, as imports do


def test_keyword_inputs_with_dtypes(cli, tmp_path, monkeypatch):
    write_module(tmp_path, "kwnet_d", TINY)
    monkeypatch.chdir(tmp_path)
    result = cli("kwnet_d:Tokens", "--input", "input_ids=2x7:int64", "--raw")
    assert result.code == 0, result.err
    assert summary_value(result.out, "MACs") == 2 * 7 * 16 * 4
    assert "input_ids [2, 7] int64" in result.out
    result = cli("kwnet_d:Tokens", "--input", "input_ids=2x7:int64", "--seq", "30", "--batch", "3", "--raw")
    assert summary_value(result.out, "MACs") == 3 * 30 * 16 * 4  # --seq sets the token dimension
    result = cli("kwnet_d:Tokens", "--input", "input_ids=1x7:int64", "--seq", "8,16", "--raw")
    _, rows = table(result.out)
    assert [(row[0], row[1], integer(row[2])) for row in rows] == [("1", "8", 8 * 64), ("1", "16", 16 * 64)]


@pytest.mark.parametrize("args, message", [
    (["kwnet_e:Net"], "kwnet_e:Net needs --input SHAPE"),
    (["kwnet_e:Nett", "--input", "1x3x10x10"], "kwnet_e has no attribute 'Nett' (it defines Net)"),
    (["kwnet_e:broken", "--input", "2x2"], "building the model 'kwnet_e:broken' failed: TypeError: "),
    (["kwnet_e:instance", "--input", "1x3x10x10", "--config", "width=3"], "is a module instance"),
    (["kwnet_e:Net", "--input", "1x3x10x10", "--config", "widht=3"], "unexpected keyword argument 'widht'"),
    (["nosuchmodule_e:Net"], "no module 'nosuchmodule_e' on sys.path or in the current directory"),
    (["missing/net.py:Net"], "no file 'missing/net.py'"),
    (["kwnet_e:Tokens", "--input", "input_ids=2x7:int64", "--input", "3x4"], "either all positional"),
    (["kwnet_e:Tokens", "--input", "input_ids=2x7:int65"], "unknown dtype 'int65'"),
    (["kwnet_e:Tokens", "--input", "2ids=2x7"], "'2ids' is not a parameter name"),
    (["kwnet_e:Net", "--input", "1x3x10x10", "--seq", "8"], "--seq sets the second size of token inputs"),
])
def test_spec_and_input_errors(cli, tmp_path, monkeypatch, args, message):
    write_module(tmp_path, "kwnet_e", TINY)
    monkeypatch.chdir(tmp_path)
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    assert len(result.error_lines) == 1 and message in result.error_lines[0], result.err
    if "broken" in args[0]:
        assert f"(at {tmp_path / 'kwnet_e.py'}:14)" in result.err  # the user's line


def test_timm_model_with_its_pretrained_input(cli):
    pytest.importorskip("timm")
    result = cli("timm:resnet18", "--raw")  # the same network as torchvision's resnet18
    assert result.code == 0, result.err
    assert "x [1, 3, 224, 224] float32" in result.out  # pretrained_cfg input_size (3, 224, 224)
    assert round(summary_value(result.out, "MACs") / 1e9, 3) == R18["_ops"]
    assert summary_value(result.out, "params") == R18["num_params"]
    result = cli("timm:resnet18", "--config", "num_classes=10", "--raw")
    assert summary_value(result.out, "params") == R18["num_params"] - 512 * 1000 - 1000 + 512 * 10 + 10


GPT2_TINY = "n_layer=2,n_embd=64,n_head=4,vocab_size=1000,n_positions=64"


def gpt2_lm_macs(tokens, layers=2, d=64, vocab=1000):
    """Every token through every matmul weight (qkv 3d², proj d², MLP 8d² per layer; the LM
    head d x vocab), plus attention scores and weighted values 2·L·T²·d."""
    return tokens * (layers * 12 * d * d + d * vocab) + 2 * layers * tokens * tokens * d


def test_hf_model_class_with_a_seq_sweep(cli):
    pytest.importorskip("transformers")
    result = cli("hf:GPT2LMHeadModel", "--config", GPT2_TINY, "--seq", "16,32", "--raw")
    assert result.code == 0, result.err
    headers, rows = table(result.out)
    assert headers[:3] == ["batch", "seq", "MACs"]
    assert [integer(row[2]) for row in rows] == [gpt2_lm_macs(16), gpt2_lm_macs(32)]
    assert "fxcost: note: hf:GPT2LMHeadModel: GPT2LMHeadModel from the defaults of GPT2Config (n_layer=2, n_embd=64" \
        in result.err
    result = cli("hf:GPT2LMHeadModel", "--config", GPT2_TINY, "--seq", "16", "--batch", "3", "--quiet", "--raw")
    assert summary_value(result.out, "MACs") == 3 * gpt2_lm_macs(16) and result.err == ""


def test_hf_config_class_and_directory(cli, tmp_path):
    transformers = pytest.importorskip("transformers")
    result = cli("hf:GPT2Config", "--config", GPT2_TINY, "--format", "json", "--seq", "16")
    data = json.loads(result.out)
    assert data["model"] == "GPT2Model"  # a config class builds the bare model: no LM head
    assert data["inputs"] == [["input_ids", [1, 16], "int64"]]
    assert data["totals"]["macs"] == gpt2_lm_macs(16) - 16 * 64 * 1000
    transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64,
                            architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path)
    data = json.loads(cli(f"hf:{tmp_path}", "--format", "json", "--seq", "16").out)
    assert data["model"] == "GPT2LMHeadModel" and data["totals"]["macs"] == gpt2_lm_macs(16)
    t5 = json.loads(cli("hf:T5Config", "--config", "num_layers=1,d_model=32,num_heads=2,d_kv=16,d_ff=64,vocab_size=100",
                        "--format", "json", "--seq", "8").out)
    assert [name for name, _, _ in t5["inputs"]] == ["input_ids", "decoder_input_ids"]  # an encoder-decoder


@pytest.mark.parametrize("args, message", [
    (["hf:GPT2Confg"], "transformers has no config or model class 'GPT2Confg' (did you mean GPT2Config"),
    (["hf:GPT2Config", "--config", "n_layers=2"], "GPT2Config has no attribute 'n_layers' (did you mean n_layer?)"),
    (["hf:GPT2Config", "--config", GPT2_TINY, "--seq", "65"],
     "--seq 65 is longer than the 64 positions hf:GPT2Config holds; raise it with --config n_positions=65"),
    (["hf:./no_such_dir"], "hf:./no_such_dir: no config.json in"),
    (["timm:convnext_tny"], "timm has no model 'convnext_tny' (did you mean convnext_tiny"),
])
def test_hf_and_timm_errors(cli, args, message):
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    result = cli(*args)
    assert result.code == 2 and len(result.error_lines) == 1 and message in result.error_lines[0], result.err


@pytest.mark.parametrize("package, spec", [("transformers", "hf:GPT2Config"), ("timm", "timm:resnet18")])
def test_missing_optional_package(cli, monkeypatch, package, spec):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    result = cli(spec)
    assert result.code == 2
    assert result.error_lines == [f"fxcost: error: {spec} needs the {package} package: pip install {package}"]


# --- compare ------------------------------------------------------------------------------------

def test_compare_two_models(cli):
    result = cli("compare", "torchvision:resnet18", "torchvision:resnet34")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "ResNet -> ResNet"
    headers, rows = table(result.out)
    assert headers == ["module", "Δ MACs", "Δ params", "Δ moved", "Δ peak live"]
    # resnet34 has 3, 4, 6, 3 basic blocks where resnet18 has 2 in each stage: only the stages change
    assert [row[0] for row in rows] == ["layer1", "layer2", "layer3", "layer4", "(total)"]
    growth = R34["num_params"] - R18["num_params"]
    assert rows[-1][2] == f"+{fxcost.format_count(growth)} ({100 * growth / R18['num_params']:+.1f}%)"
    block = 2 * 64 * 64 * 9 + 2 * 2 * 64  # layer1's third block: two 3x3 convs and two BatchNorms
    assert rows[0][2] == f"+{fxcost.format_count(block)} (+50.0%)"
    result = cli("compare", "torchvision:resnet18", "torchvision:resnet34", "--all", "--depth", "2")
    _, rows = table(result.out)
    assert len(rows) == len(R18_CHILDREN) + (3 + 4 + 6 + 3) + 2  # + (root ops), + (total)
    added = [row[0] for row in rows if row[0].endswith("[after only]")]
    assert added == [f"layer{i}.{j} [after only]" for i, blocks in ((1, 3), (2, 4), (3, 6), (4, 3))
                     for j in range(2, blocks)]
    assert all(row[1:] == ["="] * 4 for row in rows if row[0].count(".") == 1 and "after" not in row[0])


def test_compare_saved_reports(cli, tmp_path):
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(cli("torchvision:resnet18", "--format", "json").out)
    after.write_text(cli("torchvision:resnet18", "--format", "json", "--exclude", "fc").out)
    result = cli("compare", str(before), str(after))
    _, rows = table(result.out)
    assert [row[0] for row in rows] == ["fc", "(total)"]  # fc left out: an identity in its place
    assert rows[0][1:3] == ["-512 K (-100.0%)", "-513 K (-100.0%)"]
    assert rows[-1][2] == f"-513 K ({-100 * 513_000 / R18['num_params']:.1f}%)"
    mixed = cli("compare", str(before), "torchvision:resnet18")
    assert table(mixed.out)[1] == [["(total)", "=", "=", "=", "="]]


@pytest.mark.parametrize("args, message", [
    (["compare", "missing.json", "torchvision:resnet18"], "cannot read report 'missing.json': No such file"),
    (["compare", "torchvision:resnet18", "torchvision:resnet18", "--batch", "1,2"], "compare analyses one input size"),
    (["compare", "torchvision:resnet18", "torchvision:resnet18", "--depth", "0"], "--depth must be at least 1"),
])
def test_compare_errors(cli, args, message):
    result = cli(*args)
    assert result.code == 2 and len(result.error_lines) == 1 and message in result.error_lines[0], result.err


def test_compare_rejects_a_file_that_is_not_a_report(cli, tmp_path):
    path = tmp_path / "notes.json"
    path.write_text('{"hello": 1}')
    result = cli("compare", str(path), str(path))
    assert result.code == 2 and len(result.error_lines) == 1
    assert f"{path} is not a report written by `fxcost MODEL --format json`" in result.err


# --- errors -------------------------------------------------------------------------------------

# --- training step and memory planning -------------------------------------------------------------

def test_train_step_totals(cli, tmp_path, monkeypatch):
    write_module(tmp_path, "tinynet_t", TINY)
    monkeypatch.chdir(tmp_path)
    sgd = json.loads(cli("tinynet_t:Net", "--input", "1x3x10x10", "--train", "sgd-momentum", "--format", "json").out)
    totals = sgd["totals"]
    # conv 3->8 k3 on 10x10: the weight gradient takes the forward's 13,824 MACs again; the input needs no gradient
    assert totals["backward_macs"] == 13_824
    assert totals["gradient_bytes"] == 224 * 4 and totals["optimizer_state_bytes"] == 224 * 4  # momentum
    memory = totals["train_memory"]
    # at the backward's peak: the weights, relu's saved output (8x8x8 float32), the input (3x10x10 float32)
    assert (memory["weights"], memory["activations"], memory["inputs"]) == (896, 8 * 8 * 8 * 4, 3 * 10 * 10 * 4)
    assert sgd["mode"] == "train"
    adam = json.loads(cli("tinynet_t:Net", "--input", "1x3x10x10", "--train", "adam", "--format", "json").out)
    # exp_avg and exp_avg_sq per parameter, and a float32 step counter per parameter tensor (weight, bias)
    assert adam["totals"]["optimizer_state_bytes"] == 2 * 224 * 4 + 2 * 4
    text = cli("tinynet_t:Net", "--input", "1x3x10x10", "--train", "sgd", "--raw").out
    assert "training step:    sgd optimizer" in text and "backward:         13,824 MACs" in text
    headers, _ = table(text)
    assert "bwd MACs" in headers
    sweep = cli("tinynet_t:Net", "--input", "1x3x10x10", "--train", "none", "--batch", "1,2", "--format", "csv").out
    rows = list(csv.DictReader(io.StringIO(sweep)))
    assert [int(r["backward_macs"]) for r in rows] == [13_824, 2 * 13_824]


@pytest.mark.parametrize("args, message", [
    (["--amp", "bf16"], "--amp and --checkpoint go with --train OPTIMIZER"),
    (["--checkpoint", "conv"], "--amp and --checkpoint go with --train OPTIMIZER"),
    (["--plan-patches", "1kB", "--top", "3"], "--plan-patches prints a plan for one input size"),
    (["--reorder", "--train", "sgd"], "leave out --train"),
    (["--reorder", "--plan-patches", "1kB"], "leave out --reorder"),
    (["--plan-patches", "lots"], "cannot read 'lots' as a quantity"),
])
def test_training_and_planning_errors(cli, tmp_path, monkeypatch, args, message):
    write_module(tmp_path, "tinynet_e", TINY)
    monkeypatch.chdir(tmp_path)
    result = cli("tinynet_e:Net", "--input", "1x3x10x10", *args)
    assert result.code == 2 and len(result.error_lines) == 1
    assert message in result.error_lines[0], result.err


STAGES = """
import torch.nn as nn

class Stages(nn.Module):
    # a 16-channel 32x32 map (64 KiB float32) in the first stage, 16x16 maps after it
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(self.down(self.stem(x))).mean((2, 3))

class Heads(nn.Module):
    # two heads written breadth-first: both 16x32x32 maps are alive together
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(3, 16, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return a.sum() + b.sum()
"""


def test_plan_patches(cli, tmp_path, monkeypatch):
    write_module(tmp_path, "stages_p", STAGES)
    monkeypatch.chdir(tmp_path)
    # unpatched peak at the stem's relu: input 3x32x32 + conv output and relu output 16x32x32, float32
    unpatched = (3 + 16 + 16) * 32 * 32 * 4
    result = cli("stages_p:Stages", "--input", "1x3x32x32", "--plan-patches", "100KiB")
    assert result.code == 0, result.err
    headers, rows = table(result.out)
    assert rows[0][:3] == ["(unpatched)", "-", f"{unpatched / 1024:.3g} KiB"] and rows[0][-2] == "no"
    chosen = [row for row in rows if row[-1] == "<- plan"]
    assert len(chosen) == 1 and chosen[0][-2] == "yes"
    assert float(chosen[0][2].split()[0]) <= 100
    split, grid = chosen[0][0], chosen[0][1]
    assert f"plan:             modules up to '{split}' in {grid} patches" in result.out
    # the input alone (3x32x32 float32) takes 12 KiB: nothing fits under it
    result = cli("stages_p:Stages", "--input", "1x3x32x32", "--plan-patches", "12KiB")
    assert result.code == 1 and "(unpatched)" in result.out and "<- plan" not in result.out
    assert result.err.startswith("fxcost: no split point and patch grid brings the peak activation memory under "
                                 "12 KiB")
    # read patch by patch from outside memory, the input no longer counts
    streamed = cli("stages_p:Stages", "--input", "1x3x32x32", "--plan-patches", "100KiB", "--stream-inputs")
    assert streamed.code == 0
    assert table(streamed.out)[1][0][2] == f"{(16 + 16) * 32 * 32 * 4 / 1024:.3g} KiB"


def test_reorder(cli, tmp_path, monkeypatch):
    write_module(tmp_path, "heads_r", STAGES)
    monkeypatch.chdir(tmp_path)
    result = cli("heads_r:Heads", "--input", "1x3x32x32", "--reorder")
    assert result.code == 0, result.err
    x, head, scalar = 3 * 32 * 32 * 4, 16 * 32 * 32 * 4, 4
    before = x + 2 * head + scalar  # both maps alive when the first sum is written
    after = x + head + 2 * scalar  # each map summed before the next is computed
    assert result.out.splitlines()[-1].startswith(
        f"peak activations: {before / 1024:.3g} KiB -> {after / 1024:.3g} KiB")


@pytest.mark.parametrize("args, message", [
    (["torchvision:resnet5000"], "torchvision has no model 'resnet5000'"),
    (["torchvision:resnet18", "--input", "1x3xAx224"], "bad input shape '1x3xax224'"),
    (["torchvision:resnet18", "--input", "0x3x224x224"], "every size must be at least 1"),
    (["resnet18"], "must look like torchvision:resnet50"),
    (["torchvision:"], "names no model: write e.g. torchvision:resnet50"),
    (["torchvision:resnet18", "--input", "1x4x64x64"], "expected input"),
    (["torchvision:resnet18", "--dtype", "float17"], "unknown --dtype 'float17'"),
    (["torchvision:resnet18", "--batch", "1,x"], "bad --batch '1,x'"),
    (["torchvision:resnet18", "--format", "json", "--depth", "1"], "--depth cannot be used with --format json, which exports every node"),
    (["torchvision:resnet18", "--batch", "1,2", "--top", "3"], "--top cannot be used with several --batch/--seq sizes"),
    (["torchvision:resnet18", "--depth", "0"], "--depth must be at least 1"),
    (["torchvision:resnet18", "--sort", "speed"], "unknown column(s) 'speed'"),
    (["torchvision:resnet18", "--config", "oops"], "bad --config item 'oops'"),
    (["torchvision:resnet18", "--config", "weights='DEFAULT'"], "fxcost builds models without weights"),
    (["torchvision:resnet18", "--config", "num_clases=10"], "unexpected keyword argument 'num_clases'"),
])
def test_errors_are_one_clear_line(cli, args, message):
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    assert "Traceback" not in result.err
    assert len(result.error_lines) == 1 and result.err.startswith("fxcost: error:")
    assert message in result.error_lines[0], result.err


def test_usage_errors_come_from_argparse(cli):
    result = cli("torchvision:resnet18", "--bogus")
    assert result.code == 2 and result.out == ""
    assert result.err.splitlines()[-1] == "fxcost: error: unrecognized arguments: --bogus"


def test_untraceable_model_error_names_module_and_line(cli, tmp_path, monkeypatch):
    write_module(tmp_path, "gatenet_f", """
        import torch.nn as nn

        class Gate(nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    return x
                return -x

        def untraceable():
            return nn.Sequential(nn.Linear(4, 4), Gate(), nn.Linear(4, 2))
    """)
    monkeypatch.chdir(tmp_path)
    result = cli("gatenet_f:untraceable", "--input", "2x4", "--strict")
    assert result.code == 2 and len(result.error_lines) == 1 and "Traceback" not in result.err
    assert "module '1'" in result.err and "depends on tensor values" in result.err
    assert "if x.sum() > 0" in result.err
    # without --strict the branch is assumed taken, and the summary says so
    result = cli("gatenet_f:untraceable", "--input", "2x4", "--raw")
    assert result.code == 0
    assert "gatenet_f.py:6" in result.out and "taken as True" in result.out
    taken = int(_summary_value(result.out, "FLOPs").split()[0].replace(",", ""))
    result = cli("gatenet_f:untraceable", "--input", "2x4", "--raw", "--assume", "gatenet_f.py:6=false")
    not_taken = int(_summary_value(result.out, "FLOPs").split()[0].replace(",", ""))
    assert not_taken - taken == 2 * 4  # -x: one FLOP per element of the 2x4 input
    result = cli("gatenet_f:untraceable", "--input", "2x4", "--assume", "gatenet_f.py=false")
    assert result.code == 2 and "FILE:LINE=VALUE" in result.err


def _summary_value(text: str, key: str) -> str:
    """The value of ``key:`` in the printed summary."""
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(key + ":"))


def test_help(cli):
    result = cli("--help")
    assert result.code == 0 and result.err == ""
    for text in ("fxcost MODEL [options]", "fxcost compare A B", "model and input", "what to print", "--batch",
                 "--seq", "--config", "--quiet", "examples:", "timm:NAME", "hf:CONFIG_CLASS", "jq .totals.macs"):
        assert text in result.out, text
    result = cli("compare", "--help")
    assert result.code == 0 and "--all" in result.out and "before.json" in result.out


# --- stderr: progress, notes, warnings --------------------------------------------------------

class Terminal:
    """A stand-in for an interactive stderr."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_only_on_a_terminal(capsys, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["torchvision:resnet18", "--batch", "1,2", "--raw"]) == 0
    assert "\r\x1b[Kfxcost: building torchvision:resnet18 ..." in terminal.text
    assert "\r\x1b[Kfxcost: [1/2] analysing ResNet on 1x3x224x224 ..." in terminal.text
    assert "\r\x1b[Kfxcost: [2/2] analysing ResNet on 2x3x224x224 ..." in terminal.text
    assert terminal.text.endswith("\r\x1b[K")  # the progress line is cleared before the result
    assert len(table(capsys.readouterr().out)[1]) == 2
    terminal.text = ""
    monkeypatch.setenv("COLUMNS", "30")  # a narrow terminal: the line is cut so it can be rewritten
    assert main(["torchvision:resnet18", "--top", "1"]) == 0
    assert "\r\x1b[Kfxcost: analysing ResNet on …" in terminal.text
    assert all(len(line) <= 29 for line in terminal.text.split("\r\x1b[K"))
    terminal.text = ""
    assert main(["torchvision:resnet18", "--batch", "1,2", "--quiet"]) == 0
    assert terminal.text == ""
    monkeypatch.undo()
    assert main(["torchvision:resnet18", "--batch", "1,2"]) == 0  # captured: not a terminal
    assert capsys.readouterr().err == ""


def test_warnings_are_printed_once_and_silenced_by_quiet(cli, tmp_path, monkeypatch):
    write_module(tmp_path, "warnnet_g", """
        import torch, torch.nn as nn

        class Odd(nn.Module):
            def forward(self, x):
                return torch.special.zeta(x, x)  # no cost rule

        def build():
            return nn.Sequential(Odd(), nn.Linear(4, 4))
    """)
    monkeypatch.chdir(tmp_path)
    result = cli("warnnet_g:build", "--input", "1x4", "--batch", "1,2")
    assert result.code == 0
    warnings = [line for line in result.err.splitlines() if line.startswith("fxcost: warning:")]
    assert len(warnings) == 1 and "zeta" in warnings[0]  # the same warning at both sizes, printed once
    assert cli("warnnet_g:build", "--input", "1x4", "-q").err == ""


def test_the_library_never_prints(capsys):
    with torch.device("meta"):
        model = torchvision.models.resnet18()
    fxcost.analyze(model, (1, 3, 224, 224))
    assert capsys.readouterr() == ("", "")


# --- start-up and real runs of the console script ---------------------------------------------------

ROOT = pathlib.Path(fxcost.__file__).parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the console script runs this copy of fxcost


def test_public_names_resolve():
    for name in fxcost.__all__:
        assert getattr(fxcost, name) is not None, name
    assert set(fxcost.__all__) <= set(dir(fxcost))
    assert fxcost.RULES.lookup(nn.Conv2d) is not None  # the lazily imported registry holds the default rules


@pytest.mark.slow
def test_help_and_import_do_not_import_torch():
    code = ("import sys, fxcost, fxcost.cli, fxcost.pytest_plugin; from fxcost import FxcostError, format_bytes; "
            "print(sorted(m for m in ('torch', 'torchvision', 'tabulate') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert result.stdout.strip() == "[]", result.stderr
    for args in (["--help"], ["compare", "--help"], ["resnet18"], ["torchvision:resnet18", "--input", "1xa"],
                 ["torchvision:resnet18", "--format", "json", "--top", "3"]):  # help, and errors in the arguments
        code = f"import sys; from fxcost.cli import main; main({args!r}); print('torch' in sys.modules)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
        assert result.stdout.splitlines()[-1] == "False", args


def console_script():
    path = shutil.which("fxcost")
    if path is None:
        pytest.skip("the fxcost console script is not installed")
    return path


@pytest.mark.slow
def test_console_script_json_totals():
    result = subprocess.run([console_script(), "torchvision:resnet18", "--format", "json"], capture_output=True,
                            text=True, env=ENV)
    assert result.returncode == 0 and result.stderr == ""
    totals = json.loads(result.stdout)["totals"]
    assert round(totals["macs"] / 1e9, 3) == R18["_ops"] and totals["params"] == R18["num_params"]


@pytest.mark.slow
def test_console_script_finds_a_module_in_the_current_directory(tmp_path):
    write_module(tmp_path, "scriptnet", TINY)
    result = subprocess.run([console_script(), "scriptnet:Net", "--input", "1x3x10x10", "--raw"], capture_output=True,
                            text=True, cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    assert summary_value(result.stdout, "MACs") == 8 * 8 * 8 * 27
    result = subprocess.run([sys.executable, "-m", "fxcost", "scriptnet.py:Net", "--input", "1x3x10x10", "--raw"],
                            capture_output=True, text=True, cwd=tmp_path, env=ENV)
    assert result.returncode == 0 and summary_value(result.stdout, "MACs") == 8 * 8 * 8 * 27


@pytest.mark.slow
def test_console_script_error_exit_status():
    result = subprocess.run([console_script(), "torchvision:resnet5000"], capture_output=True, text=True, env=ENV)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["fxcost: error: torchvision has no model 'resnet5000' (did you mean "
                                          "resnet50?); see torchvision.models.list_models()"]
