"""Scale: a GPT-2-style decoder of 1.5B parameters and a Llama-style 70B configuration, built
on the meta device and analysed with peak RSS measured beyond the interpreter + torch import;
and a depth sweep of residual blocks showing time per node.

    python benchmarks/scale.py [--sweep 10 100 1000]

Each case runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from tabulate import tabulate

CASE = r'''
import json, resource, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F
import fxcost
sys.path.insert(0, {here!r})
from scale_models import build

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fxcost.analyze(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), (1, 4))  # warm-up: first-call costs are not per node
name, arg = {name!r}, {arg!r}
with torch.device("meta"):
    model, example = build(name, arg)
start = time.perf_counter()
report = fxcost.analyze(model, example)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "rss_mib": (peak - base) / 1024, "nodes": len(report.nodes),
                  "params": report.params, "macs": report.macs, "peak_activation": report.peak_activation_bytes,
                  "complete": report.complete}}))
'''


def run_case(name: str, arg) -> dict:
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    code = CASE.format(here=here, name=name, arg=arg)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} {arg} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", nargs="*", type=int, default=[10, 100, 1000])
    args = parser.parse_args()
    rows = []
    for name, arg, label in (("gpt2", 1024, "GPT-2 1.5B (48 layers, d=1600), 1x1024 tokens"),
                             ("llama", 4096, "Llama 70B (80 layers, d=8192, GQA 64/8), 1x4096 tokens")):
        r = run_case(name, arg)
        rows.append([label, f"{r['params'] / 1e9:.2f} B", f"{r['macs'] / 1e12:.2f} T", r["nodes"],
                     f"{r['seconds']:.2f}", f"{r['rss_mib']:.0f}", "yes" if r["complete"] else "NO"])
    print(tabulate(rows, headers=["model (meta device)", "params", "MACs", "nodes", "seconds", "peak RSS MiB (beyond imports)",
                                  "complete"], disable_numparse=True))
    print()
    sweep = []
    for depth in args.sweep:
        r = run_case("residual", depth)
        sweep.append([depth, r["nodes"], f"{r['seconds']:.3f}", f"{1e3 * r['seconds'] / r['nodes']:.3f}",
                      f"{r['rss_mib']:.0f}"])
    print(tabulate(sweep, headers=["residual blocks", "nodes", "seconds", "ms per node", "peak RSS MiB"],
                   disable_numparse=True))


if __name__ == "__main__":
    main()
