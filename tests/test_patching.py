"""Patch-based inference (MCUNetV2): the rewrite computes the same function, its peak equals a
measured run, its MAC overhead matches a hand count, and MobileNetV2 reaches the paper's figures."""

import os
import sys

import pytest
import torch
import torch.nn as nn
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.mobilenetv2 import InvertedResidual

import fxcost
from fxcost.passes import PatchError, evaluate_patches, patch_inference, plan_patches

from conftest import analyze_quiet
from memory_probe import measure_peak

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from memory_access import CSPDarknetNeck  # noqa: E402 - a YOLO-style backbone written for the examples

INT8 = fxcost.MemoryOptions.deployment(torch.int8)
INT8_STREAMED = fxcost.MemoryOptions.deployment(torch.int8, stream_inputs=True)


def assert_equivalent_and_measured(model, x, until, patches):
    """Same outputs as the model (up to float rounding: convolutions of different sizes sum in
    different orders), and the peak fxcost predicts for the rewritten graph equals a real run of
    it, measured."""
    model = model.eval()
    patched = patch_inference(model, x, until=until, patches=patches)
    with torch.no_grad():
        expected = model(x)
        scale = max(float(t.abs().max()) for t in (expected if isinstance(expected, tuple) else (expected,)))
        torch.testing.assert_close(patched(x), expected, rtol=1e-5, atol=1e-5 * scale)
    report = analyze_quiet(patched, x)
    assert report.peak_activation_bytes == measure_peak(patched, x)["node_peak"]
    return patched, report


# --- equivalence and measured peak on every supported kind of stage ------------------------

def test_mobilenet_v2_first_five_blocks():
    torch.manual_seed(0)
    blocks = torchvision.models.mobilenet_v2().features[:7]  # blocks 0-4 patched, 5-6 after them
    patched, report = assert_equivalent_and_measured(blocks, torch.randn(1, 3, 64, 64), "4", (4, 4))
    layout = patched.meta["fxcost_patches"]
    assert layout.grid == (4, 4) and len(layout.patches) == 16
    # An interior patch, (1, 1), makes rows 2..3 of the 8x8 output; going back through the
    # 3x3 windows (padding 1): features.4 dw s2 reads rows 3..7 of its 16x16 input, features.3 dw
    # 2..8, features.2 dw s2 3..17 of 32x32, features.1 dw 2..18, features.0 s2 3..37 of the image.
    assert layout.patches[5].index == (1, 1)
    assert layout.patches[5].input_region == (3, 38, 3, 38)
    assert layout.patches[0].input_region == (0, 22, 0, 22)  # the same walk from rows 0..1, clipped at 0


def test_resnet_stem_and_first_stage():
    torch.manual_seed(0)
    assert_equivalent_and_measured(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64), "layer1", (4, 4))


def test_yolo_style_backbone_with_csp_concat_and_residuals():
    torch.manual_seed(0)
    model = CSPDarknetNeck(width=8)
    assert_equivalent_and_measured(model, torch.randn(1, 3, 128, 128), "stage2", (2, 2))


def test_sppf_max_pools_and_even_stem_kernel():
    torch.manual_seed(0)
    model = CSPDarknetNeck(width=4)
    # stage4 ends in SPPF (three chained 5x5 max-pools, padding 2); the stem is a 6x6 stride-2 conv
    x = torch.randn(1, 3, 64, 64)
    sub = nn.Sequential(model.stem, model.stage1, model.stage2, model.stage3, model.stage4)
    assert_equivalent_and_measured(sub, x, "4", (2, 2))


class MCUNetStyle(nn.Module):
    """MobileNetV2-style blocks with the 5x5/7x7 kernels and 3-6x expansions of MCUNet."""

    def __init__(self):
        super().__init__()

        def block(cin, cout, k, stride, expand):
            hidden = cin * expand
            return nn.Sequential(
                nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

        self.first = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleList([block(16, 8, 3, 1, 1), block(8, 16, 7, 2, 3), block(16, 16, 5, 1, 4),
                                     block(16, 24, 5, 2, 6)])
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        x = self.first(x)
        for index, block in enumerate(self.blocks):
            x = x + block(x) if index == 2 else block(x)
        return self.head(x.mean((2, 3)))


def test_mcunet_style_large_kernels():
    torch.manual_seed(0)
    assert_equivalent_and_measured(MCUNetStyle(), torch.randn(2, 3, 48, 40), "blocks.3", (3, 2))


class Geometry(nn.Module):
    """Every window geometry: strides, dilations, groups, 'same' padding with an even kernel,
    rectangular kernels, ceil-mode pools, averages without padded elements, channel split/concat."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 5, stride=2, padding=3, dilation=2)
        self.b = nn.Conv2d(8, 8, 3, padding="same", groups=4)
        self.c = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.d = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.e = nn.Conv2d(8, 16, (3, 1), stride=(1, 2), padding=(1, 0))
        self.f = nn.AvgPool2d(2, divisor_override=3)
        self.g = nn.Conv2d(16, 16, 4, padding="same")
        self.h = nn.AvgPool2d(3, 1, 1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        y = self.d(self.c(y) + 1)
        y = torch.cat([y, y * 2], 1)
        z, w = y.chunk(2, dim=1)
        y = self.h(self.g(self.f(self.e(z - w[:, :8]))))
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("grid", [(2, 2), (3, 2), (4, 3)])
def test_every_window_geometry(grid):
    torch.manual_seed(0)
    assert_equivalent_and_measured(Geometry(), torch.randn(2, 3, 121, 97), "h", grid)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(kernel=st.integers(1, 5), stride=st.integers(1, 3), dilation=st.integers(1, 2), padding=st.integers(0, 3),
       groups=st.sampled_from([1, 2, 4]), pool=st.sampled_from(["max", "avg", "avg-exclude", "none"]),
       rows=st.integers(1, 4), cols=st.integers(1, 4), size=st.integers(17, 30))
def test_random_conv_pool_stacks_are_equivalent(kernel, stride, dilation, padding, groups, pool, rows, cols, size):
    layers = [nn.Conv2d(4, 8, kernel, stride, padding, dilation, groups), nn.BatchNorm2d(8), nn.Hardswish()]
    if pool == "max":
        layers.append(nn.MaxPool2d(3, 2, 1, ceil_mode=True))
    elif pool.startswith("avg"):
        layers.append(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=pool == "avg"))
    layers.append(nn.Conv2d(8, 8, 3, 1, 1, groups=8))
    model = nn.Sequential(*layers)
    x = torch.randn(1, 4, size, size + 3)
    with torch.no_grad():
        out = model.eval()(x)
    if out.shape[2] < rows or out.shape[3] < cols:
        return
    torch.manual_seed(0)
    assert_equivalent_and_measured(model, x, str(len(layers) - 1), (rows, cols))


# --- MAC overhead, counted by hand ------------------------------------------------------------

def test_overhead_of_one_inverted_residual_block_by_hand():
    """One MobileNetV2 block (1x1 expand, 3x3 depthwise, 1x1 project, residual) on an 8x8 map,
    2x2 patches of 4x4: the depthwise conv needs one more row and column of the expanded map on
    the inner side of each patch, so every patch expands 5x5 = 25 pixels instead of 16."""
    cin, hidden = 8, 48
    model = nn.Sequential(InvertedResidual(cin, cin, 1, 6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 3))
    plan = evaluate_patches(model, (1, cin, 8, 8), until="0", patches=(2, 2))
    expand, depthwise, project = cin * hidden, hidden * 9, hidden * cin  # MACs per output pixel
    assert plan.stage_macs == 64 * (expand + depthwise + project)
    assert plan.patch_macs == (25 * expand + 16 * depthwise + 16 * project,) * 4
    assert plan.patch_overhead_macs == (9 * expand,) * 4
    assert plan.overhead_macs == 4 * 9 * expand == 13_824
    assert plan.original_macs == 64 * (expand + depthwise + project) + cin * 3


def test_overhead_at_the_border_of_uneven_patches():
    """Two 3x3 convs (stride 1, padding 1) on a 7x5 map in 2x2 patches: rows split 4+3, columns 3+2.
    The first conv computes each patch grown by one row and one column on its inner sides."""
    c = 4
    model = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.Conv2d(c, c, 3, 1, 1, bias=False))
    plan = evaluate_patches(model, (1, c, 7, 5), until="1", patches=(2, 2))
    per_pixel = c * c * 9
    areas = [(4, 3), (4, 2), (3, 3), (3, 2)]
    assert plan.patch_macs == tuple(((h + 1) * (w + 1) + h * w) * per_pixel for h, w in areas)
    assert plan.overhead_macs == sum((h + 1) * (w + 1) - h * w for h, w in areas) * per_pixel
    assert sum(plan.patch_overhead_macs) == pytest.approx(plan.overhead_macs)


# --- MobileNetV2 at 224x224, int8: the paper's figures (fake tensors only) -------------------

@pytest.fixture(scope="module")
def mobilenet_v2_plan():
    with torch.device("meta"):
        model = torchvision.models.mobilenet_v2()
    return model, evaluate_patches(model, (1, 3, 224, 224), "features.4", (4, 4), memory=INT8)


def test_mobilenet_v2_peak_falls_4x_with_the_image_resident(mobilenet_v2_plan):
    _, plan = mobilenet_v2_plan
    assert plan.original_peak_bytes == 1_404_928  # 1372 kB: MCUNetV2 Figure 1, block 2
    # By hand: an interior 7x7 patch of the 28x28 output of features.4 needs 15x15 -> 17x17 ->
    # 35x35 (features.2's dw, stride 2). Its peak is features.2's expansion: 35x35x16 in +
    # 35x35x96 out, with the 28x28x32 stage output and the resident 224x224x3 image (int8).
    by_hand = 224 * 224 * 3 + 28 * 28 * 32 + 35 * 35 * (16 + 96)
    assert plan.peak_bytes == by_hand == 312_816
    assert plan.original_peak_bytes / plan.peak_bytes >= 4


def test_mobilenet_v2_reaches_the_papers_172_kb_with_the_image_read_patch_by_patch(mobilenet_v2_plan):
    model, _ = mobilenet_v2_plan
    plan = evaluate_patches(model, (1, 3, 224, 224), "features.4", (4, 4), memory=INT8_STREAMED)
    # the patched stage: 28x28x32 output + features.2's expansion of one 35x35 patch
    assert plan.stage_peak_bytes == 28 * 28 * 32 + 35 * 35 * (16 + 96) == 162_288
    # the whole model: now block 5 sets the peak, 28x28x32 in + 28x28x192 expanded + one channel
    # of in-place depthwise scratch (the paper's per-layer profile of block 5: 172.3 kB)
    assert plan.peak_bytes == 28 * 28 * (32 + 192 + 1) == 176_400
    assert round(plan.peak_bytes / 1024) == 172 and round(plan.original_peak_bytes / 1024) == 1372
    assert plan.report.peak_node.startswith("features_5")
    assert plan.overhead_macs > 0 and sum(plan.patch_overhead_macs) == pytest.approx(plan.overhead_macs)


def test_patched_blocks_per_module(mobilenet_v2_plan):
    model, plan = mobilenet_v2_plan
    unpatched = fxcost.analyze(model, (1, 3, 224, 224), memory=INT8)
    blocks = [f"features.{i}" for i in range(18)]
    before, after = unpatched.module_peaks(blocks), plan.report.module_peaks(blocks)
    assert all(after[b] < before[b] for b in blocks[:5])
    assert all(after[b] == before[b] for b in blocks[5:])  # the rest runs layer by layer as before


# --- the search ---------------------------------------------------------------------------------

class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(32, 16, 3, 2, 1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.b3(self.b2(self.b1(self.stem(x)))).mean((2, 3)))


def test_plan_patches_returns_the_cheapest_plan_that_fits():
    model, x = Small(), (1, 3, 64, 64)
    unpatched = fxcost.analyze(model, x, memory=INT8_STREAMED)
    limit = unpatched.peak_activation_bytes // 2
    plan = plan_patches(model, x, memory_limit=limit, memory=INT8_STREAMED, grids=[2, 3, 4])
    assert plan.peak_bytes <= limit and plan.memory_limit == limit
    # every split point and grid, costed exhaustively: none that fits is cheaper
    fitting = []
    for until in ["stem", "b1", "b2", "b3"]:
        for n in (2, 3, 4):
            other = evaluate_patches(model, x, until, n, memory=INT8_STREAMED)
            if other.peak_bytes <= limit:
                fitting.append(other.overhead_macs)
    assert fitting and plan.overhead_macs == min(fitting)
    table = plan.table()
    assert "(unpatched)" in table and "<- plan" in table and f"{plan.grid[0]}x{plan.grid[1]}" in table
    assert str(plan).startswith(table) and f"modules up to '{plan.until}'" in str(plan)


def test_plan_patches_says_when_nothing_fits():
    with pytest.raises(PatchError, match=r"smallest peak found is .* KiB.*\n.*split after"):
        plan_patches(Small(), (1, 3, 64, 64), memory_limit="1kB", memory=INT8_STREAMED)


def test_plan_patches_without_patching_when_the_model_fits():
    plan = plan_patches(Small(), (1, 3, 64, 64), memory_limit="1GiB")
    assert plan.until == "" and plan.overhead_macs == 0 and "no patching needed" in str(plan)


@pytest.mark.slow
def test_plan_mobilenet_v2_for_a_256kb_mcu(mobilenet_v2_plan):
    model, _ = mobilenet_v2_plan
    plan = plan_patches(model, (1, 3, 224, 224), memory_limit="256kB", memory=INT8_STREAMED)
    assert plan.peak_bytes <= 256_000
    assert plan.until == "features.4"  # the paper's split point
    # the paper's 4x4 fits too (176,400 B); the planner finds a grid with less overhead
    assert plan.overhead_macs <= evaluate_patches(model, (1, 3, 224, 224), "features.4", 4,
                                                  memory=INT8_STREAMED).overhead_macs


# --- errors and guarantees -----------------------------------------------------------------------

def test_a_squeeze_excitation_block_cannot_be_patched():
    with pytest.raises(PatchError, match=r"'features.1.block.1.avgpool' \(AdaptiveAvgPool2d\)"):
        patch_inference(torchvision.models.mobilenet_v3_small(), (1, 3, 64, 64), until="features.2")


def test_a_value_read_after_the_stage_is_named():
    with pytest.raises(PatchError, match=r"node maxpool .* read after it by add \(layer1.0\)"):
        patch_inference(torchvision.models.resnet18(), (1, 3, 64, 64), until="layer1.0.conv1")


@pytest.mark.parametrize("until, message", [
    ("fc", "not a 4-D feature map"),
    ("nope", "no node of the traced model belongs to module 'nope'"),
])
def test_bad_split_points(until, message):
    with pytest.raises(fxcost.FxcostError, match=message):
        patch_inference(torchvision.models.resnet18(), (1, 3, 64, 64), until=until)


def test_layers_that_need_the_whole_map_are_named():
    reflect = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU())
    with pytest.raises(PatchError, match=r"module '0' \(Conv2d\) pads with mode 'reflect'"):
        patch_inference(reflect, (1, 3, 16, 16), until="1")
    upsample = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2))
    with pytest.raises(PatchError, match=r"module '1' \(Upsample\) is not elementwise"):
        patch_inference(upsample, (1, 3, 16, 16), until="1")


@pytest.mark.parametrize("patches", [0, (2,), (2, -1), "4x4", (100, 100)])
def test_bad_grids(patches):
    with pytest.raises(fxcost.InvalidInputError):
        patch_inference(Small(), (1, 3, 64, 64), until="b1", patches=patches)


def test_the_model_is_not_modified():
    model = MCUNetStyle().train()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    patched = patch_inference(model, (1, 3, 32, 32), until="blocks.1", patches=2)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    ours = {id(p) for p in patched.parameters()}
    assert ours <= {id(p) for p in model.parameters()}  # shared, not copied


def test_stream_inputs_counts_only_the_patches_of_the_input_by_hand():
    class Crop(nn.Module):
        def forward(self, x):
            return x[:, :, :4, :4] * 2, x[:, :, 4:, 4:] * 3

    x = (1, 2, 8, 8)  # float32: whole input 512 B, each 4x4 corner 128 B
    eager = fxcost.analyze(Crop(), x)
    streamed = fxcost.analyze(Crop(), x, memory=fxcost.MemoryOptions(stream_inputs=True))
    # eager: input 512 + both products (128 each), outputs live to the end
    assert eager.peak_activation_bytes == 512 + 128 + 128
    # streamed: the input is never resident; each corner is read in (128) while its product is
    # made (128); the first product stays (an output) while the second corner is read
    assert streamed.peak_activation_bytes == 128 + 128 + 128
    whole = fxcost.analyze(nn.Conv2d(2, 2, 1), x, memory=fxcost.MemoryOptions(stream_inputs=True))
    assert whole.peak_activation_bytes == 512 + 512  # read whole: held for its reader


@pytest.mark.slow
def test_example_script_draws_figure_1_with_both_series(tmp_path):
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "figure.png"
    result = subprocess.run([sys.executable, os.path.join(root, "examples", "mcunet_patch_inference.py"),
                             "--out", str(out)], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": root})  # this checkout's fxcost
    assert "per-layer memory usage in kB: [539.0, 588.0, 1372.0" in result.stdout  # seed 000's reference script
    # blocks 0-4 per patch, by hand (int8, 28x28x32 stage output held): block 2 = 35x35x(16+96) + 25,088 B
    assert f"per-patch memory usage in kB: [83.8, 81.9, {(35 * 35 * 112 + 28 * 28 * 32) / 1024:.1f}," in result.stdout
    assert "1372 kB -> 172 kB (8.0x lower) with the image read patch by patch" in result.stdout  # MCUNetV2 Fig. 1
    assert "MAC overhead: +" in result.stdout and out.exists() and out.stat().st_size > 1000
