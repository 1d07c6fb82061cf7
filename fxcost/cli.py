"""The ``fxcost`` command line."""

from __future__ import annotations

import argparse
import sys
import warnings

from ._errors import FxcostError

EXAMPLES = """\
examples:
  fxcost torchvision:resnet50                         per-node table, input from the weights
  fxcost torchvision:resnet50 --top 10 --sort flops   the ten nodes with most FLOPs
  fxcost torchvision:resnet50 --depth 1               costs per top-level module
  fxcost torchvision:resnet50 --by op                 costs per op type, with shares
  fxcost torchvision:resnet50 --exclude fc            backbone without the classifier head
  fxcost torchvision:vit_b_16 --input 8x3x224x224 --format json > vit.json
  fxcost torchvision:mobilenet_v2 --dtype int8 --deployment   MCU memory view (int8)
  fxcost torchvision:resnet50 --roofline h100-sxm --top 10
  fxcost mypackage.models:build_net --input 1x3x32x32 --format csv

MODEL is torchvision:NAME (any name of torchvision.models.list_models(), built on the meta
device: nothing is downloaded or computed) or package.module:callable returning an nn.Module.
Exit status: 0 on success, 2 on any error (printed as one line on stderr).
"""

_COLUMNS = "name, module, op, type, shape, dtype, params, macs, flops, read, written, moved, intensity, live, status"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fxcost",
        description="Print what a PyTorch model costs (MACs, FLOPs, params, bytes moved, peak memory) without running it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="torchvision:NAME or package.module:callable")
    parser.add_argument("--input", action="append", metavar="SHAPE",
                        help="input shape such as 1x3x224x224 (float32, or --dtype); repeat for several inputs. "
                             "Default for torchvision models: the input size of their weights")
    parser.add_argument("--depth", type=int, metavar="N", help="show costs summed per module, N levels deep")
    parser.add_argument("--by", choices=("node", "module", "op"), default=None,
                        help="group rows by node (default), module (with --depth, default 1) or op type")
    parser.add_argument("--sort", metavar="COLUMN", help=f"sort nodes by a column, largest first ({_COLUMNS})")
    parser.add_argument("--top", type=int, metavar="N", help="only the N most expensive nodes")
    parser.add_argument("--columns", metavar="LIST", help=f"comma-separated node columns ({_COLUMNS})")
    parser.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table",
                        help="output format (default table)")
    parser.add_argument("--dtype", metavar="DTYPE",
                        help="float16/bfloat16/float64: analyse the model and inputs in that dtype; "
                             "int8: count activations and weights at 1 byte for the memory figures")
    parser.add_argument("--deployment", action="store_true",
                        help="memory as an MCU runtime lays it out: BatchNorm folded, activations and depthwise "
                             "convs in place, residual adds accumulated, inputs freed after use")
    parser.add_argument("--exclude", action="append", metavar="PATH", help="leave out a submodule (e.g. the head: fc)")
    parser.add_argument("--submodule", metavar="PATH", help="analyse only this submodule, with the input it gets in the model")
    parser.add_argument("--mode", choices=("eval", "train", "as-is"), default="eval", help="module mode to analyse (default eval)")
    parser.add_argument("--roofline", metavar="HARDWARE",
                        help="per-node roofline lower bounds on a preset: h100-sxm, a100-sxm, laptop-cpu, cortex-m7")
    parser.add_argument("--raw", action="store_true", help="exact integers instead of human units")
    return parser


def _run(args: argparse.Namespace) -> str:
    import torch

    from . import MemoryOptions, analyze
    from ._models import load_model, parse_shape

    model, default_shape = load_model(args.model)
    if args.input:
        shapes = [parse_shape(text) for text in args.input]
    elif default_shape is not None:
        shapes = [default_shape]
    else:
        raise FxcostError(f"{args.model} needs --input SHAPE (e.g. --input 1x3x224x224)")
    inputs: list = list(shapes)
    count_dtype = None
    if args.dtype:
        dtype = getattr(torch, args.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise FxcostError(f"unknown --dtype {args.dtype!r}: use float16, bfloat16, float32, float64 or int8")
        if dtype.is_floating_point:
            model = model.to(dtype)  # the CLI built this model: converting it is free on meta
            inputs = [torch.empty(shape, dtype=dtype, device="meta") for shape in shapes]
        else:
            count_dtype = dtype
    if args.deployment:
        memory = MemoryOptions.deployment(count_dtype)
    else:
        memory = MemoryOptions(activation_dtype=count_dtype, weight_dtype=count_dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = analyze(model, tuple(inputs), mode=args.mode, memory=memory,
                         exclude=args.exclude or (), submodule=args.submodule)
    for warning in caught:
        print(f"fxcost: warning: {warning.message}", file=sys.stderr)

    if args.format == "json":
        return report.to_json(indent=1)
    if args.format == "csv":
        return report.to_csv().rstrip("\n")
    if args.roofline:
        return report.roofline(args.roofline).table(top=args.top)
    by = args.by or ("module" if args.depth else "node")
    if by == "module":
        return report.module_table(args.depth or 1, raw=args.raw) + "\n\n" + report.summary(args.raw)
    if by == "op":
        return report.op_table(raw=args.raw) + "\n\n" + report.summary(args.raw)
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    options = dict(columns=columns, sort_by=args.sort, top=args.top, raw=args.raw)
    if args.format == "markdown":
        return report.to_markdown(**options)
    return report.table(**options)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        text = _run(args)
    except FxcostError as error:
        message = str(error).splitlines()
        print(f"fxcost: error: {message[0]}", file=sys.stderr)
        for line in message[1:]:
            print(f"fxcost:   {line.strip()}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
