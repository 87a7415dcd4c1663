"""Symbolic expressions for plug-in search: a tiny JSON-able expression tree rendered to jnp source and LaTeX.

An expression is a variable name, a float constant, or a list ``[op, *children]``. The variables are a map
``name -> (jnp source, LaTeX)``: by default ``VARIABLES``, lpo's (``"r"``, ``"A"``, ``"logr"``, ``"omr"`` = 1 - r,
``"p"`` = progress n/N); another template passes its own map as ``variables=`` (the ``dpo`` template: ``"z"`` =
beta * rho) and evaluates with numpy through :func:`evaluate_env`. The offline ideation searches over these trees (as in
symbolic-regression searches for learned objectives, e.g. Lu et al. 2022; Chen et al. 2023 "Symbolic Discovery
of Optimization Algorithms"), and codegen renders the found tree to a plug-in's source.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

Expr = Any  # str | float | list

VARIABLES = {
    "r": ("ratio", "r"),
    "A": ("advantage", "A"),
    "logr": ("jnp.log(ratio)", r"\log r"),
    "omr": ("(1.0 - ratio)", "(1 - r)"),
    "p": ("progress", r"\tfrac{n}{N}"),
}

UNARY = {
    "relu": ("jax.nn.relu({0})", r"\left[{0}\right]_+"),
    "abs": ("jnp.abs({0})", r"\left|{0}\right|"),
    "neg": ("(-{0})", "-{0}"),
    "sq": ("jnp.square({0})", r"\left({0}\right)^2"),
    "tanh": ("jnp.tanh({0})", r"\tanh\left({0}\right)"),
    # for preference losses: -log sigmoid(x) (the logistic loss), sigmoid(x), exp(-x)
    "logsig": ("jax.nn.softplus(-{0})", r"-\log\sigma\left({0}\right)"),
    "sig": ("jax.nn.sigmoid({0})", r"\sigma\left({0}\right)"),
    "expneg": ("jnp.exp(-{0})", r"e^{{-\left({0}\right)}}"),
}

BINARY = {
    "add": ("({0} + {1})", "{0} + {1}"),
    "sub": ("({0} - {1})", "{0} - {1}"),
    "mul": ("({0} * {1})", r"{0} \cdot {1}"),
    "max": ("jnp.maximum({0}, {1})", r"\max\left({0}, {1}\right)"),
    "min": ("jnp.minimum({0}, {1})", r"\min\left({0}, {1}\right)"),
}

# clip(x, lo, hi) with constant bounds; ifpos(x, a, b) = a where x >= 0 else b
SPECIAL = {"clip", "ifpos"}

OPS = set(UNARY) | set(BINARY) | SPECIAL


class ExpressionError(ValueError):
    """A malformed expression tree."""


Variables = dict[str, tuple[str, str]]


def validate(expr: Expr, variables: Variables | None = None) -> None:
    """Raise :class:`ExpressionError` unless ``expr`` is a well-formed tree over ``variables`` (default lpo's)."""
    variables = VARIABLES if variables is None else variables
    if isinstance(expr, bool):
        raise ExpressionError("booleans are not expressions")
    if isinstance(expr, (int, float)):
        if not math.isfinite(expr):
            raise ExpressionError(f"constant {expr} is not finite")
        return
    if isinstance(expr, str):
        if expr not in variables:
            raise ExpressionError(f"unknown variable {expr!r}; known: {', '.join(variables)}")
        return
    if not isinstance(expr, (list, tuple)) or not expr:
        raise ExpressionError(f"not an expression: {expr!r}")
    op, *args = expr
    if op in UNARY:
        arity = 1
    elif op in BINARY:
        arity = 2
    elif op in SPECIAL:
        arity = 3
    else:
        raise ExpressionError(f"unknown operator {op!r}; known: {', '.join(sorted(OPS))}")
    if len(args) != arity:
        raise ExpressionError(f"{op} takes {arity} arguments, got {len(args)}")
    if op == "clip" and not all(isinstance(a, (int, float)) for a in args[1:]):
        raise ExpressionError("clip bounds must be constants")
    for a in args:
        validate(a, variables)


def _fmt(c: float) -> str:
    return repr(float(round(c, 6)))


def to_source_expr(expr: Expr, variables: Variables | None = None) -> str:
    """The jnp expression of a tree (lpo's variables: over ``ratio``, ``advantage``, ``progress``)."""
    variables = VARIABLES if variables is None else variables

    def src(e: Expr) -> str:
        return to_source_expr(e, variables)

    if isinstance(expr, (int, float)):
        return _fmt(expr)
    if isinstance(expr, str):
        return variables[expr][0]
    op, *args = expr
    if op in UNARY:
        return UNARY[op][0].format(src(args[0]))
    if op in BINARY:
        return BINARY[op][0].format(src(args[0]), src(args[1]))
    if op == "clip":
        return f"jnp.clip({src(args[0])}, {_fmt(args[1])}, {_fmt(args[2])})"
    if op == "ifpos":
        return f"jnp.where({src(args[0])} >= 0, {src(args[1])}, {src(args[2])})"
    raise ExpressionError(f"unknown operator {op!r}")


def to_latex(expr: Expr, variables: Variables | None = None) -> str:
    """LaTeX math (without dollars) of a tree."""
    return _to_latex(expr, VARIABLES if variables is None else variables)


def _to_latex(expr: Expr, variables: Variables) -> str:
    def to_latex(e: Expr) -> str:  # the recursion keeps the variable map
        return _to_latex(e, variables)

    if isinstance(expr, (int, float)):
        return f"{float(expr):.3g}"
    if isinstance(expr, str):
        return variables[expr][1]
    op, *args = expr
    if op in UNARY:
        return UNARY[op][1].format(to_latex(args[0]))
    if op in BINARY:
        left, right = to_latex(args[0]), to_latex(args[1])
        if op == "mul":
            left, right = _paren(args[0], left), _paren(args[1], right)
        elif op == "sub":
            right = _paren(args[1], right)
        return BINARY[op][1].format(left, right)
    if op == "clip":
        return rf"\mathrm{{clip}}\left({to_latex(args[0])}, {float(args[1]):.3g}, {float(args[2]):.3g}\right)"
    if op == "ifpos":
        return (
            rf"\begin{{cases}} {to_latex(args[1])} & {to_latex(args[0])} \ge 0 \\ "
            rf"{to_latex(args[2])} & \text{{otherwise}} \end{{cases}}"
        )
    raise ExpressionError(f"unknown operator {op!r}")


def _paren(expr: Expr, text: str) -> str:
    """Parenthesise sums, differences and negations inside products and on the right of a minus."""
    if isinstance(expr, (list, tuple)) and expr[0] in ("add", "sub", "neg"):
        return rf"\left({text}\right)"
    if isinstance(expr, (int, float)) and expr < 0:
        return rf"\left({text}\right)"
    return text


def size(expr: Expr) -> int:
    """Number of nodes."""
    if isinstance(expr, (list, tuple)):
        return 1 + sum(size(a) for a in expr[1:])
    return 1


def uses(expr: Expr, var: str) -> bool:
    if isinstance(expr, (list, tuple)):
        return any(uses(a, var) for a in expr[1:])
    return expr == var


def dumps(expr: Expr) -> str:
    """Canonical one-line JSON of a tree (used for hashing and the archive)."""
    return json.dumps(canonical(expr), separators=(",", ":"))


def canonical(expr: Expr) -> Expr:
    if isinstance(expr, (list, tuple)):
        return [expr[0], *[canonical(a) for a in expr[1:]]]
    if isinstance(expr, (int, float)) and not isinstance(expr, bool):
        return float(round(expr, 6))
    return expr


def loads(text: str) -> Expr:
    expr = json.loads(text)
    validate(expr)
    return expr


def render_source(expr: Expr, name: str = "drift", doc: str | None = None,
                  args: tuple[str, ...] = ("ratio", "advantage", "progress"),
                  variables: Variables | None = None) -> str:
    """A complete plug-in module: ``def name(*args)`` returning the expression, broadcast to the first argument.

    The variables of the tree are written in terms of the variable map's sources (by default ``VARIABLES``: the
    argument names ratio, advantage, progress).
    """
    validate(expr, variables)
    doc_line = f'    """{doc}"""\n' if doc else ""
    return (
        "import jax\n"
        "import jax.numpy as jnp\n\n\n"
        f"def {name}({', '.join(args)}):\n"
        f"{doc_line}"
        f"    return {to_source_expr(expr, variables)} + jnp.zeros_like({args[0]})\n"
    )


_NP_UNARY = {
    "relu": lambda x: np.maximum(x, 0.0),
    "abs": np.abs,
    "neg": np.negative,
    "sq": np.square,
    "tanh": np.tanh,
    "logsig": lambda x: np.logaddexp(0.0, -x),
    "sig": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "expneg": lambda x: np.exp(-x),
}
_NP_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def evaluate_env(expr: Expr, env: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate a tree with numpy over named variable values (broadcast together); any template's variables."""
    shape = np.broadcast_shapes(*(np.shape(v) for v in env.values()))
    with np.errstate(all="ignore"):
        return _evaluate_env(expr, env, shape)


def _evaluate_env(expr: Expr, env: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(expr, (int, float)):
        return np.full(shape, float(expr))
    if isinstance(expr, str):
        return np.broadcast_to(np.asarray(env[expr], dtype=np.float64), shape)
    op, *args = expr
    if op in _NP_UNARY:
        return _NP_UNARY[op](_evaluate_env(args[0], env, shape))
    if op in _NP_BINARY:
        return _NP_BINARY[op](_evaluate_env(args[0], env, shape), _evaluate_env(args[1], env, shape))
    if op == "clip":
        return np.clip(_evaluate_env(args[0], env, shape), args[1], args[2])
    if op == "ifpos":
        cond = _evaluate_env(args[0], env, shape) >= 0
        return np.where(cond, _evaluate_env(args[1], env, shape), _evaluate_env(args[2], env, shape))
    raise ExpressionError(f"unknown operator {op!r}")


def evaluate_numpy(expr: Expr, r: np.ndarray, A: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Evaluate an lpo tree with numpy (fast, for search); same semantics as the rendered jnp source."""
    with np.errstate(all="ignore"):
        if isinstance(expr, (int, float)):
            return np.full(np.broadcast(r, A, p).shape, float(expr))
        if isinstance(expr, str):
            values = {"r": r, "A": A, "logr": np.log(r), "omr": 1.0 - r, "p": p}
            return np.broadcast_to(values[expr], np.broadcast(r, A, p).shape).astype(np.float64)
        op, *args = expr
        if op in _NP_UNARY:
            return _NP_UNARY[op](evaluate_numpy(args[0], r, A, p))
        if op in _NP_BINARY:
            return _NP_BINARY[op](evaluate_numpy(args[0], r, A, p), evaluate_numpy(args[1], r, A, p))
        if op == "clip":
            return np.clip(evaluate_numpy(args[0], r, A, p), args[1], args[2])
        if op == "ifpos":
            cond = evaluate_numpy(args[0], r, A, p) >= 0
            return np.where(cond, evaluate_numpy(args[1], r, A, p), evaluate_numpy(args[2], r, A, p))
    raise ExpressionError(f"unknown operator {op!r}")
