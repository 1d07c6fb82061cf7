"""The analysis as a chain of stages: submodule narrowing keeps every option, one rule for
bytes read wherever a call was captured, and the package's layering (no import cycles,
private torch APIs in one file)."""

import ast
import pathlib

import pytest
import torch.nn as nn

import fxcost
from conftest import analyze_quiet

PACKAGE = pathlib.Path(fxcost.__file__).parent


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x, scale: float = 1.0):
        return self.b(self.a(x)) * scale


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(8, 8)
        self.inner = Inner()

    def forward(self, x):
        return self.inner(self.pre(x), 2.0)


def test_submodule_keeps_exclude():
    report = analyze_quiet(Outer(), (3, 8), submodule="inner", exclude=["inner.b"])
    assert report.params == 8 * 8 + 8  # inner.a only; inner.b is left out
    assert report.macs == 3 * 8 * 8
    assert report.model == "Inner"
    assert report.inputs == (("x", (3, 8), "float32"),)  # scale is the constant 2.0


def test_submodule_with_an_exclusion_elsewhere_counts_the_whole_submodule():
    report = analyze_quiet(Outer(), (3, 8), submodule="inner", exclude=["pre"])
    assert report.params == 2 * (8 * 8 + 8)
    assert report.macs == 2 * 3 * 8 * 8


def test_submodule_reports_parameter_names_relative_to_it():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.used(x)

    model = nn.Sequential(nn.Linear(4, 4), Unused())
    report = analyze_quiet(model, (2, 4), submodule="1")
    assert report.unused_params == ("spare.weight", "spare.bias")


class Twice(nn.Module):
    def forward(self, x):
        return x + x


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.twice = Twice()

    def forward(self, x):
        return self.twice(x)


def test_a_tensor_read_twice_by_one_op_is_read_once_however_it_was_captured():
    nbytes = 10 * 100 * 4
    traced = analyze_quiet(Twice(), (10, 100))
    captured = analyze_quiet(Holder(), (10, 100), leaf_modules=[Twice])  # costed from its recorded call
    (traced_add,) = [n for n in traced.nodes if n.op_type == "add"]
    (captured_add,) = [n for n in captured.nodes if n.op_type == "add"]
    assert traced_add.input_bytes == captured_add.input_bytes == nbytes
    assert traced_add.bytes_written == captured_add.bytes_written == nbytes


def test_two_halves_of_one_tensor_are_both_read():
    class Halves(nn.Module):
        def forward(self, x):
            return x[:, :50] * x[:, 50:]

    report = analyze_quiet(Halves(), (10, 100))
    (mul,) = [n for n in report.nodes if n.op_type == "mul"]
    assert mul.input_bytes == 10 * 100 * 4  # two views of 10 x 50 each: the whole storage


def _imports(path: pathlib.Path) -> set[str]:
    """fxcost modules ``path`` imports anywhere (function bodies too), TYPE_CHECKING blocks aside."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_no_import_cycles():
    graph = {p.stem: _imports(p) & {q.stem for q in PACKAGE.glob("*.py")} for p in PACKAGE.glob("*.py")}
    graph["__init__"] = set()  # the public surface imports everything; nothing imports it

    def visit(module, stack):
        assert module not in stack, " -> ".join([*stack, module])
        for target in graph.get(module, ()):
            visit(target, [*stack, module])

    for module in graph:
        visit(module, [])


def test_records_import_no_view():
    assert _imports(PACKAGE / "_records.py") <= {"_errors"}
    views = {"_aggregate", "_table", "_roofline", "_compare", "_budget", "plot"}
    for view in views:
        assert "_report" not in _imports(PACKAGE / f"{view}.py"), view


def test_private_torch_apis_live_in_one_module():
    offenders = []
    for path in PACKAGE.glob("*.py"):
        if path.name == "_compat.py":
            continue
        text = path.read_text()
        for needle in ("torch._subclasses", "torch.utils._pytree", "torch.utils._python_dispatch", "_cdata",
                       "nn_module_stack", "torch.fx.immutable_collections", "torch._C"):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert offenders == []


# --- the collector and the graphs of an analysis ---------------------------------------------------

def _collections_during(call):
    """(result, [generation of every cyclic collection that ran during ``call()``])."""
    import gc

    seen = []

    def note(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    try:
        return call(), seen
    finally:
        gc.callbacks.remove(note)


class Branching(nn.Module):
    """fx cannot trace its blocks (a branch on a tensor's value): they are kept whole."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*[Gate() for _ in range(8)])

    def forward(self, x):
        return self.blocks(x)


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else self.b(x)


@pytest.mark.parametrize("kind", ["traced", "kept whole"])
def test_analysis_runs_no_collection_but_one_young_pass_and_leaves_no_cycles(kind):
    import gc

    import torchvision

    model, shape = (torchvision.models.resnet18(), (1, 3, 64, 64)) if kind == "traced" else (Branching(), (2, 8))
    analyze_quiet(model, shape)  # (imports and caches)
    gc.collect()
    assert gc.isenabled()
    report, collections = _collections_during(lambda: analyze_quiet(model, shape))
    assert gc.isenabled()
    assert collections == [0]  # hundreds of thousands of allocations, one young-generation pass
    assert report.macs > 0
    # what the analysis made in reference cycles was freed by that pass: a full collection finds
    # next to nothing of it (torch's tracer leaves a few closures; resnet18 alone is 60+ modules
    # with a dozen dicts each, thousands of objects)
    assert gc.collect() < 300


def test_a_collector_disabled_by_the_caller_stays_disabled():
    import gc

    gc.disable()
    try:
        _, collections = _collections_during(lambda: analyze_quiet(Outer(), (3, 8)))
        assert not gc.isenabled()
        assert collections == []
    finally:
        gc.enable()


def test_lean_graphs_make_the_nodes_fx_makes():
    import torch.fx as fx
    import torchvision

    from fxcost._compat import LeanGraph
    from fxcost._trace import CostTracer

    model = torchvision.models.resnet18()
    ours = CostTracer().trace(model)
    theirs = fx.Tracer().trace(model)
    assert type(ours) is LeanGraph and type(theirs) is fx.Graph

    def described(graph):
        return [(n.name, n.op, n.target, str(n.args), str(n.kwargs), n.type) for n in graph.nodes]

    assert described(ours) == described(theirs)
    ours.lint()


def test_module_walks_match_torch():
    """fxcost's walks of the module tree give what nn.Module's own give, in the same order:
    shared modules and tied parameters once (or, asked for, a module under every path)."""
    import torch
    import torchvision

    from fxcost._walk import modules_of, named_modules_of, named_tensors_of

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = self.a  # one module under two paths
            self.c = nn.Sequential(nn.ReLU(), self.a)
            self.register_buffer("steps", torch.zeros(2))
            self.register_module("absent", None)
            self.tied = self.a.weight  # (not registered: no parameter of its own)
            self.d = nn.Linear(2, 2)
            self.d.weight = self.a.weight  # a tied parameter

    for model in (Tied(), torchvision.models.resnet18(), torchvision.models.efficientnet_b0()):
        for remove_duplicate in (True, False):
            assert named_modules_of(model, remove_duplicate) == list(model.named_modules(remove_duplicate=remove_duplicate))
        assert modules_of(model) == list(model.modules())
        assert named_tensors_of(model, "_parameters") == list(model.named_parameters())
        assert named_tensors_of(model, "_buffers") == list(model.named_buffers())
