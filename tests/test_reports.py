"""Tables, aggregations, exports, diffs and rooflines of a Report."""

import csv
import dataclasses
import io
import json
import pathlib

import pytest
import torch
import torch.nn as nn
import torchvision

import fxcost
from fxcost import Hardware
from conftest import analyze_quiet


@pytest.fixture(scope="module")
def resnet50():
    with torch.device("meta"):
        model = torchvision.models.resnet50()
    return model, analyze_quiet(model, (1, 3, 224, 224))


def test_default_table_fits_100_columns(resnet50):
    _, report = resnet50
    assert max(map(len, report.table().splitlines())) <= 100
    with torch.device("meta"):
        swin = torchvision.models.swin_v2_b()
    text = analyze_quiet(swin, (1, 3, 256, 256)).table()
    assert max(map(len, text.splitlines())) <= 100
    assert "…" in text  # long module paths are shortened from the left


def test_top_sort_columns_and_raw(resnet50):
    _, report = resnet50
    text = report.table(columns=["name", "op", "macs", "live"], sort_by="macs", top=3, raw=True)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["node", "op", "MACs", "live"]
    body = lines[2:5]
    conv_macs = sorted((n.macs for n in report.nodes if n.op_type == "Conv2d"), reverse=True)[:3]
    assert [int(line.split()[2].replace(",", "")) for line in body] == conv_macs
    footer = lines[-1 - len(report.summary().splitlines()) - 1]
    assert f"{report.macs:,}" in footer  # totals footer with exact integers


def test_unknown_column_is_a_clear_error(resnet50):
    _, report = resnet50
    with pytest.raises(fxcost.InvalidInputError, match="unknown column.*choose from"):
        report.table(columns=["module", "gflops"])


def test_by_module_depth_one_is_torchinfo_like(resnet50):
    _, report = resnet50
    groups = report.by_module(depth=1)
    assert [g.key for g in groups] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                                       "avgpool", "", "fc"]
    assert sum(g.macs for g in groups) == report.macs
    assert sum(g.params for g in groups) == report.params
    layer1 = groups[4]
    # layer1: 3 bottlenecks at 56x56: (64->64 1x1, 64->64 3x3, 64->256 1x1) + the downsample conv
    spatial = 56 * 56
    expected = spatial * (64 * 64 + 64 * 64 * 9 + 64 * 256) + spatial * 64 * 256 + 2 * spatial * (256 * 64 + 64 * 64 * 9 + 64 * 256)
    assert layer1.macs == expected
    assert layer1.module_type == "Sequential"


def test_functional_ops_are_attributed_to_their_module(resnet50):
    _, report = resnet50
    adds = [n for n in report.nodes if n.op_type == "add"]
    assert len(adds) == 16 and adds[0].module_path == "layer1.0" and adds[0].module_type == "Bottleneck"
    block = {g.key: g for g in report.by_module(depth=2)}["layer1.0"]
    assert block.flops == report.total("layer1.0").flops
    assert block.flops > sum(n.flops for n in report.nodes if n.module_path.startswith("layer1.0."))
    assert "· layer1.0" in report.module_table(depth=2)  # indented under layer1


def test_by_op_counts_and_shares(resnet50):
    _, report = resnet50
    ops = {g.key: g for g in report.by_op()}
    assert ops["Conv2d"].nodes == 53 and ops["BatchNorm2d"].nodes == 53 and ops["Linear"].nodes == 1
    assert ops["Linear"].macs == 2048 * 1000
    assert ops["Conv2d"].macs + ops["Linear"].macs == report.macs
    assert abs(sum(g.flops_share for g in ops.values()) - 1) < 1e-9
    assert "MACs %" in report.op_table()


def test_backbone_without_head_and_submodule_by_path():
    model = torchvision.models.resnet50()
    full = analyze_quiet(model, (1, 3, 224, 224))
    backbone = analyze_quiet(model, (1, 3, 224, 224), exclude=["fc"])
    assert backbone.params == full.params - (2048 * 1000 + 1000)
    assert backbone.macs == full.macs - 2048 * 1000
    assert backbone.nodes[-2].output_shapes == ((1, 2048),)
    layer3 = analyze_quiet(model, (1, 3, 224, 224), submodule="layer3")
    assert layer3.inputs == (("input", (1, 512, 28, 28), "float32"),)
    assert layer3.macs == full.total("layer3").macs
    assert layer3.params == full.total("layer3").params
    with pytest.raises(fxcost.InvalidInputError, match="no submodule 'head'.*fc"):
        fxcost.analyze(model, (1, 3, 224, 224), exclude=["head"])


def test_json_csv_markdown_exports(resnet50):
    _, report = resnet50
    assert fxcost.Report.from_json(report.to_json()) == report
    assert json.loads(report.to_json())["format"] == "fxcost.report/2"
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(rows) == len(report.nodes)
    for row, node in zip(rows, report.nodes):
        assert row["name"] == node.name
        assert int(row["macs"]) == node.macs and int(row["flops"]) == node.flops
        assert int(row["bytes_read"]) == node.bytes_read and int(row["live_bytes"]) == node.live_bytes
        shapes = tuple(tuple(int(s) for s in shape.split("x")) for shape in row["output_shapes"].split(";") if shape)
        assert shapes == node.output_shapes
    markdown = report.to_markdown(top=5)
    lines = markdown.splitlines()
    assert lines[0].startswith("| module") and set(lines[1]) <= set("|-: ")
    assert len(lines) == 2 + 5 + 1


def test_json_totals(resnet50):
    model, report = resnet50
    totals = json.loads(report.to_json())["totals"]
    published = torchvision.models.ResNet50_Weights.DEFAULT.meta
    assert round(totals["macs"] / 1e9, 3) == published["_ops"]  # 4.089 GMACs
    assert totals["params"] == totals["trainable_params"] == published["num_params"] == 25_557_032
    assert totals["non_trainable_params"] == 0 and totals["unused_param_count"] == 0
    assert totals["param_bytes"] == 4 * published["num_params"]
    # each BatchNorm holds running mean and variance (float32) and num_batches_tracked (int64)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 53
    assert totals["buffer_bytes"] == sum(2 * 4 * m.num_features for m in norms) + 8 * len(norms)
    assert totals["bytes_moved"] == totals["bytes_read"] + totals["bytes_written"]
    assert totals["intensity"] == pytest.approx(totals["flops"] / totals["bytes_moved"])
    assert totals["peak_memory_bytes"] == (totals["peak_activation_bytes"] + totals["param_bytes"]
                                           + totals["buffer_bytes"])
    assert totals["peak_with_temporaries_bytes"] >= totals["peak_activation_bytes"] > 0
    assert totals["peak_node"] in {n.name for n in report.nodes} and totals["complete"] is True
    assert set(totals) == set(fxcost._report.TOTALS)


def test_json_schema_document_names_every_key(resnet50):
    _, report = resnet50
    data = report.to_dict()
    schema = (pathlib.Path(__file__).parent.parent / "docs" / "json-schema.md").read_text()
    keys = {*data, *data["totals"], *data["nodes"][0], *data["peak_buffers"][0], *data["memory"]}
    missing = sorted(key for key in keys if f"`{key}`" not in schema)
    assert not missing, f"docs/json-schema.md does not describe {missing}"
    assert f'`"{data["format"]}"`' in schema


def test_reports_of_format_1_still_load(resnet50):
    _, report = resnet50
    old = json.loads(report.to_json())
    del old["totals"]
    old["format"] = "fxcost.report/1"
    assert fxcost.Report.from_dict(old) == report
    with pytest.raises(fxcost.InvalidInputError, match="unknown report format 'fxcost.report/9'"):
        fxcost.Report.from_dict({**old, "format": "fxcost.report/9"})


def test_diff_resnet50_vs_resnet101():
    with torch.device("meta"):
        a, b = torchvision.models.resnet50(), torchvision.models.resnet101()
    ra, rb = analyze_quiet(a, (1, 3, 224, 224)), analyze_quiet(b, (1, 3, 224, 224))
    diff = fxcost.compare(ra, rb)
    assert diff.total.deltas["macs"].change == rb.macs - ra.macs
    changed = [m.key for m in diff.changed()]
    assert changed == ["layer3"]  # ResNet-101 only adds 17 bottlenecks to layer3
    bottleneck = 1024 * 256 + 256 * 256 * 9 + 256 * 1024 + 2 * (256 + 256 + 1024)
    assert diff.modules[[m.key for m in diff.modules].index("layer3")].deltas["params"].change == 17 * bottleneck
    assert "layer3" in str(diff) and "(total)" in str(ra.diff(rb))


def test_roofline_by_hand():
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU())
    report = analyze_quiet(model, (64, 1024))
    hw = Hardware("toy", {"float32": 1e12}, 1e11)
    roof = report.roofline(hw)
    linear, relu = roof.nodes
    flops = 2 * 64 * 1024 * 1024 + 64 * 1024
    moved = (64 * 1024 + 1024 * 1024 + 1024 + 64 * 1024) * 4
    assert linear.flops == flops and linear.bytes_moved == moved
    assert linear.seconds == max(flops / 1e12, moved / 1e11)
    assert linear.bound == "compute"  # intensity ~ 30 FLOP/B > ridge of 10
    assert relu.bound == "memory"
    assert roof.seconds == linear.seconds + relu.seconds
    assert "lower bound" in roof.table()
    for preset in fxcost.HARDWARE:
        assert report.roofline(preset).seconds > 0
    with pytest.raises(fxcost.InvalidInputError, match="presets"):
        report.roofline("tpu-v9")


def test_plots_write_pngs(tmp_path, resnet50):
    from fxcost.plot import plot_bars, plot_liveness

    _, report = resnet50
    live = plot_liveness(report, str(tmp_path / "live.png"))
    bars = plot_bars({k: v / 1024 for k, v in report.module_peaks(depth=1).items()}, str(tmp_path / "bars.png"), "KiB")
    for path in (live, bars):
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_submodules_are_reachable_from_the_package():
    assert callable(fxcost.plot.plot_liveness) and callable(fxcost.passes.tile_matmuls)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fxcost.nope


def test_with_fields_is_replace_without_init():
    """The per-node copy the report makes equals ``dataclasses.replace`` field for field."""
    import dataclasses

    from fxcost._records import with_fields

    node = fxcost.analyze(torch.nn.Linear(4, 3), (2, 4)).nodes[1]
    changed = with_fields(node, live_bytes=7, temporary_bytes=5)
    assert changed == dataclasses.replace(node, live_bytes=7, temporary_bytes=5)
    assert (changed.live_bytes, changed.temporary_bytes, node.live_bytes) == (7, 5, node.live_bytes)
    assert type(changed) is type(node)


def test_new_record_is_the_constructor_without_init():
    """Records the cost pass builds equal the dataclass constructor's, defaults included, and a
    missing or unknown field is an error as it is for the constructor."""
    import pickle

    from fxcost._records import NodeCost, Status, new_record

    fields = dict(name="conv", op="call_module", target="torch.nn.Conv2d", op_type="Conv2d", module_path="stem",
                  module_type="Conv2d", output_shapes=((1, 8, 4, 4),), dtype="float32", macs=9, status=Status.COUNTED)
    made = new_record(NodeCost, **fields)
    assert made == NodeCost(**fields)
    assert made.__dict__ == NodeCost(**fields).__dict__  # every field held, not only the ones given
    assert (made.flops, made.note, made.backward_macs) == (0, "", 0)
    assert pickle.loads(pickle.dumps(made)) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.macs = 1
    with pytest.raises(TypeError, match="missing dtype"):
        new_record(NodeCost, **{k: v for k, v in fields.items() if k != "dtype"})
    with pytest.raises(TypeError, match="unknown"):
        new_record(NodeCost, **fields, mac=3)
