"""The offline writeup (DESIGN.md sections 1 and 4, ``write_paper``): pylatex -> paper.tex -> latexmk -> paper.pdf.

As in The AI Scientist (Lu et al., 2024), the paper is a LaTeX document compiled and checked after writing; here the
prose comes from Jinja2 templates in ``prompts/paper/`` filled with the measured numbers of ``final_info.json``, so
the wording follows the results (significant or not, training or held-out settings). Every free text that came from
a user or a model is escaped for LaTeX; one repair attempt (formula shown from the expression tree or verbatim, text
folded to ASCII) follows a failed compile, and the .tex and the build log are kept when that fails too. The PDF is
read back with pymupdf: pages, embedded images, unresolved references, and whether the table's numbers made it.
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
from pathlib import Path
from typing import Any

import jinja2
from pylatex import Command, Document, Figure, NoEscape, Package, Section, Table, Tabular
from pylatex.base_classes import Environment

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "prompts"
PAPER_PROMPTS = PROMPTS / "paper"
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
    text = re.sub(r"\s+", " ", str(text)).strip()
    return Tex("".join(_char(c, ascii_only) for c in text).strip(" "))


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


def make_env(template_name: str) -> jinja2.Environment:
    """Jinja2 for LaTeX: ``<< x >>`` variables (escaped unless :class:`Tex`), ``<% %>`` blocks, ``<# #>`` comments.

    Templates are looked up in ``prompts/paper/<template_name>/`` first, then ``prompts/paper/``.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(PAPER_PROMPTS / template_name), str(PAPER_PROMPTS)]),
        block_start_string="<%", block_end_string="%>",
        variable_start_string="<<", variable_end_string=">>",
        comment_start_string="<#", comment_end_string="#>",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined, finalize=_finalize, autoescape=False,
    )
    env.filters.update(
        num=fmt_num, signed=fmt_signed, pval=fmt_p, int=fmt_int, pct=fmt_pct, andlist=_and_list,
        peq=fmt_p_eq, tex=lambda s: Tex(s), esc=escape_tex, citetkey=lambda k: Tex(f"\\citet{{{k}}}"),
    )
    return env


# ------------------------------------------------------------------------------------------------------------ facts
def bib_keys(path: Path) -> list[str]:
    """The entry keys of a .bib file."""
    return re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", Path(path).read_text())


def _profile_value(profile: Any, key: str, default: Any = None) -> Any:
    if isinstance(profile, dict):
        return profile.get(key, default)
    return getattr(profile, key, default)


def _formula(latex: str, label: str, lhs: str = r"D(r, A, \tfrac{n}{N})") -> Tex:
    return Tex(
        "\\begin{equation}\n"
        f"  \\fitmath{{{lhs} = {latex}}}\n"
        f"  \\label{{{label}}}\n"
        "\\end{equation}\n"
    )


def _verbatim_formula(text: str, label: str) -> Tex:
    """A formula that would not compile, shown as escaped typewriter text (with a number to \\ref)."""
    return Tex(
        "\\begin{equation}\n"
        f"  \\parbox{{0.85\\linewidth}}{{\\raggedright\\ttfamily D(r, A, n/N) = {escape_tex(text, True)}}}\n"
        f"  \\label{{{label}}}\n"
        "\\end{equation}\n"
    )


def candidate_formula(idea: dict, safe: bool) -> tuple[Tex, str]:
    """The candidate's display formula and how it was obtained ("given", "tree", "verbatim")."""
    from jaxlib_kernels import symbolic

    given = str(idea.get("expression_latex") or "").strip()
    from_tree = None
    try:
        symbolic.validate(idea.get("expression"))
        from_tree = symbolic.to_latex(idea["expression"])
    except symbolic.ExpressionError:  # no tree, or a malformed one: the given LaTeX is all we have
        from_tree = None
    if not safe and given and not FORBIDDEN_TEX.search(given):
        return _formula(given, "eq:candidate"), "given"
    if from_tree is not None and (not safe or from_tree != given):
        return _formula(from_tree, "eq:candidate"), "tree"
    return _verbatim_formula(given or "(no formula)", "eq:candidate"), "verbatim"


def _baseline_formulas(baselines: dict, labels: dict, safe: bool) -> list[dict]:
    from jaxlib_kernels import symbolic

    out = []
    for name, expr in baselines.items():
        label = f"eq:{_label_key(name)}"
        try:
            symbolic.validate(expr)
            formula = _formula(symbolic.to_latex(expr), label)
        except symbolic.ExpressionError:
            formula = _verbatim_formula(json.dumps(expr), label)
        out.append({"name": name, "label": labels.get(name, name), "formula": formula,
                    "ref": Tex(f"Eq.~\\eqref{{{label}}}"), "temporal": _uses_progress(expr)})
    return out


def _uses_progress(expr: Any) -> bool:
    from jaxlib_kernels import symbolic

    try:
        return symbolic.uses(expr, "p")
    except (TypeError, IndexError):
        return False


def _setting_facts(template: Any, final_info: dict, candidate: str, labels: dict, total_steps: int) -> list[dict]:
    rows = []
    for name, info in final_info.items():
        setting = template.settings.get(name) if template is not None else None
        comp = info.get("comparison") or {}
        best = comp.get("best_baseline")
        diff = comp.get("difference", math.nan)
        sig = bool(comp.get("significant", False))
        direction = "better" if sig and diff > 0 else ("worse" if sig and diff < 0 else "tie")
        means = info.get("means", {})
        ranked = sorted(means, key=lambda m: -means[m])
        scale = getattr(setting, "timesteps_scale", 1.0)
        rows.append({
            "name": name,
            "env": info.get("env") or getattr(setting, "env", ""),
            "description": re.sub(r"\s*\(held[- ]out[^)]*\)\s*$", "", getattr(setting, "description", "") or name),
            "held_out": bool(info.get("held_out", getattr(setting, "held_out", False))),
            "steps": int(total_steps * scale) if total_steps else 0,
            "candidate_mean": means.get(candidate, math.nan),
            "candidate_stderr": info.get("stderrs", {}).get(candidate, math.nan),
            "best": best, "best_label": labels.get(best, best or "none"),
            "best_mean": means.get(best, math.nan) if best else math.nan,
            "best_stderr": info.get("stderrs", {}).get(best, math.nan) if best else math.nan,
            "difference": diff, "ci": comp.get("ci95", [math.nan, math.nan]), "p": comp.get("p_value", math.nan),
            "significant": sig, "direction": direction, "test": comp.get("test", "Welch t-test"),
            "rank": ranked.index(candidate) + 1 if candidate in ranked else None, "n_methods": len(ranked),
            "relative": diff / abs(means[best]) if best and means.get(best) else math.nan,
        })
    return rows


def _outcome(rows: list[dict]) -> str:
    better = any(r["direction"] == "better" for r in rows)
    worse = any(r["direction"] == "worse" for r in rows)
    if not rows:
        return "none"
    return "mixed" if better and worse else "better" if better else "worse" if worse else "tie"


def build_facts(template_name: str, idea: dict, final_info: dict, figures: list[dict], context: dict,
                bib: list[str], safe: bool = False) -> dict:
    """Everything the text templates may say, measured or given; free text stays raw and is escaped on output."""
    try:
        from jaxlib_kernels import templates

        template = templates.make(template_name)
    except KeyError:  # an unknown template still gets a paper, with fewer descriptions
        template = None
    labels = dict(getattr(template, "baseline_labels", {}) or {})
    labels.update(context.get("labels") or {})
    candidate = idea.get("Name", "candidate")
    comps = [i.get("comparison", {}) for i in final_info.values() if i.get("comparison")]
    if comps:
        candidate = comps[0].get("candidate", candidate)
    labels.setdefault(candidate, candidate)
    profile = context.get("profile") or {}
    total_steps = int(_profile_value(profile, "total_timesteps", 0) or 0)
    rows = _setting_facts(template, final_info, candidate, labels, total_steps)
    train = [r for r in rows if not r["held_out"]]
    held = [r for r in rows if r["held_out"]]
    ns = [int(v) for i in final_info.values() for v in (i.get("n") or {}).values()]
    text = (lambda s: escape_tex(s, True)) if safe else (lambda s: s)
    baselines = context.get("baselines") or dict(getattr(template, "baselines", {}) or {})
    formula, formula_source = candidate_formula(idea, safe)
    novelty = idea.get("novelty") or {}
    literature = [dict(e) for e in novelty.get("literature", []) if e.get("key") in bib]
    figs = {f["name"]: Tex(f"Figure~\\ref{{fig:{_label_key(f['name'])}}}") for f in figures}
    return {
        "title": text(idea.get("Title") or candidate),
        "name": text(candidate),
        "label": text(labels[candidate]),
        "hypothesis": text(idea.get("Hypothesis", "")),
        "experiment": text(idea.get("Experiment", "")),
        "scores": {k: idea.get(k) for k in ("Interestingness", "Feasibility", "Novelty")},
        "formula": formula,
        "formula_source": formula_source,
        "temporal": _uses_progress(idea.get("expression")) or bool(idea.get("temporal")),  # parametric: given
        "baselines": _baseline_formulas(baselines, labels, safe),
        "settings": rows, "train": train, "held": held,
        "train_outcome": _outcome(train), "held_outcome": _outcome(held),
        "better": [r for r in rows if r["direction"] == "better"],
        "worse": [r for r in rows if r["direction"] == "worse"],
        "ties": [r for r in rows if r["direction"] == "tie"],
        "seeds_min": min(ns) if ns else 0, "seeds_max": max(ns) if ns else 0,
        "seeds": int(_profile_value(profile, "seeds", min(ns) if ns else 0) or 0),
        "total_timesteps": total_steps,
        "metric": getattr(template, "metric_description", "the final metric"),
        "template_title": getattr(template, "title", template_name),
        "novelty": {
            "decision": novelty.get("decision", "unknown"),
            "reason": text(novelty.get("reason", "")),
            "nearest": text(labels.get(novelty.get("nearest"), novelty.get("nearest") or "none")),
            "distance": novelty.get("distance"),
            "literature": literature,
        },
        "figs": figs,
        "table": Tex("Table~\\ref{tab:results}"),
        "tests_table": Tex("Table~\\ref{tab:tests}"),
        "setup_table": Tex("Table~\\ref{tab:settings}"),
        "run_id": str(context.get("run_id", "")),
        "bib": set(bib),
        "cite": lambda *keys: Tex(f"\\citep{{{','.join(k for k in keys if k in bib)}}}")
        if any(k in bib for k in keys) else Tex(""),
        "citet": lambda *keys: Tex(f"\\citet{{{','.join(k for k in keys if k in bib)}}}")
        if any(k in bib for k in keys) else Tex("prior work"),
    }


# ------------------------------------------------------------------------------------------------------- the document
class Abstract(Environment):
    _latex_name = "abstract"


PREAMBLE = r"""
\newsavebox{\fitbox}
\newcommand{\fitmath}[1]{\sbox{\fitbox}{$\displaystyle #1$}%
  \ifdim\wd\fitbox>0.9\linewidth\resizebox{0.9\linewidth}{!}{\usebox{\fitbox}}\else\usebox{\fitbox}\fi}
\newcommand{\fitwidth}[1]{\sbox{\fitbox}{#1}%
  \ifdim\wd\fitbox>\linewidth\resizebox{\linewidth}{!}{\usebox{\fitbox}}\else\usebox{\fitbox}\fi}
"""


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


def _results_table(env, facts: dict, final_info: dict) -> Table:
    settings = facts["settings"]
    candidate = next(iter(final_info.values()), {}).get("comparison", {}).get("candidate")
    methods: list[str] = []
    for info in final_info.values():
        methods += [m for m in info.get("means", {}) if m not in methods]
    if candidate in methods:  # the candidate last, under a rule
        methods = [m for m in methods if m != candidate] + [candidate]
    labels = {b["name"]: b["label"] for b in facts["baselines"]}
    table = Table(position="tbp")
    table.append(NoEscape(r"\centering\small"))
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
            best = max(info["means"].values())
            m = fmt_num(mean)
            cell = (rf"\textbf{{{m}}}" if mean == best else m) + (rf" $\pm$ {fmt_num(se)}" if se is not None else "")
            cells.append(NoEscape(cell))
        tab.add_row(cells)
    table.append(NoEscape(r"\fitwidth{%"))
    table.append(tab)
    table.append(NoEscape("}"))
    table.add_caption(NoEscape(env.get_template("caption_results.tex.j2").render(**facts).strip()))
    table.append(NoEscape(r"\label{tab:results}"))
    return table


def _tests_table(env, facts: dict) -> Table:
    table = Table(position="tbp")
    table.append(NoEscape(r"\centering\small"))
    tab = Tabular("llccccc", booktabs=True)
    tab.add_row([NoEscape(c) for c in (
        "Setting", "Best baseline", "Difference", r"95\,\% CI", r"$p$", "Significant", "Rank")])
    tab.add_hline()
    for s in facts["settings"]:
        lo, hi = (s["ci"] + [math.nan, math.nan])[:2]
        tab.add_row([
            NoEscape(escape_tex(s["name"]) + (r"$^\dagger$" if s["held_out"] else "")),
            NoEscape(escape_tex(s["best_label"])),
            NoEscape(fmt_signed(s["difference"])),
            NoEscape(f"[{fmt_num(lo)}, {fmt_num(hi)}]"),
            NoEscape(fmt_p(s["p"])),
            NoEscape({"better": "yes (better)", "worse": "yes (worse)", "tie": "no"}[s["direction"]]),
            NoEscape(f"{s['rank']}/{s['n_methods']}" if s["rank"] else "--"),
        ])
    table.append(NoEscape(r"\fitwidth{%"))
    table.append(tab)
    table.append(NoEscape("}"))
    table.add_caption(NoEscape(env.get_template("caption_tests.tex.j2").render(**facts).strip()))
    table.append(NoEscape(r"\label{tab:tests}"))
    return table


def _settings_table(env, facts: dict) -> Table:
    table = Table(position="tbp")
    table.append(NoEscape(r"\centering\small"))
    tab = Tabular("lllrl", booktabs=True)
    tab.add_row([NoEscape(c) for c in ("Setting", "Environment", "Role", "Env.\\ steps", "Description")])
    tab.add_hline()
    for s in facts["settings"]:
        tab.add_row([
            NoEscape(escape_tex(s["name"])), NoEscape(r"\texttt{" + escape_tex(s["env"]) + "}"),
            NoEscape("held out" if s["held_out"] else "training"), NoEscape(fmt_int(s["steps"])),
            NoEscape(escape_tex(s["description"])),
        ])
    table.append(NoEscape(r"\fitwidth{%"))
    table.append(tab)
    table.append(NoEscape("}"))
    table.add_caption(NoEscape(env.get_template("caption_settings.tex.j2").render(**facts).strip()))
    table.append(NoEscape(r"\label{tab:settings}"))
    return table


def _figure(fig: dict, caption: str) -> Figure:
    figure = Figure(position="tbp")
    figure.add_image(f"figures/{Path(fig['png']).name}", width=NoEscape(r"\linewidth"))
    figure.add_caption(NoEscape(escape_tex(caption)))
    figure.append(NoEscape(f"\\label{{fig:{_label_key(fig['name'])}}}"))
    return figure


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
    for pkg, opts in (("amsmath", None), ("amssymb", None), ("graphicx", None), ("booktabs", None),
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
    figs = {f["name"]: f for f in figures}
    for key, title in SECTIONS:
        section = Section(title, label=False)
        section.append(NoEscape(f"\\label{{sec:{key}}}\n"))
        section.append(NoEscape(sections.get(key) or env.get_template(f"{key}.tex.j2").render(**facts)))
        if key == "setup":
            section.append(_settings_table(env, facts))
        if key == "results":
            section.append(_results_table(env, facts, final_info))
            section.append(_tests_table(env, facts))
            for fig in figures:
                section.append(_figure(figs[fig["name"]], fig.get("caption", "")))
        doc.append(section)
    doc.append(NoEscape(r"\bibliographystyle{plainnat}"))
    doc.append(NoEscape(r"\bibliography{references}"))
    return doc


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
    bib_src = PROMPTS / "templates" / template_name / "references.bib"
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
