"""A mapping built on first use: lookups some analyses never make cost nothing there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator


class LazyMapping(Mapping):
    """The mapping ``build()`` returns, built the first time it is read."""

    def __init__(self, build: Callable[[], Mapping]) -> None:
        self._build: Callable[[], Mapping] | None = build
        self._data: Mapping = {}

    def _mapping(self) -> Mapping:
        if self._build is not None:
            self._data, self._build = self._build(), None
        return self._data

    def __getitem__(self, key: Any) -> Any:
        return self._mapping()[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._mapping()

    def get(self, key: Any, default: Any = None) -> Any:
        return self._mapping().get(key, default)

    def __iter__(self) -> Iterator:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())
