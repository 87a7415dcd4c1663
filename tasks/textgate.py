"""The text gate: what model-written (or any) paper text must not contain before it is compiled or scored.

:func:`text_findings` catches refusals, code (fences, ``def``/``import`` lines), JSON fragments, empty or near-empty
text, placeholder references and, when ``facts["numbers"]`` is given, numbers that are none of the run's values at
the printed precision. The LLM writeup (tasks/llm/writeup.py) gates each section with it; both reviewers
(tasks/review.py, tasks/llm/review.py) run it over the paper they read (:func:`tex_sections`). A finding is
``{"check", "severity": "error"|"warning", "target", "message"}``, the form of ``paper/checks.json``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

MIN_WORDS = 12  # a section body with fewer words is near-empty
SMALL_COUNT = 10  # integers up to this are counts (seeds, settings, baselines, figures) and always allowed
ALWAYS = (95.0, 0.05, 5.0)  # the 95 % interval and the 0.05 level (also written as 5 %)
GARBAGE = ("refusal", "code", "json_fragment", "empty_section", "placeholder_reference")  # desk-reject checks

REFUSAL = re.compile(
    r"\bI(?:\s+am|'m)\s+(?:unable|not able|sorry|afraid)\b|\bI\s+(?:cannot|can't|can not|won't|would rather|"
    r"apologi[sz]e|do not know)\b|\bas an AI\b|\bunable to (?:help|assist|comply)\b|\b(?:sorry|apologies),? (?:but )?I\b",
    re.IGNORECASE)
FENCE = re.compile(r"```|~~~")
CODE_LINE = re.compile(r"^\s*(?:def \w+\(.*\):|import [\w.]+(?: as \w+)?\s*$|from [\w.]+ import \w+)", re.MULTILINE)
JSON_FRAGMENT = re.compile(r"[\"\u201c\u201d]\s*[A-Za-z_][\w ]{0,40}[\"\u201c\u201d]\s*:\s*(?:[\"\u201c\u201d{\[\d-]|"
                           r"true|false|null|$)", re.MULTILINE)
PLACEHOLDER_REF = re.compile(r"\bAnonymous\b|\[citation needed\]|\[CITATION\]|\bAuthor(?:s)? et al\b|"
                             r"\(Author,? \d{4}\)|\bLorem ipsum\b|\bTODO\b|\bXXX+\b|\bet al\.,? \(?n\.d\.\)?",
                             re.IGNORECASE)
PLACEHOLDER_NAMES = {"", "anonymous", "unknown", "author", "authors", "n/a", "na", "none", "x", "tbd", "todo"}
PLACEHOLDER_TITLES = PLACEHOLDER_NAMES | {"title", "untitled", "paper", "a paper", "unknown title"}
# LaTeX whose arguments are not prose: references, citations, labels, files, lengths
NON_PROSE = re.compile(r"\\(?:ref|eqref|autoref|cref|Cref|label|cite[a-z]*|includegraphics|input|url|href|"
                       r"hspace|vspace|setlength|resizebox)\*?(?:\[[^\]]*\])*\{[^}]*\}")
ENVS_SKIPPED = re.compile(r"\\begin\{(figure\*?|table\*?|tabular\*?|verbatim|equation\*?|align\*?)\}.*?"
                          r"\\end\{\1\}", re.DOTALL)
NUMBER = re.compile(r"(?<![\w.\\])[-+\u2212]?(\d+(?:\.\d+)?)(?![\w.]|\.\d)")


def finding(check: str, target: str, message: str, severity: str = "error") -> dict:
    return {"check": check, "severity": severity, "target": target, "message": message}


def _prose(text: str) -> str:
    """The text without comments, floats, verbatim and maths environments, and non-prose command arguments."""
    text = re.sub(r"(?<!\\)%.*", "", text)
    text = ENVS_SKIPPED.sub(" ", text)
    return NON_PROSE.sub(" ", text)


def _words(text: str) -> int:
    plain = re.sub(r"\\[A-Za-z]+\*?", " ", re.sub(r"\$[^$]*\$", " x ", text))
    return len(re.findall(r"[A-Za-z]{2,}", plain))


def numbers_of(values: Any) -> list[float]:
    """Every number in ``values``: numeric leaves and numbers written in strings and keys, recursively."""
    out: list[float] = []

    def walk(v: Any) -> None:
        if isinstance(v, bool) or v is None:
            return
        if isinstance(v, int | float):
            if math.isfinite(float(v)):
                out.append(float(v))
        elif isinstance(v, str):
            out.extend(float(m) for m in NUMBER.findall(v))
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, Iterable):
            for x in v:
                walk(x)

    walk(values)
    return out


def gate_facts(final_info: dict, *sources: Any) -> dict:
    """The facts a text may quote: every value of ``final_info`` and of ``sources`` (the idea, the run's context,
    the results), the counts of settings and methods, and :data:`ALWAYS`."""
    methods = {m for info in final_info.values() for m in (info.get("means") or {})}
    counts = [len(final_info), len(methods), max(0, len(methods) - 1)]
    return {"numbers": sorted(set(numbers_of([final_info, *sources]) + counts + list(ALWAYS)))}


def _supported(token: str, numbers: list[float]) -> bool:
    value = abs(float(token))
    decimals = len(token.split(".")[1]) if "." in token else 0
    if decimals == 0 and (value <= SMALL_COUNT or 1900 <= value <= 2100):  # counts and years
        return True
    tol = 0.5 * 10 ** -decimals * (1 + 1e-9) + 1e-12
    return any(abs(abs(v) - value) <= tol or abs(abs(v) * 100 - value) <= tol for v in (*numbers, *ALWAYS))


def text_findings(text: str | None, facts: dict | None = None, target: str = "text") -> list[dict]:
    """The gate's findings on ``text`` (LaTeX or plain): each an error; ``facts["numbers"]`` (from
    :func:`gate_facts`) turns on the number check, ``facts["min_words"]`` overrides :data:`MIN_WORDS`."""
    facts = facts or {}
    text = text or ""
    out: list[dict] = []
    prose = _prose(text)
    n_words = _words(prose)
    if n_words < int(facts.get("min_words", MIN_WORDS)):
        out.append(finding("empty_section", target, f"{n_words} words of text: empty or near-empty"))
    if m := REFUSAL.search(text):
        out.append(finding("refusal", target, f"a refusal or apology instead of text: {_around(text, m)!r}"))
    if FENCE.search(text) or (m := CODE_LINE.search(prose)):
        where = FENCE.search(text) or m
        out.append(finding("code", target, f"code in the prose: {_around(text, where)!r}"))
    if m := JSON_FRAGMENT.search(prose):
        out.append(finding("json_fragment", target, f"a JSON fragment in the prose: {_around(prose, m)!r}"))
    if m := PLACEHOLDER_REF.search(text):
        out.append(finding("placeholder_reference", target, f"a placeholder reference: {_around(text, m)!r}"))
    if facts.get("numbers") is not None:
        plain = re.sub(r"(\d)(?:\{,\}|,)(\d{3})(?!\d)", r"\1\2", prose)  # 8{,}192 and 8,192 are 8192
        bad = [t for t in NUMBER.findall(plain) if not _supported(t, facts["numbers"])]
        if bad:
            out.append(finding("unsupported_number", target,
                               f"numbers that are none of the run's values: {', '.join(dict.fromkeys(bad))}"))
    return out


def _around(text: str, m: re.Match, width: int = 40) -> str:
    return " ".join(text[max(0, m.start() - 10):m.start() + width].split())


def placeholder_paper(paper: dict) -> bool:
    """A literature entry with no real author or no real title (it would print as "Anonymous (a)")."""
    authors = [str(a).strip().lower() for a in paper.get("authors") or []]
    title = str(paper.get("title") or "").strip().lower().rstrip(".")
    if paper.get("source") == "local":  # the template's own references.bib: authors live there
        return title in PLACEHOLDER_TITLES
    return not authors or all(a in PLACEHOLDER_NAMES for a in authors) or title in PLACEHOLDER_TITLES \
        or len(title) < 4


SECTION = re.compile(r"\\section\*?\{([^}]*)\}")


def tex_sections(tex: str) -> dict[str, str]:
    """The abstract and each ``\\section`` body of a LaTeX paper, by title (the bibliography and appendix cut)."""
    out: dict[str, str] = {}
    if m := re.search(r"\\begin\{abstract\}(.*?)\\end\{abstract\}", tex, re.DOTALL):
        out["Abstract"] = m.group(1)
    body = re.split(r"\\bibliography\{|\\begin\{thebibliography\}|\\appendix\b|\\end\{document\}", tex)[0]
    parts = SECTION.split(body)
    for title, text in zip(parts[1::2], parts[2::2], strict=True):
        out[title.strip()] = text
    return out


def check_text(paper_dir: Any, tex: str, pdf: Any, context: Any) -> list[dict]:
    """The writeup loop's text check (``tasks.writeup.CHECKS``): the gate over each section of the compiled .tex."""
    return [f for title, body in tex_sections(tex).items() for f in text_findings(body, {}, title)]
