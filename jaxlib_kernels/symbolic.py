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
import re
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


# --- how two trees differ (novelty's relation of a candidate to the nearest known one) ---------------------------

_PLAIN_UNARY = {"relu": "max({0}, 0)", "abs": "|{0}|", "neg": "-{0}", "sq": "({0})^2", "tanh": "tanh({0})",
                "logsig": "-log sigmoid({0})", "sig": "sigmoid({0})", "expneg": "exp(-{0})"}
_PLAIN_BINARY = {"add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} \u00b7 {1}", "max": "max({0}, {1})",
                 "min": "min({0}, {1})"}
_TERM = {"relu": "rectifier", "abs": "absolute value", "neg": "negation", "sq": "square", "tanh": "tanh",
         "logsig": "logistic loss", "sig": "sigmoid", "expneg": "exponential", "add": "sum", "sub": "difference",
         "mul": "product", "max": "max", "min": "min", "clip": "clip", "ifpos": "case split"}


def form(expr: Expr) -> Expr:
    """The tree with every constant replaced by ``"#"``: two trees of one form differ only in their constants."""
    if isinstance(expr, (list, tuple)):
        return [expr[0], *[form(a) for a in expr[1:]]]
    return "#" if isinstance(expr, (int, float)) and not isinstance(expr, bool) else expr


def constants(expr: Expr) -> list[float]:
    """The tree's constants, depth first."""
    if isinstance(expr, (list, tuple)):
        return [c for a in expr[1:] for c in constants(a)]
    return [float(expr)] if isinstance(expr, (int, float)) and not isinstance(expr, bool) else []


def _plain_variable(latex: str) -> str:
    text = re.sub(r"\\t?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", latex)
    return re.sub(r"\\([a-zA-Z]+)", r"\1", text).replace("{", "").replace("}", "")


def to_plain(expr: Expr, variables: Variables | None = None) -> str:
    """Plain-text math of a tree for prose (``|A|``, ``clip(r, 0.8, 1.2)``, ``log r``): neither code nor LaTeX."""
    variables = VARIABLES if variables is None else variables

    def plain(e: Expr, inner: bool = False) -> str:
        if isinstance(e, (int, float)):
            return f"{float(e):g}"
        if isinstance(e, str):
            return _plain_variable(variables[e][1])
        op, *args = e
        if op in _PLAIN_UNARY:
            return _PLAIN_UNARY[op].format(plain(args[0], op in ("neg", "sq")))
        if op in ("add", "sub", "mul"):
            text = _PLAIN_BINARY[op].format(plain(args[0], op == "mul"), plain(args[1], True))
            return f"({text})" if inner else text
        if op in _PLAIN_BINARY:
            return _PLAIN_BINARY[op].format(plain(args[0]), plain(args[1]))
        if op == "clip":
            return f"clip({plain(args[0])}, {plain(args[1])}, {plain(args[2])})"
        if op == "ifpos":
            return f"({plain(args[1])} if {plain(args[0])} \u2265 0, else {plain(args[2])})"
        raise ExpressionError(f"unknown operator {op!r}")

    return plain(expr)


def change(old: Expr, new: Expr, variables: Variables | None = None) -> list[str]:
    """Plain-English phrases for how ``new`` differs from ``old`` in structure, each at the smallest subtree where
    their forms differ (``"replaces A by |A| inside the product (r - clip(r, 0.8, 1.2)) · A"``, ``"multiplies ...
    by n/N"``); constants only: ``["changes the constant 3 → 6"]``; the same tree: ``[]``. A single phrase
    starting with "replaces" and naming no enclosing term means the two share no structure."""
    def show(e: Expr) -> str:
        return to_plain(e, variables)

    def term(e: Expr) -> str:
        return _TERM.get(e[0], e[0])

    def similar(a: Expr, b: Expr) -> bool:  # the same operator at the top
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and a[0] == b[0] and len(a) == len(b)

    def wrapped(outer: Expr, inner: Expr, loose: bool) -> int | None:  # the child of ``outer`` that is ``inner``
        if not isinstance(outer, (list, tuple)):
            return None
        test = (lambda c: similar(c, inner)) if loose else (lambda c: form(c) == form(inner))
        return next((i for i in range(1, len(outer)) if test(outer[i])), None)

    def whole(old: Expr, new: Expr, where: str) -> list[str]:
        return [f"replaces {show(old)} by {show(new)}{where}"]

    def wrap(old: Expr, new: Expr, i: int, where: str) -> str:  # new = new[0](..., new[i] ~ old, ...)
        rest = [c for j, c in enumerate(new[1:], 1) if j != i]
        if not rest:
            if form(new[i]) == form(old):
                return f"replaces {show(old)} by {show(new)}{where}"
            return f"applies the {term(new)} to {show(old)}{where}"
        if new[0] == "add" or (new[0] == "sub" and i == 1):
            return f"{'adds' if new[0] == 'add' else 'subtracts'} the term {show(rest[0])}{where}"
        if new[0] == "mul":
            return f"multiplies {show(old)} by {show(rest[0])}{where}"
        return f"puts {show(old)} inside the {term(new)} {show(new)}{where}"

    def unwrap(old: Expr, new: Expr, i: int, where: str) -> str:  # old = old[0](..., old[i] ~ new, ...)
        rest = [c for j, c in enumerate(old[1:], 1) if j != i]
        if not rest:
            return f"drops the {term(old)} around {show(new)}{where}"
        if old[0] in ("add", "sub"):
            return f"removes the term {show(rest[0])}{where}"
        if old[0] == "mul":
            return f"drops the factor {show(rest[0])}{where}"
        return f"takes {show(new)} out of the {term(old)} {show(old)}{where}"

    def changes(old: Expr, new: Expr, where: str) -> list[str]:
        if form(old) == form(new):
            pairs = [(a, b) for a, b in zip(constants(old), constants(new), strict=True) if a != b]
            if not pairs:
                return []
            return ["changes the constant" + ("s " if len(pairs) > 1 else " ")
                    + ", ".join(f"{a:g} \u2192 {b:g}" for a, b in pairs) + where]
        for loose in (False, True):
            i = wrapped(new, old, loose)
            if i is not None:
                inner = changes(old, new[i], where)
                if not (loose and inner == whole(old, new[i], where)):
                    return [wrap(old, new, i, where), *inner]
            i = wrapped(old, new, loose)
            if i is not None:
                inner = changes(old[i], new, where)
                if not (loose and inner == whole(old[i], new, where)):
                    return [unwrap(old, new, i, where), *inner]
            if not loose and similar(old, new):
                inside = f" inside the {term(old)} {show(old)}"
                parts = [changes(old[i], new[i], inside) for i in range(1, len(old))]
                # with two children or more, all replaced, nothing is kept but the operator
                if len(parts) < 2 or any(p != whole(old[i], new[i], inside) for i, p in enumerate(parts, 1)):
                    return [p for ps in parts for p in ps]
        return whole(old, new, where)

    return changes(old, new, "")
