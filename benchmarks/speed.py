"""How fast is fxcost against the tools people use today, and against the floor of any
fx-based analysis (``torch.fx.symbolic_trace`` alone)? Everything is measured in this run.

    python benchmarks/speed.py            # every model and tool (~15 min on 2 cores)
    python benchmarks/speed.py --quick    # a subset, under a minute
    python benchmarks/speed.py --models resnet50 gpt2 --tools fxcost-meta fcm-meta

Every (tool, model) pair runs in a fresh process with one torch thread at batch 1: one
warm-up call, then the median of ``--repeats`` timed calls (with ``--rounds N``, the lowest of
N such medians, taken in alternating order of the tools). Times are the process's CPU time
(``time.process_time``; ``--clock wall`` for wall time): with one thread they equal wall
time on an idle machine, and on a shared one they do not count the time spent waiting for a
core. Only ratios within one run mean anything. Needs the benchmark extras:
pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings

MODELS = ["resnet50", "mobilenet_v2", "vit_b_16", "densenet121", "convnext_tiny", "efficientnet_b0", "gpt2", "llama"]
#: tool -> column title. fxcost runs on a model built on meta and on one with real weights;
#: the alternatives run the real model on the CPU, except FlopCounterMode on a meta model.
TOOLS = {
    "fxcost-meta": "fxcost (meta)",
    "fxcost-real": "fxcost (real)",
    "fcm": "FlopCounterMode",
    "fcm-meta": "FCM on meta",
    "ptflops-aten": "ptflops (aten)",
    "ptflops": "ptflops",
    "thop": "thop",
    "torchinfo": "torchinfo",
    "forward": "plain forward",
    "trace": "symbolic_trace",
}
ALTERNATIVES = ["fcm", "fcm-meta", "ptflops-aten", "ptflops", "thop", "torchinfo"]
QUICK_MODELS = ["mobilenet_v2"]
QUICK_TOOLS = ["fxcost-meta", "fcm-meta", "ptflops", "trace"]
QUICK_CHAIN = [10, 1000]
CHAIN = [10, 100, 1000, 10_000]
#: (model, small size, large size): batch for vision models, tokens for decoders.
SIZES = [("resnet50", 1, 32), ("gpt2", 128, 1024)]
SECTIONS = ["tools", "chain", "split", "sizes"]
STAGES = ["prepare", "trace", "propagate", "cost", "liveness", "report"]
TOKENS = 128


# --- what runs inside one measuring process --------------------------------------------------------

def build(name: str, meta: bool):
    """``(model, example for fxcost, call(model) running one forward)`` for ``name``
    (``name@N``: batch N for a vision model, N tokens for a decoder)."""
    import torch

    name, _, size = name.partition("@")
    size = int(size) if size else None
    device = torch.device("meta" if meta else "cpu")
    if name.startswith("chain"):
        from torch import nn

        with device:
            model = nn.Sequential(*[nn.Linear(16, 16) if i % 2 == 0 else nn.ReLU() for i in range(int(name[5:]))])
        x = torch.randn(1, 16, device=device)
        return model.eval(), x, lambda m: m(x)
    if name in ("gpt2", "llama"):
        import transformers

        transformers.logging.set_verbosity_error()
        if name == "gpt2":  # GPT-2 small: 12 layers, d=768, 124 M parameters
            config, cls = transformers.GPT2Config(), transformers.GPT2LMHeadModel
        else:  # a Llama-style decoder: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention
            config = transformers.LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                                              num_attention_heads=16, num_key_value_heads=4, vocab_size=32000)
            cls = transformers.LlamaForCausalLM
        with device:
            model = cls(config).eval()
        ids = torch.zeros(1, size or TOKENS, dtype=torch.long, device=device)
        return model, {"input_ids": ids}, lambda m: m(input_ids=ids)
    import torchvision

    with device:
        model = torchvision.models.get_model(name).eval()
    x = torch.randn(size or 1, 3, 224, 224, device=device)
    return model, x, lambda m: m(x)


def tool_call(tool: str, name: str):
    """A zero-argument callable running ``tool`` once on model ``name``."""
    import torch
    import torch.fx as fx

    import fxcost

    meta = tool in ("fxcost-meta", "fcm-meta", "trace")
    model, example, forward = build(name, meta)
    if tool.startswith("fxcost"):
        return lambda: fxcost.analyze(model, example)
    if tool == "trace":
        return lambda: fx.symbolic_trace(model)
    if tool in ("fcm", "fcm-meta"):
        from torch.utils.flop_counter import FlopCounterMode

        def count():
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                forward(model)
            return counter.get_total_flops()

        return count
    if tool == "forward":
        return lambda: torch.no_grad()(forward)(model)
    if tool.startswith("ptflops"):
        from ptflops import get_model_complexity_info

        backend = "aten" if tool == "ptflops-aten" else "pytorch"
        constructor = (lambda _: dict(example)) if isinstance(example, dict) else (lambda _: example)
        return lambda: get_model_complexity_info(model, (1,), as_strings=False, print_per_layer_stat=False,
                                                 verbose=False, input_constructor=constructor, backend=backend)
    if tool == "thop":
        import thop

        inputs = tuple(example.values()) if isinstance(example, dict) else (example,)

        def count():
            with torch.no_grad():
                result = thop.profile(model, inputs=inputs, verbose=False)
            for module in model.modules():  # thop leaves its buffers behind; undo for the next call
                for buffer in ("total_ops", "total_params"):
                    module._buffers.pop(buffer, None)
            return result

        return count
    if tool == "torchinfo":
        import torchinfo

        return lambda: torchinfo.summary(model, input_data=example, verbose=0)
    raise SystemExit(f"unknown tool {tool!r}")


#: The clock measurements use (``--clock``).
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: imports, caches, first-call costs
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1000


def stage_split(name: str, repeats: int) -> dict[str, float]:
    """Median ms per stage of ``fxcost.analyze`` (model built on meta)."""
    import fxcost
    from fxcost import _analyze

    model, example, _ = build(name, True)
    functions = {"prepare": "prepare", "trace": "trace_subject", "propagate": "propagate_subject",
                 "cost": "cost_nodes", "liveness": "compute_liveness", "report": "build_report"}
    spent: dict[str, float] = {}

    def timed(stage, function):
        def run(*args, **kwargs):
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent[stage] = spent.get(stage, 0.0) + clock() - start
        return run

    for stage, attribute in functions.items():
        setattr(_analyze, attribute, timed(stage, getattr(_analyze, attribute)))
    runs = []
    fxcost.analyze(model, example)
    for _ in range(repeats):
        spent.clear()
        start = clock()
        fxcost.analyze(model, example)
        total = clock() - start
        runs.append({**spent, "total": total})
    return {stage: statistics.median(run.get(stage, 0.0) for run in runs) * 1000 for stage in (*STAGES, "total")}


def measure(args) -> None:
    """The child: one measurement, printed as one JSON line."""
    global clock
    import torch

    clock = CLOCKS[args.clock]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    try:
        if args.tool == "split":
            result = stage_split(args.model, args.repeats)
        else:
            result = {"ms": median_ms(tool_call(args.tool, args.model), args.repeats)}
            if args.model.startswith("chain") and args.tool.startswith("fxcost"):
                import fxcost

                model, example, _ = build(args.model, True)
                result["nodes"] = len(fxcost.analyze(model, example).nodes)
    except Exception as error:  # noqa: BLE001 - a tool that cannot run is reported, not fatal
        result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"}
    print(json.dumps(result))


# --- the parent: one process per measurement, then the tables ------------------------------------

def run_child(tool: str, model: str, repeats: int, clock_name: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(here), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", tool, model, "--repeats", str(repeats),
                           "--clock", clock_name],
                          capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:120]}
    return json.loads(lines[-1])


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset (under a minute): mobilenet_v2, 4 tools, chains of 10 and 1000")
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--tools", nargs="*", choices=list(TOOLS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every (tool, model) this many times, in alternating order, and keep the "
                             "lowest median: steadier on a shared machine")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="CPU time of the process (default) or wall time")
    parser.add_argument("--chain", nargs="*", type=int, help="chain lengths (nodes) for the time-per-node check")
    parser.add_argument("--sections", nargs="*", choices=SECTIONS, default=SECTIONS,
                        help="what to measure: tools x models, the chain, the stage split, batch/sequence sizes")
    parser.add_argument("--child", nargs=2, metavar=("TOOL", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.tool, args.model = args.child
        measure(args)
        return
    models = args.models or (QUICK_MODELS if args.quick else MODELS)
    tools = args.tools or (QUICK_TOOLS if args.quick else list(TOOLS))
    chain = args.chain or (QUICK_CHAIN if args.quick else CHAIN)

    if "tools" in args.sections:
        tools_section(models, tools, args)
    if "chain" in args.sections:
        chain_section(chain, args)
    if "split" in args.sections:
        split_section(models, args)
    if "sizes" in args.sections and not args.quick:
        sizes_section(args)


def shown(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def tools_section(models: list[str], tools: list[str], args) -> None:
    times: dict[tuple[str, str], float] = {}
    for model in models:
        for round_ in range(args.rounds):  # (each round in the other order: drifts in load cancel)
            for tool in (tools if round_ % 2 == 0 else tools[::-1]):
                result = run_child(tool, model, args.repeats, args.clock)
                if "error" in result and round_ == 0:
                    print(f"  {TOOLS[tool]} on {model}: {result['error']}", flush=True)
                ms = result.get("ms", float("nan"))
                times[model, tool] = min(times.get((model, tool), ms), ms)
        print(f"measured {model}", flush=True)

    print(f"\nmedian {'CPU' if args.clock == 'cpu' else 'wall'} time (ms), batch 1, one thread")
    print(table([[m, *(shown(times[m, t]) for t in tools)] for m in models], ["model", *(TOOLS[t] for t in tools)]))

    ratio_rows = []
    alternatives = [t for t in ALTERNATIVES if t in tools]
    for model in models:
        measured = [(times[model, t], t) for t in alternatives if not math.isnan(times[model, t])]
        best, best_tool = min(measured) if measured else (float("nan"), "")
        row = [model, TOOLS.get(best_tool, "n/a")]
        for ours in ("fxcost-meta", "fxcost-real"):
            row.append(shown(times.get((model, ours), float("nan")) / best, 2))
        row.append(shown(times.get((model, "fxcost-meta"), float("nan")) / times.get((model, "trace"), float("nan")), 2))
        ratio_rows.append(row)
    print("\nratios (goals: < 1 against the best alternative; <= 2 against symbolic_trace)")
    print(table(ratio_rows, ["model", "best alternative", "fxcost (meta) / best", "fxcost (real) / best",
                             "fxcost (meta) / symbolic_trace"]))


def chain_section(chain: list[int], args) -> None:
    chain_rows = []
    for length in chain:
        ours = run_child("fxcost-meta", f"chain{length}", args.repeats, args.clock)
        floor = run_child("trace", f"chain{length}", args.repeats, args.clock)
        nodes = ours.get("nodes", length + 2)
        chain_rows.append([length, nodes, shown(ours.get("ms", float("nan")) / nodes * 1000, 1),
                           shown(floor.get("ms", float("nan")) / nodes * 1000, 1),
                           shown(ours.get("ms", float("nan")) / floor.get("ms", float("nan")), 2)])
    print("\ntime per node on a chain of Linear(16, 16) / ReLU layers (µs; goal: flat)")
    print(table(chain_rows, ["layers", "nodes", "fxcost µs/node", "symbolic_trace µs/node", "ratio"]))


def split_section(models: list[str], args) -> None:
    split_rows = []
    for model in models:
        split = run_child("split", model, args.repeats, args.clock)
        if "error" in split:
            split_rows.append([model, *(["n/a"] * (len(STAGES) + 1))])
            continue
        split_rows.append([model, shown(split["total"]), *(f"{split[s] / split['total'] * 100:.0f}%" for s in STAGES)])
    print("\nwhere fxcost's time goes (model built on meta; share of the total)")
    print(table(split_rows, ["model", "total ms", *STAGES]))


def sizes_section(args) -> None:
    rows = []
    for model, small, large in SIZES:
        times = [run_child("fxcost-meta", f"{model}@{size}", args.repeats, args.clock).get("ms", float("nan"))
                 for size in (small, large)]
        rows.append([model, "batch" if model not in ("gpt2", "llama") else "tokens", small, shown(times[0]), large,
                     shown(times[1]), shown(times[1] / times[0], 2)])
    print("\nfxcost (meta) at two batch sizes / sequence lengths (ms; goal: no change)")
    print(table(rows, ["model", "size", "small", "ms", "large", "ms", "ratio"]))


if __name__ == "__main__":
    main()
