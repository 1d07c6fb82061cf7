"""Converted quantized models: costed as the float modules they compute, weights counted at
their real int8 size, activations at int8 when asked."""

import warnings

import pytest
import torch
import torchvision

import fxcost


def converted(name):
    model = torchvision.models.get_model(f"quantized_{name}", weights=None, quantize=False).eval()
    model.fuse_model()
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare(model, inplace=True)
        model(torch.randn(1, 3, 64, 64))  # calibration, on the test's own random data
        torch.ao.quantization.convert(model, inplace=True)
    return model


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_quantized_model_costs_like_its_float_twin(name):
    model = converted(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.quantize_per_tensor(torch.randn(1, 3, 224, 224), 0.05, 64, torch.quint8)
    report = fxcost.analyze(model, x)
    float_model = torchvision.models.get_model(f"quantized_{name}", weights=None, quantize=False).eval()
    assert report.macs == fxcost.analyze(float_model, (1, 3, 224, 224)).macs
    assert report.complete and report.quantized
    # packed weights are not nn.Parameters: counted from the quantized modules themselves
    qlayers = [m for m in model.modules() if hasattr(m, "weight") and callable(m.weight)]
    expected = sum(m.weight().numel() + (m.bias().numel() if m.bias() is not None else 0) for m in qlayers)
    assert report.params == expected and report.trainable_params == 0
    int8_bytes = sum(m.weight().numel() + (4 * m.bias().numel() if m.bias() is not None else 0) for m in qlayers)
    assert report.param_bytes == int8_bytes  # int8 weights, float32 biases
    fc = [n for n in report.nodes if n.module_path.endswith(("classifier.1", "fc")) and n.weight_bytes][0]
    assert report.module_types[fc.module_path] == "Linear" and "quantized" in report.quantized[fc.module_path]
    int8 = fxcost.analyze(model, x, memory=fxcost.MemoryOptions(activation_dtype=torch.int8))
    assert int8.peak_activation_bytes * 4 == report.peak_activation_bytes


def test_unknown_quantized_module_is_a_clear_error():
    import torch.ao.nn.quantized as nnq

    model = torch.nn.Sequential(nnq.Embedding(10, 4))
    with pytest.raises(fxcost.InvalidModelError, match=r"module '0' \(Embedding\).*no float equivalent.*quantize=False"):
        fxcost.analyze(model, torch.zeros(2, dtype=torch.long))
