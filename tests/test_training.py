"""One steady-state training step: backward MACs against torch's FlopCounterMode on a real
forward+backward (or by hand where that counter is wrong), and the step's peak memory
against a real CPU step measured storage by storage. Gradient and optimizer-state bytes by
hand."""

import copy
import logging
import warnings

import pytest
import torch
import torch.nn as nn
import torchvision

import fxcost
from memory_probe import measure_training_step
from reference import torch_backward_macs, torch_macs

OPTIMIZERS = {
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3),
}


def fp32_bytes(model, trainable=True):
    return sum(p.numel() * 4 for p in model.parameters() if p.requires_grad == trainable)


def trainable_tensors(model):
    return sum(1 for p in model.parameters() if p.requires_grad)


def state_bytes(name, model):
    """SGD with momentum keeps one buffer per parameter; AdamW two, and a float32 step counter
    per parameter tensor."""
    if name == "sgd-momentum":
        return fp32_bytes(model)
    return 2 * fp32_bytes(model) + 4 * trainable_tensors(model)


def check_step(model, inputs, optimizer, loss_of=lambda output: output.sum(), **training):
    """Analyse one step and run it for real; compare everything that can be compared exactly."""
    example = inputs if isinstance(inputs, dict) else tuple(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxcost.TraceFallbackWarning)
        report = fxcost.analyze(model, example, training=fxcost.Training(optimizer, **training))
    real = copy.deepcopy(model)
    args = tuple(inputs.values()) if isinstance(inputs, dict) else tuple(inputs)
    measured = measure_training_step(real, args, OPTIMIZERS[optimizer](real.parameters()), loss_of=loss_of,
                                     autocast=training.get("amp"))
    assert report.gradient_bytes == fp32_bytes(model)
    assert report.optimizer_state_bytes == state_bytes(optimizer, model)
    return report, measured["peak"]


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def frozen_resnet():
    model = torchvision.models.resnet18()
    model.conv1.requires_grad_(False)
    model.layer1.requires_grad_(False)  # a frozen stage: no gradients, no state, no weight-gradient MACs
    return model


@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adamw"])
def test_resnet18_step_equals_a_real_step(optimizer):
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    x = torch.randn(2, 3, 64, 64)
    report, measured = check_step(model, (x,), optimizer)
    assert report.train_peak_bytes == measured
    assert report.backward_macs == torch_backward_macs(copy.deepcopy(model).train(), x)
    assert sum(report.train_memory.values()) == report.train_peak_bytes
    assert report.train_memory["weights"] == fp32_bytes(model) + sum(b.numel() * b.element_size()
                                                                      for b in model.buffers())
    assert report.train_memory["inputs"] == x.numel() * 4


def test_first_convolution_has_only_its_weight_gradient():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    report = fxcost.analyze(model, (2, 3, 64, 64), training=fxcost.Training("sgd"))
    conv1 = report.node("conv1")
    assert conv1.backward_macs == conv1.macs  # no input gradient: the image needs none
    layer = report.node("layer1_0_conv1")
    assert layer.backward_macs == 2 * layer.macs  # input and weight gradients


def test_frozen_layers_get_no_gradient_state_or_weight_gradient():
    torch.manual_seed(0)
    model = frozen_resnet()
    x = torch.randn(2, 3, 64, 64)
    report, measured = check_step(model, (x,), "adamw")
    assert report.train_peak_bytes == measured
    assert report.backward_macs == torch_backward_macs(copy.deepcopy(model).train(), x)
    assert report.node("conv1").backward_macs == 0  # frozen, and its input needs no gradient
    frozen_conv = report.node("layer1_0_conv2")
    assert frozen_conv.backward_macs == frozen_conv.macs  # input gradient only: layer2 needs it
    assert report.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_lstm_step_equals_a_real_step():
    torch.manual_seed(0)
    model = Recurrent()
    x = torch.randn(2, 10, 16)
    with torch.backends.mkldnn.flags(enabled=False):  # the portable kernel, as fxcost analyses it
        report, measured = check_step(model, (x,), "adamw")
        assert report.backward_macs == torch_backward_macs(copy.deepcopy(model).train(), x)
    assert report.train_peak_bytes == measured
    # by hand: every gate matmul has an input and a weight gradient (2x the forward), less
    # the first layer's input gradient (x needs none) and each layer's gradient for h0 (zeros)
    steps, batch, hidden = 10, 2, 32
    forward = steps * batch * 4 * hidden * ((16 + hidden) + (hidden + hidden))
    first_input = steps * batch * 4 * hidden * 16
    initial_state = 2 * batch * 4 * hidden * hidden
    head = steps * batch * 32 * 4
    assert report.backward_macs == 2 * forward - first_input - initial_state + 2 * head


@pytest.mark.slow
def test_vit_b_16_backward_macs_equal_flop_counter():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=64)
    x = torch.randn(1, 3, 64, 64)
    report = fxcost.analyze(model, x, training=fxcost.Training("sgd"))
    assert report.backward_macs == torch_backward_macs(copy.deepcopy(model).train(), x)


@pytest.fixture(scope="module")
def transformers():
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers


def gpt2(transformers):
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128))


@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adamw"])
def test_gpt2_step_equals_a_real_step(transformers, optimizer):
    model = gpt2(transformers)
    ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    report, measured = check_step(model, {"input_ids": ids}, optimizer, loss_of=lambda output: output.logits.sum())
    assert report.train_peak_bytes == measured
    assert report.backward_macs == torch_backward_macs(copy.deepcopy(model).train(), input_ids=ids,
                                                       loss_of=lambda output: output.logits.sum())


def test_gpt2_loss_from_labels(transformers):
    model = gpt2(transformers)
    ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fxcost.TraceFallbackWarning)
        report = fxcost.analyze(model, {"input_ids": ids, "labels": ids}, training=fxcost.Training("adamw"))
    assert report.training.loss == "output.loss"
    real = copy.deepcopy(model)
    measured = measure_training_step(real, (ids, None, None, None, None, None, None, None, ids),
                                     torch.optim.AdamW(real.parameters(), lr=1e-3), loss_of=lambda output: output.loss)
    assert report.train_peak_bytes == measured["peak"]


def test_bfloat16_autocast_step_within_five_percent_of_a_real_one():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    report, measured = check_step(model, (torch.randn(2, 3, 64, 64),), "adamw", amp=torch.bfloat16)
    assert abs(report.train_peak_bytes / measured - 1) < 0.05
    assert report.training.amp == "bfloat16"
    plain = fxcost.analyze(model, (2, 3, 64, 64), training=fxcost.Training("adamw"))
    # saved activations are bfloat16 where autocast computed in it: fewer bytes than in float32
    peak_activations = fxcost.analyze(model, (2, 3, 64, 64), training=fxcost.Training(None, amp=torch.bfloat16))
    float32 = fxcost.analyze(model, (2, 3, 64, 64), training=fxcost.Training(None))
    assert peak_activations.train_memory["activations"] < float32.train_memory["activations"]
    assert plain.macs == report.macs


class Checkpointed(nn.Module):
    """resnet18 running its four stages under torch.utils.checkpoint, as a user would."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
            x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False)
        return m.fc(torch.flatten(m.avgpool(x), 1))


def test_activation_checkpointing_trades_saved_activations_for_recomputation():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    x = torch.randn(2, 3, 64, 64)
    stages = ["layer1", "layer2", "layer3", "layer4"]
    plain = fxcost.analyze(model, x, training=fxcost.Training("sgd"))
    checkpointed = fxcost.analyze(model, x, training=fxcost.Training("sgd", checkpoint=stages))
    assert checkpointed.training.checkpointed == tuple(stages)
    assert checkpointed.train_memory["activations"] < plain.train_memory["activations"]
    # the recomputed forward of the four stages appears in the backward
    recomputed = sum(checkpointed.total(stage).macs for stage in stages)
    assert checkpointed.backward_macs == plain.backward_macs + recomputed
    # a real step of the same model checkpointed by hand: same memory, same MACs in all
    real = Checkpointed(copy.deepcopy(model))
    measured = measure_training_step(real, (x,), torch.optim.SGD(real.parameters(), lr=0.01))
    assert checkpointed.train_peak_bytes == measured["peak"]
    assert checkpointed.macs + checkpointed.backward_macs == torch_backward_macs(real.train(), x) + torch_macs(real, x)
    # and a model that checkpoints itself is analysed as it runs
    itself = fxcost.analyze(Checkpointed(model), x, training=fxcost.Training("sgd"))
    assert itself.backward_macs == checkpointed.backward_macs


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_grouped_convolution_backward_by_hand(name):
    """torch's FlopCounterMode overcounts the backward of grouped convolutions: here every
    layer doing MACs is a convolution or linear layer, so the backward does twice the forward
    (input and weight gradients), less the first convolution's input gradient."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    report = fxcost.analyze(model, (1, 3, 64, 64), training=fxcost.Training(None))
    forward = torch_macs(model.train(), torch.empty(1, 3, 64, 64, device="meta"))  # torch is right forward
    first = report.node("features_0_0").macs
    assert report.backward_macs == 2 * forward - first


def test_depthwise_convolution_backward_is_twice_its_forward():
    conv = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1, groups=32))
    report = fxcost.analyze(conv, (1, 32, 16, 16), training=fxcost.Training("sgd"))
    depthwise = report.node("_1")
    assert depthwise.macs == 73_728 and depthwise.backward_macs == 147_456


@pytest.mark.slow
def test_llama_70b_on_meta_holds_sixteen_bytes_per_parameter():
    import sys
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "benchmarks"))
    from scale_models import Llama

    with torch.device("meta"):
        model = Llama()
    report = fxcost.analyze(model, (torch.zeros(1, 128, dtype=torch.long),), training=fxcost.Training("adamw"))
    params = sum(p.numel() for p in model.parameters())
    held = report.train_memory["weights"] + report.gradient_bytes + report.optimizer_state_bytes
    # weights 4 + gradients 4 + Adam's two moments 8 bytes per parameter, and a float32 step
    # counter per parameter tensor
    assert held == 16 * params + 4 * trainable_tensors(model)
    assert all(p.device.type == "meta" and p.grad is None for p in model.parameters())


def test_the_users_model_is_left_as_it_was():
    model = torchvision.models.resnet18()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fxcost.analyze(model, (2, 3, 32, 32), training=fxcost.Training("adamw"))
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_training_input_is_a_clear_error():
    model = nn.Linear(4, 2)
    with pytest.raises(fxcost.InvalidInputError, match="unknown optimizer 'adamx'"):
        fxcost.analyze(model, (3, 4), training=fxcost.Training("adamx"))
    with pytest.raises(fxcost.InvalidInputError, match="must be a scalar tensor, got \\(3, 2\\)"):
        fxcost.analyze(model, (3, 4), training=fxcost.Training(loss=lambda output, target: output))
    with pytest.raises(fxcost.InvalidInputError, match="target"):
        fxcost.analyze(model, (3, 4), training=fxcost.Training(
            loss=lambda output, target: nn.functional.mse_loss(output, target), target=(5, 7)))
    frozen = nn.Linear(4, 2).requires_grad_(False)
    with pytest.raises(fxcost.InvalidInputError, match="no parameter with requires_grad=True"):
        fxcost.analyze(frozen, (3, 4), training=fxcost.Training())
    with pytest.raises(fxcost.InvalidInputError, match="fxcost.Training"):
        fxcost.analyze(model, (3, 4), training="adamw")


def test_a_loss_with_a_target():
    model = nn.Linear(4, 2)
    report = fxcost.analyze(model, (3, 4), training=fxcost.Training(
        "sgd", loss=lambda output, target: nn.functional.mse_loss(output, target), target=(3, 2)))
    assert report.training.loss == "<lambda>"
    # forward 3x4x2 MACs; backward: weight gradient only (the input needs none)
    assert report.macs == 24 and report.backward_macs == 24


def test_training_figures_in_json_budgets_and_tables(tmp_path):
    report = fxcost.analyze(torchvision.models.resnet18(), (2, 3, 32, 32), training=fxcost.Training("adamw"))
    again = fxcost.Report.from_json(report.to_json())
    assert again == report and again.train_peak_bytes == report.train_peak_bytes
    assert "bwd MACs" in report.table() and "train peak:" in report.summary()
    assert "bwd MACs" in report.module_table()
    with pytest.raises(fxcost.BudgetExceeded, match="train_peak_memory.*saved for the backward|train_peak_memory"):
        fxcost.assert_within(report, train_peak_memory=report.train_peak_bytes - 1)
    fxcost.assert_within(report, train_peak_memory=report.train_peak_bytes, step_flops=report.step_flops,
                         backward_flops=report.backward_flops)
    assert report.step_flops == (report.flops + report.backward_flops + report.training.loss_flops
                                 + report.training.optimizer_flops)
    inference = fxcost.analyze(torchvision.models.resnet18(), (2, 3, 32, 32))
    with pytest.raises(fxcost.InvalidInputError, match="need a training step"):
        fxcost.assert_within(inference, backward_flops=1)
    with pytest.raises(AttributeError, match="no training step"):
        inference.backward_macs
    pytest.importorskip("matplotlib")
    from fxcost.plot import plot_training_memory

    assert plot_training_memory(report, str(tmp_path / "step.png"))
    assert (tmp_path / "step.png").stat().st_size > 10_000
