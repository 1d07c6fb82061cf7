"""The pytest plugin, exercised with pytest's own pytester."""

import pathlib

import pytest

import fxcost

MODEL = """
import pytest
import torch.nn as nn

def make_model():
    # 1x3x32x32 input: conv 3->16 k3 p1 = 32*32*16*27 = 442,368 MACs; linear 16->10 = 160 MACs
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 10))

INPUT = (1, 3, 32, 32)
"""
MACS = 32 * 32 * 16 * 27 + 16 * 10
PARAMS = 16 * 27 + 16 + 16 * 10 + 10


def test_passing_budget_and_the_assertion_helper(pytester):
    pytester.makepyfile(MODEL + f"""
import fxcost

@pytest.mark.fxcost_budget(macs={MACS}, params="{PARAMS}", peak_activation="1MiB", flops="1G")
def test_ok(fxcost_budget):
    report = fxcost_budget(make_model(), INPUT)
    assert report.macs == {MACS}

def test_helper_anywhere():
    report = fxcost.analyze(make_model(), INPUT)
    fxcost.assert_within(report, macs="0.5M", param_bytes="{PARAMS * 4}", bytes_moved="1GiB", peak_memory="1MiB")
""")
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("limit, value, expect", [
    ("macs", MACS - 1, ["macs: 443 KMACs > limit 443 KMACs (+0.0%, 1 MACs over)", "largest contributors to macs", "100.0%  0 (Conv2d)"]),
    ("params", "500", ["params: 618 params > limit 500 params (+23.6%, 118 params over)", "72.5%  0 (Conv2d)",
                       "27.5%  4 (Linear)"]),
    ("flops", "100K", ["flops:", "> limit 100 KFLOPs"]),
    ("param_bytes", "1KiB", ["param_bytes: 2.41 KiB > limit 1 KiB"]),
    ("bytes_moved", "10KiB", ["bytes_moved:", "> limit 10 KiB"]),
    ("peak_activation", "70KiB", ["peak_activation: 140 KiB > limit 70 KiB (+100.0%, 70 KiB over)", "alive at the peak",
                                  "produced by input_1 (model input)", "64 KiB  produced by _0 (0)"]),
    ("peak_memory", "70KiB", ["peak_memory:", "> limit 70 KiB"]),
])
def test_each_failing_limit_says_what_grew(pytester, limit, value, expect):
    pytester.makepyfile(MODEL + f"""
@pytest.mark.fxcost_budget({limit}={value!r})
def test_over(fxcost_budget):
    fxcost_budget(make_model(), INPUT)
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*BudgetExceeded: fxcost budget exceeded for Sequential:*"])
    for text in expect:
        assert text in result.stdout.str(), text


def test_peak_activation_figure_is_right():
    # while the (out-of-place) ReLU runs: the input 1x3x32x32 (12 KiB, held by the caller),
    # the conv output 16x32x32 (64 KiB) and the ReLU output (64 KiB) = 140 KiB
    import torch.nn as nn
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    assert fxcost.analyze(model, (1, 3, 32, 32)).peak_activation_bytes == (3 + 16 + 16) * 32 * 32 * 4


def test_misspelled_limit_is_an_error(pytester):
    pytester.makepyfile(MODEL + """
@pytest.mark.fxcost_budget(mac="4G")
def test_typo(fxcost_budget):
    fxcost_budget(make_model(), INPUT)
""")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown budget limit(s) 'mac'*the limits are: macs, flops, params*"])


def test_bad_quantity_string_is_an_error(pytester):
    pytester.makepyfile(MODEL + """
@pytest.mark.fxcost_budget(macs="4.2 GMACs")
def test_bad(fxcost_budget):
    fxcost_budget(make_model(), INPUT)
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*cannot read '4.2 GMACs' as a quantity*"])


def test_baseline_write_then_compare(pytester, monkeypatch):
    pytester.makepyfile(test_base=MODEL + """
import os
WIDTH = int(os.environ.get("WIDTH", "16"))

@pytest.mark.fxcost_budget(baseline=True, tolerance="2%")
def test_regression(fxcost_budget):
    model = nn.Sequential(nn.Conv2d(3, WIDTH, 3, padding=1), nn.ReLU())
    fxcost_budget(model, INPUT)
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no fxcost baseline at*fxcost_baselines*test_base__test_regression.json*--fxcost-update*"])
    result = pytester.runpytest("--fxcost-update")
    result.assert_outcomes(passed=1)
    baseline = pytester.path / "fxcost_baselines" / "test_base__test_regression.json"
    assert baseline.exists() and '"macs": 442368' in baseline.read_text()
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    monkeypatch.setenv("WIDTH", "17")  # +6.25% MACs: over the 2% tolerance
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*macs: 470 KMACs > limit 451 KMACs*", "*baseline in*+ 2%*"])


@pytest.mark.parametrize("tb", ["auto", "long"])
def test_a_failure_shows_the_users_line_not_fxcost_source(pytester, tb):
    """Budget failures read like pytest assertions: the message and the test's own line, with
    fxcost's frames (the plugin fixture, assert_within, the baseline check) hidden."""
    pytester.makepyfile(test_hide=MODEL + """
import fxcost

@pytest.mark.fxcost_budget(macs=1000)
def test_marker(fxcost_budget):
    fxcost_budget(make_model(), INPUT)  # the marker's line

def test_helper():
    report = fxcost.analyze(make_model(), INPUT)
    fxcost.assert_within(report, params=10)  # the helper's line

@pytest.mark.fxcost_budget(baseline=True)
def test_baseline(fxcost_budget):
    fxcost_budget(make_model(), INPUT)  # the baseline's line
""")
    pytester.path.joinpath("fxcost_baselines").mkdir()
    pytester.path.joinpath("fxcost_baselines", "test_hide__test_baseline.json").write_text(
        '{"model": "Sequential", "figures": {"macs": 1000}}')
    result = pytester.runpytest(f"--tb={tb}")
    result.assert_outcomes(failed=3)
    text = result.stdout.str()
    lines = text.splitlines()
    for line in ("the marker's line", "the helper's line", "the baseline's line"):
        assert any(shown.startswith(">") and line in shown for shown in lines), line
    assert text.count("E       fxcost.BudgetExceeded: fxcost budget exceeded for Sequential:") == 3
    for source in ("_budget.py", "pytest_plugin.py", "raise BudgetExceeded", "problems.append", "def assert_within",
                   "def check", "def __call__"):
        assert source not in text, source


def test_report_option_prints_tables(pytester):
    pytester.makepyfile(MODEL + """
def test_a(fxcost_budget):
    fxcost_budget(make_model(), INPUT)
""")
    result = pytester.runpytest("--fxcost-report")
    result.stdout.fnmatch_lines(["*fxcost reports*", "*test_a: Sequential*", "*MACs:*443 KMACs*"])
    result = pytester.runpytest("--fxcost-report=node")
    result.stdout.fnmatch_lines(["*output shape*", "*Conv2d*"])


@pytest.mark.slow
def test_plugin_comes_from_the_installed_entry_point(pytester, monkeypatch):
    """No conftest, a subprocess: the fixture is there because fxcost is installed; with the
    entry point disabled (-p no:fxcost) it is not."""
    # the entry point is the installed one; the code it names is this copy of fxcost
    monkeypatch.setenv("PYTHONPATH", str(pathlib.Path(fxcost.__file__).parent.parent))
    pytester.makepyfile(MODEL + """
def test_fixture(fxcost_budget):
    fxcost_budget(make_model(), INPUT)
""")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:fxcost")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'fxcost_budget' not found*"])


def test_a_budget_on_the_planned_peak_of_a_rewritten_graph(pytester):
    """Two 64-channel branches written breadth-first, on a 1x4x16x16 float32 input (4 channels:
    4,096 B; 64 channels: 65,536 B). As written, both maps are alive at g1: x + a + b + g1 =
    139,264 B (136 KiB); reordered, one at a time: at g2, x + g1 + b + g2 = 77,824 B (76 KiB)."""
    pytester.makepyfile("""
import pytest
import torch
import torch.nn as nn
import fxcost
from fxcost.passes import schedule_for_peak

class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.f1, self.f2 = nn.Conv2d(4, 64, 1), nn.Conv2d(4, 64, 1)
        self.g1, self.g2 = nn.Conv2d(64, 4, 1), nn.Conv2d(64, 4, 1)

    def forward(self, x):
        a, b = self.f1(x), self.f2(x)
        return torch.cat([self.g1(a), self.g2(b)], 1)

X = torch.randn(1, 4, 16, 16)

@pytest.mark.fxcost_budget(peak_activation="100KiB")
def test_as_written(fxcost_budget):
    fxcost_budget(TwoHeads(), X)

@pytest.mark.fxcost_budget(peak_activation="100KiB")
def test_planned(fxcost_budget):
    schedule = schedule_for_peak(TwoHeads(), X)
    assert fxcost_budget.check(schedule.report).peak_activation_bytes == 77_824
    assert fxcost_budget(schedule.graph_module, X).peak_activation_bytes == 77_824

def test_helper():
    fxcost.assert_within(schedule_for_peak(TwoHeads(), X).report, peak_activation=77_824)
""")
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*peak_activation: 136 KiB > limit 100 KiB*"])
