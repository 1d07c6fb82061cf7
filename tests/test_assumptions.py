"""Value-dependent code completed by stated assumptions: branches on tensor values, values
read into Python, outputs whose size depends on values. Defaults, overrides per call site,
strict mode, and what the report says. Figures worked out by hand."""

import inspect
import warnings

import pytest
import torch
import torch.nn as nn

import fxcost
from fxcost import Status


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


GATE_LINE = f"test_assumptions.py:{inspect.getsourcelines(Gate.forward)[1] + 1}"


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.head, self.gate, self.tail = nn.Linear(4, 4), Gate(), nn.Linear(4, 8)

    def forward(self, x):
        return self.tail(self.gate(self.head(x)))


def quiet(model, example, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxcost.TraceFallbackWarning)
        warnings.simplefilter("ignore", fxcost.AssumptionWarning)
        return fxcost.analyze(model, example, **options)


LINEARS = 2 * (2 * 4 * 4) + 2 * 4 + 2 * (2 * 4 * 8) + 2 * 8  # head and tail: 2 per MAC + bias


def test_a_branch_on_a_value_is_taken_by_default():
    with pytest.warns(fxcost.AssumptionWarning, match="depends on tensor values"):
        report = fxcost.analyze(Gated(), (2, 4))
    assert report.complete
    assert report.flops == LINEARS + 8 + 1  # sum of 8 elements, the comparison; no negation
    (assumption,) = report.assumptions
    assert assumption.location.endswith(GATE_LINE) and assumption.code == "if x.sum() > 0:"
    assert assumption.value == "True" and assumption.count == 1 and "taken as True" in assumption.what
    marked = [n for n in report.nodes if n.assumption]
    assert [n.op_type for n in marked] == ["gt"]  # the comparison whose value was assumed
    assert " *" in report.table() and "ASSUMED:" in report.summary() and GATE_LINE in report.summary()
    assert fxcost.Report.from_json(report.to_json()) == report


def test_a_call_site_can_be_told_what_to_assume():
    report = quiet(Gated(), (2, 4), assume={GATE_LINE: False})
    assert report.flops == LINEARS + 8 + 1 + 8  # now -x runs: one FLOP per element
    assert report.assumptions[0].value == "False"
    chosen = quiet(Gated(), (2, 4), assume=lambda site: False if site.kind == "branch" else None)
    assert chosen.flops == report.flops


def test_strict_refuses_to_assume():
    with pytest.raises(fxcost.ShapePropagationError, match="depends on tensor values"):
        fxcost.analyze(nn.Sequential(Gate(), nn.Linear(4, 4)), (2, 4), strict=True)
    with pytest.raises(fxcost.InvalidInputError, match="file.py:LINE"):
        fxcost.analyze(Gated(), (2, 4), assume={"no line number": True})


class Countdown(nn.Module):
    def forward(self, x):
        while x.max() > 0:
            x = x - 1
        return x


LOOP_LINE = f"test_assumptions.py:{inspect.getsourcelines(Countdown.forward)[1] + 1}"


def test_a_loop_on_values_that_never_ends_under_the_assumption_says_how_to_end_it():
    with pytest.raises(fxcost.ShapePropagationError, match=rf"assume=\{{'{LOOP_LINE}'"):
        quiet(Countdown(), (3,))
    report = quiet(Countdown(), (3,), assume={LOOP_LINE: False})
    assert report.flops == 3 + 1  # the max of 3 elements and its comparison with 0; the body never runs


class Select(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        keep = x[:, 0] > 0
        chosen = x[keep]  # boolean mask: every row assumed kept
        rows = torch.nonzero(keep)  # every position
        count = int(keep.sum())  # an integer value: the input size
        return self.fc(chosen), rows, x[:count], torch.masked_select(x, x > 0)


def test_value_dependent_sizes_take_their_upper_bound():
    report = quiet(Select(), (5, 4))
    shapes = {n.op_type: n.output_shapes for n in report.nodes}
    assert report.node("fc").output_shapes == ((5, 6),)  # all 5 rows kept
    assert shapes["nonzero"] == ((5, 1),)
    assert shapes["masked_select"] == ((20,),)  # all 5 x 4 elements
    assert report.macs == 5 * 4 * 6
    whats = " | ".join(a.what for a in report.assumptions)
    assert "boolean mask selects all 5 elements" in whats and "nonzero selects all 5 elements" in whats
    assert "taken as 5" in whats  # int(): the input size, the largest size of the example input
    assert "masked_select keeps all 20 elements" in whats


def test_unique_assumes_one_value_so_a_loop_over_the_groups_does_all_the_work_once():
    class PerClass(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, labels):
            out = []
            for label in torch.unique(labels):
                out.append(self.fc(x[labels == label]))
            return torch.cat(out)

    report = quiet(PerClass(), ((10, 4), torch.zeros(10, dtype=torch.long)))
    assert report.macs == 10 * 4 * 4  # one group of all 10 rows: the total work of any grouping


def test_detector_post_processing_runs_at_its_upper_bound():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights_backbone=None)
    report = quiet(model, ([torch.empty(3, 320, 320)],))
    assert report.complete and not any(n.status is Status.PARTIAL for n in report.nodes)
    assert any("NMS keeps all" in a.what for a in report.assumptions)
    # the model's own limit then applies: detections_per_img boxes come out
    (boxes,) = [n for n in report.nodes if n.output_shapes == ((model.detections_per_img, 4),)][-1:]
    assert boxes is not None
