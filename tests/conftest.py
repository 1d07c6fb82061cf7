import warnings

import torch
import torch._dynamo  # noqa: F401 - imported up front: pytester's in-process runs drop modules
# first imported inside them, and re-importing triton's native extension aborts the process.

pytest_plugins = ["pytester"]


def analyze_quiet(model, example_input, **options):
    """analyze() with the unsupported-op warning turned into a test failure."""
    import fxcost

    with warnings.catch_warnings():
        warnings.simplefilter("error", fxcost.UnsupportedOpWarning)
        return fxcost.analyze(model, example_input, **options)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the property-based tests with many more examples")


def pytest_configure(config):
    import os

    if config.getoption("--slow"):
        os.environ["FXCOST_FUZZ_SLOW"] = "1"  # read by test_fuzz when it is collected


_coverage: dict[str, list[str]] = {}


def pytest_runtest_logreport(report):
    """Tally the coverage tests' outcomes per family for the summary line."""
    if report.when != "call" or "test_coverage.py" not in report.nodeid or "[" not in report.nodeid:
        return
    family = report.nodeid.split("::")[1].split("[")[0]
    _coverage.setdefault(family, []).append(report.outcome)


def pytest_terminal_summary(terminalreporter):
    if not _coverage:
        return
    terminalreporter.section("fxcost coverage")
    for family, outcomes in sorted(_coverage.items()):
        passed = outcomes.count("passed")
        terminalreporter.write_line(f"{family}: {passed}/{len(outcomes)} passed ({100 * passed / len(outcomes):.0f}%)")
