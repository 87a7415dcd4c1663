"""The offline writeup (ARCHITECTURE.md sections 1 and 4, ``write_paper``): pylatex -> paper.tex -> latexmk -> paper.pdf.

As in The AI Scientist (Lu et al., 2024), the paper is a LaTeX document compiled and checked after writing; here the
prose comes from Jinja2 templates filled with the measured numbers of ``final_info.json``, so the wording follows the
results (significant or not, better or worse by the metric's direction, training or held-out settings). The generic
text in ``prompts/paper/`` knows only the template contract (plug-in, metric and direction, budget, baselines,
settings); a template overrides any file in ``prompts/templates/<name>/paper/`` (:mod:`tasks.runtime.text`). Every free text that came from
a user or a model is escaped for LaTeX; one repair attempt (formula shown from the expression tree or verbatim, text
folded to ASCII) follows a failed compile, and the .tex and the build log are kept when that fails too. The PDF is
read back with pymupdf: pages, embedded images, unresolved references, and whether the table's numbers made it.
The facts describe what ran (the settings, methods and environments of ``final_info``, not the template's catalogue);
a difference is called significant only with ``MIN_SEEDS`` seeds and a Holm-corrected p below 0.05; intervals stay in
the metric's ``bounds``. :func:`internal_words` and :func:`unrun_mentions` find, in a paper's text, the words of
``internal_words.json`` (generic, extended per template) that a reader should never see.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from prefect import get_run_logger
from pylatex import Command, Document, Figure, NoEscape, Package, Section, Table, Tabular, Tabularx
from pylatex.base_classes import Environment

from jaxlib_kernels.figures import FONT_PT, TEXT_WIDTH_IN
from jaxlib_kernels.stats import MIN_SEEDS, clip_interval, difference_bounds, verdicts
from jaxlib_kernels.templates import make
from tasks import figcheck, textgate, treefacts
from tasks.plotting import TREE_FIGURE, labels_of, make_plots
from tasks.review import _finite
from tasks.runtime import text as layers
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import read_json

ROOT = Path(__file__).resolve().parents[1]
LATEXMK = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"]
COMPILE_TIMEOUT_S = 300  # a guard against a hung TeX run, not a performance target
SECTIONS = [
    ("introduction", "Introduction"),
    ("related_work", "Related work"),
    ("background", "Background"),
    ("method", "Method"),
    ("setup", "Experimental setup"),
    ("results", "Results"),
    ("limitations", "Limitations"),
    ("conclusion", "Conclusion"),
]
SECTIONS_ORDER = {key: i for i, (key, _) in enumerate(SECTIONS)}
FLOATS_FROM = "method"  # the first section a table or figure may stand in (at its first citation)
# Control sequences a model-written formula may not use: file access, definitions, catcode tricks, document structure.
FORBIDDEN_TEX = re.compile(
    r"\\(input|include|openin|openout|write|immediate|read|catcode|def|edef|gdef|xdef|let|csname|usepackage|"
    r"documentclass|special|directlua|newcommand|renewcommand|providecommand|loop|jobname|end\s*\{document|"
    r"begin\s*\{document|makeatletter|verb|url|href|includegraphics)(?![A-Za-z])"
)


class Tex(str):
    """A string that is already LaTeX: inserted as is, never escaped again."""


# ---------------------------------------------------------------------------------------------------------- escaping
_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_UNICODE = {
    "\u2013": "--", "\u2014": "---", "\u2018": "`", "\u2019": "'", "\u201c": "``", "\u201d": "''",
    "\u2026": r"\ldots{}", "\u2212": "-", "\u00a0": "~", "\u2264": r"\ensuremath{\leq}", "\u2265": r"\ensuremath{\geq}",
    "\u00b1": r"\ensuremath{\pm}", "\u00d7": r"\ensuremath{\times}", "\u2192": r"\ensuremath{\rightarrow}",
    "\u2248": r"\ensuremath{\approx}", "\u221e": r"\ensuremath{\infty}", "\u00b7": r"\ensuremath{\cdot}",
    "\u03b1": r"\ensuremath{\alpha}", "\u03b2": r"\ensuremath{\beta}", "\u03b3": r"\ensuremath{\gamma}",
    "\u03b4": r"\ensuremath{\delta}", "\u03b5": r"\ensuremath{\epsilon}", "\u03b7": r"\ensuremath{\eta}",
    "\u03b8": r"\ensuremath{\theta}", "\u03bb": r"\ensuremath{\lambda}", "\u03bc": r"\ensuremath{\mu}",
    "\u03c0": r"\ensuremath{\pi}", "\u03c3": r"\ensuremath{\sigma}", "\u03c4": r"\ensuremath{\tau}",
}


def _char(c: str, ascii_only: bool) -> str:
    if c in _SPECIAL:
        return _SPECIAL[c]
    if c.isspace():
        return " "
    if ord(c) < 32 or ord(c) == 127:
        return ""
    if ord(c) < 128:
        return c
    if c in _UNICODE:
        return _UNICODE[c]
    # Latin-1 letters are set up by inputenc + T1; anything else is folded to ASCII or dropped.
    if not ascii_only and ord(c) < 256 and unicodedata.category(c).startswith("L"):
        return c
    folded = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()
    return "".join(_char(f, True) for f in folded)


def escape_tex(text: Any, ascii_only: bool = False) -> Tex:
    """``text`` as LaTeX text: specials escaped, whitespace collapsed, unsupported Unicode folded or dropped."""
    if isinstance(text, Tex):
        return text
    text = re.sub(r"\s+", " ", str(text).replace("+/-", "\u00b1")).strip()
    return Tex("".join(_char(c, ascii_only) for c in text).strip(" "))


FUNCTION_CALL = re.compile(r"\b([A-Za-z]+)\(")


def plain_math(text: Any) -> Tex:
    """Plain-text math of a label (``symbolic.to_plain``: ``clip(r, 0.8, 1.2)``) as LaTeX text: escaped, each
    function's argument list set off by a thin space as in the typeset formulas (``clip (r, 0.8, 1.2)``)."""
    return Tex(FUNCTION_CALL.sub(r"\1\\,(", escape_tex(text)))


def _label_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9:-]+", "-", str(name))


# ------------------------------------------------------------------------------------------------------- formatting
def fmt_num(x: Any, digits: int = 3) -> Tex:
    """A number with ``digits`` decimals; a true minus sign for negatives; an en dash for missing values."""
    if x is None or not math.isfinite(float(x)):
        return Tex("--")
    x = float(x)
    text = f"{abs(x):.{digits}f}"
    return Tex(rf"\ensuremath{{-}}{text}" if x < 0 and text.strip("0.") else text)


def fmt_signed(x: Any, digits: int = 3) -> Tex:
    if x is None or not math.isfinite(float(x)):
        return Tex("--")
    return Tex(("+" if float(x) >= 0 else "") + fmt_num(x, digits))


def fmt_p(p: Any) -> Tex:
    if p is None or not math.isfinite(float(p)):
        return Tex("--")
    return Tex(r"\ensuremath{<}\,0.001") if float(p) < 0.001 else Tex(f"{float(p):.3f}")


def fmt_p_eq(p: Any) -> Tex:
    """``$p = 0.012$`` or ``$p < 0.001$``."""
    if p is None or not math.isfinite(float(p)):
        return Tex("$p$ not available")
    return Tex("$p < 0.001$") if float(p) < 0.001 else Tex(f"$p = {float(p):.3f}$")


def fmt_value(x: Any) -> Tex:
    """A hyperparameter's value: 3 significant digits (``2.5\\times10^{-4}`` when small or large), an int as is, a
    list as its values, text escaped; an en dash when missing."""
    if isinstance(x, (list, tuple)):
        return Tex(", ".join(fmt_value(v) for v in x)) if x else Tex("--")
    if x is None:
        return Tex("--")
    if isinstance(x, (bool, str)):
        return escape_tex(x)
    if isinstance(x, int):
        return Tex(str(x).replace("-", r"\ensuremath{-}"))
    x = float(x)
    if not math.isfinite(x):
        return Tex("--")
    sign = r"\ensuremath{-}" if x < 0 else ""
    exponent = math.floor(math.log10(abs(x))) if x else 0
    if -3 <= exponent < 3:
        return Tex(sign + f"{abs(x):.3g}")
    return Tex(sign + f"${abs(x) / 10 ** exponent:.2g}\\times10^{{{exponent}}}$")


def fmt_int(n: Any) -> Tex:
    return Tex(f"{int(n):,}".replace(",", "{,}"))


def fmt_pct(x: Any, digits: int = 1) -> Tex:
    return Tex(f"{100 * float(x):.{digits}f}\\,\\%")


def _finalize(value: Any) -> str:
    """Every ``<< value >>`` of a template passes here: LaTeX passes, numbers are formatted, text is escaped."""
    if value is None:
        return ""
    if isinstance(value, Tex):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return fmt_int(value)
    if isinstance(value, float):
        return fmt_num(value)
    return escape_tex(value)


def _and_list(items: Any) -> Tex:
    items = [i if isinstance(i, Tex) else escape_tex(i) for i in items]
    if len(items) <= 1:
        return Tex("".join(items))
    return Tex(", ".join(items[:-1]) + " and " + items[-1])


def _capfirst(value: Any) -> Tex:
    value = value if isinstance(value, Tex) else escape_tex(value)
    return Tex(value[:1].upper() + value[1:])


def _cite(bib: list[str] | set[str], command: str, fallback: str = "") -> Any:
    def cite(*keys: str) -> Tex:
        known = [k for k in keys if k in bib]
        return Tex(f"{command}{{{','.join(known)}}}") if known else Tex(fallback)

    return cite


def make_env(template_name: str) -> jinja2.Environment:
    """Jinja2 for LaTeX: ``<< x >>`` variables (escaped unless :class:`Tex`), ``<% %>`` blocks, ``<# #>`` comments.

    Templates are looked up in ``prompts/templates/<template_name>/paper/`` first, then ``prompts/paper/``.
    """
    env = jinja2.Environment(
        loader=layers.loader("paper", template_name),
        block_start_string="<%", block_end_string="%>",
        variable_start_string="<<", variable_end_string=">>",
        comment_start_string="<#", comment_end_string="#>",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined, finalize=_finalize, autoescape=False,
    )
    env.filters.update(
        num=fmt_num, signed=fmt_signed, pval=fmt_p, int=fmt_int, pct=fmt_pct, andlist=_and_list,
        peq=fmt_p_eq, tex=lambda s: Tex(s), esc=escape_tex, citetkey=lambda k: Tex(f"\\citet{{{k}}}"),
        capfirst=_capfirst, plainmath=plain_math,
    )
    return env


# ------------------------------------------------------------------------------------------------------------ facts
GENERIC_FIGURES = ("learning_curves", "final_returns", "final_values", TREE_FIGURE)  # the generic stage's figures
MAX_PARAMETER_ROWS = 12  # a parametric candidate's table shows at most this many entries ...
MAX_VALUE_CHARS = 60  # ... each value's JSON cut to this length
UNKNOWN_SCHEMA = {"x_label": "step", "curve_label": "value", "final_label": "final value"}


def bib_keys(path: Path) -> list[str]:
    """The entry keys of a .bib file."""
    return re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", Path(path).read_text())


def _profile_value(profile: Any, key: str, default: Any = None) -> Any:
    if isinstance(profile, dict):
        return profile.get(key, default)
    return getattr(profile, key, default)


def _plain_lhs(lhs: str) -> str:
    r"""A LaTeX left-hand side as plain text for the verbatim fallback (``D(r, A, \tfrac{n}{N})`` -> ``D(r, A, n/N)``)."""
    plain = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"\1/\2", lhs)
    plain = re.sub(r"\\[A-Za-z]+\s*", "", plain)
    return plain.replace("{", "").replace("}", "").strip() or "f"


def _formula(latex: str, label: str, lhs: str = "f") -> Tex:
    return Tex(
        "\\begin{equation}\n"
        f"  \\fitmath{{{lhs} = {latex}}}\n"
        f"  \\label{{{label}}}\n"
        "\\end{equation}\n"
    )


def _verbatim_formula(text: str, label: str, lhs: str | None = "f") -> Tex:
    """A formula that would not compile, shown as escaped typewriter text (with a number to \\ref)."""
    prefix = f"{escape_tex(_plain_lhs(lhs), True)} = " if lhs else ""
    return Tex(
        "\\begin{equation}\n"
        f"  \\parbox{{0.85\\linewidth}}{{\\raggedright\\ttfamily {prefix}{escape_tex(text, True)}}}\n"
        f"  \\label{{{label}}}\n"
        "\\end{equation}\n"
    )


def _parameters_block(candidate: Any, label: str) -> Tex:
    """A parametric candidate's JSON as a small two-column table (numbered like a formula, so it can be \\ref'd)."""
    items = list(candidate.items()) if isinstance(candidate, dict) else [("value", candidate)]
    lines = []
    for key, value in items[:MAX_PARAMETER_ROWS]:
        shown = json.dumps(value, sort_keys=True, default=str)
        if len(shown) > MAX_VALUE_CHARS:
            shown = shown[:MAX_VALUE_CHARS - 3] + "..."
        lines.append(f"\\texttt{{{escape_tex(key, True)}}} & \\texttt{{{escape_tex(shown, True)}}} \\\\")
    if len(items) > MAX_PARAMETER_ROWS:
        lines.append(f"\\multicolumn{{2}}{{l}}{{\\ldots{{}} and {len(items) - MAX_PARAMETER_ROWS} more}} \\\\")
    if not items:
        lines.append("\\multicolumn{2}{l}{(no parameters)} \\\\")
    body = "\n".join(lines)
    return Tex(
        "\\begin{equation}\n"
        f"  \\fitpar{{\\small\\begin{{tabular}}{{ll}}\\toprule\nParameter & Value \\\\\n\\midrule\n{body}\n"
        "\\bottomrule\n\\end{tabular}}\n"
        f"  \\label{{{label}}}\n"
        "\\end{equation}\n"
    )


def _parametric_value(idea: dict) -> Any:
    if idea.get("candidate") is not None:
        return idea["candidate"]
    try:
        return json.loads(idea.get("source") or "")
    except (TypeError, ValueError):
        return {}


def candidate_formula(idea: dict, safe: bool, lhs: str = "f") -> tuple[Tex, str]:
    """The candidate's display block and how it was obtained ("given", "tree", "verbatim", "parameters").

    A parametric candidate without an expression tree shows its JSON as a table; otherwise the formula ``lhs = ...``
    comes from the given LaTeX (not in safe mode), else from the expression tree, else verbatim text.
    """
    from jaxlib_kernels import symbolic

    if idea.get("kind") == "parametric" and idea.get("expression") is None:
        return _parameters_block(_parametric_value(idea), "eq:candidate"), "parameters"
    given = str(idea.get("expression_latex") or "").strip()
    from_tree = None
    try:
        symbolic.validate(idea.get("expression"))
        from_tree = symbolic.to_latex(idea["expression"])
    except symbolic.ExpressionError:  # no tree, or a malformed one: the given LaTeX is all we have
        from_tree = None
    if not safe and given and not FORBIDDEN_TEX.search(given):
        return _formula(given, "eq:candidate", lhs), "given"
    if from_tree is not None and (not safe or from_tree != given):
        return _formula(from_tree, "eq:candidate", lhs), "tree"
    return _verbatim_formula(given or "(no formula)", "eq:candidate", lhs), "verbatim"


def _variables(expr: Any) -> list[str]:
    """The variable names of an expression tree (``[op, arg, ...]`` lists, names as strings, numbers)."""
    found: set[str] = set()

    def walk(e: Any) -> None:
        if isinstance(e, str):
            found.add(e)
        elif isinstance(e, (list, tuple)) and e:
            for arg in e[1:]:
                walk(arg)

    walk(expr)
    return sorted(found)


def _baseline_formulas(baselines: dict, labels: dict, lhs: str = "f") -> list[dict]:
    """Each baseline's display formula: its ``latex``, else its expression tree, else its description as text.

    ``baselines`` maps names to :class:`~jaxlib_kernels.templates.base.Baseline` objects (or, as before the
    template contract, to bare expression trees).
    """
    from jaxlib_kernels import symbolic

    out = []
    for name, baseline in baselines.items():
        label = f"eq:{_label_key(name)}"
        is_record = hasattr(baseline, "source")
        expr = getattr(baseline, "expression", None) if is_record else baseline
        latex = getattr(baseline, "latex", None) if is_record else None
        description = str(getattr(baseline, "description", "") or "") if is_record else ""
        shown = labels.get(name) or getattr(baseline, "label", None) or name
        formula = None
        if latex and not FORBIDDEN_TEX.search(latex):
            formula = _formula(latex, label, lhs)
        else:
            try:
                symbolic.validate(expr)
                formula = _formula(symbolic.to_latex(expr), label, lhs)
            except symbolic.ExpressionError:
                formula = _verbatim_formula(description or shown, label, None)
        out.append({"name": name, "label": shown, "formula": formula, "description": description,
                    "ref": Tex(f"Eq.~\\eqref{{{label}}}"), "variables": _variables(expr)})
    return out


def _metric_of(template: Any, info: dict) -> Any:
    """The metric of a setting: the template's, unless final_info says the other direction (then that one)."""
    from jaxlib_kernels.templates.base import Metric

    maximize = info.get("maximize")
    if template is not None and (maximize is None or bool(maximize) == template.metric.maximize):
        return template.metric
    return Metric.recorded(maximize)


HELD_CHANGE = re.compile(r"\s*\((?:held[- ]out|training)(?::?\s*([^)]*))?\)\s*$")  # "(held-out grid)" -> "grid"


def _judged(final_info: dict) -> dict:
    """Per setting: Holm-adjusted p, whether both arms had ``MIN_SEEDS`` seeds and whether the difference is called
    significant; as recorded by the aggregation, else computed from the recorded p-values and seed counts."""
    comps = {s: i["comparison"] for s, i in final_info.items() if i.get("comparison")}
    seeds = {s: min(int((final_info[s].get("n") or {}).get(m, 0) or 0) for m in (c.get("candidate"), c.get("best_baseline")))
             for s, c in comps.items()}
    computed = verdicts({s: c.get("p_value") for s, c in comps.items()}, seeds)
    return {s: {k: comps[s].get(k, v) for k, v in computed[s].items()} if "p_holm" in comps[s] else computed[s]
            for s in comps}


def _setting_facts(template: Any, final_info: dict, candidate: str, labels: dict, budget: int) -> list[dict]:
    rows = []
    judged = _judged(final_info)
    for name, info in final_info.items():
        setting = template.settings.get(name) if template is not None else None
        metric = _metric_of(template, info)
        comp = info.get("comparison") or {}
        best = comp.get("best_baseline")
        diff = float(comp["difference"]) if _finite(comp.get("difference")) else math.nan
        improvement = float(comp["improvement"]) if _finite(comp.get("improvement")) else (
            metric.improvement(diff, 0.0) if _finite(diff) else math.nan)
        verdict = judged.get(name, {"p_holm": math.nan, "seeds_enough": False, "significant": False})
        sig = bool(verdict["significant"]) and bool(comp.get("significant", False))
        better, worse = sig and improvement > 0, sig and improvement < 0
        direction = "better" if better else ("worse" if worse else "tie")
        means = {m: float(v) for m, v in (info.get("means") or {}).items() if _finite(v)}
        ranked = metric.rank(means) if means else []
        scale = float(getattr(setting, "budget_scale", 1.0) or 1.0)
        best_mean = means.get(best, math.nan) if best else math.nan
        described = HELD_CHANGE.search(getattr(setting, "description", "") or "")
        rows.append({
            "name": name,
            "env": info.get("env") or getattr(setting, "env", ""),
            "description": HELD_CHANGE.sub("", getattr(setting, "description", "") or ""),
            "changes": (described.group(1) or "").strip() if described and bool(info.get("held_out")) else "",
            "held_out": bool(info.get("held_out", getattr(setting, "held_out", False))),
            "steps": max(1, round(budget * scale)) if budget else 0,
            "candidate_mean": means.get(candidate, math.nan),
            "candidate_stderr": info.get("stderrs", {}).get(candidate, math.nan),
            "best": best, "best_label": labels.get(best, best or "none"),
            "best_mean": best_mean,
            "best_stderr": info.get("stderrs", {}).get(best, math.nan) if best else math.nan,
            "difference": diff, "improvement": improvement,
            "ci": clip_interval(comp["ci95"], difference_bounds(metric.bounds)) if comp.get("ci95")
            else [math.nan, math.nan], "p": comp.get("p_value", math.nan),
            "p_holm": verdict["p_holm"], "seeds_enough": bool(verdict["seeds_enough"]),
            "significant": sig, "direction": direction, "test": comp.get("test", "Welch t-test"),
            "rank": ranked.index(candidate) + 1 if candidate in ranked else None, "n_methods": len(ranked),
            "top": ranked[0] if ranked else None,
            "relative": improvement / abs(best_mean) if _finite(best_mean) and best_mean and _finite(improvement)
            else math.nan,
        })
    return rows


def _outcome(rows: list[dict]) -> str:
    better = any(r["direction"] == "better" for r in rows)
    worse = any(r["direction"] == "worse" for r in rows)
    if not rows:
        return "none"
    return "mixed" if better and worse else "better" if better else "worse" if worse else "tie"


def _contract_facts(template: Any, template_name: str, final_info: dict, idea: dict) -> dict:
    """What the template contract says about the problem; defaults when the template is unknown."""
    if template is None:
        maximize = bool(next((i["maximize"] for i in final_info.values() if "maximize" in i), True))
        return {
            "template_title": template_name, "plugin_name": "plugin", "plugin_signature": "plugin",
            "plugin_kind": idea.get("kind", "source"), "plugin_args": [], "plugin_returns": "",
            "formula_lhs": Tex("f"), "metric": "the final value", "metric_name": "final",
            "maximize": maximize, "budget_unit": "steps", "probe_scale": 1.0, "novelty_threshold": None,
            **UNKNOWN_SCHEMA,
        }
    plugin = template.plugin
    return {
        "template_title": template.title, "plugin_name": plugin.name, "plugin_signature": plugin.signature,
        "plugin_kind": plugin.kind,
        "plugin_args": [{"name": a.name, "shape": a.shape, "description": a.description} for a in plugin.args],
        "plugin_returns": plugin.returns, "formula_lhs": Tex(template.formula_lhs),
        "metric": template.metric.description, "metric_name": template.metric.name,
        "maximize": template.metric.maximize, "budget_unit": template.budget_unit,
        "probe_scale": template.probe_scale, "novelty_threshold": template.novelty_threshold,
        "x_label": template.schema.x_label, "curve_label": template.schema.curve_label,
        "final_label": template.schema.final_label,
    }


def _bounds(template: Any, final_info: dict) -> tuple[float, float] | None:
    """The metric's range (``Metric.bounds``, else final_info's ``bounds``); None when unknown or unbounded."""
    recorded = next((i.get("bounds") for i in final_info.values() if i.get("bounds")), None)
    bounds = getattr(getattr(template, "metric", None), "bounds", None) or recorded
    if not bounds:
        return None
    low, high = (-math.inf if b is None else float(b) for b in bounds)
    return (low, high)


def _range_text(bounds: tuple[float, float] | None) -> Tex | None:
    """``[0, 500]``, ``at least -12`` or ``at most 1`` (LaTeX); None without bounds."""
    if not bounds:
        return None
    lo, hi = (Tex(f"{b:g}".replace("-", r"\ensuremath{-}")) if math.isfinite(b) else None for b in bounds)
    if lo is not None and hi is not None:
        return Tex(f"[{lo}, {hi}]")
    return Tex(f"at least {lo}") if lo is not None else Tex(f"at most {hi}") if hi is not None else None


def ran_names(final_info: dict, idea: dict) -> set[str]:
    """The names of what ran: the settings and methods of ``final_info`` and the candidate's string parameters."""
    names = set(final_info) | {m for i in final_info.values() for m in (i.get("means") or {})}
    candidate = _parametric_value(idea) if idea.get("kind") == "parametric" else {}
    candidate = candidate if isinstance(candidate, dict) else {}
    return names | {str(v) for v in candidate.values() if isinstance(v, str)}


def _nearest_label(nearest: str | None, labels: dict) -> str:
    """Novelty's nearest known candidate in words: ``baseline kl`` -> ``the baseline KL``."""
    if not nearest:
        return "none"
    kind, _, key = str(nearest).partition(" ")
    if kind == "baseline" and key in labels:
        return f"the baseline {labels[key]}"
    return labels.get(nearest, nearest)


def _tree_facts(record: dict, template: Any, labels: dict, candidate: str, methods: list[str], figs: dict,
                final_info: dict) -> dict:
    """The research tree as the text templates see it: :func:`tasks.treefacts.summarize` with each method's label,
    the stages that made nodes, the ablation that loses most, and the references of its tables and figure."""
    tree = treefacts.summarize(record, treefacts.metric_of(record, template), methods, final_info)
    for row in tree["tuning"]:
        row["label"] = labels.get(candidate if row["role"] == "candidate" else row["name"], row["name"])
    ablations = [a for a in tree["ablations"] if math.isfinite(a["change"])]
    budgets = sorted({int(b) for b in tree["search_budget"].values()})
    return {
        **tree,
        "untuned_labels": [labels.get(m, m) for m in tree["untuned"]],
        "stages": [{"stage": k, "n": n} for k, n in tree["per_stage"].items() if n],
        "constants_tuned": any(c["constant"] for r in tree["tuning"] for c in r["changes"]),
        "largest_loss": min(ablations, key=lambda a: a["change"]) if ablations else None,
        "search_budget_min": budgets[0] if budgets else None, "search_budget_max": budgets[-1] if budgets else None,
        "fraction": (record.get("budgets") or {}).get("fraction"),
        "tuning_table": Tex("Table~\\ref{tab:tuning}"), "ablation_table": Tex("Table~\\ref{tab:ablation}"),
        "fig": figs.get(TREE_FIGURE),
    }


def _replication_facts(rep: dict | None, template: Any, final_info: dict, labels: dict, candidate: str) -> dict | None:
    """``replication.json`` (``jaxlib_kernels.stats.replication``) for the text: each method's IQM with its bootstrap
    interval, best first by the metric; the one-sided tests against every baseline, Holm-corrected over all pairs."""
    if not rep or not rep.get("iqm"):
        return None
    metric = _metric_of(template, next(iter(final_info.values()), {}))
    iqm = {m: v for m, v in rep["iqm"].items() if _finite(v.get("iqm"))}
    rows = [{"name": m, "label": labels.get(m, m), "iqm": float(iqm[m]["iqm"]), "mean": iqm[m].get("mean"),
             "ci": list(iqm[m].get("ci95") or [math.nan, math.nan]), "candidate": m == candidate}
            for m in metric.rank({m: float(v["iqm"]) for m, v in iqm.items()})]
    tests = rep.get("tests") or []
    return {"rows": rows, "candidate": next((r for r in rows if r["candidate"]), None),
            "best_baseline": next((r for r in rows if not r["candidate"]), None),
            "pairs": len(tests), "significant": sum(bool(t.get("significant")) for t in tests),
            "held_significant": sum(bool(t.get("significant")) and bool(t.get("held_out")) for t in tests),
            "seeds": [int(s) for s in rep.get("seeds") or []],
            "seeds_enough": all(t.get("seeds_enough", True) for t in tests),
            "min_seeds": int(rep.get("min_seeds") or 0)}


def build_facts(template_name: str, idea: dict, final_info: dict, figures: list[dict], context: dict,
                bib: list[str], safe: bool = False) -> dict:
    """Everything the text templates may say, measured or given; free text stays raw and is escaped on output.

    The names are listed in ``prompts/paper/README.md``. An unknown template still gets a paper, with generic
    descriptions and the metric's direction taken from ``final_info``.
    """
    template = layers.template_or_none(template_name)
    contract = _contract_facts(template, template_name, final_info, idea)
    labels = dict(getattr(template, "baseline_labels", {}) or {})
    labels.update(context.get("labels") or {})
    candidate = idea.get("Name", "candidate")
    comps = [i.get("comparison", {}) for i in final_info.values() if i.get("comparison")]
    if comps:
        candidate = comps[0].get("candidate", candidate)
    labels.setdefault(candidate, candidate)
    profile = context.get("profile") or {}
    budget = int(_profile_value(profile, "budget", 0) or _profile_value(profile, "total_timesteps", 0) or 0)
    rows = _setting_facts(template, final_info, candidate, labels, budget)
    train = [r for r in rows if not r["held_out"]]
    held = [r for r in rows if r["held_out"]]
    ns = [int(v) for i in final_info.values() for v in (i.get("n") or {}).values()]
    plain = (lambda s: escape_tex(s, True)) if safe else (lambda s: s)
    baselines = context.get("baselines") or dict(getattr(template, "baselines", {}) or {})
    methods = {m for i in final_info.values() for m in (i.get("means") or {})}
    if methods:  # only the baselines that ran
        baselines = {n: b for n, b in baselines.items() if n in methods}
    envs = list(dict.fromkeys(r["env"] for r in rows if r["env"]))
    bounds = _bounds(template, final_info)
    formula, formula_source = candidate_formula(idea, safe, lhs=str(contract["formula_lhs"]))
    novelty = idea.get("novelty") or {}
    literature = [dict(e) for e in novelty.get("literature", []) if e.get("key") in bib]
    figs = {f["name"]: Tex(f"Figure~\\ref{{fig:{_label_key(f['name'])}}}") for f in figures}
    maximize = contract["maximize"]
    record = treefacts.load(idea)
    ran = [m for i in final_info.values() for m in (i.get("means") or {})]
    tree = _tree_facts(record, template, labels, candidate, list(dict.fromkeys(ran)), figs, final_info) \
        if record else None
    replication = _replication_facts(context.get("replication"), template, final_info, labels, candidate)
    return {
        **contract,
        "tree": tree,
        "tuned": bool(tree and tree["tuned"]),
        "replication": replication,
        "iqm_table": Tex("Table~\\ref{tab:iqm}"),
        "template_name": template_name,
        "metric_direction": "maximised" if maximize else "minimised",
        "higher": "higher" if maximize else "lower",
        "highest": "highest" if maximize else "lowest",
        "title": plain(idea.get("Title") or candidate),
        "name": plain(candidate),
        "label": plain(labels[candidate]),
        "hypothesis": plain(idea.get("Hypothesis", "")),
        "experiment": plain(idea.get("Experiment", "")),
        "scores": {k: idea.get(k) for k in ("Interestingness", "Feasibility", "Novelty")},
        "idea": idea,
        "kind": idea.get("kind") or contract["plugin_kind"],
        "formula": formula,
        "formula_source": formula_source,
        "candidate_ref": Tex("Eq.~\\eqref{eq:candidate}"),
        "variables": _variables(idea.get("expression")),
        "baselines": _baseline_formulas(baselines, labels, str(contract["formula_lhs"])),
        "settings": rows, "train": train, "held": held,
        "train_outcome": _outcome(train), "held_outcome": _outcome(held),
        "better": [r for r in rows if r["direction"] == "better"],
        "worse": [r for r in rows if r["direction"] == "worse"],
        "ties": [r for r in rows if r["direction"] == "tie"],
        "seeds_min": min(ns) if ns else 0, "seeds_max": max(ns) if ns else 0,
        "seeds": min(ns) if ns else int(_profile_value(profile, "seeds", 0) or 0),
        "budget": budget,
        "min_seeds": MIN_SEEDS,
        "seeds_enough": bool(rows) and all(r["seeds_enough"] for r in rows if r["best"]),
        "envs": envs,
        "ran_env": lambda *parts: any(p in e for e in envs for p in parts),
        "ran": ran_names(final_info, idea),
        "budgets_differ": len({r["steps"] for r in rows}) > 1,
        "held_changes": list(dict.fromkeys(r["changes"] for r in held if r["changes"])),
        "bounds": bounds,
        "bounds_text": _range_text(bounds),
        "novelty": {
            "decision": novelty.get("decision", "unknown"),
            "reason": plain(novelty.get("reason", "")),
            "nearest": plain(_nearest_label(novelty.get("nearest"), labels)),
            "distance": novelty.get("distance"),
            "literature": literature,
        },
        "figs": figs,
        "curves_fig": figs.get("learning_curves"),
        "finals_fig": figs.get("final_returns") or figs.get("final_values"),
        "extra_figures": [{"name": f["name"], "ref": figs[f["name"]], "caption": plain(f.get("caption", ""))}
                          for f in figures if f["name"] not in GENERIC_FIGURES],
        "table": Tex("Table~\\ref{tab:results}"),
        "tests_table": Tex("Table~\\ref{tab:tests}"),
        "setup_table": Tex("Table~\\ref{tab:settings}"),
        "run_id": str(context.get("run_id", "")),
        "bib": set(bib),
        "cite": _cite(bib, "~\\citep"),
        "citet": _cite(bib, "\\citet", "prior work"),
    }


# ------------------------------------------------------------------------------------------------------- the document
class Abstract(Environment):
    _latex_name = "abstract"


PREAMBLE = r"""
\newsavebox{\fitbox}
\newlength{\fitmax}
\newcommand{\fitmath}[1]{\sbox{\fitbox}{$\displaystyle #1$}%
  \ifdim\wd\fitbox>1.125\linewidth\makebox[\linewidth]{\resizebox{0.8\wd\fitbox}{!}{\usebox{\fitbox}}}%
  \else\ifdim\wd\fitbox>0.9\linewidth\resizebox{0.9\linewidth}{!}{\usebox{\fitbox}}\else\usebox{\fitbox}\fi\fi}
\newcommand{\fitto}[2]{\setlength{\fitmax}{#1}\sbox{\fitbox}{#2}%
  \ifdim\wd\fitbox>\fitmax\sbox{\fitbox}{\footnotesize\setlength{\tabcolsep}{4pt}#2}\fi
  \ifdim\wd\fitbox>\fitmax\sbox{\fitbox}{\scriptsize\setlength{\tabcolsep}{3pt}#2}\fi
  \makebox[\linewidth]{\usebox{\fitbox}}}
\newcommand{\fitwidth}[1]{\fitto{\linewidth}{#1}}
\newcommand{\fitpar}[1]{\fitto{0.85\linewidth}{#1}}
\renewcommand{\topfraction}{0.9}
\renewcommand{\bottomfraction}{0.8}
\renewcommand{\textfraction}{0.1}
\renewcommand{\floatpagefraction}{0.7}
\setcounter{topnumber}{3}
\setcounter{bottomnumber}{2}
\setcounter{totalnumber}{5}
"""
# \fitmath: a formula wider than 0.9 of the line is shrunk to fit but never below 0.8 (its subscripts stay at 6 pt or
# more; wider still, it overhangs the margins). \fitwidth/\fitpar: a table too wide at
# \small is set in \footnotesize, then \scriptsize with narrower column gaps (never shrunk: 6 pt or more); wider
# still, it overhangs the margins. Float fractions let text pages take figures so no float page is half empty.


def results_table_numbers(final_info: dict) -> list[str]:
    """The numbers of the results table, as printed (3 decimals): every mean and standard error."""
    out = []
    for info in final_info.values():
        for method, mean in info.get("means", {}).items():
            out.append(f"{float(mean):.3f}")
            se = info.get("stderrs", {}).get(method)
            if se is not None and math.isfinite(float(se)):
                out.append(f"{float(se):.3f}")
    return out


def _float_table(env, facts: dict, tab: Any, name: str, fit: bool = True) -> Table:
    """A table float: centred, small, ``tab`` (shrunk to the line by ``\\fitwidth`` when ``fit``), the caption of
    ``caption_<name>.tex.j2`` and the label ``tab:<name>``."""
    table = Table(position="tbp")
    table.append(NoEscape(r"\centering\small"))
    if fit:
        table.append(NoEscape(r"\fitwidth{%"))
    table.append(tab)
    if fit:
        table.append(NoEscape("}"))
    table.add_caption(NoEscape(env.get_template(f"caption_{name}.tex.j2").render(**facts).strip()))
    table.append(NoEscape(f"\\label{{tab:{name}}}"))
    return table


def _results_table(env, facts: dict, final_info: dict) -> Table:
    settings = facts["settings"]
    candidate = next(iter(final_info.values()), {}).get("comparison", {}).get("candidate")
    methods: list[str] = []
    for info in final_info.values():
        methods += [m for m in info.get("means", {}) if m not in methods]
    if candidate in methods:  # the candidate last, under a rule
        methods = [m for m in methods if m != candidate] + [candidate]
    labels = {b["name"]: b["label"] for b in facts["baselines"]}
    tab = Tabular("l" + "c" * len(settings), booktabs=True)
    tab.add_row([NoEscape("Method")] + [
        NoEscape(escape_tex(s["name"]) + (r"$^\dagger$" if s["held_out"] else "")) for s in settings
    ])
    tab.add_hline()
    for method in methods:
        if method == candidate:
            tab.add_hline()
        cells = [NoEscape(escape_tex(facts["label"] if method == candidate else labels.get(method, method)))]
        for s in settings:
            info = final_info[s["name"]]
            mean = info["means"].get(method)
            se = info.get("stderrs", {}).get(method)
            if mean is None:
                cells.append(NoEscape("--"))
                continue
            m = fmt_num(mean)
            cell = (rf"\textbf{{{m}}}" if method == s["top"] else m) + (rf" $\pm$ {fmt_num(se)}" if se is not None else "")
            cells.append(NoEscape(cell))
        tab.add_row(cells)
    return _float_table(env, facts, tab, "results")


def _tests_table(env, facts: dict) -> Table:
    tab = Tabular("llcccccc", booktabs=True)
    tab.add_row([NoEscape(c) for c in (
        "Setting", "Best baseline", "Difference", r"95\,\% CI", r"$p$", r"$p_{\mathrm{Holm}}$", "Significant", "Rank")])
    tab.add_hline()
    for s in facts["settings"]:
        lo, hi = (s["ci"] + [math.nan, math.nan])[:2]
        tab.add_row([
            NoEscape(escape_tex(s["name"]) + (r"$^\dagger$" if s["held_out"] else "")),
            NoEscape(escape_tex(s["best_label"])),
            NoEscape(fmt_signed(s["difference"])),
            NoEscape(f"[{fmt_num(lo)}, {fmt_num(hi)}]"),
            NoEscape(fmt_p(s["p"])),
            NoEscape(fmt_p(s["p_holm"])),
            NoEscape({"better": "yes (better)", "worse": "yes (worse)", "tie": "no"}[s["direction"]]
                     if s["seeds_enough"] else "not claimed"),
            NoEscape(f"{s['rank']}/{s['n_methods']}" if s["rank"] else "--"),
        ])
    return _float_table(env, facts, tab, "tests")


def _settings_table(env, facts: dict) -> Table:
    tab = Tabularx("lllrX", width_argument=NoEscape(r"\linewidth"), booktabs=True)  # the description wraps
    budget_head = _capfirst(facts["budget_unit"])
    env_head = env.get_template("settings_env_head.tex.j2").render(**facts).strip()
    tab.add_row([NoEscape(c) for c in ("Setting", env_head, "Role", budget_head, "Description")])
    tab.add_hline()
    for s in facts["settings"]:
        tab.add_row([
            NoEscape(escape_tex(s["name"])), NoEscape(r"\texttt{" + escape_tex(s["env"]) + "}"),
            NoEscape("held out" if s["held_out"] else "training"), NoEscape(fmt_int(s["steps"])),
            NoEscape(escape_tex(s["description"])),
        ])
    return _float_table(env, facts, tab, "settings", fit=False)


def _tuning_table(env, facts: dict) -> Table:
    """Every method's tuned values (before -> after), its search score before and after, its evaluations."""
    tab = Tabularx(r"l>{\raggedright\arraybackslash}Xrrr", width_argument=NoEscape(r"\linewidth"), booktabs=True)
    tab.add_row([NoEscape(c) for c in ("Method", r"Tuned values (before \ensuremath{\rightarrow} after)",
                                       "Score before", "Score after", "Evaluations")])
    tab.add_hline()
    for row in facts["tree"]["tuning"]:
        if row["role"] == "candidate":
            tab.add_hline()
        values = "; ".join(f"\\texttt{{{escape_tex(c['name'])}}} " + (
            f"{fmt_value(c['before'])} \\ensuremath{{\\rightarrow}} {fmt_value(c['after'])}"
            if c["before"] != c["after"] else f"{fmt_value(c['after'])} (kept)") for c in row["changes"]) or "--"
        tab.add_row([NoEscape(escape_tex(row["label"])), NoEscape(values), NoEscape(fmt_num(row["score_before"])),
                     NoEscape(fmt_num(row["score_after"])), NoEscape(fmt_int(row["evaluations"]))])
    return _float_table(env, facts, tab, "tuning", fit=False)


def _ablation_table(env, facts: dict) -> Table:
    """The final candidate, then each ablation: its score on the search seeds and its change against the final one."""
    tree = facts["tree"]
    tab = Tabularx("Xrr", width_argument=NoEscape(r"0.85\linewidth"), booktabs=True)
    tab.add_row([NoEscape(c) for c in ("Variant", "Score", "Change")])
    tab.add_hline()
    tab.add_row([NoEscape(env.get_template("ablation_final_row.tex.j2").render(**facts).strip()),
                 NoEscape(fmt_num(tree["final_score"])), NoEscape("--")])
    for a in tree["ablations"]:
        tab.add_row([NoEscape(plain_math(a["label"])), NoEscape(fmt_num(a["score"])), NoEscape(fmt_signed(a["change"]))])
    return _float_table(env, facts, tab, "ablation", fit=False)


def _iqm_table(env, facts: dict) -> Table:
    """Each method's interquartile mean over settings and seeds of the replication, its bootstrap 95 % interval and
    its mean, best first."""
    tab = Tabular("lccc", booktabs=True)
    tab.add_row([NoEscape(c) for c in ("Method", "IQM", r"95\,\% CI", "Mean")])
    tab.add_hline()
    for r in facts["replication"]["rows"]:
        label = escape_tex(facts["label"] if r["candidate"] else r["label"])
        lo, hi = (r["ci"] + [math.nan, math.nan])[:2]
        tab.add_row([NoEscape(rf"\textbf{{{label}}}" if r["candidate"] else label), NoEscape(fmt_num(r["iqm"])),
                     NoEscape(f"[{fmt_num(lo)}, {fmt_num(hi)}]"), NoEscape(fmt_num(r["mean"]))])
    return _float_table(env, facts, tab, "iqm")


def _figure(fig: dict, caption: str) -> Figure:
    """The figure at the width it was drawn (``width_in``), so its text prints at the size it was drawn; a figure of
    unknown width fills the line."""
    figure = Figure(position="tbp")
    width = fig.get("width_in")
    size = NoEscape(r"\linewidth") if not width or width >= TEXT_WIDTH_IN - 0.01 else NoEscape(f"{float(width):.3f}in")
    figure.add_image(f"figures/{Path(fig['png']).name}", width=size)
    figure.add_caption(NoEscape(escape_tex(caption)))
    figure.append(NoEscape(f"\\label{{fig:{_label_key(fig['name'])}}}"))
    return figure


def _place(body: str, floats: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """Insert each float (label, LaTeX) after the paragraph of ``body`` that first cites it; (body, the floats
    ``body`` never cites)."""
    rest = []
    for label, latex in floats:
        kind, _, key = label.partition(":")
        hit = re.search(rf"\\(?:auto|c)?ref\{{{kind}:({re.escape(key)}|{re.escape(key.replace('-', '_'))})\}}", body)
        if hit is None:
            rest.append((label, latex))
            continue
        end = body.find("\n\n", hit.end())
        end = len(body) if end < 0 else end
        body = body[:end] + "\n" + latex + body[end:]
    return body, rest


def build_document(template_name: str, facts: dict, final_info: dict, figures: list[dict],
                   sections: dict[str, str] | None = None) -> Document:
    """The pylatex document: preamble, title, abstract, sections from templates, tables, figures, bibliography.

    ``sections`` (LLM backend): LaTeX bodies by section key (and ``abstract``) used in place of the templates.
    """
    env = make_env(template_name)
    sections = sections or {}
    doc = Document(
        documentclass="article", document_options=["11pt"], geometry_options={"margin": "1in"},
        fontenc="T1", inputenc="utf8", lmodern=True, textcomp=True, page_numbers=True,
    )
    for pkg, opts in (("amsmath", None), ("amssymb", None), ("graphicx", None), ("booktabs", None), ("tabularx", None),
                      ("natbib", ["round", "authoryear"]), ("microtype", None)):
        doc.packages.append(Package(pkg, options=opts))
    doc.preamble.append(NoEscape(PREAMBLE))
    doc.preamble.append(Package("xcolor"))
    doc.preamble.append(Package("hyperref", options=["colorlinks=true", "allcolors=blue!50!black"]))
    doc.preamble.append(Command("title", NoEscape(escape_tex(facts["title"]))))
    author = r"jax-scientist (automated research pipeline)"
    if facts["run_id"]:
        author += r"\\ \small run \texttt{" + escape_tex(facts["run_id"], True) + "}"
    doc.preamble.append(Command("author", NoEscape(author)))
    doc.preamble.append(Command("date", NoEscape(r"\today")))
    doc.append(NoEscape(r"\maketitle"))
    abstract = Abstract()
    abstract.append(NoEscape(sections.get("abstract") or env.get_template("abstract.tex.j2").render(**facts)))
    doc.append(abstract)
    # every float after the paragraph that first cites it, from the method section on (not in the introduction's
    # overview), the ones cited nowhere there at the end of their own section
    tree = facts["tree"]
    captions = {TREE_FIGURE: env.get_template("caption_tree.tex.j2").render(**facts).strip()} if tree else {}
    own = {"setup": [("tab:settings", _settings_table(env, facts).dumps())],
           "results": [("tab:results", _results_table(env, facts, final_info).dumps()),
                       ("tab:tests", _tests_table(env, facts).dumps())]
           + ([("tab:tuning", _tuning_table(env, facts).dumps())] if tree and tree["tuning"] else [])
           + ([("tab:ablation", _ablation_table(env, facts).dumps())] if tree and tree["ablations"] else [])
           + ([("tab:iqm", _iqm_table(env, facts).dumps())] if tree and tree["replicated"] and facts["replication"] else [])
           + [(f"fig:{_label_key(f['name'])}", _figure(f, Tex(captions[f["name"]]) if f["name"] in captions
                                                       else f.get("caption", "")).dumps()) for f in figures]}
    bodies = {key: sections.get(key) or env.get_template(f"{key}.tex.j2").render(**facts) for key, _ in SECTIONS}
    if tree:  # the tree's paragraphs close the results, whoever wrote them
        bodies["results"] = bodies["results"].rstrip() + "\n\n" + env.get_template("tree.tex.j2").render(**facts)
    pending = [(key, f) for key, _ in SECTIONS for f in own.get(key, [])]
    placed: set[str] = set()
    for key, _ in SECTIONS[SECTIONS_ORDER[FLOATS_FROM]:]:
        mine = [f for _, f in pending if f[0] not in placed]
        bodies[key], rest = _place(bodies[key], mine)
        placed |= {f[0] for f in mine} - {f[0] for f in rest}
    for key, title in SECTIONS:
        section = Section(title, label=False)
        section.append(NoEscape(f"\\label{{sec:{key}}}\n"))
        section.append(NoEscape(bodies[key]))
        for label, latex in own.get(key, []):
            if label not in placed:
                section.append(NoEscape(latex))
        doc.append(section)
    doc.append(NoEscape(r"\bibliographystyle{plainnat}"))
    doc.append(NoEscape(r"\bibliography{references}"))
    return doc


# ---------------------------------------------------------------------------------------------- words of a paper
def _flat(text: str) -> str:
    return " ".join(text.replace("\u2212", "-").replace("\u00a0", " ").split())


def internal_words(text: str, template_name: str | None) -> list[str]:
    """What a paper's text says that only the pipeline knows: each ``patterns`` entry of ``internal_words.json``
    (generic, extended by the template's file of that name) found in ``text``, as ``"<what>: <match>"``."""
    patterns = layers.layered_json("paper", template_name, "internal_words.json").get("patterns", {})
    flat = _flat(text)
    return [f"{what}: {m.group(0)}" for what, rx in patterns.items() for m in re.finditer(rx, flat)]


def unrun_mentions(text: str, template_name: str | None, ran: set[str]) -> list[str]:
    """Words of ``internal_words.json``'s ``only_when_run`` (word -> the settings or methods it describes) that
    ``text`` says although none of those ran."""
    only = layers.layered_json("paper", template_name, "internal_words.json").get("only_when_run", {})
    flat = _flat(text)
    return [word for word, needs in only.items() if word in flat and not set(needs) & set(ran)]


# ------------------------------------------------------------------------------------------------ compile, read back
def _clean(out_dir: Path) -> None:
    for ext in ("aux", "bbl", "blg", "fdb_latexmk", "fls", "log", "out", "pdf", "toc"):
        (out_dir / f"paper.{ext}").unlink(missing_ok=True)


def compile_latex(out_dir: Path) -> tuple[bool, str]:
    """Run latexmk on ``paper.tex`` in ``out_dir``; (a PDF was made, latexmk's output)."""
    _clean(out_dir)
    env = {**os.environ, "max_print_line": "10000", "error_line": "254", "half_error_line": "238"}
    try:
        proc = subprocess.run(
            LATEXMK, check=False, cwd=out_dir, capture_output=True, text=True, errors="replace", env=env,
            stdin=subprocess.DEVNULL, timeout=COMPILE_TIMEOUT_S,
        )
    except FileNotFoundError:
        return False, "latexmk not found on PATH: install TeX Live with latexmk\n"
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return False, out + f"\n! latexmk did not finish within {COMPILE_TIMEOUT_S} s\n"
    output = f"$ {' '.join(LATEXMK)}\n{proc.stdout}\n{proc.stderr}\n[latexmk exit code {proc.returncode}]\n"
    return proc.returncode == 0 and (out_dir / "paper.pdf").exists(), output


def first_error(out_dir: Path, output: str) -> str:
    """The first LaTeX error line of the run (with its source line), else the first error latexmk reported."""
    log_path = out_dir / "paper.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    for text in (log, output):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("! "):
                context = next((ln.strip() for ln in lines[i + 1:i + 12] if re.match(r"l\.\d+", ln)), "")
                return f"{line.strip()} ({context})" if context else line.strip()
    for line in output.splitlines():
        if re.search(r"error|not found|did not finish", line, re.IGNORECASE):
            return line.strip()
    return "LaTeX compilation failed (no error line in the log)"


UNDEFINED = re.compile(r"(?:Reference|Citation) [`']([^']+)' on page \S+ undefined")


def inspect_pdf(pdf: Path, log_text: str, numbers: list[str]) -> dict:
    """Pages, embedded images, unresolved references and missing table numbers of a compiled PDF."""
    import pymupdf

    with pymupdf.open(pdf) as doc:
        pages = doc.page_count
        xrefs = {img[0] for page in doc for img in page.get_images(full=True)}
        text = "\n".join(page.get_text() for page in doc)
    text = text.replace("\u2212", "-").replace("\u00a0", " ")
    markers = text.count("??") + text.count("[?]") + text.count("(?)")
    undefined = set(UNDEFINED.findall(log_text))
    if not undefined and "There were undefined references" in log_text:
        undefined = {"(unnamed)"}
    missing = [n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?!\d)", text)]
    return {
        "pages": pages, "figures": len(xrefs), "unresolved_refs": max(markers, len(undefined)),
        "table_numbers_found": not missing, "missing_numbers": missing, "text": text,
    }


def write_paper(
    template_name: str,
    idea: dict,
    final_info: dict,
    figures: list[dict],
    context: dict,
    out_dir: Path,
    sections: dict[str, str] | None = None,
    extra_bib: str = "",
    safe_retry: bool = True,
) -> dict:
    """Write, compile (one repair on failure) and check the paper in ``out_dir``; paths and PDF checks.

    LLM backend: ``sections`` are model-written LaTeX bodies, ``extra_bib`` BibTeX entries of papers the literature
    client returned; with ``safe_retry=False`` there is one attempt only (the caller runs its own repair).
    """
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    bib_src = layers.template_dir(template_name) / "references.bib"
    bib_dst = out_dir / "references.bib"
    if bib_src.exists():
        shutil.copyfile(bib_src, bib_dst)
    else:
        bib_dst.write_text("% no references.bib for this template\n")
    if extra_bib:
        bib_dst.write_text(bib_dst.read_text() + "\n" + extra_bib)
    bib = bib_keys(bib_dst)
    present = []
    for fig in figures:
        png = Path(fig.get("png") or "")
        if png.is_file():
            shutil.copyfile(png, out_dir / "figures" / png.name)
            present.append(fig)
    tex_path, log_path = out_dir / "paper.tex", out_dir / "build.log"
    started = time.perf_counter()
    build_log, repaired, ok, repair_reason = "", False, False, None
    for attempt, safe in enumerate((False, True) if safe_retry else (False,)):
        facts = build_facts(template_name, idea, final_info, present, context, bib, safe=safe)
        doc = build_document(template_name, facts, final_info, present, None if safe else sections)
        tex_path.write_text(doc.dumps())
        ok, output = compile_latex(out_dir)
        build_log += f"===== attempt {attempt + 1} ({'repair: safe text and formula' if safe else 'normal'}) =====\n"
        build_log += output
        log_path.write_text(build_log)
        if ok:
            break
        error = first_error(out_dir, output)
        build_log += f"[first error] {error}\n"
        log_path.write_text(build_log)
        repair_reason = repair_reason or error
        repaired = True
    result = {
        "pdf": None, "tex": str(tex_path), "log": str(log_path), "pages": 0, "figures": 0,
        "unresolved_refs": 0, "table_numbers_found": False, "error": None, "repaired": repaired,
        "compile_s": round(time.perf_counter() - started, 2), "formula_source": facts["formula_source"],
        "missing_numbers": [], "repair_reason": repair_reason,
    }
    if not ok:
        result["error"] = error
        return result
    tex_log = (out_dir / "paper.log").read_text(errors="replace") if (out_dir / "paper.log").exists() else ""
    checks = inspect_pdf(out_dir / "paper.pdf", tex_log, results_table_numbers(final_info))
    checks.pop("text")
    result.update(checks, pdf=str(out_dir / "paper.pdf"))
    return result


MAX_ROUNDS = 3  # compile -> check -> redraw / revise rounds of the writeup loop (the AI Scientist v2 runs three)
CHECKS: list[figcheck.Check] = [*figcheck.PAPER_CHECKS, textgate.check_text]  # figures, pages, the text gate
Revise = Callable[[str, list[dict]], "str | None"]


class RevisionFailed(Exception):
    """Raised by a ``revise`` hook whose revision cannot be used (the model failed, or its reply was rejected);
    the writeup loop keeps the paper it has and records ``revision failed: <reason>``."""


def write_paper_loop(template_name: str, idea: dict, final_info: dict, figures: list[dict], context: dict,
                     out_dir: Path, redraw: Callable[[float], list[dict]] | None = None,
                     revise: Revise | None = None, checks: list | None = None, rounds: int = MAX_ROUNDS,
                     written: dict | None = None, **write_kw) -> dict:
    """Write and compile the paper, check it, and for at most ``rounds`` rounds fix what failed, then compile again.

    Offline a figure with findings a redraw can fix is drawn again (``redraw(font_pt)`` returns the figures drawn at
    that base font) and the paper re-rendered; ``revise(tex, findings)`` (the LLM backend) may return a revised
    LaTeX source, kept when it compiles (a hook raising :class:`RevisionFailed` keeps the paper, recorded).
    ``written`` is the paper ``write_paper(..., **write_kw)`` already wrote, if the caller did. Each round's
    findings and actions go to ``checks.json`` in the paper
    folder as ``{"rounds": [{"round", "findings", "actions"}], "final": [...]}``; the result names it."""
    out_dir = Path(out_dir)
    checks = CHECKS if checks is None else checks
    font = FONT_PT
    paper = written if written is not None else write_paper(template_name, idea, final_info, figures, context,
                                                            out_dir, **write_kw)
    _vector_twins(figures, out_dir)
    record: dict[str, list] = {"rounds": [], "final": []}
    for n in range(1, rounds + 1):
        if not paper.get("pdf"):
            break
        tex = Path(paper["tex"]).read_text()
        findings = figcheck.run_checks(out_dir, tex, Path(paper["pdf"]), {**context, "figures": figures}, checks)
        record["final"], actions = findings, []
        errors = [f for f in findings if f["severity"] == "error"]
        if errors and n < rounds:
            redrawable = [f for f in errors if f["check"] in figcheck.REDRAWN and not f["target"].startswith("page")]
            if redraw is not None and redrawable:
                small = any(f["check"] == "text_size" for f in redrawable)
                font = font + 1.0 if small else max(font - 0.5, figcheck.MIN_PT + 1.0)
                figures = redraw(font)
                actions.append(f"redrew the figures at a base font of {font:g} pt ("
                               + ", ".join(sorted({f['target'] for f in redrawable})) + ")")
                paper = write_paper(template_name, idea, final_info, figures, context, out_dir, **write_kw)
                _vector_twins(figures, out_dir)
            if revise is not None and paper.get("pdf"):
                try:
                    revised = revise(Path(paper["tex"]).read_text(), findings)
                except RevisionFailed as exc:
                    revised = None
                    actions.append(f"revision failed: {exc}")
                if revised:
                    paper, kept = _recompile(out_dir, paper, revised, final_info)
                    actions.append("revised the LaTeX" if kept else "a revision of the LaTeX did not compile: kept")
        record["rounds"].append({"round": n, "findings": findings, "actions": actions})
        if not actions:
            break
    path = out_dir / "checks.json"
    path.write_text(json.dumps(record, indent=1))
    return {**paper, "checks": str(path), "check_errors": sum(f["severity"] == "error" for f in record["final"])}


def _vector_twins(figures: list[dict], out_dir: Path) -> None:
    """Each figure's vector PDF next to its PNG in the paper folder (the printed text size is read from it)."""
    for fig in figures:
        pdf = Path(fig.get("pdf") or "")
        if pdf.is_file() and (out_dir / "figures").is_dir():
            shutil.copyfile(pdf, out_dir / "figures" / pdf.name)


def _recompile(out_dir: Path, paper: dict, tex: str, final_info: dict) -> tuple[dict, bool]:
    """Compile a revised ``paper.tex``; the previous source again when it does not compile. (paper, kept)."""
    tex_path = Path(paper["tex"])
    before = tex_path.read_text()
    tex_path.write_text(tex)
    ok, _ = compile_latex(out_dir)
    if not ok:
        tex_path.write_text(before)
        compile_latex(out_dir)
        return paper, False
    log = (out_dir / "paper.log").read_text(errors="replace") if (out_dir / "paper.log").exists() else ""
    found = inspect_pdf(out_dir / "paper.pdf", log, results_table_numbers(final_info))
    found.pop("text")
    return {**paper, **found}, True


def paper_baselines(template, context: dict) -> dict:
    """The baselines a paper describes (name -> ``Baseline``): the profile's, else every baseline of the template."""
    profile = context.get("profile") or {}
    names = profile.get("baselines") if isinstance(profile, dict) else getattr(profile, "baselines", None)
    chosen = [n for n in (names or []) if n in template.baselines]
    return {n: template.baselines[n] for n in chosen} if chosen else dict(template.baselines)


def paper_context(template_name: str, idea: dict, context: dict, idea_dir: str | Path | None = None) -> dict:
    """The flow's context with what every writer of this idea's paper needs: its labels, its baselines and the
    idea folder's ``replication.json`` (the aggregation's tests against every baseline and IQM), if there is one."""
    replication = read_json(Path(idea_dir) / "replication.json") if idea_dir is not None else None
    return {**context, "labels": labels_of(template_name, idea),
            "baselines": paper_baselines(make(template_name), context),
            **({"replication": replication} if replication else {})}


def redrawer(template_name: str, idea: dict, idea_dir: str | Path, final_info: dict) -> Callable[[float], list[dict]]:
    """The writeup loop's ``redraw(font_pt)`` for an idea folder: its figures drawn again at that base font."""
    template = make(template_name)

    def redraw(font_pt: float) -> list[dict]:
        sources = {b: baseline.source for b, baseline in template.baselines.items()}
        sources[idea["Name"]] = idea["source"]
        return make_plots(idea, pd.read_parquet(Path(idea_dir) / "results.parquet"), final_info, sources,
                          Path(idea_dir) / "figures", labels_of(template_name, idea), template, font_pt=font_pt)

    return redraw


# ---- Prefect task -------------------------------------------------------------------------------------------

# the text stages' cache keys cover their code and text (generic and the template's layer; "*": references.bib)
@stage(name="write_paper", retries=1, modules=("tasks.plotting", "tasks.figcheck", "tasks.textgate", "tasks.runtime.text",
                                                "tasks.treefacts"), paths=("prompts/paper",), template_parts=("paper", "*"))
def write_paper_task(template_name: str, idea: dict, figures: list[dict], context: dict, idea_dir: str) -> dict:
    """pylatex -> latexmk -> pymupdf checks; the paper folder keeps .tex and build.log whatever happens."""
    final_info = read_json(Path(idea_dir) / "final_info.json")
    paper = write_paper_loop(template_name, idea, final_info, figures,
                             paper_context(template_name, idea, context, idea_dir), Path(idea_dir) / "paper", redraw=redrawer(template_name, idea, idea_dir, final_info)
                             if figures else None)
    paper = {k: v for k, v in paper.items() if k != "text"}
    get_run_logger().info("%s: paper %s (%s pages)", idea["Name"], paper.get("pdf") or "FAILED", paper.get("pages"))
    return paper
