"""The seed analyses in examples/ run, and their answers match independently known figures:
the seeds' own printed numbers (torchinfo, ptflops, ONNX, MXNet) or hand calculations."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import fxcost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))


def run_example(name, *args, cwd=None):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                            capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- seed 002: the lab checklist --------------------------------------------------------

def test_lab_checklist_googlenet_matches_the_seed():
    import lab_checklist

    result = lab_checklist.checklist("googlenet")
    report = result.report
    # torchinfo / sum(p.numel()) in the seed
    assert report.params == 6_624_904 and report.trainable_params == 6_624_904
    assert report.non_trainable_params == 0
    assert report.param_bytes == 26_499_616  # "Total memory for parameters: 26499616 bytes"
    assert round(report.macs / 1e9, 2) == 1.50  # torchinfo "Total mult-adds (G): 1.50"
    # ptflops, per layer type
    ops = {g.key: g for g in report.by_op()}
    assert ops["Conv2d"].macs == 1_497_352_192
    assert ops["Linear"].macs + 1000 == 1_025_000  # ptflops adds the 1000 bias adds to MACs
    assert ops["BatchNorm2d"].flops == 6_452_320  # ptflops counts BN's 2 per element as "MACs"
    assert ops["AdaptiveAvgPool2d"].flops == 50_176
    maxpool_inputs = sum(n.input_bytes // 4 for n in report.nodes if n.op_type == "MaxPool2d")
    assert maxpool_inputs == 2_875_712  # ptflops counts 1 per *input* element of a max-pool
    # 57 Conv2d layers (Conv2d-No.0 ... No.56 in the seed), shapes known without running
    assert len(result.conv_output_shapes) == 57
    assert result.conv_output_shapes[0] == ("conv1.conv", (1, 64, 112, 112))
    assert result.conv_output_shapes[-1] == ("inception5b.branch4.1.conv", (1, 128, 7, 7))


def test_lab_checklist_mobilenet_v2_bandwidth_matches_the_seed_onnx_figures():
    import lab_checklist

    result = lab_checklist.checklist("mobilenet_v2")
    # "Peek bandwidth (2-2-2): 9633792 bytes": 96x112x112 float32 in + out
    assert result.peak_bandwidth == 9_633_792 == 2 * 96 * 112 * 112 * 4
    # "Total activation bandwidth (2-2-3): 52010328 bytes" over the ONNX graph, where the exporter
    # folded BatchNorm into the convs and dropped Dropout, and shape ops (Shape 32 B, Unsqueeze 8 B,
    # Concat 16 B) add 56 bytes that fxcost's graph does not have.
    folded = sum(n.bytes_written for n in result.report.nodes if n.op_type not in ("BatchNorm2d", "Dropout"))
    assert folded + 32 + 8 + 16 == 52_010_328


@pytest.mark.slow
def test_lab_checklist_script_runs():
    out = run_example("lab_checklist.py", "googlenet")
    assert "total params:          6,624,904" in out and "peak bandwidth" in out


# --- seed 001: the model zoo table ----------------------------------------------------------

@pytest.mark.slow
def test_model_zoo_table_matches_the_seed_where_architectures_agree(tmp_path):
    out_file = tmp_path / "zoo.md"
    out = run_example("model_zoo_table.py", "--models", "alexnet", "vgg16", "squeezenet1_0", "resnet50",
                      "--out", str(out_file))
    # rows of the seed's MXNet table for the same architectures: Params(M), Muls(G), *Params(M), *Muls(G)
    assert "| alexnet | 224x224 | 61.10 | 0.71 | 2.47 | 0.66 | classifier |" in out
    assert "| vgg16 | 224x224 | 138.36 | 15.47 | 14.71 | 15.35 | classifier |" in out
    assert "| squeezenet1_0 | 224x224 | 1.25 | 0.82 | 0.74 | 0.73 | classifier |" in out
    assert out_file.read_text().startswith("| Model | Input | Params(M)")


def test_model_zoo_head_figures_by_hand():
    import model_zoo_table

    row = model_zoo_table.row("resnet50")
    assert row["params"] - row["backbone_params"] == 2048 * 1000 + 1000
    assert row["macs"] - row["backbone_macs"] == 2048 * 1000
    row = model_zoo_table.row("vgg16")
    assert row["macs"] - row["backbone_macs"] == 25088 * 4096 + 4096 * 4096 + 4096 * 1000


# --- seed 000: MCUNet (see test_mcunet.py for the figure itself) -----------------------------

# --- seed 003: memory access ---------------------------------------------------------------

def test_memory_access_per_layer_by_hand():
    import memory_access

    report = memory_access.analyse(640)
    stem = report.node("stem_conv")
    # Conv 3->16, k6 s2 p2 on 640x640: 320x320 outputs
    assert stem.output_shapes == ((1, 16, 320, 320),)
    assert stem.weight_bytes == 16 * 3 * 6 * 6 * 4
    assert stem.input_bytes == 3 * 640 * 640 * 4
    assert stem.bytes_written == 16 * 320 * 320 * 4
    assert stem.macs == 16 * 320 * 320 * 3 * 36
    assert stem.intensity == pytest.approx(2 * stem.macs / (stem.bytes_read + stem.bytes_written))
    up = [n for n in report.nodes if n.op_type == "Upsample"][0]
    assert up.flops == 0 and up.bytes_written == 4 * up.input_bytes  # nearest x2: 4x the pixels
    roof = report.roofline("laptop-cpu")
    assert {n.bound for n in roof.nodes} == {"compute", "memory"}
    assert [n for n in roof.nodes if n.name == "stem_bn"][0].bound == "memory"


@pytest.mark.slow
def test_memory_access_script_runs():
    out = run_example("memory_access.py", "--size", "320")
    assert "lower bound" in out and "memory access as the blog counts it" in out


# --- seed 004: MobileNet blocks ------------------------------------------------------------

def test_mobilenet_blocks_reproduce_torchinfo():
    import mobilenet_blocks

    expected = {
        "plain conv block": [(73_728, 2_774_532_096)],
        "MobileNetV1 block": [(576, 21_676_032), (8_192, 308_281_344)],
        "MobileNetV2 block": [(8_192, 1_233_125_376), (1_152, 43_352_064), (16_384, 616_562_688)],
    }
    totals = {"plain conv block": 73_984, "MobileNetV1 block": 9_152, "MobileNetV2 block": 26_496}
    for name, report in mobilenet_blocks.reports().items():
        assert [(n.params, n.macs) for n in report.nodes if n.op_type == "Conv2d"] == expected[name]
        assert report.params == totals[name]


@pytest.mark.slow
def test_mobilenet_blocks_script_runs():
    assert "2,774,532,096" in run_example("mobilenet_blocks.py")


# --- seed 002: GEMM tiling -----------------------------------------------------------------

def test_tile_matmuls_is_equivalent_and_respects_the_limits():
    from fxcost._trace import trace
    from fxcost.passes import tile_matmuls

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(200, 150)
            self.w = nn.Parameter(torch.randn(150, 70))

        def forward(self, x):
            return torch.matmul(self.fc(x).reshape(-1, 150), self.w)

    model = Model().eval()
    shape = (3, 50, 200)  # M = 150 rows
    tiled = tile_matmuls(trace(model), 64, 64, 64, shape)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(tiled(x), model(x), rtol=1e-4, atol=1e-5)
    report = fxcost.analyze(tiled, shape)
    tiles = [n for n in report.nodes if n.op_type == "matmul"]
    # Linear: M=150 -> 3 row tiles, K=200 -> 4, N=150 -> 3; matmul: M=150 -> 3, K=150 -> 3, N=70 -> 2
    assert len(tiles) == 3 * 4 * 3 + 3 * 3 * 2
    assert report.macs == fxcost.analyze(model, shape).macs == 150 * 200 * 150 + 150 * 150 * 70
    for node in tiles:
        m, n = node.output_shapes[0]
        assert m <= 64 and n <= 64 and node.macs // (m * n) <= 64  # K = MACs / (m*n)
    assert not [n for n in report.nodes if n.op_type == "Linear"]


def test_gemm_tiling_alexnet_bytes_reread_by_hand():
    import gemm_tiling

    model, shape, tiled = gemm_tiling.tiled(256, 256, 256)
    report = fxcost.analyze(tiled, shape)
    layers = [(9216, 4096), (4096, 4096), (4096, 1000)]  # (K, N) of the three Linear layers, M = 1
    # every tile reads a 1 x k slice of the input and an n x k weight tile: the input is re-read
    # once per N tile, the weights once in all
    expected = sum((-(-n // 256)) * k * 4 + n * k * 4 for k, n in layers)
    assert sum(n.bytes_read for n in report.nodes if n.op_type == "matmul") == expected


@pytest.mark.slow
def test_gemm_tiling_script_runs():
    out = run_example("gemm_tiling.py")
    assert "assert_close" in out and "58,621,952 -> 58,621,952" in out
