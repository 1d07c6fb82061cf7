"""The model checklist of shared seed 002 (a lab report done with torchinfo, ptflops, forward
hooks and ONNX), answered by fxcost alone for GoogLeNet (aux_logits=False) and MobileNetV2.

    python examples/lab_checklist.py [googlenet|mobilenet_v2 ...]
"""

import sys
from dataclasses import dataclass

import torch
import torchvision

import fxcost


@dataclass
class Checklist:
    report: fxcost.Report
    conv_output_shapes: list[tuple[str, tuple[int, ...]]]
    macs_by_type: dict[str, int]
    peak_bandwidth: int
    peak_bandwidth_node: str
    total_activation_bytes: int


def build(name: str) -> torch.nn.Module:
    with torch.device("meta"):  # no weights needed: nothing is run
        if name == "googlenet":
            return torchvision.models.googlenet(aux_logits=False, init_weights=False)
        return torchvision.models.get_model(name)


def checklist(name: str) -> Checklist:
    report = fxcost.analyze(build(name), (1, 3, 224, 224))
    convs = [(n.module_path, n.output_shapes[0]) for n in report.nodes if n.op_type == "Conv2d"]
    by_type = {group.key: group.macs for group in report.by_op() if group.macs}
    # "peak bandwidth": the largest input + output bytes of one node
    busiest = max(report.nodes, key=lambda n: n.input_bytes + n.bytes_written)
    return Checklist(report, convs, by_type, busiest.input_bytes + busiest.bytes_written, busiest.name,
                     sum(n.bytes_written for n in report.nodes))


def show(name: str) -> None:
    result = checklist(name)
    report = result.report
    print(f"=== {name} ===")
    print(f"total params:          {report.params:,}")
    print(f"trainable params:      {report.trainable_params:,}")
    print(f"non-trainable params:  {report.non_trainable_params:,}")
    print(f"weight bytes:          {report.param_bytes:,}")
    print()
    print(report.table(columns=["module", "op", "shape", "params", "written"]))
    print()
    print(report.op_table(columns=["op", "count", "macs", "macs%", "flops"]))
    print()
    print(f"output shapes of the {len(result.conv_output_shapes)} Conv2d layers (nothing was run):")
    for path, shape in result.conv_output_shapes:
        print(f"  {path:40s} {list(shape)}")
    print()
    print(report.table(columns=["name", "op", "read", "written"], raw=True, max_width=None).split("\n\n")[0])
    print()
    print(f"peak bandwidth (max input + output bytes of a node): {result.peak_bandwidth:,} bytes "
          f"at {result.peak_bandwidth_node}")
    print(f"total activation bytes (sum of node outputs):        {result.total_activation_bytes:,} bytes")
    print()


if __name__ == "__main__":
    for model_name in sys.argv[1:] or ["googlenet", "mobilenet_v2"]:
        show(model_name)
