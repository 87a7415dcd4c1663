"""A candidate of a symbolic search: its tree, the idea it descends from and how it was changed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Candidate:
    expr: object  # the expression tree
    parent: str  # the baseline or archived idea it descends from
    mutations: list[str] = field(default_factory=list)  # each change in words
    kinds: list = field(default_factory=list)  # each change's kind (the language's mutation names)
    prior: float = 0.0  # measured advantage of the parent over the best baseline (archive), 0 if unknown
