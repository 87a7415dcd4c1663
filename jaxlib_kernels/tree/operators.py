"""Candidate operators of the research tree, generic by candidate kind: its constants, the candidate with other
constants, variants (the improve stage's offline proposals) and ablations.

Three kinds of candidate text, told apart from the text and the template's contract alone:

* a *formula*: plug-in source that the template's formula language (``Template.discovery.language``) rendered
  from a tree (:func:`expression_of` recovers the tree, checked by rendering it again); constants are the tree's,
  variants the language's mutation operators, ablations each operation replaced by its neutral form (a term
  dropped, a factor or wrapper removed, one branch of a case split) or a subtree by the nearest baseline's term;
* *parametric* JSON (a JSON object, whatever the plug-in kind: ``hades`` candidates, ``bbo``'s evosax baselines):
  constants are the numeric leaves, variants perturb them, ablations reset each numeric field to the first
  baseline's value or drop it (the template's default);
* other *source*: constants are the float literals of its syntax tree (a negated literal counts as one negative
  constant), variants perturb them, ablations set each to 0 and to 1.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
from collections.abc import Mapping

import numpy as np

from jaxlib_kernels import interpreter, symbolic
from jaxlib_kernels.plugin import float_literal as _literal
from jaxlib_kernels.plugin import float_literals
from jaxlib_kernels.search import trees
from jaxlib_kernels.search.candidates import Candidate
from jaxlib_kernels.templates.base import candidate_json

FACTORS = (0.5, 0.75, 1.5, 2.0)  # a perturbed constant is multiplied by one of these
ZERO_STEPS = (-0.1, 0.1)  # or, when it is 0, set to one of these


# ---- what kind of candidate ----------------------------------------------------------------------------------------

def language_of(template):
    """The template's formula language, or None."""
    return template.discovery.language if template.discovery is not None else None


def json_object(text: str) -> dict | None:
    """The JSON object ``text`` is, or None."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@functools.lru_cache(maxsize=8)
def _patterns(variables: tuple[tuple[str, str], ...]) -> tuple[list, list]:
    """The renderer's templates as syntax-tree patterns with ``__X<i>__`` holes: variables first (a variable such
    as ``(1.0 - ratio)`` would otherwise read as a difference), then the operators."""
    def expr(text):
        return ast.parse(text, mode="eval").body

    holes = [f"__X{i}__" for i in range(3)]
    var_patterns = [(name, expr(src)) for name, src in variables]
    ops = [(op, 1, expr(src.format(*holes[:1]))) for op, (src, _) in symbolic.UNARY.items()]
    ops += [(op, 2, expr(src.format(*holes[:2]))) for op, (src, _) in symbolic.BINARY.items()]
    ops += [("clip", 3, expr("jnp.clip(__X0__, __X1__, __X2__)")),
            ("ifpos", 3, expr("jnp.where(__X0__ >= 0, __X1__, __X2__)"))]
    return var_patterns, ops


def _match(pattern, node, holes: dict) -> bool:
    if isinstance(pattern, ast.Name) and pattern.id.startswith("__X"):
        holes[int(pattern.id[3:-2])] = node
        return True
    if type(pattern) is not type(node):
        return False
    if isinstance(pattern, ast.AST):
        return all(_match(getattr(pattern, f, None), getattr(node, f, None), holes)
                   for f in pattern._fields if f != "ctx")
    if isinstance(pattern, list):
        return len(pattern) == len(node) and all(_match(p, n, holes) for p, n in zip(pattern, node, strict=True))
    return pattern == node


class _NotFormula(Exception):
    pass


def _tree(node, patterns) -> symbolic.Expr:
    value = _literal(node)
    if value is not None:
        return value
    var_patterns, ops = patterns
    for name, pattern in var_patterns:
        if _match(pattern, node, {}):
            return name
    for op, arity, pattern in ops:
        holes: dict = {}
        if _match(pattern, node, holes) and len(holes) == arity:
            args = [holes[i] for i in range(arity)]
            if op == "clip":
                lo, hi = _literal(args[1]), _literal(args[2])
                if lo is None or hi is None:
                    raise _NotFormula
                return [op, _tree(args[0], patterns), lo, hi]
            return [op, *[_tree(a, patterns) for a in args]]
    raise _NotFormula


def _parsed(text: str, name: str):
    """(module, the plug-in's function) of source text, or None."""
    try:
        module = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    fn = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    return None if fn is None else (module, fn)


def expression_of(template, text: str) -> symbolic.Expr | None:
    """The tree of the template's formula language whose rendering is ``text`` (any docstring, same syntax tree),
    else None: only what the renderer wrote is a formula, so the tree computes what the source computes."""
    language = language_of(template)
    return None if language is None else formula_of(language, template.plugin.name, text)


def formula_of(language, name: str, text: str) -> symbolic.Expr | None:
    """:func:`expression_of` for a formula ``language`` and plug-in function ``name`` (no template needed: a
    kernel recognises its plug-ins' trees with it)."""
    parsed = _parsed(text, name)
    if parsed is None:
        return None
    module, fn = parsed
    ret = fn.body[-1]
    if not (isinstance(ret, ast.Return) and isinstance(ret.value, ast.BinOp)):
        return None
    try:
        expr = _tree(ret.value.left, _patterns(tuple((k, v[0]) for k, v in language.variables.items())))
        again = symbolic.render_source(expr, name, doc=ast.get_docstring(fn, clean=False), args=language.args,
                                       variables=language.variables)
    except (_NotFormula, symbolic.ExpressionError, KeyError, TypeError, ValueError, RecursionError):
        return None
    if ast.dump(ast.parse(again)) != ast.dump(module) or not language.valid(expr):
        return None
    return expr


def _render(template, expr, text: str) -> str:
    """``expr`` rendered as ``text`` was (its docstring kept)."""
    language = language_of(template)
    doc = ast.get_docstring(_parsed(text, template.plugin.name)[1], clean=False)
    return symbolic.render_source(expr, template.plugin.name, doc=doc, args=language.args,
                                  variables=language.variables)


# ---- constants -----------------------------------------------------------------------------------------------------

def _numeric(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _leaves(value, path=()):
    """(path, number) of every numeric leaf of a JSON value, keys sorted."""
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _leaves(value[k], (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    elif _numeric(value):
        yield path, value


def _set_leaf(value, path, new):
    node = value
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = new


def _source_literals(text: str) -> list[tuple[ast.AST, float]]:
    """Every float literal of the source in order (a negated literal is one node), docstrings aside."""
    try:
        return float_literals(ast.parse(text))
    except (SyntaxError, ValueError):
        return []


def _form(template, text: str):
    """("formula", tree) | ("json", object) | ("source", literals)."""
    expr = expression_of(template, text)
    if expr is not None:
        return "formula", expr
    obj = json_object(text)
    if obj is not None:
        return "json", obj
    return "source", _source_literals(text)


def constants(template, text: str) -> list[float]:
    """The candidate's constants: a formula's tree constants (depth first), a JSON object's numeric leaves (keys
    sorted), or the float literals of other source (in order)."""
    kind, data = _form(template, text)
    if kind == "formula":
        return symbolic.constants(data)
    if kind == "json":
        return [float(v) for _, v in _leaves(data)]
    return [v for _, v in data]


def _with_tree_constants(expr, values):
    it = iter(values)

    def walk(e):
        if isinstance(e, list):
            return [e[0], *[walk(a) for a in e[1:]]]
        return float(round(float(next(it)), 6)) if _numeric(e) else e

    return walk(expr)


def with_constants(template, text: str, values) -> str:
    """The candidate with its constants (:func:`constants`'s order) replaced by ``values``: a formula rendered
    again (constants rounded to 6 decimals, as the renderer writes them), integer JSON leaves rounded, source
    literals rewritten in place (a negative value in parentheses)."""
    values = [float(v) for v in values]
    kind, data = _form(template, text)
    count = len(symbolic.constants(data)) if kind == "formula" else len(list(_leaves(data))) if kind == "json" \
        else len(data)
    if len(values) != count:
        raise ValueError(f"the candidate has {count} constants, got {len(values)} values")
    if kind == "formula":
        return _render(template, _with_tree_constants(data, values), text)
    if kind == "json":
        out = copy.deepcopy(data)
        for (path, old), new in zip(_leaves(data), values, strict=True):
            _set_leaf(out, path, round(new) if isinstance(old, int) else float(new))
        return candidate_json(out)
    raw = text.encode()
    starts = np.cumsum([0] + [len(line) for line in raw.splitlines(keepends=True)])
    edits = []
    for (node, _), new in zip(data, values, strict=True):
        a = int(starts[node.lineno - 1]) + node.col_offset
        b = int(starts[node.end_lineno - 1]) + node.end_col_offset
        edits.append((a, b, (repr(new) if new >= 0 else f"({new!r})").encode()))
    for a, b, new in sorted(edits, reverse=True):
        raw = raw[:a] + new + raw[b:]
    return raw.decode()


# ---- variants ------------------------------------------------------------------------------------------------------

def _perturbed(template, text: str, rng: np.random.Generator) -> tuple[str, str] | None:
    values = constants(template, text)
    if not values:
        return None
    kind, data = _form(template, text)
    integer = [isinstance(v, int) for _, v in _leaves(data)] if kind == "json" else [False] * len(values)
    i = int(rng.integers(len(values)))
    old = values[i]
    if old == 0:
        new = float(rng.choice(ZERO_STEPS))
    else:
        new = old * float(rng.choice(FACTORS))
    if integer[i]:
        new = float(max(1, round(new)) if old >= 1 else round(new))
        if new == old:
            new = old + 1
    out = list(values)
    out[i] = new
    return f"changes constant {i + 1} from {old:.4g} to {new:.4g}", with_constants(template, text, out)


def variants(template, text: str, n: int, seed: int, tried: set[str] | frozenset = frozenset()) -> list[tuple[str, str]]:
    """Up to ``n`` new candidates from ``text``, none in ``tried`` nor ``text`` itself: a formula's mutations (the
    language's operators: plausible trees the interpreter runs), otherwise one constant perturbed. Each comes with
    a label saying what changed; the same arguments give the same variants."""
    rng = np.random.default_rng(seed)
    language = language_of(template)
    expr = expression_of(template, text)
    seen = set(tried) | {text}
    out: list[tuple[str, str]] = []
    pool = [Candidate(b.expression, name) for name, b in template.baselines.items()
            if b.expression is not None and language is not None and language.valid(b.expression)]
    for _ in range(40 * max(1, n)):
        if len(out) >= n:
            break
        if expr is not None:
            child = language.mutate(Candidate(expr, "tree"), pool + [Candidate(expr, "tree")], rng)
            if child is None or symbolic.size(child.expr) > language.max_size \
                    or not interpreter.fits(child.expr, language.name) or language.plausibility(child.expr)[0] <= 0:
                continue
            proposal = ("; ".join(child.mutations), _render(template, child.expr, text))
        else:
            proposal = _perturbed(template, text, rng)
            if proposal is None:
                break
        if proposal[1] not in seen:
            seen.add(proposal[1])
            out.append(proposal)
    return out


# ---- ablations -----------------------------------------------------------------------------------------------------

_DROPS = {"add": "the term", "sub": "the term", "mul": "the factor", "max": "the max with", "min": "the min with"}


def _neutral_forms(expr, variables) -> list[tuple[tuple[int, ...], str, object]]:
    """(path, label, replacement) for every operation of the tree: a wrapper, clip or rectifier removed, a term or
    factor dropped, one branch of a case split taken everywhere."""
    out = []
    for path, node in trees.paths(expr):
        if not isinstance(node, list):
            continue
        op, args = node[0], node[1:]

        def plain(e):
            return symbolic.to_plain(e, variables)

        if op in symbolic.UNARY:
            out.append((path, f"without the {op} around {plain(args[0])}", args[0]))
        elif op == "clip":
            out.append((path, f"without the clip of {plain(args[0])}", args[0]))
        elif op == "ifpos":
            out.append((path, f"{plain(args[1])} for either sign of {plain(args[0])}", args[1]))
            out.append((path, f"{plain(args[2])} for either sign of {plain(args[0])}", args[2]))
        elif op in _DROPS:
            for keep, drop in ((0, 1), (1, 0)):
                if op == "sub" and keep == 1:
                    replacement = ["neg", args[1]]
                else:
                    replacement = args[keep]
                out.append((path, f"without {_DROPS[op]} {plain(args[drop])}", replacement))
    return out


def _baseline_terms(expr, baseline, label: str, variables) -> list[tuple[tuple[int, ...], str, object]]:
    """(path, label, baseline's subtree) where the candidate and the baseline differ under the same operators."""
    theirs = dict(trees.paths(baseline))
    out = []
    for path, node in trees.paths(expr):
        if not path or path not in theirs or theirs[path] == node:
            continue
        parents_agree = all(isinstance(theirs.get(path[:k]), list) and theirs[path[:k]][0] == _at(expr, path[:k])[0]
                            for k in range(len(path)))
        if parents_agree:
            out.append((path, (f"with {label}'s term {symbolic.to_plain(theirs[path], variables)} in place of "
                              f"{symbolic.to_plain(node, variables)}"), theirs[path]))
    # the smallest differences only: a path whose subtree holds another difference is that one and more
    return [p for p in out if not any(q[0][:len(p[0])] == p[0] and q[0] != p[0] for q in out)]


def _at(expr, path):
    for i in path:
        expr = expr[i]
    return expr


def _nearest_terms(template, expr, baselines: Mapping[str, str]) -> list:
    """The baseline terms of the formula baseline nearest in behaviour that shares structure with ``expr`` (one
    with a term to swap in: a constant-only baseline such as "no drift" has none)."""
    language = language_of(template)
    mine = language.behaviour(expr)
    found = [(n, e) for n, e in ((n, expression_of(template, t)) for n, t in baselines.items()) if e is not None]
    for name, theirs in sorted(found, key=lambda p: language.distance(mine, language.behaviour(p[1]))):
        label = template.baselines[name].label if name in template.baselines else name
        terms = _baseline_terms(expr, theirs, label, language.variables)
        if terms:
            return sorted(terms, key=lambda p: len(p[0]))
    return []


def ablations(template, text: str, baselines: Mapping[str, str]) -> list[tuple[str, str]]:
    """Every ablation of the candidate, labelled, in order (the stage keeps the first ``TreeBudget.ablate``): a
    formula's smallest subtrees that differ from the nearest baseline's (``baselines``: name -> text, nearest in
    behaviour among those sharing structure with it) replaced by that baseline's term, then its operations replaced by their neutral forms, shallow
    first; a JSON object's
    numeric fields reset to the first baseline's value that differs, or dropped (the template's default) where no
    baseline has them; other source's float literals set to 0 and to 1."""
    kind, data = _form(template, text)
    out: list[tuple[str, str]] = []
    if kind == "formula":
        language = language_of(template)
        found = _nearest_terms(template, data, baselines)
        found += sorted(_neutral_forms(data, language.variables), key=lambda p: len(p[0]))
        for path, label, replacement in found:
            new = trees.replace(data, path, copy.deepcopy(replacement))
            if language.valid(new) and interpreter.fits(new, language.name):
                out.append((label, _render(template, new, text)))
    elif kind == "json":
        others = [o for o in (json_object(t) for t in baselines.values()) if o is not None]
        for key in sorted(data):
            if not _numeric(data[key]):
                continue
            ref = next((o[key] for o in others if key in o), None)
            if ref is None:
                out.append((f"without {key} (the default)", candidate_json({k: v for k, v in data.items() if k != key})))
            elif ref != data[key]:
                name = next(n for n, t in baselines.items() if (json_object(t) or {}).get(key) == ref)
                label = template.baselines[name].label if name in template.baselines else name
                out.append((f"{key} as in {label} ({ref})", candidate_json({**data, key: ref})))
    else:
        values = [v for _, v in data]
        for i, v in enumerate(values):
            for neutral in (0.0, 1.0):
                if v != neutral:
                    new = list(values)
                    new[i] = neutral
                    out.append((f"constant {i + 1} ({v:g}) set to {neutral:g}", with_constants(template, text, new)))
    unique, seen = [], {text}
    for label, new in out:
        if new not in seen:
            seen.add(new)
            unique.append((label, new))
    return unique
