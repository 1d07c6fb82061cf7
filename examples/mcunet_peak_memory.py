"""MCUNetV2's Figure 1 with fxcost: per-block peak activation memory of MobileNetV2, int8,
batch 1, 224x224, under a microcontroller runtime's assumptions (BatchNorm folded,
activations and depthwise convolutions in place, residual adds accumulating into the skip
buffer, inputs freed after their last use).

    python examples/mcunet_peak_memory.py [--out mcunet_peak_memory.png]
"""

import argparse

import torch
import torchvision

import fxcost


def block_peaks_kb() -> dict[str, float]:
    with torch.device("meta"):
        model = torchvision.models.mobilenet_v2()
    report = fxcost.analyze(model, (1, 3, 224, 224), memory=fxcost.MemoryOptions.deployment(torch.int8))
    # Block 0 is the first convolution; blocks 1-17 are the inverted residual blocks.
    blocks = ["features.0"] + [f"features.{i}" for i in range(1, 18)]
    return {path: peak / 1024 for path, peak in report.module_peaks(blocks).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mcunet_peak_memory.png", help="bar chart PNG to write")
    args = parser.parse_args()
    peaks = block_peaks_kb()
    print("memory usage in kB:", [round(v, 1) for v in peaks.values()])
    worst = max(peaks, key=peaks.get)
    print(f"peak block: {worst} with {peaks[worst]:.1f} kB (int8)")
    try:
        from fxcost.plot import plot_bars

        plot_bars(peaks, args.out, "peak memory (kB)", "MobileNetV2 per-block peak memory (int8)",
                  labels=[str(i) for i in range(len(peaks))])
        print(f"bar chart saved to {args.out}")
    except fxcost.FxcostError as error:
        print(f"(no chart: {error})")


if __name__ == "__main__":
    main()
