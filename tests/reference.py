"""torch's own FLOP counter as the independent reference for MACs, made honest on the CPU.

``torch.utils.flop_counter.FlopCounterMode`` is torch's count of the matmul-class work a run
dispatches (2 FLOPs per multiply-accumulate). In torch 2.14.1 it has formulas for the CUDA
flash, memory-efficient and cuDNN attention kernels, but none for
``aten._scaled_dot_product_flash_attention_for_cpu`` — the kernel that
``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` dispatch to on a CPU tensor
— nor for its backward: it counts such an attention as 0 FLOPs without a word. On the meta
device the same call decomposes into two ``bmm``s, which it does count.

:func:`torch_macs` registers torch's *own* formulas for those two CPU ops (``sdpa_flop`` and
``sdpa_backward_flop``, the functions torch already maps to the CUDA flash kernels; the
argument order of the CPU ops is the same), so the reference is still torch's formula, applied
to the op torch forgot. It also refuses to answer when the run dispatched a matmul-class op
that the counter has no formula for (``aten._native_multi_head_attention`` on the fused
``MultiheadAttention`` fast path, ``aten.mv``, ``aten.dot``, an RNN kernel, a triangular solve
(``aten.linalg_solve_triangular``: forward or back substitution, a multiply-accumulate per
coefficient, which gated delta-rule attention runs)...): a reference
that silently counts 0 for part of a model would let a wrong number pass.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop, sdpa_flop

aten = torch.ops.aten

#: torch's formulas, unwrapped: FlopCounterMode wraps every custom_mapping entry in its
#: tensor-to-shape adapter, and the registered functions already carry one.
CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flop.__wrapped__,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_backward_flop.__wrapped__,
}

#: Name parts of aten ops that do multiply-accumulate work of the matmul class.
_MATMUL_CLASS = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "matmul", "einsum",
                 "linear", "attention", "conv", "convolution", "conv1d", "conv2d", "conv3d", "lstm", "gru",
                 "rnn", "triangular"}


class _OpsSeen(TorchDispatchMode):
    """Records the overload packet of every aten op dispatched under it."""

    def __init__(self):
        super().__init__()
        self.ops: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = getattr(func, "overloadpacket", None)  # higher-order ops have none
        if packet is not None:
            self.ops.add(packet)
        return func(*args, **(kwargs or {}))


def _matmul_class(op) -> bool:
    return any(part in _MATMUL_CLASS for part in op.__name__.split(".")[-1].strip("_").split("_"))


def torch_flops(run) -> int:
    """FLOPs torch's FlopCounterMode (with the CPU attention formulas) counts while ``run()``
    executes; raises if a matmul-class op it cannot count was dispatched."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
    seen = _OpsSeen()
    with counter, seen:
        run()
    uncounted = sorted(op.__name__ for op in seen.ops if _matmul_class(op) and op not in counter.flop_registry)
    if uncounted:
        raise AssertionError(f"FlopCounterMode has no formula for {uncounted}: not a usable reference here")
    return counter.get_total_flops()


def torch_macs(module, *args, **kwargs) -> int:
    """MACs of ``module(*args, **kwargs)`` by torch's FlopCounterMode (2 FLOPs per MAC). Runs
    with gradients enabled, so ``nn.MultiheadAttention`` takes its unfused path (the fused fast
    path is one op no counter knows); on meta tensors no kernel runs."""
    with torch.enable_grad():
        flops = torch_flops(lambda: module(*args, **kwargs))
    assert flops % 2 == 0, flops
    return flops // 2


def torch_backward_macs(module, *args, loss_of=lambda output: output.sum(), **kwargs) -> int:
    """MACs of the backward of ``loss_of(module(...))`` by torch's FlopCounterMode on a real run:
    the count of forward and backward together, less the forward's."""
    with torch.enable_grad():
        forward = torch_flops(lambda: module(*args, **kwargs))
        outputs = []
        total = torch_flops(lambda: outputs.append(loss_of(module(*args, **kwargs))) or outputs[0].backward())
    module.zero_grad(set_to_none=True)
    assert (total - forward) % 2 == 0, (total, forward)
    return (total - forward) // 2
