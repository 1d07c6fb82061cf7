"""The ``fxcost`` command line."""

from __future__ import annotations

import argparse
import sys
import warnings

from ._errors import FxcostError

EXAMPLES = """\
examples:
  fxcost torchvision:resnet50
  fxcost torchvision:vit_b_16 --input 8x3x224x224 --format json > vit.json
  fxcost mypackage.models:build_net --input 1x3x32x32
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fxcost",
        description="Print what a PyTorch model costs (MACs, FLOPs, params, bytes moved) without running it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="torchvision:NAME (built on the meta device) or package.module:callable returning an nn.Module")
    parser.add_argument("--input", action="append", metavar="SHAPE",
                        help="input shape such as 1x3x224x224 (float32); repeat for several inputs. "
                             "Default for torchvision models: the input size of their weights")
    parser.add_argument("--mode", choices=("eval", "train", "as-is"), default="eval", help="module mode to analyse (default eval)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    parser.add_argument("--raw", action="store_true", help="exact integers instead of human units")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import analyze
    from ._models import load_model, parse_shape

    try:
        model, default_shape = load_model(args.model)
        if args.input:
            shapes = [parse_shape(text) for text in args.input]
        elif default_shape is not None:
            shapes = [default_shape]
        else:
            raise FxcostError(f"{args.model} needs --input SHAPE (e.g. --input 1x3x224x224)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = analyze(model, tuple(shapes))
    except FxcostError as error:
        print(f"fxcost: error: {error}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"fxcost: warning: {warning.message}", file=sys.stderr)
    if args.format == "json":
        print(report.to_json(indent=1))
    else:
        print(report.table(raw=args.raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
