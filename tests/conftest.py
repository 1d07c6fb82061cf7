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
