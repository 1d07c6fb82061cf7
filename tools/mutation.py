"""Run mutmut over fxcost's formulas, cost rules and liveness (configured in pyproject.toml).

    python tools/mutation.py run              # every mutant (resumes; results are cached)
    python tools/mutation.py results          # the survivors
    python tools/mutation.py show NAME        # the diff of one mutant

mutmut 3 leaves every decorated function alone: a decorator runs at import time, and the
mutated copies it writes beside the original would run it again (a web route registered
twice). Every rule in ``fxcost/rules.py`` is a function registered with ``@register(...)``, so
without this script mutmut would mutate 26 lines of that file. Here the decorator stays on the
trampoline mutmut puts in the function's place (registered once, as before), and the original
and mutated copies are written without it: plain functions the trampoline calls. Nothing else
of mutmut changes; the arguments are mutmut's own.

mutmut forks one process per mutant from a process that has already run the tests once, and a
forked child hangs in the first multi-threaded torch kernel (OpenMP's thread pool does not
survive ``fork``): the tests that run a real model (the measured memory peaks, torch's
``FlopCounterMode`` references) would time out instead of failing. This script runs torch on
one thread per process, which forks safely; mutmut runs one process per core.
"""

from __future__ import annotations

import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"  # before anything imports torch: see above

import libcst as cst

try:
    import mutmut.mutation.file_mutation as file_mutation
    from mutmut.__main__ import cli
except ImportError as error:  # pragma: no cover - a missing extra
    sys.exit(f"mutmut 3 is not installed ({error}): pip install -e '.[mutation]'")

_REGISTER = "register"

if not (hasattr(file_mutation, "MutationVisitor") and hasattr(file_mutation, "function_trampoline_arrangement")):
    sys.exit("this mutmut version lays out its mutants differently: use mutmut 3.8 (pip install -e '.[mutation]')")


def _registered(node: cst.CSTNode) -> bool:
    """Whether ``node`` is a function whose only decorators are ``@register(...)``."""
    if not isinstance(node, cst.FunctionDef) or not node.decorators:
        return False
    for decorator in node.decorators:
        call = decorator.decorator
        if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Name) and call.func.value == _REGISTER):
            return False
    return True


_skip = file_mutation.MutationVisitor._skip_node_and_children
_arrange = file_mutation.function_trampoline_arrangement


def _skip_node_and_children(self, node):
    return False if _registered(node) else _skip(self, node)


def _function_trampoline_arrangement(function, mutants, class_name):
    declarations, methods, assignments, names = _arrange(function, mutants, class_name)
    if _registered(function):  # the trampoline (first) keeps the decorator; the copies lose it
        methods = [methods[0], *(method.with_changes(decorators=()) for method in methods[1:])]
    return declarations, methods, assignments, names


file_mutation.MutationVisitor._skip_node_and_children = _skip_node_and_children
file_mutation.function_trampoline_arrangement = _function_trampoline_arrangement

if __name__ == "__main__":
    sys.argv[0] = "mutmut"
    cli()
