"""Writeup, LLM backend: model-written sections (from the measured results and the figures' captions) in the
offline writeup's pylatex document, citations only of papers the literature client returned (placeholder entries
dropped) or of the template's references.bib, a LaTeX repair round, and the offline text as the last resort.

Every section passes the text gate (:func:`tasks.textgate.text_findings`: refusals, code, JSON fragments, empty
text, placeholder references, numbers that are not the run's) before it is compiled; a failing section is asked
again once with the findings, then the offline section stands in for it (``section_fallbacks`` in the result, which
the backend records as a writeup fallback). When every section fails, the stage fails and the backend falls back to
the offline writeup, recorded like any other stage. The compiled paper then goes through the writeup loop
(:func:`tasks.writeup.write_paper_loop`) with :func:`reviser` as its ``revise`` hook: each round's findings and
the model's revisions (or why one was dropped) are in ``paper/checks.json``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from pathlib import Path

from prefect import get_run_logger

from jaxlib_kernels.templates import make
from tasks import textgate, treefacts, writeup
from tasks.runtime import literature as lit
from tasks.runtime import text as layers
from tasks.runtime.caching import stage
from tasks.runtime.llm import BudgetExceeded, JSONReplyError, LLMClient, LLMError, active, render
from tasks.runtime.runfolder import read_json

CITE = re.compile(r"\\(cite[tp]?|citealp|citeauthor|citeyear)\*?(\[[^\]]*\]){0,2}\{([^}]*)\}")
REF = re.compile(r"\\(ref|eqref|autoref|cref|Cref)\{([^}]*)\}")
SECTION_CMD = re.compile(r"\\(sub)*section\*?\{[^}]*\}")
LATEX_FENCE = re.compile(r"```[ \t]*(?:latex|tex)?[ \t]*\n(.*?)```", re.DOTALL)


def writeup_guidance(template_name: str | None) -> tuple[dict[str, str], dict[str, int]]:
    """Per-section guidance and word limits: ``prompts/llm/writeup_guidance.json`` and the template's override."""
    data = layers.layered_json("llm", template_name, "writeup_guidance.json")
    return dict(data.get("guidance") or {}), {k: int(v) for k, v in (data.get("words") or {}).items()}


def _direction(c: dict, maximize: bool) -> str:
    if "better" in c or "worse" in c:
        return "better" if c.get("better") else "worse" if c.get("worse") else "no significant difference"
    improvement = (1.0 if maximize else -1.0) * float(c.get("difference", float("nan")))
    sig = bool(c.get("significant"))
    return "better" if sig and improvement > 0 else "worse" if sig and improvement < 0 else "no significant difference"


def results_text(final_info: dict, labels: dict) -> str:
    lines = []
    for setting, info in final_info.items():
        lines.append(f"Setting {setting} ({'held out' if info.get('held_out') else 'training'}):")
        for m, mean in info.get("means", {}).items():
            se = (info.get("stderrs") or {}).get(m)
            n = (info.get("n") or {}).get(m)
            lines.append(f"  {labels.get(m, m)}: {mean:.3f} +- {se:.3f} (n = {n})" if se is not None
                         else f"  {labels.get(m, m)}: {mean:.3f}")
        c = info.get("comparison") or {}
        if c:
            lines.append(f"  ours - best baseline ({labels.get(c.get('best_baseline'), c.get('best_baseline'))}): "
                         f"{c.get('difference', float('nan')):+.3f}, 95% CI {c.get('ci95')}, p = "
                         f"{c.get('p_value', float('nan')):.3g} ({'significant' if c.get('significant') else 'not significant'}"
                         f"; {_direction(c, bool(info.get('maximize', True)))})")
    return "\n".join(lines)


def sanitize_section(text: str, known_keys: set[str], known_labels: set[str],
                     keep: Collection[str] = ()) -> tuple[str, list[str], list[str]]:
    """The section's LaTeX with forbidden commands, unknown citations and unknown references removed.

    Lines in ``keep`` (the current paper's own, such as its figures' ``\\includegraphics``) stay as they are.
    Returns the text, the citation keys dropped (never in the paper: no invented references) and other removals.
    """
    blocks = LATEX_FENCE.findall(text or "")
    body = max(blocks, key=len) if blocks else (text or "")
    body = SECTION_CMD.sub("", body)
    removed = []
    kept_lines = []
    for line in body.splitlines():
        if writeup.FORBIDDEN_TEX.search(line) and line.strip() not in keep:
            removed.append(line.strip()[:120])
            continue
        kept_lines.append(line)
    body = "\n".join(kept_lines)
    dropped: list[str] = []

    def cite(m: re.Match) -> str:
        keys = [k.strip() for k in m.group(3).split(",") if k.strip()]
        good = [k for k in keys if k in known_keys]
        dropped.extend(k for k in keys if k not in known_keys)
        return f"\\{m.group(1)}{{{','.join(good)}}}" if good else ""

    def ref(m: re.Match) -> str:
        if m.group(2) in known_labels:
            return m.group(0)
        removed.append(m.group(0))
        return ""

    body = CITE.sub(cite, body)
    body = REF.sub(ref, body)
    return body.strip(), dropped, removed


def write_paper(client: LLMClient, template_name: str, idea: dict, final_info: dict, figures: list[dict],
                context: dict, out_dir: Path, redraw: Callable[[float], list[dict]] | None = None,
                checks: list | None = None, rounds: int = writeup.MAX_ROUNDS) -> dict:
    """Model-written sections in the pylatex document; LaTeX repair round; offline text as the last resort; then
    the writeup loop (:func:`tasks.writeup.write_paper_loop`) with the model revising the sections that have
    findings (:func:`reviser`)."""
    template = make(template_name)
    guidance, words = writeup_guidance(template_name)
    out_dir = Path(out_dir)
    bib_src = layers.template_dir(template_name) / "references.bib"
    local_keys = set(writeup.bib_keys(bib_src)) if bib_src.exists() else set()
    novelty = idea.get("novelty") or {}
    literature = list(novelty.get("literature") or [])
    returned = [p for p in literature if not textgate.placeholder_paper(p)]  # never "Anonymous (a)" in the paper
    extra_bib, keymap = lit.bibtex(returned, local_keys)
    citable = []
    for p in returned:
        if p["key"] in keymap:
            citable.append({"key": keymap[p["key"]], "title": p["title"]})
    if bib_src.exists():  # the template's own references.bib: the method's sources (PPO, LPO, ...)
        titles = dict(re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,[^@]*?title\s*=\s*[{\"]+([^}\"]+)", bib_src.read_text()))
        citable += [{"key": k, "title": titles.get(k, k)} for k in sorted(local_keys) if k not in {c["key"] for c in citable}]
    known_keys = {c["key"] for c in citable}
    labels = {f"fig:{writeup._label_key(f['name'])}" for f in figures} | {"tab:results", "tab:tests", "tab:settings",
                                                                         "eq:candidate"}
    labels |= {f"sec:{k}" for k, _ in writeup.SECTIONS}
    labels |= {f"eq:{writeup._label_key(b)}" for b in (context.get("baselines") or {})}
    label_names = context.get("labels") or {}
    res = results_text(final_info, label_names)
    record = treefacts.load(idea)
    tree = treefacts.summarize(record, treefacts.metric_of(record, template), None, final_info) if record else None
    idea_for_paper = dict(idea)
    idea_for_paper["novelty"] = {**novelty, "literature": [{"key": keymap[p["key"]], "title": p["title"]}
                                                            for p in returned if p["key"] in keymap]}
    sections: dict[str, str] = {}
    dropped: list[str] = []
    removed: list[str] = []
    facts = textgate.gate_facts(final_info, idea, context, res)
    gate: list[dict] = []
    for key, title in [("abstract", "Abstract")] + list(writeup.SECTIONS):
        prompt = render("writeup_section.j2", template_name, title=title, paper_title=idea.get("Title", idea["Name"]),
                        guidance=guidance.get(key, ""), idea=idea, source=idea.get("source", ""), results=res,
                        figures=figures, citations=citable, written=list(sections), words=words.get(key, 250),
                        template=template, tree=tree)
        text, messages = client.complete(prompt, "writeup")
        body, d, r = sanitize_section(text, known_keys, labels)
        found = textgate.text_findings(body, facts, key)
        record = {"section": key, "findings": found}
        if found:  # asked again once, with the reasons
            text, _ = client.complete(render("writeup_retry.j2", template_name, title=title, findings=found,
                                             words=words.get(key, 250)), "writeup", messages)
            body, d, r = sanitize_section(text, known_keys, labels)
            record["retry_findings"] = textgate.text_findings(body, facts, key)
        record["outcome"] = ("offline section" if record.get("retry_findings") else
                             "accepted after a retry" if found else "accepted")
        gate.append(record)
        if record.get("retry_findings"):
            continue
        dropped += d
        removed += r
        sections[key] = body
    failed = [g for g in gate if g["outcome"] == "offline section"]
    if not sections:
        raise LLMError("writeup: every section failed the text gate twice ("
                       + "; ".join(f"{g['section']}: {_checks(g['retry_findings'])}" for g in failed) + ")")
    every = "\n".join(sections.values())
    missing_figs = [f for f in figures if f"fig:{writeup._label_key(f['name'])}" not in every]
    if missing_figs and "results" in sections:  # every figure is referenced (an evidence check)
        sections["results"] += "\n\n" + " ".join(
            f"Figure~\\ref{{fig:{writeup._label_key(f['name'])}}}: {writeup.escape_tex(f.get('caption', ''))}"
            for f in missing_figs)
    kw = {"sections": sections, "extra_bib": extra_bib, "safe_retry": False}  # how the paper was last written
    result = writeup.write_paper(template_name, idea_for_paper, final_info, figures, context, out_dir, **kw)
    text_source = "llm"
    repair_error = None
    if result.get("error"):
        repair_error = result["error"]
        try:
            repaired, _ = client.complete_json(render("latex_repair.j2", template_name, error=repair_error,
                                                      sections=sections),
                                               "writeup", validate=_sections_dict)
            fixed = {}
            for k, v in repaired.items():
                if k in sections:
                    body, d, r = sanitize_section(v, known_keys, labels)
                    if textgate.text_findings(body, facts, k):  # a repaired section passes the gate too
                        continue
                    dropped += d
                    removed += r
                    fixed[k] = body
            sections = {**sections, **{k: v for k, v in fixed.items() if v}}
            kw["sections"] = sections
            result = writeup.write_paper(template_name, idea_for_paper, final_info, figures, context, out_dir, **kw)
            text_source = "llm (after a LaTeX repair round)"
        except BudgetExceeded:
            raise
        except LLMError as exc:
            result = {"error": f"LaTeX repair failed: {exc}"}
        if result.get("error"):
            kw = {"extra_bib": extra_bib}
            result = writeup.write_paper(template_name, idea_for_paper, final_info, figures, context, out_dir, **kw)
            text_source = f"offline templates (the model's LaTeX did not compile: {repair_error})"
    if failed and text_source.startswith("llm"):
        text_source += f"; offline text for {', '.join(g['section'] for g in failed)} (failed the text gate)"
    result = writeup.write_paper_loop(template_name, idea_for_paper, final_info, figures, context, out_dir,
                                      redraw=redraw, revise=reviser(client, template_name, facts, known_keys, labels),
                                      checks=checks, rounds=rounds, written=result, **kw)
    (out_dir / "sections.json").write_text(json.dumps(sections, indent=2))
    result.update(text_source=text_source, dropped_citations=sorted(set(dropped)), removed_latex=removed[:20],
                  llm_repair_error=repair_error, citable=sorted(known_keys), text_gate=gate,
                  section_fallbacks=[g["section"] for g in failed],
                  placeholder_references=[p.get("key") for p in literature if p not in returned])
    return result


def _checks(record: list[dict]) -> str:
    return ", ".join(dict.fromkeys(f["check"] for f in record))


def gate_fallback(paper: dict | None) -> str | None:
    """The fallback reason the backend records for a paper whose sections the text gate gave to the offline text."""
    failed = [g for g in (paper or {}).get("text_gate") or [] if g.get("retry_findings")]
    if not failed:
        return None
    return ("the text gate rejected the model's " + ", ".join(f"{g['section']} ({_checks(g['retry_findings'])})"
                                                              for g in failed) + "; the offline sections stand")


def reviser(client: LLMClient, template_name: str | None, facts: dict, known_keys: set[str],
            known_labels: set[str]) -> writeup.Revise:
    """The writeup loop's ``revise`` hook: the model gets the findings and the sections they concern (all sections
    when none is named) and answers with revised sections in a ```latex block (``\\section{Title}`` + body each).
    Each revised section is sanitized and must pass the text gate (numbers: the run's or the section's own);
    otherwise, or when the model fails, :class:`tasks.writeup.RevisionFailed` (the loop keeps the paper)."""

    def revise(tex: str, findings: list[dict]) -> str:
        current = textgate.tex_sections(tex)
        concerned = {t: b for t, b in current.items()
                     if any(f["target"] == t or (len(f["target"]) > 3 and f["target"] in b) for f in findings)}
        try:
            reply, _ = client.complete(render("latex_revise.j2", template_name, findings=findings,
                                              sections=concerned or current), "writeup")
        except BudgetExceeded:
            raise
        except LLMError as exc:
            raise writeup.RevisionFailed(f"the model failed: {exc}") from exc
        return apply_revision(tex, reply, facts, known_keys, known_labels)

    return revise


def apply_revision(tex: str, reply: str, facts: dict, known_keys: set[str], known_labels: set[str]) -> str:
    """``tex`` with the sections of the model's reply in place of its own; :class:`tasks.writeup.RevisionFailed`
    when the reply holds no section of the paper or a revised section fails the text gate."""
    blocks = LATEX_FENCE.findall(reply or "")
    parts = textgate.SECTION.split(max(blocks, key=len)) if blocks else []
    current = textgate.tex_sections(tex)
    revised = {t.strip(): b for t, b in zip(parts[1::2], parts[2::2], strict=True) if t.strip() in current}
    if not revised:
        raise writeup.RevisionFailed("the reply held no section of the paper in a ```latex block: "
                                     + repr(" ".join((reply or "").split())[:80]))
    labels = known_labels | set(re.findall(r"\\label\{([^}]*)\}", tex))
    out, rejected, changed = tex, [], False
    for title, text in revised.items():
        old = current[title]
        body, _, _ = sanitize_section(text, known_keys, labels, keep={line.strip() for line in old.splitlines()})
        lead = re.match(r"\s*\\label\{[^}]*\}", old)  # the section's own label stays
        if lead and lead.group(0).strip() not in body:
            body = lead.group(0).strip() + "\n" + body
        own = {**facts, "numbers": sorted(set(facts.get("numbers") or []) | set(textgate.numbers_of(old)))}
        if found := textgate.text_findings(body, own, title):
            rejected.append(f"{title} ({_checks(found)})")
        head = re.search(r"\\begin\{abstract\}" if title == "Abstract" else
                         r"\\section\*?\{\s*" + re.escape(title) + r"\s*\}", out)
        if head and out.startswith(old, head.end()):  # the body right after its own heading, not a lookalike
            out = out[:head.end()] + "\n" + body + "\n\n" + out[head.end() + len(old):]
            changed |= body.strip() != old.strip()
    if rejected:
        raise writeup.RevisionFailed("the text gate rejected the revised " + ", ".join(rejected))
    if not changed:
        raise writeup.RevisionFailed("the revision changed nothing")
    return out


def _sections_dict(v):
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise JSONReplyError("expected a JSON object mapping section names to LaTeX strings")
    return v


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="write_paper_llm", modules=("tasks.writeup", "tasks.plotting", "tasks.runtime.text", "tasks.runtime.llm",
                                          "tasks.runtime.literature", "tasks.textgate"),
       paths=("prompts/paper", "prompts/llm"), template_parts=("paper", "llm", "*"))
def write_paper_task(template_name: str, idea: dict, figures: list[dict], context: dict, idea_dir: str,
                     model: str) -> dict:
    final_info = read_json(Path(idea_dir) / "final_info.json")
    paper = write_paper(active(model), template_name, idea, final_info, figures,
                        writeup.paper_context(template_name, idea, context, idea_dir), Path(idea_dir) / "paper",
                        redraw=writeup.redrawer(template_name, idea, idea_dir, final_info) if figures else None)
    paper = {k: v for k, v in paper.items() if k != "text"}
    get_run_logger().info("%s: paper %s (%s pages, text: %s)", idea["Name"], paper.get("pdf") or "FAILED",
                          paper.get("pages"), paper.get("text_source"))
    return paper

