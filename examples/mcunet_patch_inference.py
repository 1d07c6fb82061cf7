"""MCUNetV2's Figure 1, both bar series: per-block peak memory of MobileNetV2 (int8, batch 1,
224x224) run layer by layer, and with its first five blocks (features.0-features.4) run in 4x4
patches, as fxcost.passes.patch_inference rewrites it. The paper's bars count the image as read
patch by patch (as TinyEngine copies each patch's receptive field from the camera frame), which
is MemoryOptions.deployment(torch.int8, stream_inputs=True); with the image held in memory the
peak is also printed. The MAC overhead of the overlapping receptive fields is counted.

    python examples/mcunet_patch_inference.py [--out mcunet_patch_inference.png]
"""

import argparse

import torch
import torchvision

import fxcost
from fxcost.passes import evaluate_patches

BLOCKS = [f"features.{i}" for i in range(18)]  # block 0 is the first conv, 1-17 the inverted residuals


def figure_1():
    """``(per-layer kB, per-patch kB, plan with the image streamed, plan with the image resident)``."""
    with torch.device("meta"):
        model = torchvision.models.mobilenet_v2()
    shape = (1, 3, 224, 224)
    streamed = evaluate_patches(model, shape, "features.4", (4, 4),
                                memory=fxcost.MemoryOptions.deployment(torch.int8, stream_inputs=True))
    resident = evaluate_patches(model, shape, "features.4", (4, 4), memory=fxcost.MemoryOptions.deployment(torch.int8))
    per_layer = fxcost.analyze(model, shape, memory=fxcost.MemoryOptions.deployment(torch.int8)).module_peaks(BLOCKS)
    per_patch = streamed.report.module_peaks(BLOCKS)
    kb = lambda peaks: {path: value / 1024 for path, value in peaks.items()}  # noqa: E731 - the paper's kB
    return kb(per_layer), kb(per_patch), streamed, resident


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mcunet_patch_inference.png", help="bar chart PNG to write")
    args = parser.parse_args()
    per_layer, per_patch, streamed, resident = figure_1()
    print("per-layer memory usage in kB:", [round(v, 1) for v in per_layer.values()])
    print("per-patch memory usage in kB:", [round(v, 1) for v in per_patch.values()])
    print(f"peak: {streamed.original_peak_bytes / 1024:.0f} kB -> {streamed.peak_bytes / 1024:.0f} kB "
          f"({streamed.original_peak_bytes / streamed.peak_bytes:.1f}x lower) with the image read patch by patch; "
          f"{resident.peak_bytes / 1024:.0f} kB ({resident.original_peak_bytes / resident.peak_bytes:.1f}x lower) "
          "with the whole image in memory")
    print(f"MAC overhead: +{streamed.overhead_macs:,} MACs (+{100 * streamed.overhead:.1f}% of "
          f"{streamed.original_macs:,}; +{100 * streamed.overhead_macs / streamed.stage_macs:.1f}% of the patched "
          "blocks' own MACs)")
    print("overhead per patch (MACs):")
    for row in range(4):
        print("  " + "  ".join(f"{round(v):>9,}" for v in streamed.patch_overhead_macs[4 * row:4 * row + 4]))
    try:
        from fxcost.plot import plot_bar_series

        plot_bar_series({"per-layer inference": per_layer, "patch-based (blocks 0-4 in 4x4 patches)": per_patch},
                        args.out, "peak memory (kB)", "MobileNetV2 per-block peak memory (int8)",
                        labels=[str(i) for i in range(len(BLOCKS))], limit=(256, "256 kB SRAM"))
        print(f"bar chart saved to {args.out}")
    except fxcost.FxcostError as error:
        print(f"(no chart: {error})")


if __name__ == "__main__":
    main()
