"""Every torchvision classification model: MACs equal to torch's FlopCounterMode run on the same
meta model, and to the figures torchvision publishes with its weights (``_ops``, GMACs printed
with 3 decimals, and ``num_params``)."""

import pytest
import torch
from torchvision.models import get_model_weights

from conftest import analyze_quiet
from reference import torch_macs
from zoo import CLASSIFICATION, assert_published, build_on_meta, input_size

#: A few quick models run by `pytest -m "not slow"`; the whole zoo is marked slow.
QUICK = {"resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5"}


def test_the_whole_zoo_is_listed():
    assert len(CLASSIFICATION) >= 80


@pytest.mark.parametrize("name", [name if name in QUICK else pytest.param(name, marks=pytest.mark.slow)
                                  for name in CLASSIFICATION])
def test_macs_equal_torch_flop_counter_and_published_figures(name):
    weights = get_model_weights(name).DEFAULT
    model = build_on_meta(name, weights).eval()  # eval for the reference run too (inception's aux head)
    size = input_size(weights)
    report = analyze_quiet(model, (1, 3, size, size))
    assert report.complete
    assert report.macs == torch_macs(model, torch.empty(1, 3, size, size, device="meta"))
    assert_published(report, name)
