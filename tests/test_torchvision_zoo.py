"""Every torchvision classification model against the figures torchvision publishes with
its weights: ``_ops`` (GMACs, rounded to 3 decimals) and ``num_params``."""

import pytest
from torchvision.models import get_model_weights

from conftest import analyze_quiet
from zoo import CLASSIFICATION, build_on_meta, input_size


def test_the_whole_zoo_is_listed():
    assert len(CLASSIFICATION) >= 80


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_published_ops_and_params(name):
    weights = get_model_weights(name).DEFAULT
    model = build_on_meta(name, weights)
    size = input_size(weights)
    report = analyze_quiet(model, (1, 3, size, size))
    published_gmacs = weights.meta["_ops"]
    gmacs = report.macs / 1e9
    assert abs(gmacs / published_gmacs - 1) < 0.005 or round(gmacs, 3) == published_gmacs, (
        f"{name}: {gmacs:.4f} GMACs, torchvision publishes {published_gmacs}"
    )
    assert report.params == weights.meta["num_params"]
    assert report.complete
