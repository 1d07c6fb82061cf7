import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def analyze_quiet(model, example_input, **options):
    """analyze() with the unsupported-op warning turned into a test failure."""
    import fxcost

    with warnings.catch_warnings():
        warnings.simplefilter("error", fxcost.UnsupportedOpWarning)
        return fxcost.analyze(model, example_input, **options)
