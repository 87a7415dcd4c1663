"""Operators on expression trees of :mod:`jaxlib_kernels.symbolic` (``[op, *children]``, variables, constants)."""

from __future__ import annotations

import copy
from collections.abc import Iterator


def paths(expr, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], object]]:
    """Every node with its path (indices into the nested lists), the root first, then depth first."""
    yield path, expr
    if isinstance(expr, list):
        for i, child in enumerate(expr[1:], start=1):
            yield from paths(child, path + (i,))


def replace(expr, path: tuple[int, ...], new):
    """A copy of ``expr`` with the node at ``path`` replaced by ``new``."""
    if not path:
        return new
    out = copy.deepcopy(expr)
    node = out
    for i in path[:-1]:
        node = node[i]
    node[path[-1]] = new
    return out


def parent_is(expr, path: tuple[int, ...], op: str) -> bool:
    """Whether the node at ``path`` is an argument of an ``op`` node."""
    node = expr
    for i in path[:-1]:
        node = node[i]
    return isinstance(node, list) and node[0] == op


def contains(expr, sub) -> bool:
    """Whether ``sub`` is a subtree of ``expr``."""
    return any(node == sub for _, node in paths(expr))


def substitute(expr, variable: str, new):
    """Every occurrence of ``variable`` replaced by (a copy of) ``new``."""
    if expr == variable:
        return copy.deepcopy(new)
    if isinstance(expr, list):
        return [expr[0], *[substitute(a, variable, new) for a in expr[1:]]]
    return expr
