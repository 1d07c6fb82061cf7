"""pytest plugin: cost budgets as tests (registered through the ``pytest11`` entry point).

    @pytest.mark.fxcost_budget(macs="4.2G", peak_activation="25MiB")
    def test_resnet_budget(fxcost_budget):
        fxcost_budget(torchvision.models.resnet50(), (1, 3, 224, 224))

Options: ``--fxcost-update`` records baselines, ``--fxcost-report[=node|module]`` prints the
table of every analysed model in the terminal summary.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from ._budget import QUANTITIES, assert_near_baseline, assert_within, check_limit_names, write_baseline

_MARKER_OPTIONS = ("baseline", "tolerance")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fxcost", "fxcost cost budgets")
    group.addoption("--fxcost-update", action="store_true", default=False,
                    help="record the analysed figures as the new baselines instead of comparing")
    group.addoption("--fxcost-report", nargs="?", const="module", default=None, choices=("node", "module"),
                    help="print the per-module (default) or per-node table of every analysed model")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fxcost_budget(**limits, baseline=False, tolerance=0): cost limits checked by the fxcost_budget fixture; "
        f"limits: {', '.join(QUANTITIES)} (numbers or strings like '4.2G', '25MiB'); baseline=True also compares "
        "with the figures recorded by --fxcost-update, within tolerance (e.g. '2%')",
    )
    config._fxcost_reports = []  # (test id, Report)


class Budget:
    """Analyse a model and check it against the test's limits: call it like ``analyze``."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        marker = request.node.get_closest_marker("fxcost_budget")
        kwargs = dict(marker.kwargs) if marker else {}
        if marker and marker.args:
            raise pytest.UsageError("fxcost_budget marker takes keyword arguments only, e.g. macs='4.2G'")
        self.baseline = kwargs.pop("baseline", False)
        self.tolerance = kwargs.pop("tolerance", 0)
        check_limit_names(kwargs, f" in @pytest.mark.fxcost_budget of {request.node.nodeid}")
        self.limits: dict[str, Any] = kwargs
        self.reports: list = []

    @property
    def baseline_path(self) -> str:
        """Where this test's baseline lives: ``fxcost_baselines/<file>__<test>.json`` beside it."""
        node = self._request.node
        directory = os.path.dirname(str(node.path))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{node.path.stem}__{node.name}")
        suffix = f"_{len(self.reports)}" if len(self.reports) > 1 else ""
        return os.path.join(directory, "fxcost_baselines", name + suffix + ".json")

    def __call__(self, model, example_input, *, baseline: bool | None = None, tolerance: Any = None, **options):
        """``fxcost.analyze(model, example_input, **options)``, then check the marker's
        limits (and the baseline); returns the Report."""
        __tracebackhide__ = True  # a failure reads like an assertion on the test's own line
        from . import analyze

        report = analyze(model, example_input, **options)
        return self.check(report, baseline=baseline, tolerance=tolerance)

    def check(self, report, *, baseline: bool | None = None, tolerance: Any = None, **limits):
        """Check an existing report against the marker's limits plus ``limits``."""
        __tracebackhide__ = True
        self.reports.append(report)
        self._request.config._fxcost_reports.append((self._request.node.nodeid, report))
        assert_within(report, **{**self.limits, **limits})
        use_baseline = self.baseline if baseline is None else baseline
        if use_baseline:
            if self._request.config.getoption("fxcost_update"):
                write_baseline(self.baseline_path, report)
            else:
                assert_near_baseline(report, self.baseline_path, self.tolerance if tolerance is None else tolerance)
        return report


@pytest.fixture
def fxcost_budget(request: pytest.FixtureRequest) -> Budget:
    """Analyse models and fail the test when they exceed the ``fxcost_budget`` marker's limits."""
    return Budget(request)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    view = config.getoption("fxcost_report")
    reports = getattr(config, "_fxcost_reports", [])
    if not view or not reports:
        return
    terminalreporter.section("fxcost reports")
    for nodeid, report in reports:
        terminalreporter.write_line(f"{nodeid}: {report.model}")
        table = report.module_table(depth=1) if view == "module" else report.table()
        terminalreporter.write_line(table)
        terminalreporter.write_line(report.summary())
        terminalreporter.write_line("")
