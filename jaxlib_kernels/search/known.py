"""The behaviours of everything already known (baselines, archived candidates), by name: what novelty is
measured against, in ideation, the offline searches and the novelty stage alike; and :func:`relation`, how a
candidate relates in structure to the nearest of them (a retuning, a structural change, or new)."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from jaxlib_kernels import interpreter, symbolic


def _run_key(row: dict) -> str:
    return f"{row['idea']} ({row.get('run_id', 'archive')})"


def known_behaviours(baselines: Mapping[str, Any], archive_rows: Iterable[dict], of_baseline: Callable[[Any], Any],
                     of_row: Callable[[dict], Any], *, baseline_key: Callable[[str], str] = str,
                     row_key: Callable[[dict], str] = _run_key, skip_errors: bool = False) -> dict[str, Any]:
    """``{name: behaviour}`` of every baseline (``of_baseline(baseline)``) and every archive row (``of_row(row)``);
    a None behaviour is left out, and with ``skip_errors`` so is a row whose ``of_row`` raises (an archived
    candidate that no longer loads)."""
    known = {}
    for name, baseline in baselines.items():
        value = of_baseline(baseline)
        if value is not None:
            known[baseline_key(name)] = value
    for row in archive_rows:
        try:
            value = of_row(row)
        except Exception:  # where asked, an archived candidate that no longer loads is skipped
            if not skip_errors:
                raise
            continue
        if value is not None:
            known[row_key(row)] = value
    return known


def probed(template, archive_rows: Iterable[dict], row_key: Callable[[dict], str] = _run_key) -> dict[str, Any]:
    """The template's probe (``Template.probe_text``) of every baseline's and archived candidate's text."""
    return known_behaviours(template.baselines, archive_rows, lambda b: template.probe_text(b.source),
                            lambda r: template.probe_text(r["source"]) if r.get("source") else None,
                            baseline_key=lambda n: f"baseline {n}", row_key=row_key, skip_errors=True)


def nearest(value, known: Mapping[str, Any], distance: Callable[[Any, Any], float]) -> tuple[str, float]:
    """The name of the known entry closest to ``value`` and its distance."""
    return min(((k, distance(value, v)) for k, v in known.items()), key=lambda kv: kv[1])


# --- how a candidate relates to the nearest known one ----------------------------------------------------------

def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Constants(ast.NodeTransformer):
    """Replaces every numeric constant by a placeholder (kept in order) and drops docstrings."""

    def __init__(self):
        self.values: list[float] = []

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if _numeric(node.value):
            self.values.append(float(node.value))
            return ast.copy_location(ast.Constant("#"), node)
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return self.generic_visit(node)


def _source_form(text: str) -> tuple[str, list[float]] | None:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    walker = _Constants()
    return ast.dump(walker.visit(tree)), walker.values


def _constants_phrase(pairs: list[tuple[Any, Any]], names: list[str] | None = None) -> str:
    if not pairs:
        return "is the same candidate"
    if names:
        return "sets " + ", ".join(f"{n} {a:g} \u2192 {b:g}" for n, (a, b) in zip(names, pairs, strict=True))
    return "changes the constant" + ("s " if len(pairs) > 1 else " ") + ", ".join(f"{a:g} \u2192 {b:g}" for a, b in pairs)


def _params_change(old: dict, new: dict) -> tuple[str, str]:
    """(kind, phrase) of two parametric (JSON) candidates: other numbers in the same fields are a retuning."""
    shared = sorted(set(old) & set(new))
    retuned = [k for k in shared if _numeric(old[k]) and _numeric(new[k]) and old[k] != new[k]]
    other = [k for k in shared if k not in retuned and old[k] != new[k]]
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    tuned = _constants_phrase([(old[k], new[k]) for k in retuned], retuned) if retuned else ""
    if not (other or added or removed):
        return "retuning", tuned or "is the same candidate"
    parts = [f"sets {k} to {new[k]} (was {old[k]})" for k in other]
    parts += [f"adds {k} = {new[k]}" for k in added] + [f"drops {k}" for k in removed]
    return "structural", "; ".join(parts + ([tuned] if tuned else []))


def _form(template, text: str | None, expression: Any) -> tuple[str, Any] | None:
    """("tree", expr), ("params", dict) or ("source", text) of a candidate, or None where nothing is known."""
    language = template.discovery.language if template.discovery is not None else None
    if expression is not None and language is not None and language.valid(expression):
        return "tree", expression
    if not text:
        return None
    if template.plugin.kind != "source":
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return ("params", value) if isinstance(value, dict) else None
    if language is not None and language.name == "drift":
        expr = interpreter.expression_of_source(text, template.plugin.name)
        if expr is not None:
            return "tree", expr
    return "source", text


def _as_source(template, form: tuple[str, Any]) -> str:
    if form[0] == "source":
        return form[1]
    language = template.discovery.language
    return symbolic.render_source(form[1], template.plugin.name, args=language.args, variables=language.variables)


def relation(template, candidate: tuple[str | None, Any], nearest: tuple[str | None, Any], *, name: str, label: str,
             distance: float | None, behaviours: tuple[Any, Any] | None = None) -> dict:
    """How a candidate relates to the nearest known one (``candidate`` / ``nearest``: (text, expression tree or
    None)), computed from their structure: ``kind`` "retuning" (the same form with other constants, or for a
    parametric candidate the same fields with other numbers), "structural" (a subtree or field added, removed or
    replaced: ``change`` says which) or "new" (no structure in common); ``behaviour``: where on the probe their
    behaviours differ, where the template's formula language says (``FormulaLanguage.contrast``)."""
    cand, near = _form(template, *candidate), _form(template, *nearest)
    language = template.discovery.language if template.discovery is not None else None
    if cand is None or near is None:
        kind, phrase = "new", "has no formula to compare"
    elif cand[0] == near[0] == "tree":
        phrases = symbolic.change(near[1], cand[1], language.idea_variables)
        phrase = "; it ".join(phrases) or "is the same formula"
        if symbolic.form(near[1]) == symbolic.form(cand[1]):
            kind = "retuning"
        elif len(phrases) == 1 and phrase.startswith("replaces") and " inside " not in phrase:
            kind, phrase = "new", "shares no structure with it"
        else:
            kind = "structural"
    elif cand[0] == near[0] == "params":
        kind, phrase = _params_change(near[1], cand[1])
    elif "params" in (cand[0], near[0]):
        kind, phrase = "new", "is a different kind of candidate"
    else:
        a, b = _source_form(_as_source(template, near)), _source_form(_as_source(template, cand))
        if a is not None and b is not None and a[0] == b[0]:
            kind, phrase = "retuning", _constants_phrase([(x, y) for x, y in zip(a[1], b[1], strict=True) if x != y])
        else:
            kind, phrase = "new", "is code of another structure"
    lead = {"retuning": "a retuning of", "structural": "a structural change of", "new": "not derived from"}[kind]
    sentence = f"The candidate is {lead} {label}, the nearest known candidate: it {phrase}."
    contrast = getattr(language, "contrast", None)
    behaviour = None
    if contrast is not None and behaviours is not None and all(b is not None for b in behaviours):
        behaviour = contrast(np.asarray(behaviours[0]), np.asarray(behaviours[1]), label)
    return {"kind": kind, "nearest": name, "nearest_label": label,
            "distance": None if distance is None else round(float(distance), 4), "change": sentence,
            "behaviour": behaviour}
