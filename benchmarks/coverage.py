"""Coverage: every timm model and every transformers architecture, analysed with default options
and checked against torch's FlopCounterMode on the same meta model.

    python benchmarks/coverage.py                       # everything (hours on 2 cores)
    python benchmarks/coverage.py --only timm --limit 20
    python benchmarks/coverage.py --only transformers --family llama bert
    python benchmarks/coverage.py --one transformers:llama   # one model, in this process
    python benchmarks/coverage.py --resume              # skip models already in the results file
    python benchmarks/coverage.py --report-only         # rewrite the Markdown (and CSV) from the results file

timm: every name of ``timm.list_models()``, built with ``pretrained=False`` on the meta device, on
its pretrained config's ``input_size``. transformers: every model type with a model class in the
auto mappings (the bare model, else its first task model), built from its config class shrunk to a
small size (``tests/hf_configs.py``), with one input chosen by ``main_input_name`` and the forward's
signature. A model passes when ``fxcost.analyze`` completes with every op costed and nothing
partial, its parameters equal the model's unique parameters, and its MACs are within 1% of
FlopCounterMode (with torch's own CPU attention formula, ``tests/reference.py``) where that can
run on the meta model; where it cannot (``.item()`` on meta, a matmul-class op it has no formula
for) the parameter check alone decides. Models that cannot be built are listed, not counted.

Each model runs in a worker process (restarted every few models, and killed at the per-model
timeout); results are appended to a JSON-lines file as they come and the Markdown summary is
written from it.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import gc
import inspect
import json
import os
import pathlib
import platform
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TOLERANCE = 0.01
MEMORY_LIMIT = 8 << 30  # address space of one worker
JOBS_PER_WORKER = 20  # a fresh interpreter after this many models


@dataclass
class Result:
    """The outcome of one model."""

    source: str
    name: str
    family: str
    status: str = "fail"
    """``pass``, ``fail`` or ``skip`` (cannot be built: not counted)."""
    reason: str = ""
    check: str = ""
    """``macs`` (FlopCounterMode ran) or ``params`` (it could not)."""
    macs: int | None = None
    reference_macs: int | None = None
    reference_note: str = ""
    params: int | None = None
    unique_params: int | None = None
    exact: bool | None = None
    assumptions: int = 0
    fallbacks: int = 0
    level: str = ""
    inputs: str = ""
    validated: str = "meta"
    """How the input was found valid: a plain forward ran on the meta model (``meta``), a real
    run on the CPU did (``cpu``), or nothing could run it (``no``: only the meta forward's
    failure says it cannot run on meta, e.g. ``.item()``)."""
    seconds: float = 0.0
    analyze_seconds: float = 0.0
    reference_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


# --- the reference ----------------------------------------------------------------------------

@dataclass
class Reference:
    kind: str
    """``ok`` (MACs counted), ``uncountable`` (the forward ran, a matmul-class op has no formula),
    ``meta`` (the forward cannot run on meta tensors) or ``error`` (it failed otherwise)."""
    macs: int | None
    note: str
    seconds: float


#: Errors of torch's meta kernels where the real kernel runs: the message names no meta device.
_META_KERNEL_LIMITS = ("Expected mat_a to be BFloat16",)  # _grouped_mm on float32


def is_meta_limit(error: BaseException) -> bool:
    """Whether ``error`` says the code cannot run on meta tensors (rather than that the input is wrong)."""
    text = str(error)
    lower = text.lower()
    return ("meta" in lower or "data-dependent" in lower or "_local_scalar_dense" in lower
            or any(limit in text for limit in _META_KERNEL_LIMITS))


def reference(model, inputs: dict) -> Reference:
    """FlopCounterMode's MACs of ``model(**inputs)`` on meta, or why there are none."""
    from reference import torch_macs

    start = time.perf_counter()
    try:
        macs = torch_macs(model, **inputs)
        return Reference("ok", macs, "", time.perf_counter() - start)
    except AssertionError as error:
        if "has no formula" in str(error):
            return Reference("uncountable", None, str(error).splitlines()[0], time.perf_counter() - start)
        return Reference("error", None, first_line(error), time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - the model's own failure, recorded
        kind = "meta" if is_meta_limit(error) else "error"
        return Reference(kind, None, first_line(error), time.perf_counter() - start)


# --- one model --------------------------------------------------------------------------------

def analyse(result: Result, model, inputs: dict, ref: Reference) -> Result:
    """Runs fxcost on the chosen model and input and fills in the verdict."""
    import fxcost
    from fxcost import Status

    result.inputs = ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in inputs.items())
    result.unique_params = sum(p.numel() for p in model.parameters())
    result.reference_macs, result.reference_note, result.reference_seconds = ref.macs, ref.note, ref.seconds
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = fxcost.analyze(model, inputs)
    except Exception as error:  # noqa: BLE001 - recorded as the failure
        result.analyze_seconds = time.perf_counter() - start
        result.reason = first_line(error)
        result.extra["traceback"] = traceback.format_exc()[-3000:]
        return result
    result.analyze_seconds = time.perf_counter() - start
    result.macs, result.params = report.macs, report.params
    result.assumptions, result.fallbacks = len(report.assumptions), len(report.fallbacks)
    partial = [n for n in report.nodes if n.status is Status.PARTIAL]
    if report.unsupported:
        result.reason = "unsupported ops: " + ", ".join(sorted(report.unsupported))
    elif partial:
        result.reason = f"partial: {partial[0].name}: {partial[0].note}"[:300]
    elif result.params != result.unique_params:
        result.reason = f"params differ: fxcost {result.params} vs {result.unique_params}"
    elif ref.kind == "ok":
        result.check, result.exact = "macs", result.macs == ref.macs
        if abs(result.macs - ref.macs) <= TOLERANCE * ref.macs:
            result.status = "pass"
        else:
            result.reason = f"MACs differ: fxcost {result.macs} vs FlopCounterMode {ref.macs}"
    else:
        result.check, result.status = "params", "pass"
    return result


def run_timm(name: str, family: str) -> Result:
    import timm
    import torch

    result = Result("timm", name, family)
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False).eval()
    except Exception as error:  # noqa: BLE001
        result.status, result.reason = "skip", "cannot build on meta: " + first_line(error)
        return result
    channels, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
    parameter = next(iter(inspect.signature(model.forward).parameters))  # x, or another name
    inputs = {parameter: torch.empty(1, channels, height, width, device="meta")}
    return analyse(result, model, inputs, reference(model, inputs))


#: Largest model (parameters) run for real on the CPU to check that an input is valid.
CPU_CHECK_LIMIT = 60_000_000


def cpu_run(model_type: str, level, inputs: dict, cache: dict) -> Reference | None:
    """FlopCounterMode's MACs of a real run on the CPU of the same architecture and input
    shapes (random weights and inputs); None when the model is too large to run."""
    import hf_configs

    if level.name not in cache:
        cache[level.name] = None
        try:
            meta, _ = hf_configs.build(model_type, level)
            if sum(p.numel() for p in meta.parameters()) <= CPU_CHECK_LIMIT:
                cache[level.name] = hf_configs.build(model_type, level, device="cpu")[0]
        except Exception:  # noqa: BLE001 - a constructor that needs meta; no real run then
            pass
    model = cache[level.name]
    if model is None:
        return None
    ref = reference(model, hf_configs.on_cpu(inputs))
    return ref if ref.kind != "meta" else Reference("error", None, ref.note, ref.seconds)


def run_transformers(model_type: str, family: str) -> Result:
    """Tries each level and each candidate input until one is valid: FlopCounterMode runs on the
    meta model, or (where it cannot) a real run of the same architecture on the CPU does."""
    import hf_configs

    result = Result("transformers", model_type, family)
    chosen, fallback, tries = None, None, []
    for level in hf_configs.LEVELS:
        try:
            model, config = hf_configs.build(model_type, level)
        except Exception as error:  # noqa: BLE001
            tries.append(f"{level.name}: build: {first_line(error)}")
            continue
        cpu_models: dict = {}
        for inputs in hf_configs.candidate_inputs(model, config):
            ref = reference(model, inputs)
            if ref.kind in ("ok", "uncountable"):
                chosen = (level, model, inputs, ref, None)
                break
            real = cpu_run(model_type, level, inputs, cpu_models)
            if real is not None and real.kind in ("ok", "uncountable"):
                chosen = (level, model, inputs, ref, real)
                break
            if real is None and ref.kind == "meta" and fallback is None:
                fallback = (level, model, inputs, ref, None)
            where = f"{level.name}: {hf_configs.describe(inputs)}"
            tries.append(f"{where}: {ref.note}" + (f"; on the CPU: {real.note}" if real is not None else ""))
        if chosen:
            break
    result.extra["tries"] = tries[:8]
    chosen = chosen or fallback
    if chosen is None:
        built = [t for t in tries if ": build: " not in t]
        result.status = "skip"
        result.reason = ("no valid input found: " + built[0].split(": ", 2)[-1] if built
                         else "cannot build: " + tries[-1].split(": build: ")[-1])[:300]
        return result
    level, model, inputs, ref, real = chosen
    result.level = level.name
    result.validated = "meta" if ref.kind in ("ok", "uncountable") else "cpu" if real is not None else "no"
    if real is not None:
        result.extra["cpu_macs"] = real.macs
    return analyse(result, model, inputs, ref)


def run_one(source: str, name: str, family: str) -> Result:
    start = time.perf_counter()
    try:
        result = (run_timm if source == "timm" else run_transformers)(name, family)
    except BaseException as error:  # noqa: BLE001 - whatever happens is the model's result
        result = Result(source, name, family, reason=first_line(error))
        result.extra["traceback"] = traceback.format_exc()[-3000:]
    result.seconds = time.perf_counter() - start
    return result


# --- the job list -------------------------------------------------------------------------------

def timm_jobs() -> list[tuple[str, str, str]]:
    import timm

    family = {}
    for module in timm.list_modules():
        for name in timm.list_models(module=module):
            family.setdefault(name, module)
    return [("timm", name, family.get(name, name.split("_")[0])) for name in timm.list_models()]


def transformers_jobs() -> list[tuple[str, str, str]]:
    import hf_configs

    return [("transformers", model_type, model_type) for model_type in hf_configs.model_types()]


# --- workers ------------------------------------------------------------------------------------

def worker_main() -> None:
    """Reads ``source\\tname\\tfamily`` lines, answers one JSON line each on the original stdout
    (the models' own prints go to stderr)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch  # noqa: F401 - imported once per worker

    for line in sys.stdin:
        source, name, family = line.rstrip("\n").split("\t")
        result = run_one(source, name, family)
        answer.write(json.dumps(asdict(result)) + "\n")
        answer.flush()
        gc.collect()


class Worker:
    """A worker process owned by one thread; restarted after a timeout, a crash, or
    ``JOBS_PER_WORKER`` models."""

    def __init__(self, log):
        self.process = None
        self.done = 0
        self.log = log

    def start(self):
        self.process = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True,
                                        cwd=ROOT)
        self.done = 0

    def stop(self):
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None

    def run(self, job, timeout: float) -> dict:
        if self.process is None or self.done >= JOBS_PER_WORKER:
            self.stop()
            self.start()
        source, name, family = job
        start = time.perf_counter()
        self.process.stdin.write("\t".join(job) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if line:
            self.done += 1
            return json.loads(line)
        elapsed = time.perf_counter() - start
        if ready:  # end of file: the worker died
            code = self.process.wait()
            reason = f"worker died (exit status {code})"
        else:
            reason = f"timeout after {timeout:.0f} s"
        self.stop()
        return asdict(Result(source, name, family, reason=reason, seconds=elapsed))


def sweep(jobs, results_path: pathlib.Path, workers: int, timeout: float) -> None:
    local = threading.local()
    everyone, lock = [], threading.Lock()
    log = open(results_path.with_suffix(".log"), "a")

    def run(job):
        if not hasattr(local, "worker"):
            local.worker = Worker(log)
            with lock:
                everyone.append(local.worker)
        return local.worker.run(job, timeout)

    start = time.perf_counter()
    try:
        with open(results_path, "a") as out, concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(run, job) for job in jobs]
            for count, future in enumerate(concurrent.futures.as_completed(futures), 1):
                result = future.result()
                out.write(json.dumps(result) + "\n")
                out.flush()
                print(f"[{count}/{len(jobs)} {time.perf_counter() - start:6.0f} s] {result['source']}:{result['name']} "
                      f"{result['status']} {result['seconds']:.1f} s {result['reason'][:120]}", flush=True)
    finally:
        for worker in everyone:
            worker.stop()


# --- the summary ----------------------------------------------------------------------------------

def load(results_path: pathlib.Path) -> dict[tuple[str, str], dict]:
    results = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                results[(row["source"], row["name"])] = row  # the latest run of a model wins
    return results


def _group(reason: str) -> str:
    """A failure's reason without its particulars (numbers, shapes, quoted names), to group alike ones."""
    import re

    if reason.startswith("unsupported ops: "):
        return reason
    text = re.sub(r"shape propagation failed (in module '[^']*' )?at node '[^']*': ", "", reason)
    text = re.sub(r"'[^']*'|\[[^\]]*\]|\d+", "_", text)
    return text[:110].replace("|", "/")


def rate(passed: int, total: int) -> str:
    return f"{passed} / {total} ({100 * passed / total:.1f}%)" if total else "0 / 0"


def markdown(results: list[dict], command: str) -> str:
    import timm
    import torch
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    if not commit.strip() and (ROOT / ".commit").exists():  # a copy of the tree made to run the sweep from
        commit = (ROOT / ".commit").read_text()
    lines = ["# Coverage: timm and transformers, measured", "",
             f"`{command}`, {datetime.date.today().isoformat()}, fxcost {commit.strip()}, torch {torch.__version__}, "
             f"timm {timm.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}, "
             f"{os.cpu_count()} CPU cores.", "",
             "A model passes when `fxcost.analyze` (default options) completes with every op costed and nothing "
             "partial, `report.params` equals the model's unique parameters, and its MACs are within 1% of "
             "FlopCounterMode on the same meta model (with torch's own CPU attention formula, `tests/reference.py`) "
             "where that can run; where it cannot (`.item()` on meta, a matmul-class op without a formula) the "
             "parameter check alone decides. Models that cannot be built, and transformers architectures for "
             "which no input was found (no candidate input runs on the meta model, on the CPU, or fails there "
             "only for want of data), are listed apart and not counted. transformers inputs are validated by a plain "
             "forward on the meta model, else by a real run of the same small architecture on the CPU; where neither "
             "can run (a large default config that calls `.item()`), the input is used unvalidated and the last "
             "column leaves those models out.", ""]
    by_source = collections.defaultdict(list)
    for row in results:
        by_source[row["source"]].append(row)
    lines += ["| source | listed | built and run | pass | pass rate | checked by MACs (of which exact) | by params only "
              "| pass rate, validated inputs only |", "|---|---|---|---|---|---|---|---|"]
    for source, rows in sorted(by_source.items()):
        built = [r for r in rows if r["status"] != "skip"]
        passed = [r for r in built if r["status"] == "pass"]
        by_macs = [r for r in passed if r["check"] == "macs"]
        exact = sum(1 for r in by_macs if r["exact"])
        validated = [r for r in built if r.get("validated", "meta") != "no"]
        lines.append(f"| {source} | {len(rows)} | {len(built)} | {len(passed)} | {rate(len(passed), len(built))} | "
                     f"{len(by_macs)} ({exact}) | {len(passed) - len(by_macs)} | "
                     f"{rate(sum(r['status'] == 'pass' for r in validated), len(validated))} |")
    seconds = [r["seconds"] for r in results]
    if seconds:
        lines += ["", f"Time per model: median {statistics.median(seconds):.1f} s, max {max(seconds):.0f} s, "
                      f"total {sum(seconds) / 3600:.1f} h of worker time."]
    real = [r for r in results if r["status"] == "pass" and r["check"] == "params" and r["extra"].get("cpu_macs")]
    if real:
        agree = sum(1 for r in real if abs(r["macs"] - r["extra"]["cpu_macs"]) <= TOLERANCE * r["extra"]["cpu_macs"])
        lines += ["", f"Of the {len(real)} models checked by parameters whose input was validated by a real run on the CPU "
                      f"(same architecture and shapes, random weights and inputs), {agree} also have MACs within 1% of "
                      "FlopCounterMode on that run (information only: a real run follows its own data-dependent paths)."]
    for source, rows in sorted(by_source.items()):
        groups = collections.Counter(_group(r["reason"]) for r in rows if r["status"] == "fail")
        lines += ["", f"## {source}: failures by reason", "", "| failures | reason |", "|---|---|"]
        lines += [f"| {count} | {reason} |" for reason, count in groups.most_common()] or ["| 0 | |"]
        lines += ["", f"## {source}: failures", ""]
        failures = sorted((r for r in rows if r["status"] == "fail"), key=lambda r: (r["family"], r["name"]))
        lines += [f"- `{r['name']}` ({r['family']}): {r['reason']}"
                  + (" (input not validated: no forward could run it)" if r.get("validated") == "no" else "")
                  for r in failures] or ["none"]
        lines += ["", f"## {source}: pass rate per family", "", "| family | built | pass | failures |", "|---|---|---|---|"]
        families = collections.defaultdict(list)
        for row in rows:
            if row["status"] != "skip":
                families[row["family"]].append(row)
        for family, members in sorted(families.items()):
            passed = sum(1 for r in members if r["status"] == "pass")
            failed = ", ".join(r["name"] for r in members if r["status"] != "pass")
            lines.append(f"| {family} | {len(members)} | {passed} | {failed} |")
        skipped = sorted((r for r in rows if r["status"] == "skip"), key=lambda r: r["name"])
        lines += ["", f"## {source}: not built (not counted)", ""]
        lines += [f"- `{r['name']}`: {r['reason']}" for r in skipped] or ["none"]
        slowest = sorted(rows, key=lambda r: -r["seconds"])[:10]
        lines += ["", f"## {source}: slowest", ""]
        lines += [f"- `{r['name']}`: {r['seconds']:.1f} s (fxcost {r['analyze_seconds']:.1f} s, FlopCounterMode "
                  f"{r['reference_seconds']:.1f} s)" for r in slowest]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("source", "name", "family", "status", "check", "validated", "macs", "reference_macs", "params",
              "unique_params", "assumptions", "fallbacks", "level", "inputs", "seconds", "analyze_seconds",
              "reference_seconds", "reason")


def write_csv(results: list[dict], path: pathlib.Path) -> None:
    """One row per model: the verdict, the figures compared and the time taken."""
    import csv

    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in sorted(results, key=lambda r: (r["source"], r["name"])):
            writer.writerow({**row, **{k: f"{row[k]:.2f}" for k in ("seconds", "analyze_seconds", "reference_seconds")}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("timm", "transformers"))
    parser.add_argument("--family", nargs="*", help="only these families (timm modules or transformers model types)")
    parser.add_argument("--name", nargs="*", help="only these model names")
    parser.add_argument("--limit", type=int, help="at most this many models of each source")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model")
    parser.add_argument("--results", type=pathlib.Path, default=HERE / "coverage.jsonl")
    parser.add_argument("--markdown", type=pathlib.Path, default=HERE / "coverage.md")
    parser.add_argument("--resume", action="store_true", help="skip models already in the results file")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--one", help="SOURCE:NAME, run in this process and print the result")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main()
    if args.one:
        source, _, name = args.one.partition(":")
        print(json.dumps(asdict(run_one(source, name, name)), indent=1))
        return None
    command = "python benchmarks/coverage.py " + " ".join(sys.argv[1:])
    jobs = []
    if not args.report_only:
        for source, lister in (("timm", timm_jobs), ("transformers", transformers_jobs)):
            if args.only in (None, source):
                listed = [j for j in lister() if (not args.family or j[2] in args.family)
                          and (not args.name or j[1] in args.name)]
                jobs += listed[:args.limit] if args.limit else listed
        done = load(args.results) if args.resume else {}
        if not args.resume and args.results.exists():
            args.results.unlink()
        jobs = [job for job in jobs if (job[0], job[1]) not in done]
        print(f"{len(jobs)} models, {args.workers} workers, timeout {args.timeout:.0f} s", flush=True)
        sweep(jobs, args.results, args.workers, args.timeout)
    results = list(load(args.results).values())
    text = markdown(results, command)
    args.markdown.write_text(text)
    write_csv(results, args.markdown.with_suffix(".csv"))
    print(text.split("\n## ")[0])


if __name__ == "__main__":
    main()
