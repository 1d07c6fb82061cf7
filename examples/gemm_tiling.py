"""The GEMM-tiling part of shared seed 002: hardware that multiplies at most M x K x N at a time.
Every Linear of torchvision AlexNet's classifier is rewritten into such tiles with
``fxcost.passes.tile_matmuls``, the result is checked equal on random inputs, and fxcost shows
what tiling costs in bytes moved (operands re-read per tile).

    python examples/gemm_tiling.py [--max 256 256 256]   (the seed's 64 64 64 takes about a minute)
"""

import argparse

import torch
import torchvision

import fxcost
from fxcost._trace import trace
from fxcost.passes import tile_matmuls


def classifier_and_input():
    model = torchvision.models.alexnet().classifier.eval()
    return model, (1, 256 * 6 * 6)


def tiled(max_m=64, max_k=64, max_n=64):
    model, shape = classifier_and_input()
    gm = trace(model)
    return model, shape, tile_matmuls(gm, max_m, max_k, max_n, shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", nargs=3, type=int, default=[256, 256, 256], metavar=("M", "K", "N"))
    args = parser.parse_args()
    model, shape, tiled_gm = tiled(*args.max)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(tiled_gm(x), model(x), rtol=1e-4, atol=1e-5)
    print(f"tiled classifier == original on random input {list(shape)} (torch.testing.assert_close)")
    before, after = fxcost.analyze(model, shape), fxcost.analyze(tiled_gm, shape)
    matmuls = [n for n in after.nodes if n.op_type == "matmul"]
    print(f"GEMM tiles: {len(matmuls)} matmuls, largest {max(n.output_shapes[0] for n in matmuls)}")
    print(f"MACs:        {before.macs:,} -> {after.macs:,}")
    print(f"bytes read:  {before.bytes_read:,} -> {after.bytes_read:,} ({after.bytes_read / before.bytes_read:.2f}x)")
    print(f"bytes moved: {before.bytes_moved:,} -> {after.bytes_moved:,} ({after.bytes_moved / before.bytes_moved:.2f}x)")


if __name__ == "__main__":
    main()
