"""Explicit registries with a validating ``make(name)`` that suggests close matches (gymnax, navix, evosax)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Lazy:
    """A registry entry named by ``"package.module:attribute"``, imported when it is first looked up (a template's
    kernels import heavy libraries; listing or choosing one template should not import all of them)."""

    def __init__(self, target: str):
        self.module, _, self.attribute = target.partition(":")

    def load(self):
        import importlib

        return getattr(importlib.import_module(self.module), self.attribute)


class Registry(Mapping[str, T], Generic[T]):
    """A named dict of factories or values with helpful errors; :class:`Lazy` entries are imported on first use."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = dict(entries or {})

    def register(self, name: str, value: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = value
        return value

    def __getitem__(self, name: str) -> T:
        try:
            value = self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None
        if isinstance(value, Lazy):
            value = self._entries[name] = value.load()
        return value

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})"

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def make(self, name: str, *args, **kwargs):
        """Look ``name`` up and call it with the arguments when it is a factory."""
        value = self[name]
        return value(*args, **kwargs) if isinstance(value, Callable) else value
