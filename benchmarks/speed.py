"""How fast is fxcost against the floor (tracing + one meta-device propagation) and against
the tools people use today? Everything is measured in this run, on this machine.

    python benchmarks/speed.py [--repeats 5] [--models resnet50 vit_b_16 ...] [--batches 1 32]

Needs the benchmark extras: pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.fx as fx
import torchvision
from tabulate import tabulate
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils.flop_counter import FlopCounterMode

import fxcost

MODELS = ["resnet50", "vit_b_16", "densenet121", "convnext_tiny"]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor(meta_model, shape):
    """The least any fx-based tool must do: trace, then propagate shapes once on meta."""
    gm = fx.symbolic_trace(meta_model)
    ShapeProp(gm).propagate(torch.empty(shape, device="meta"))


def alternatives(real_model, shape):
    """name -> zero-argument callable running that tool on real tensors."""
    x = torch.randn(shape)
    tools = {}

    def flop_counter():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            real_model(x)
        return counter.get_total_flops()

    tools["FlopCounterMode"] = flop_counter
    try:
        from fvcore.nn import FlopCountAnalysis

        def fvcore_count():
            analysis = FlopCountAnalysis(real_model, x)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            return analysis.total()

        tools["fvcore"] = fvcore_count
    except ImportError:
        pass
    try:
        import thop

        def thop_count():
            with torch.no_grad():
                result = thop.profile(real_model, inputs=(x,), verbose=False)
            for module in real_model.modules():  # thop leaves its buffers behind; undo for the next run
                for name in ("total_ops", "total_params"):
                    module._buffers.pop(name, None)
            return result

        tools["thop"] = thop_count
    except ImportError:
        pass
    try:
        from ptflops import get_model_complexity_info

        def ptflops_count():
            return get_model_complexity_info(real_model, tuple(shape[1:]), as_strings=False, print_per_layer_stat=False,
                                             verbose=False, input_constructor=lambda _: x)

        tools["ptflops"] = ptflops_count
    except ImportError:
        pass
    try:
        import torchinfo

        tools["torchinfo"] = lambda: torchinfo.summary(real_model, input_data=x, verbose=0)
    except ImportError:
        pass
    return tools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5, help="repeats for fxcost and the floor")
    parser.add_argument("--alt-repeats", type=int, default=3, help="repeats for the alternatives (they run real kernels)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(torch.get_num_threads())

    rows, ratios = [], []
    for name in args.models:
        with torch.device("meta"):
            meta_model = torchvision.models.get_model(name).eval()
        real_model = torchvision.models.get_model(name).eval()
        for batch in args.batches:
            shape = (batch, 3, 224, 224)
            fxcost.analyze(meta_model, shape)  # warm-up (imports, caches)
            ours = median_time(lambda: fxcost.analyze(meta_model, shape), args.repeats)
            base = median_time(lambda: floor(meta_model, shape), args.repeats)
            times = {"fxcost": ours, "floor": base}
            for tool, fn in alternatives(real_model, shape).items():
                try:
                    fn()  # warm-up
                    times[tool] = median_time(fn, args.alt_repeats)
                except Exception as error:  # noqa: BLE001 - a tool that cannot run is reported, not fatal
                    times[tool] = float("nan")
                    print(f"{tool} failed on {name}: {type(error).__name__}: {error}")
            rows.append([name, batch, *(f"{times.get(t, float('nan')) * 1000:.0f}" for t in
                                         ("fxcost", "floor", "FlopCounterMode", "fvcore", "thop", "ptflops", "torchinfo"))])
            ratios.append([name, batch, f"{ours / base:.2f}", *(
                f"{ours / times[t]:.3f}" if t in times and times[t] == times[t] else "n/a"
                for t in ("FlopCounterMode", "fvcore", "thop", "ptflops", "torchinfo"))])
            print(f"measured {name} batch {batch}", flush=True)

    print("\nmedian wall time (ms)")
    print(tabulate(rows, headers=["model", "batch", "fxcost", "floor", "FlopCounterMode", "fvcore", "thop", "ptflops",
                                  "torchinfo"], disable_numparse=True))
    print("\nratios: fxcost / floor (goal <= 1.5) and fxcost / each alternative (goal < 1 at batch 1)")
    print(tabulate(ratios, headers=["model", "batch", "/ floor", "/ FlopCounterMode", "/ fvcore", "/ thop", "/ ptflops",
                                    "/ torchinfo"], disable_numparse=True))


if __name__ == "__main__":
    main()
