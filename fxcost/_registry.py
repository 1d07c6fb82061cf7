"""The cost-rule registry: one table from op target to the function that costs it.

Keys are module classes (for ``call_module`` nodes, matched along the MRO), callables
(``call_function`` nodes: ``torch.add``, ``operator.add``, ``F.conv2d``...) and method
names as strings (``call_method`` nodes: ``"view"``, ``"add_"``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.utils.parametrize

from ._records import Cost, TensorMeta, iter_metas


@dataclass(frozen=True)
class OpCall:
    """One call as a cost rule sees it: shapes instead of tensors."""

    target: Any
    """The module class, callable or method name that was called."""
    args: tuple
    """Positional arguments, with every tensor replaced by its :class:`TensorMeta`."""
    kwargs: Mapping[str, Any]
    """Keyword arguments, tensors replaced likewise."""
    outputs: tuple[TensorMeta, ...]
    """Every tensor the call returned, flattened in order."""
    module: torch.nn.Module | None = None
    """The module instance for ``call_module`` nodes (its parameters are fake tensors)."""

    @property
    def inputs(self) -> tuple[TensorMeta, ...]:
        """Every tensor argument, flattened in order (positional first)."""
        found: list[TensorMeta] = []
        for value in (*self.args, *self.kwargs.values()):
            found.extend(iter_metas(value))
        return tuple(found)

    @property
    def out(self) -> TensorMeta:
        """The first output tensor."""
        return self.outputs[0]

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """The argument passed at position ``index`` or as keyword ``name``."""
        if name in self.kwargs:
            return self.kwargs[name]
        if index < len(self.args):
            return self.args[index]
        return default


Rule = Callable[[OpCall], Cost]


class RuleRegistry:
    """Maps op targets to cost rules. Giving one target two different rules is an error."""

    def __init__(self) -> None:
        self._rules: dict[Any, Rule] = {}
        self._by_class: dict[type, Rule | None] = {}  # module classes resolved along their MRO

    def register(self, *targets: Any) -> Callable[[Rule], Rule]:
        """Decorator registering one rule for several targets."""

        def decorate(rule: Rule) -> Rule:
            for target in targets:
                if self._rules.get(target, rule) is not rule:
                    raise ValueError(f"a cost rule for {target!r} is already registered")
                self._rules[target] = rule
            self._by_class.clear()
            return rule

        return decorate

    def lookup(self, target: Any) -> Rule | None:
        """The rule for ``target``; module classes also match their base classes."""
        try:
            rule = self._rules.get(target)
        except TypeError:  # an unhashable target has no rule
            return None
        if rule is None and isinstance(target, type):
            if target in self._by_class:
                return self._by_class[target]
            for base in target.__mro__[1:]:
                rule = self._rules.get(base)
                if rule is not None:
                    break
            self._by_class[target] = rule
        return rule

    def module_rule(self, module: torch.nn.Module) -> Rule | None:
        """The rule that costs a call of ``module`` as a whole: its class's rule, unless the
        module computes a parametrized weight (``torch.nn.utils.parametrize``), whose
        computation is part of the call's cost."""
        if torch.nn.utils.parametrize.is_parametrized(module):
            return None
        return self.lookup(type(module))

    def merged(self, overrides: Mapping[Any, Rule] | None) -> "RuleRegistry":
        """A new registry with ``overrides`` taking precedence; ``self`` is not modified."""
        merged = RuleRegistry()
        merged._rules = {**self._rules, **(overrides or {})}
        return merged

    def __contains__(self, target: Any) -> bool:
        return self.lookup(target) is not None

    def __len__(self) -> int:
        return len(self._rules)


#: The default rules. :mod:`fxcost.rules` fills it when imported.
RULES = RuleRegistry()
