"""MCUNetV2 Figure 1 (shared seed 000): per-block peak memory of MobileNetV2, int8, batch 1.

The reference is the seed's "analytic profiling" script, re-run here on the same model: it
records every layer's input/output sizes with forward hooks on a real execution and applies
the paper's per-block formulas (int8: 1 byte per element)."""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torchvision

import fxcost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seed_reference_kb(model: nn.Module) -> list[float]:
    def record(module, inputs, output):
        module.input_shape, module.output_shape = list(inputs[0].shape), list(output.shape)
        module.input_size = math.prod(module.input_shape[1:])
        module.output_size = math.prod(module.output_shape[1:])

    def conv(m):  # in-place depthwise needs one output channel of scratch
        if m.in_channels == m.out_channels == m.groups:
            return m.input_size + math.prod(m.output_shape[2:])
        return m.input_size + m.output_size

    def block(b):
        if len(b.conv) == 3:
            return max(conv(b.conv[0][0]), conv(b.conv[1]))
        if b.use_res_connect:
            return max(conv(b.conv[0][0]), conv(b.conv[1][0]) + b.input_size, conv(b.conv[2]))
        return max(conv(b.conv[0][0]), conv(b.conv[1][0]), conv(b.conv[2]))

    handles = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, 224, 224))
    finally:
        for handle in handles:
            handle.remove()
    elements = [conv(model.features[0][0])] + [block(b) for b in model.features[1:-1]]
    return [n / 1024 for n in elements]


def test_per_block_peaks_match_the_seed_reference_script():
    model = torchvision.models.mobilenet_v2()
    report = fxcost.analyze(model, (1, 3, 224, 224), memory=fxcost.MemoryOptions.deployment(torch.int8))
    blocks = ["features.0"] + [f"features.{i}" for i in range(1, 18)]
    ours = [peak / 1024 for peak in report.module_peaks(blocks).values()]
    reference = seed_reference_kb(model)
    assert len(ours) == len(reference) == 18
    assert ours == reference
    # the figure's shape: block 2 (the second block at 112x112 with 6x expansion) dominates
    assert max(ours) == ours[2] and round(ours[2], 1) == 1372.0


@pytest.mark.slow
def test_example_script_prints_the_figure_and_saves_a_chart(tmp_path):
    out = tmp_path / "figure.png"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "mcunet_peak_memory.py"), "--out", str(out)],
                            capture_output=True, text=True, check=True)
    assert "memory usage in kB: [539.0, 588.0, 1372.0" in result.stdout
    assert out.exists() and out.stat().st_size > 1000
