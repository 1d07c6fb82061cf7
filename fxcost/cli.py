"""The ``fxcost`` command line.

``fxcost MODEL [options]`` analyses one model (at one input size, or at several: a sweep);
``fxcost compare A B`` prints what changes between two models or two saved reports. Only
argparse is imported up front: torch and the analysis are imported once the arguments are
read, so ``fxcost --help`` and argument errors are instant. The library never prints; this
module writes the result to stdout, and progress (on a terminal), notes, warnings and errors
to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TextIO

from ._errors import FxcostError, InvalidInputError

if TYPE_CHECKING:
    from ._input_specs import InputSpec
    from ._models import LoadedModel
    from ._report import Report

EXAMPLES = """\
examples:
  fxcost torchvision:resnet50                         per-node table, input from the weights
  fxcost torchvision:resnet50 --top 10 --sort flops   the ten nodes with most FLOPs
  fxcost torchvision:resnet50 --depth 1               costs per top-level module
  fxcost torchvision:resnet50 --by op                 costs per op type, with shares
  fxcost torchvision:resnet50 --exclude fc            backbone without the classifier head
  fxcost torchvision:resnet50 --batch 1,8,32          one row of totals per batch size
  fxcost torchvision:resnet50 --format json | jq .totals.macs
  fxcost torchvision:mobilenet_v2 --dtype int8 --deployment   MCU memory view (int8)
  fxcost torchvision:resnet50 --roofline h100-sxm --top 10
  fxcost torchvision:mobilenet_v2 --dtype int8 --deployment --plan-patches 256kB   patch-based inference plan
  fxcost torchvision:googlenet --reorder               peak before and after a peak-minimising order
  fxcost torchvision:resnet18 --train adamw --amp bf16 one training step: backward, peak by category
  fxcost timm:convnext_tiny --depth 1                 timm model, input from its pretrained config
  fxcost hf:GPT2LMHeadModel --seq 128,512,1024        Hugging Face model from its default config
  fxcost hf:LlamaConfig --config num_hidden_layers=2,hidden_size=256 --seq 64
  fxcost hf:path/to/model_dir                         the architecture of a local config.json
  fxcost mynet:Net --input 1x3x32x32                  mynet.py in the current directory
  fxcost path/to/mynet.py:build --input x=1x16:float16 --format csv
  fxcost compare torchvision:resnet50 torchvision:resnet101 --depth 1
  fxcost compare before.json after.json               two saved --format json reports

MODEL: torchvision:NAME (torchvision.models.list_models()), timm:NAME, hf:CONFIG_CLASS (the
bare model, e.g. hf:GPT2Config), hf:MODEL_CLASS (e.g. hf:GPT2LMHeadModel), hf:DIRECTORY
(holding a config.json), package.module:callable or path/to/file.py:callable (a class or
function returning an nn.Module; the current directory is searched first). Models are built
on the meta device where their constructors allow it: nothing is downloaded or allocated.
Exit status: 0 on success, 1 when --plan-patches finds nothing under its limit, 2 on any error
(printed on stderr, first line "fxcost: error: ...").
"""

_COLUMNS = "name, module, op, type, shape, dtype, params, macs, flops, read, written, moved, intensity, live, status"


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options saying which model to build and which input to analyse it on."""
    group = parser.add_argument_group("model and input")
    group.add_argument("--input", action="append", metavar="[NAME=]SHAPE[:DTYPE]",
                       help="an input such as 1x3x224x224 (float32, or --dtype), 1x3x224x224:float16 or keyword "
                            "input_ids=1x128:int64; repeat for several inputs. Default: the model's own input "
                            "(torchvision weights, timm pretrained config, Hugging Face config)")
    group.add_argument("--batch", metavar="N[,N...]",
                       help="batch size (the first size of every input); several sizes print one row per size")
    group.add_argument("--seq", metavar="N[,N...]",
                       help="sequence length (the second size of every int64/int32 token input, default 128 for "
                            "Hugging Face text models); several lengths print one row per length")
    group.add_argument("--config", metavar="KEY=VALUE,...",
                       help="arguments of the model builder: Hugging Face config attributes (n_layer=2,n_embd=64), "
                            "timm/torchvision builder arguments (num_classes=10), or of your callable")
    group.add_argument("--dtype", metavar="DTYPE",
                       help="float16/bfloat16/float64: analyse the model and float inputs in that dtype; "
                            "int8: count activations and weights at 1 byte for the memory figures")
    group.add_argument("--deployment", action="store_true",
                       help="memory as an MCU runtime lays it out: BatchNorm folded, activations and depthwise "
                            "convs in place, residual adds accumulated, inputs freed after use")
    group.add_argument("--exclude", action="append", metavar="PATH", help="leave out a submodule (e.g. the head: fc)")
    group.add_argument("--submodule", metavar="PATH",
                       help="analyse only this submodule, with the input it gets in the model")
    group.add_argument("--mode", choices=("eval", "train", "as-is"), default=None,
                       help="module mode to analyse (default eval; train with --train)")
    group.add_argument("--assume", action="append", metavar="FILE:LINE=VALUE",
                       help="value to assume where the model's code depends on tensor values, e.g. "
                            "mynet.py:9=false (defaults: branches taken, integers the input size, sizes their "
                            "upper bound; every assumption is listed)")
    group.add_argument("--strict", action="store_true",
                       help="make code that depends on tensor values an error instead of assuming")
    train = parser.add_argument_group("training step")
    train.add_argument("--train", metavar="OPTIMIZER", choices=("sgd", "sgd-momentum", "adam", "adamw", "none"),
                       help="also analyse one training step with this optimizer (sgd, sgd-momentum, adam, adamw, or "
                            "none: forward and backward only): backward costs, the step's peak memory by category")
    train.add_argument("--amp", metavar="DTYPE", choices=("bf16", "fp16", "bfloat16", "float16"),
                       help="with --train: forward and loss under autocast in bf16 or fp16")
    train.add_argument("--checkpoint", action="append", metavar="PATH",
                       help="with --train: run this submodule under activation checkpointing (repeatable)")
    group.add_argument("--stream-inputs", action="store_true",
                       help="the inputs are not held in activation memory (read on demand from a camera or frame "
                            "buffer outside it, as an MCU reads the image patch by patch)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress, notes or warnings on stderr (progress shows only on a terminal)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``fxcost MODEL``."""
    parser = argparse.ArgumentParser(
        prog="fxcost",
        usage="fxcost MODEL [options]\n       fxcost compare A B [options]",
        description="Print what a PyTorch model costs (MACs, FLOPs, params, bytes moved, peak memory) without "
                    "running it. `fxcost compare --help` for comparing two models or reports.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="torchvision:NAME, timm:NAME, hf:NAME, package.module:callable or file.py:callable")
    _add_model_options(parser)
    view = parser.add_argument_group("what to print")
    view.add_argument("--depth", type=int, metavar="N", help="show costs summed per module, N levels deep")
    view.add_argument("--by", choices=("node", "module", "op"), default=None,
                      help="group rows by node (default), module (with --depth, default 1) or op type")
    view.add_argument("--sort", metavar="COLUMN", help=f"sort nodes by a column, largest first ({_COLUMNS})")
    view.add_argument("--top", type=int, metavar="N", help="only the N most expensive nodes")
    view.add_argument("--columns", metavar="LIST", help=f"comma-separated node columns ({_COLUMNS})")
    view.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table",
                      help="output format (default table); json is the whole report with a top-level 'totals' "
                           "object, csv every node")
    view.add_argument("--roofline", metavar="HARDWARE",
                      help="per-node roofline lower bounds on a preset: h100-sxm, a100-sxm, laptop-cpu, cortex-m7")
    view.add_argument("--raw", action="store_true", help="exact integers instead of human units")
    plan = parser.add_argument_group("memory planning (instead of the cost table)")
    plan.add_argument("--plan-patches", metavar="LIMIT",
                      help="search the split point and patch grid of patch-based inference with the lowest MAC "
                           "overhead whose peak activation memory fits LIMIT (e.g. 256kB, 320KiB, 250000) and "
                           "print the plan; exit status 1 when nothing fits")
    plan.add_argument("--reorder", action="store_true",
                      help="reorder the graph for the lowest peak activation memory and print the peak before and "
                           "after, per order tried")
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    """The parser of ``fxcost compare A B``."""
    parser = argparse.ArgumentParser(
        prog="fxcost compare",
        description="Print the per-module differences (MACs, params, bytes moved, peak live memory) from A to B. "
                    "A and B are model specs (as for `fxcost MODEL`, analysed with the same options) or JSON "
                    "reports saved with `fxcost MODEL --format json > file.json`.",
        epilog="examples:\n  fxcost compare torchvision:resnet50 torchvision:resnet101\n"
               "  fxcost compare before.json after.json --depth 2 --all\n"
               "  fxcost compare hf:GPT2Config hf:GPT2Config --config n_layer=6   (both get --config)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", metavar="A", help="model spec or saved JSON report (the 'before')")
    parser.add_argument("b", metavar="B", help="model spec or saved JSON report (the 'after')")
    parser.add_argument("--depth", type=int, default=1, metavar="N", help="compare modules N levels deep (default 1)")
    parser.add_argument("--all", action="store_true", help="also list the modules that did not change")
    _add_model_options(parser)
    return parser


# --- stderr: progress, notes, warnings --------------------------------------------------------

class Console:
    """What the command line writes to stderr besides errors. Progress is one line
    rewritten in place, and only on a terminal; ``quiet`` silences progress, notes and warnings."""

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.live = not quiet and _isatty(stream)
        self._shown = False
        self._warned: set[str] = set()

    def progress(self, text: str) -> None:
        """Show what is being done now (replaces the previous progress line)."""
        if self.live:
            line = f"fxcost: {text} ..."
            width = shutil.get_terminal_size().columns - 1  # a wrapped line could not be rewritten in place
            self.stream.write("\r\x1b[K" + (line if len(line) <= width else line[:width - 1] + "…"))
            self.stream.flush()
            self._shown = True

    def clear(self) -> None:
        """Remove the progress line."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def note(self, text: str) -> None:
        """An assumption the user should know about."""
        self._line("note", text)

    def warn(self, text: str) -> None:
        """A warning, printed once however often it is raised."""
        if text not in self._warned:
            self._warned.add(text)
            self._line("warning", text)

    def _line(self, kind: str, text: str) -> None:
        if not self.quiet:
            self.clear()
            print(f"fxcost: {kind}: {text}", file=self.stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- building and analysing ------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """The analysis options every command shares, read from the arguments once."""

    float_dtype: Any
    """torch dtype the model and float inputs are converted to, or None."""
    memory: Any
    """The :class:`fxcost.MemoryOptions` of the analysis."""
    options: dict[str, Any]
    """``--config`` as keyword arguments of the model builder."""
    assume: dict[str, Any] | None = None
    """``--assume`` as the ``assume=`` of :func:`fxcost.analyze`."""


def _settings(args: argparse.Namespace) -> Settings:
    import torch

    from . import MemoryOptions
    from ._models import parse_options

    float_dtype = count_dtype = None
    if args.dtype:
        dtype = getattr(torch, args.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise InvalidInputError(f"unknown --dtype {args.dtype!r}: use float16, bfloat16, float32, float64 or int8")
        if dtype.is_floating_point:
            float_dtype = dtype
        else:
            count_dtype = dtype
    memory = (MemoryOptions.deployment(count_dtype, stream_inputs=args.stream_inputs) if args.deployment
              else MemoryOptions(activation_dtype=count_dtype, weight_dtype=count_dtype,
                                 stream_inputs=args.stream_inputs))
    return Settings(float_dtype, memory, parse_options(args.config) if args.config else {},
                    parse_assumptions(args.assume) if args.assume else None)


def _training(args: argparse.Namespace) -> Any:
    """``--train`` / ``--amp`` / ``--checkpoint`` as a :class:`fxcost.Training` (None without ``--train``)."""
    if not args.train:
        if args.amp or args.checkpoint:
            raise InvalidInputError("--amp and --checkpoint go with --train OPTIMIZER")
        return None
    import torch

    from . import Training

    amp = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    return Training(None if args.train == "none" else args.train, amp=amp.get(args.amp),
                    checkpoint=tuple(args.checkpoint or ()))


def parse_assumptions(texts: list[str]) -> dict[str, Any]:
    """``["mynet.py:9=false", "a.py:3=4"]`` -> ``{"mynet.py:9": False, "a.py:3": 4}``."""
    assume: dict[str, Any] = {}
    for text in texts:
        site, sep, value = text.rpartition("=")
        if not sep or ":" not in site or not value:
            raise InvalidInputError(f"bad --assume {text!r}: write FILE:LINE=VALUE, e.g. mynet.py:9=false")
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            assume[site.strip()] = lowered == "true"
            continue
        try:
            assume[site.strip()] = int(value)
        except ValueError:
            try:
                assume[site.strip()] = float(value)
            except ValueError:
                raise InvalidInputError(f"bad --assume {text!r}: the value must be true, false or a number") from None
    return assume


def _load(spec: str, settings: Settings, console: Console) -> "LoadedModel":
    """Build the model ``spec`` names, in ``--dtype`` when that is a float type."""
    from ._models import load_model

    console.progress(f"building {spec}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(spec, settings.options)
    for warning in caught:
        console.warn(f"{spec}: {warning.message}")
    for note in loaded.notes:
        console.note(note)
    if settings.float_dtype is not None:
        loaded.model.to(settings.float_dtype)  # the command line built this model: converting it is free on meta
    return loaded


@dataclass(frozen=True)
class SizeRequest:
    """``--input``, ``--batch`` and ``--seq`` as read from the arguments (before any model is built)."""

    inputs: tuple["InputSpec", ...] | None
    """The ``--input`` tensors; None: the model's default input."""
    batches: tuple[int | None, ...]
    """Batch sizes to analyse (None: as the input says)."""
    seqs: tuple[int | None, ...]
    """Sequence lengths to analyse (None: as the input says)."""

    @property
    def is_sweep(self) -> bool:
        """True when several sizes are asked for."""
        return len(self.batches) * len(self.seqs) > 1


def _size_request(args: argparse.Namespace) -> SizeRequest:
    from ._input_specs import parse_input, parse_sizes

    return SizeRequest(tuple(parse_input(text) for text in args.input) if args.input else None,
                       parse_sizes(args.batch, "--batch") if args.batch else (None,),
                       parse_sizes(args.seq, "--seq") if args.seq else (None,))


def _input_sizes(spec: str, loaded: "LoadedModel", request: SizeRequest) -> list[tuple["InputSpec", ...]]:
    """The example inputs to analyse: ``--input`` (or the model's default) at every
    combination of ``--batch`` and ``--seq``."""
    from ._input_specs import resize

    base = request.inputs if request.inputs is not None else loaded.inputs
    if base is None:
        raise InvalidInputError(f"{spec} needs --input SHAPE (e.g. --input 1x3x224x224 or --input input_ids=1x128:int64)")
    too_long = [seq for seq in request.seqs if seq and loaded.max_seq and seq > loaded.max_seq]
    if too_long:
        raise InvalidInputError(f"--seq {too_long[0]} is longer than the {loaded.max_seq} positions {spec} holds; "
                                f"raise it with --config {loaded.max_seq_option}={too_long[0]}")
    return [resize(base, batch, seq) for batch, seq in itertools.product(request.batches, request.seqs)]


def _analyse(loaded: "LoadedModel", specs: tuple["InputSpec", ...], args: argparse.Namespace,
             settings: Settings, console: Console, step: str = "") -> "Report":
    from . import analyze
    from ._input_specs import example_input

    console.progress(f"{step}analysing {type(loaded.model).__name__} on {' '.join(map(str, specs))}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = analyze(loaded.model, example_input(specs, settings.float_dtype), mode=args.mode,
                         memory=settings.memory, exclude=args.exclude or (), submodule=args.submodule,
                         assume=settings.assume, strict=args.strict, training=_training(args))
    for warning in caught:
        console.warn(str(warning.message))
    return report


# --- fxcost MODEL: views of one report --------------------------------------------------------

def _view_json(report: "Report", args: argparse.Namespace) -> str:
    return report.to_json(indent=1)


def _view_csv(report: "Report", args: argparse.Namespace) -> str:
    return report.to_csv().rstrip("\n")


def _view_roofline(report: "Report", args: argparse.Namespace) -> str:
    return report.roofline(args.roofline).table(top=args.top)


def _view_modules(report: "Report", args: argparse.Namespace) -> str:
    from ._table import MODULE_COLUMNS, MODULE_TRAINING_COLUMNS, group_table

    groups = report.by_module(args.depth or 1)
    columns = MODULE_TRAINING_COLUMNS if report.training is not None else MODULE_COLUMNS
    return _with_summary(group_table(groups, columns, args.raw, **_table_format(args)), report, args)


def _view_ops(report: "Report", args: argparse.Namespace) -> str:
    from ._table import OP_COLUMNS, group_table

    return _with_summary(group_table(report.by_op(), OP_COLUMNS, args.raw, **_table_format(args)), report, args)


def _view_nodes(report: "Report", args: argparse.Namespace) -> str:
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    options = dict(columns=columns, sort_by=args.sort, top=args.top, raw=args.raw)
    if args.format == "markdown":
        return report.to_markdown(**options)
    return report.table(**options)


def _table_format(args: argparse.Namespace) -> dict[str, Any]:
    return {"tablefmt": "github", "max_width": None} if args.format == "markdown" else {}


def _with_summary(table: str, report: "Report", args: argparse.Namespace) -> str:
    return table if args.format == "markdown" else table + "\n\n" + report.summary(args.raw)


#: The views of one report. Each takes the report and the arguments and returns the text.
VIEWS: dict[str, Callable[["Report", argparse.Namespace], str]] = {
    "json": _view_json, "csv": _view_csv, "roofline": _view_roofline,
    "module": _view_modules, "op": _view_ops, "node": _view_nodes,
}
_TABLE_OPTIONS = ("depth", "by", "sort", "top", "columns", "roofline")


def _view_name(args: argparse.Namespace) -> str:
    """Which view the arguments ask for; refuses options the chosen view would ignore."""
    given = [f"--{name}" for name in _TABLE_OPTIONS if getattr(args, name) is not None]
    if args.format in ("json", "csv"):
        if given:
            raise InvalidInputError(f"{', '.join(given)} cannot be used with --format {args.format}, which exports "
                                    "every node: leave them out, or use --format table/markdown")
        return args.format
    if args.depth is not None and args.depth < 1:
        raise InvalidInputError(f"--depth must be at least 1, got {args.depth}")
    if args.roofline:
        if args.format != "table":
            raise InvalidInputError("--roofline prints a text table: leave out --format")
        return "roofline"
    return args.by or ("module" if args.depth else "node")


def _check_sweep_options(args: argparse.Namespace) -> str:
    """Refuse the options of one-size views in a sweep; returns the view name ``sweep``."""
    given = [f"--{name}" for name in _TABLE_OPTIONS if getattr(args, name) is not None]
    if given:
        raise InvalidInputError(f"{', '.join(given)} cannot be used with several --batch/--seq sizes (a sweep "
                                "prints one row of totals per size): give one size")
    return "sweep"


def _sweep_view(points: list, args: argparse.Namespace) -> str:
    from ._sweep import sweep_csv, sweep_json, sweep_table

    if args.format == "json":
        return sweep_json(points)
    if args.format == "csv":
        return sweep_csv(points).rstrip("\n")
    return sweep_table(points, "github" if args.format == "markdown" else "simple", args.raw)


class NothingFits(Exception):
    """A memory plan found nothing under the limit: ``text`` goes to stdout, ``message`` to
    stderr, and the exit status is 1 (as for a budget that fails)."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


_PLAN_REFUSED = ("depth", "by", "sort", "top", "columns", "roofline", "exclude", "submodule", "train", "assume")


def _planning(args: argparse.Namespace) -> str | None:
    """``--plan-patches`` or ``--reorder`` (None: neither); refuses options a plan would ignore."""
    asked = [name for name, on in (("--plan-patches", args.plan_patches), ("--reorder", args.reorder)) if on]
    if not asked:
        return None
    given = [f"--{name.replace('_', '-')}" for name in _PLAN_REFUSED if getattr(args, name)]
    if args.mode not in (None, "eval"):
        given.append("--mode")
    if args.format != "table":
        given.append("--format")
    if len(asked) > 1 or given or args.batch and "," in args.batch or args.seq and "," in args.seq:
        others = asked[1:] + given + [o for o, v in (("--batch", args.batch), ("--seq", args.seq)) if v and "," in v]
        raise InvalidInputError(f"{asked[0]} prints a plan for one input size of the whole model in eval mode: "
                                f"leave out {', '.join(others)}")
    return asked[0]


def _plan(loaded: "LoadedModel", specs: tuple["InputSpec", ...], args: argparse.Namespace, settings: Settings,
          console: Console, planning: str) -> str:
    """The patch plan or the peak-minimising schedule of the model, as text."""
    from ._errors import PatchError
    from ._input_specs import example_input
    from .passes import plan_patches, schedule_for_peak

    model, shapes = loaded.model, example_input(specs, settings.float_dtype)
    what = "planning patches for" if planning == "--plan-patches" else "reordering"
    console.progress(f"{what} {type(model).__name__} on {' '.join(map(str, specs))}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if planning == "--reorder":
                text = str(schedule_for_peak(model, shapes, settings.memory))
            else:
                text = str(plan_patches(model, shapes, args.plan_patches, memory=settings.memory))
        except PatchError as error:
            head, _, table = str(error).partition("\n")
            if not table:
                raise
            raise NothingFits(head, table) from None
    for warning in caught:
        console.warn(str(warning.message))
    return text


def run_analyze(args: argparse.Namespace, console: Console) -> str:
    """``fxcost MODEL``: the chosen view of one analysis, a table of totals per size, or a
    memory plan."""
    from ._input_specs import batch_and_seq
    from ._models import parse_spec
    from ._sweep import SweepPoint

    parse_spec(args.model)  # a malformed spec, input or option fails before torch is imported
    planning = _planning(args)
    request = _size_request(args)
    view = "plan" if planning else _check_sweep_options(args) if request.is_sweep else _view_name(args)
    settings = _settings(args)
    loaded = _load(args.model, settings, console)
    sizes = _input_sizes(args.model, loaded, request)
    if planning:
        return _plan(loaded, sizes[0], args, settings, console, planning)
    if not request.is_sweep:
        return VIEWS[view](_analyse(loaded, sizes[0], args, settings, console), args)
    points = []
    for i, specs in enumerate(sizes, 1):
        batch, seq = batch_and_seq(specs)
        report = _analyse(loaded, specs, args, settings, console, step=f"[{i}/{len(sizes)}] ")
        points.append(SweepPoint(batch, seq, " ".join(map(str, specs)), report))
    return _sweep_view(points, args)


# --- fxcost compare A B ----------------------------------------------------------------------

def _report_of(spec: str, args: argparse.Namespace, request: SizeRequest, settings: Settings,
               console: Console) -> "Report":
    """A saved JSON report, or the analysis of a model spec at one input size."""
    from . import Report

    if spec.endswith(".json"):
        try:
            with open(spec, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise InvalidInputError(f"cannot read report {spec!r}: {error.strerror}") from None
        try:
            return Report.from_json(text)
        except (ValueError, KeyError, TypeError) as error:
            if isinstance(error, FxcostError):
                raise
            raise InvalidInputError(f"{spec} is not a report written by `fxcost MODEL --format json` "
                                    f"({type(error).__name__}: {error})") from None
    loaded = _load(spec, settings, console)
    return _analyse(loaded, _input_sizes(spec, loaded, request)[0], args, settings, console)


def run_compare(args: argparse.Namespace, console: Console) -> str:
    """``fxcost compare A B``: the per-module delta table."""
    from . import compare

    from ._models import parse_spec

    if args.depth < 1:
        raise InvalidInputError(f"--depth must be at least 1, got {args.depth}")
    for spec in (args.a, args.b):
        if not spec.endswith(".json"):
            parse_spec(spec)
    request = _size_request(args)
    if request.is_sweep:
        raise InvalidInputError("compare analyses one input size: give one --batch and one --seq")
    settings = _settings(args)
    before = _report_of(args.a, args, request, settings, console)
    after = _report_of(args.b, args, request, settings, console)
    return compare(before, after, args.depth).table(only_changed=not args.all)


@dataclass(frozen=True)
class Command:
    """A command of the command line: its parser and what it prints."""

    parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace, Console], str]


#: ``fxcost NAME ...`` -> command; anything else is a model spec for ``analyze``.
COMMANDS = {"analyze": Command(build_parser, run_analyze), "compare": Command(build_compare_parser, run_compare)}


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv.pop(0) if argv and argv[0] in COMMANDS else "analyze"
    command = COMMANDS[name]
    try:
        args = command.parser().parse_args(argv)
    except SystemExit as exit:  # --help (0) or a usage error (2, already printed by argparse)
        return exit.code if isinstance(exit.code, int) else 2
    console = Console(sys.stderr, args.quiet)
    try:
        text = command.run(args, console)
    except FxcostError as error:
        console.clear()
        message = str(error).splitlines()
        print(f"fxcost: error: {message[0]}", file=sys.stderr)
        for line in message[1:]:
            print(f"fxcost:   {line.strip()}", file=sys.stderr)
        return 2
    except NothingFits as failure:
        console.clear()
        print(failure.text)
        print(f"fxcost: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        console.clear()
        print("fxcost: interrupted", file=sys.stderr)
        return 130
    console.clear()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
