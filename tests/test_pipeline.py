"""The analysis as a chain of stages: submodule narrowing keeps every option, one rule for
bytes read wherever a call was captured, and the package's layering (no import cycles,
private torch APIs in one file)."""

import ast
import pathlib

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
