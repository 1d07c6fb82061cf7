"""Bad input: one clear fxcost error per case, naming the problem and the fix, and the
model left untouched."""

import pytest
import torch
import torch.nn as nn
import torchvision

import fxcost
from conftest import analyze_quiet


def test_exception_hierarchy_is_exported():
    for error in (fxcost.InvalidModelError, fxcost.InvalidInputError, fxcost.TraceError, fxcost.ShapePropagationError):
        assert issubclass(error, fxcost.FxcostError)
    assert issubclass(fxcost.BudgetExceeded, AssertionError)


@pytest.mark.parametrize("thing, words", [
    (lambda x: x, ["expected a torch.nn.Module", "function"]),
    (torch.randn(3), ["expected a torch.nn.Module", "Tensor"]),
    ("resnet50", ["expected a torch.nn.Module", "str"]),
])
def test_not_a_module(thing, words):
    with pytest.raises(fxcost.InvalidModelError) as info:
        fxcost.analyze(thing, (1, 3))
    for word in words:
        assert word in str(info.value)


def test_scripted_and_compiled_modules():
    with pytest.raises(fxcost.InvalidModelError, match="TorchScript.*original nn.Module"):
        fxcost.analyze(torch.jit.script(nn.Linear(2, 2)), (1, 2))
    with pytest.raises(fxcost.InvalidModelError, match=r"torch.compile.*_orig_mod"):
        fxcost.analyze(torch.compile(nn.Linear(2, 2)), (1, 2))


def test_graph_module_is_accepted():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    gm = torch.fx.symbolic_trace(model)
    assert analyze_quiet(gm, (3, 4)).macs == analyze_quiet(model, (3, 4)).macs == 3 * (32 + 16)


def test_wrong_channels_names_the_layer_expected_and_got():
    model = torchvision.models.resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(fxcost.ShapePropagationError) as info:
        fxcost.analyze(model, (1, 1, 64, 64))
    message = str(info.value)
    assert "module 'conv1'" in message and "3 channels" in message and "got 1 channels" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_wrong_rank_and_wrong_dtype():
    with pytest.raises(fxcost.ShapePropagationError) as info:
        fxcost.analyze(torchvision.models.resnet18(), (3, 64, 64, 1, 1))
    message = str(info.value)
    assert "module 'conv1'" in message and "Expected 3D (unbatched) or 4D (batched) input" in message
    assert "the layer: Conv2d(3, 64, kernel_size=(7, 7)" in message and "received [3, 64, 64, 1, 1] float32" in message
    with pytest.raises(fxcost.ShapePropagationError, match="module '0'"):
        fxcost.analyze(nn.Sequential(nn.Linear(4, 4)), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(fxcost.ShapePropagationError, match="module '0'"):
        fxcost.analyze(nn.Sequential(nn.Linear(4, 4)), (2, 5))


def test_argument_count_and_unknown_keywords():
    class Two(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(fxcost.InvalidInputError, match=r"takes 2 input\(s\) \(x, y\) but the example input has 3"):
        fxcost.analyze(Two(), ((2,), (2,), (2,)))
    with pytest.raises(fxcost.InvalidInputError, match="no parameter 'z'; its inputs are: x, y"):
        fxcost.analyze(Two(), {"x": (2,), "z": (2,)})
    with pytest.raises(fxcost.InvalidInputError, match="needs argument 'y'"):
        fxcost.analyze(Two(), {"x": (2,)})


@pytest.mark.parametrize("bad, words", [
    (None, ["example_input is None", "shape such as (1, 3, 224, 224)"]),
    (3.5, ["float is not supported", "pass a tensor"]),
    ((1, -3, 4), ["negative size"]),
    ({1: torch.randn(2)}, ["non-string key", "parameter names"]),
])
def test_malformed_example_inputs(bad, words):
    with pytest.raises(fxcost.InvalidInputError) as info:
        fxcost.analyze(nn.Linear(4, 4), bad)
    for word in words:
        assert word in str(info.value)


def test_bad_options():
    with pytest.raises(fxcost.InvalidInputError, match="mode='inference' is not one of"):
        fxcost.analyze(nn.Linear(4, 4), (1, 4), mode="inference")
    with pytest.raises(fxcost.InvalidInputError, match="leaf_modules must hold nn.Module subclasses"):
        fxcost.analyze(nn.Linear(4, 4), (1, 4), leaf_modules=["Linear"])
    with pytest.raises(fxcost.InvalidInputError, match="no submodule 'head'"):
        fxcost.analyze(nn.Sequential(nn.Linear(4, 4)), (1, 4), exclude=["head"])
    with pytest.raises(fxcost.InvalidInputError, match="cannot read 'lots' as a quantity"):
        fxcost.assert_within(analyze_quiet(nn.Linear(4, 4), (1, 4)), macs="lots")


def test_non_tensor_leaves_lists_ints_and_none():
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, xs, repeats: int, mask=None):
            out = self.fc(xs[0]) + xs[1]
            for _ in range(repeats):  # a Python int: traced as the constant it is
                out = out * 2
            if mask is not None:
                out = out * mask
            return out

    report = analyze_quiet(Nested(), ([torch.randn(2, 4), torch.randn(2, 4)], 3))
    assert report.fallbacks == {} and report.macs == 2 * 16
    assert report.flops == (2 * 32 + 8) + 8 + 3 * 8
    report = analyze_quiet(Nested(), {"xs": [torch.Size([2, 4]), torch.Size([2, 4])], "repeats": 1, "mask": torch.ones(2, 4)})
    assert report.flops == (2 * 32 + 8) + 8 + 8 + 8


def test_parameters_on_several_devices_on_meta_and_in_half_precision():
    mixed = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2, device="meta"))
    assert analyze_quiet(mixed, (3, 4)).macs == 3 * (16 + 8)
    assert mixed[0].weight.device.type == "cpu" and mixed[1].weight.device.type == "meta"
    for dtype in (torch.float16, torch.bfloat16):
        model = nn.Sequential(nn.Linear(8, 8)).to(dtype)
        report = analyze_quiet(model, torch.empty(2, 8, dtype=dtype))
        assert report.param_bytes == 72 * 2 and report.node("_0").dtype == str(dtype).split(".")[1]
        assert model[0].weight.dtype is dtype


def test_model_that_raises_while_tracing():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, x):
            return self.inner(x)

    class Inner(nn.Module):
        def forward(self, x):
            raise RuntimeError("this model is broken")

    with pytest.raises(fxcost.ShapePropagationError) as info:
        fxcost.analyze(Broken(), (2, 2))
    message = str(info.value)
    assert "module 'inner'" in message and "this model is broken" in message and "test_robustness.py" in message
    with pytest.raises(fxcost.TraceError) as info:
        fxcost.analyze(Broken(), (2, 2), fallback=False)
    assert "module 'inner' (Inner)" in str(info.value) and 'raise RuntimeError("this model is broken")' in str(info.value)


@pytest.mark.parametrize("shape, words", [("1x3xAx224", "bad input shape"), ("0x3x224x224", "at least 1"),
                                          ("1x3x224x", "bad input shape")])
def test_cli_shape_strings(shape, words, capsys):
    from fxcost.cli import main

    try:
        code = main(["torchvision:resnet18", "--input", shape])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_many_blocks_fx_cannot_trace(monkeypatch):
    """100 blocks that branch on a shape: each is costed from its calls (none is lost to a cap
    on retries), and the blocks after the second failure of the class are kept whole without a
    retrace each."""
    import fxcost._trace as trace_module

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            if x.shape[0] > 1:  # a shape read by fx is a proxy: control flow on it cannot trace
                x = x * 2
            return self.fc(x)

    model = nn.Sequential(*[Branchy() for _ in range(100)])
    traces = []
    original = trace_module.trace
    monkeypatch.setattr(trace_module, "trace", lambda *a, **k: traces.append(1) or original(*a, **k))
    report = analyze_quiet(model, (4, 8))
    assert set(report.fallbacks) == {str(i) for i in range(100)}
    assert report.macs == 100 * 4 * 8 * 8  # 4 rows x (8 x 8) per Linear
    assert report.flops == 100 * (2 * 4 * 64 + 4 * 8 + 4 * 8)  # matmul, bias, the doubling
    assert len(traces) == 3  # fails at block 0, fails at block 1, then every block kept whole


@pytest.mark.parametrize("kept", ["list", "dict", "tuple", "attributes"])
def test_modules_kept_in_a_plain_list_are_mirrored(kept):
    """A module that also keeps its children in a plain list (``self.blocks = []`` beside
    ``add_module``, as UperNet's pyramid pooling does), a dict, a tuple or plain attributes
    runs them from there: fxcost must run its mirrors there, never the user's modules."""

    class Pyramid(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = [nn.Conv2d(4, 4, 1) for _ in range(3)]
            for i, block in enumerate(blocks):
                self.add_module(str(i), block)
            if kept == "list":
                self.blocks = blocks
            elif kept == "dict":
                self.table = {f"b{i}": block for i, block in enumerate(blocks)}
            elif kept == "tuple":
                self.__dict__["held"] = tuple(blocks)
            else:
                for i, block in enumerate(blocks):
                    self.__dict__[f"also{i}"] = block

        @property
        def blocks_kept(self):
            if kept == "list":
                return self.blocks
            if kept == "dict":
                return list(self.table.values())
            if kept == "tuple":
                return list(self.held)
            return [self.__dict__[f"also{i}"] for i in range(3)]

        def forward(self, x):
            return sum(block(x) for block in self.blocks_kept)

    model, calls = Pyramid(), []
    for block in model.blocks_kept:
        block.register_forward_pre_hook(lambda module, args: calls.append(module))
    with torch.device("meta"):
        on_meta = Pyramid()
    for subject in (model, on_meta):
        report = analyze_quiet(subject, (1, 4, 8, 8))
        assert report.macs == 3 * 64 * 16  # three 1x1 convolutions, 4 -> 4 channels, 8 x 8 outputs
        assert report.params == 3 * (16 + 4)
    assert calls and not any(called is block for called in calls for block in model.blocks_kept)  # (hooks are copied)
