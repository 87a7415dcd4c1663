"""The LLM backend of every stage (ARCHITECTURE.md section 4), after The AI Scientist (Lu et al., 2024).

ideation (JSON ideas, reflection rounds with an early stop, the archive and its review scores in the prompt) ->
novelty (the model writes queries; :mod:`tasks.runtime.literature` searches Semantic Scholar / OpenAlex, or the local index;
at most N rounds; a decision with its reason) -> code (the model writes the plug-in; the validation gate's reason
goes back for a fixed number of repair rounds; behavioural distance to every known drift is computed from the
accepted source) -> writeup (section by section from the measured results and the figures' captions; citations
only of papers the literature client returned or of references.bib; a LaTeX repair round; the offline text as the
last resort, so a run never ends without a PDF because of the model's LaTeX) -> review (NeurIPS form, reflections,
an ensemble and an area chair's meta-review; Decision = Overall >= 6; the evidence checks are given to the model and
kept beside its review). Prompts are the Jinja2 files of ``prompts/llm/``, generic over the template contract and
overridden file by file in ``prompts/templates/<name>/llm/`` (:mod:`tasks.runtime.text`); the task description is the
template's ``llm/task.md``. All calls go through :mod:`tasks.runtime.llm`.

Sizes (environment): ``SCIENTIST_IDEA_REFLECTIONS`` (2), ``SCIENTIST_NOVELTY_ROUNDS`` (3),
``SCIENTIST_CODE_REPAIR_ROUNDS`` (2: three attempts in all), ``SCIENTIST_NUM_REVIEWS`` (3),
``SCIENTIST_REVIEW_REFLECTIONS`` (1).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from jaxlib_kernels.templates import Template
from tasks.runtime import literature as lit
from tasks.runtime import text as layers
from tasks.runtime.llm import BudgetExceeded, JSONReplyError, LLMClient, LLMError, check_schema, extract_json, render

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PROMPTS = ROOT / "prompts" / "templates"
IDEA_FIELDS = {"Name": "str", "Title": "str", "Experiment": "str", "Interestingness": "score",
               "Feasibility": "score", "Novelty": "score"}
REVIEW_FIELDS = {
    "Summary": "str", "Strengths": "list", "Weaknesses": "list", "Originality": "number", "Quality": "number",
    "Clarity": "number", "Significance": "number", "Questions": "list", "Limitations": "list",
    "Ethical Concerns": "any", "Soundness": "number", "Presentation": "number", "Contribution": "number",
    "Overall": "score", "Confidence": "number", "Decision": "str",
}
ACCEPT_AT = 6
DONE = re.compile(r"i\s+am\s+done", re.IGNORECASE)


def _n(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def task_description(template_name: str) -> str:
    """The template's ``prompts/templates/<name>/llm/task.md``; else a description written from its contract."""
    path = layers.template_dir(template_name) / "llm" / "task.md"
    if path.exists():
        return path.read_text().strip()
    template = layers.template_or_none(template_name)
    if template is None:
        return f"Research template {template_name}."
    plugin = template.plugin
    args = "; ".join(f"`{a.name}` ({a.shape}{': ' + a.description if a.description else ''})" for a in plugin.args)
    kind = "a Python function" if plugin.kind == "source" else "a JSON object"
    held = [k for k, v in template.settings.items() if v.held_out]
    train = [k for k, v in template.settings.items() if not v.held_out]
    return (
        f'Research template "{template.name}": {template.title}.\n\n'
        f"The plug-in is {kind}, `{plugin.signature}`" + (f", with the arguments {args}" if args else "")
        + f"; it returns {plugin.returns}.\n"
        f"The metric is {template.metric.name} ({template.metric.description}); it is {template.metric.direction}.\n"
        f"The budget of a run is counted in {template.budget_unit}. Training settings: {', '.join(train) or 'none'}; "
        f"held-out settings: {', '.join(held) or 'none'}. Baselines: {', '.join(template.baseline_labels.values())}."
    )


def writeup_guidance(template_name: str | None) -> tuple[dict[str, str], dict[str, int]]:
    """Per-section guidance and word limits: ``prompts/llm/writeup_guidance.json`` and the template's override."""
    data = layers.layered_json("llm", template_name, "writeup_guidance.json")
    return dict(data.get("guidance") or {}), {k: int(v) for k, v in (data.get("words") or {}).items()}


def seed_ideas(template_name: str) -> list[dict]:
    path = TEMPLATE_PROMPTS / template_name / "seed_ideas.json"
    return json.loads(path.read_text()) if path.exists() else []


# --------------------------------------------------------------------------------------------------------- ideation
def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")[:40].strip("_")
    return s if s and s[0].isalpha() else f"idea_{s}".strip("_")


def _clean_idea(raw: dict, used: set[str], kind: str = "source") -> dict:
    name = base = _slug(raw["Name"])
    i = 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    idea = {k: raw[k] for k in ("Title", "Experiment")}
    idea["Name"] = name
    idea["Hypothesis"] = str(raw.get("Hypothesis") or raw.get("Experiment"))
    for k in ("Interestingness", "Feasibility", "Novelty"):
        idea[k] = round(min(10, max(1, float(raw[k]))))
    idea.update(kind=kind, expression=None, expression_latex=None, parent=None, mutations=[], backend="llm")
    return idea


def generate_ideas(client: LLMClient, template: Template, archive_rows: list[dict], num_ideas: int,
                   reflections: int | None = None) -> list[dict]:
    """``num_ideas`` ideas, each refined over at most ``reflections`` rounds (stopping when the model is done)."""
    reflections = _n("SCIENTIST_IDEA_REFLECTIONS", 2) if reflections is None else reflections
    archive = [{"idea": r["idea"], "title": r.get("title") or r["idea"],
                "advantage": None if r.get("advantage") is None else round(float(r["advantage"]), 4),
                "overall": r.get("overall")} for r in archive_rows[:10]]
    used = set(template.baselines)
    ideas: list[dict] = []
    errors: list[str] = []
    for index in range(num_ideas):
        prompt = render("ideation.j2", template.name, index=index + 1, total=num_ideas, template=template,
                        task=task_description(template.name), seeds=seed_ideas(template.name), archive=archive,
                        previous=ideas)
        try:
            raw, messages = client.complete_json(prompt, "ideation", IDEA_FIELDS)
        except BudgetExceeded:
            if ideas:  # keep the ideas finished before the budget ran out; the flow stops after this stage
                break
            raise
        except LLMError as exc:
            errors.append(str(exc))
            continue
        rounds_done = 0
        for rnd in range(1, reflections + 1):
            try:
                text, messages = client.complete(render("ideation_reflection.j2", template.name, round=rnd,
                                                        rounds=reflections, template=template), "ideation", messages)
            except LLMError:  # the budget is spent or the call failed: the idea as it stands is kept
                break
            rounds_done = rnd
            try:
                raw = check_schema(extract_json(text), IDEA_FIELDS)
            except JSONReplyError:
                pass  # keep the previous version of the idea
            if DONE.search(text or ""):
                break
        idea = _clean_idea(raw, used, template.plugin.kind)
        idea["reflections"] = rounds_done
        ideas.append(idea)
    if not ideas:
        raise LLMError("ideation produced no valid idea: " + "; ".join(errors))
    return ideas


# ---------------------------------------------------------------------------------------------------------- novelty
def check_novelty(client: LLMClient, template: Template, idea: dict, rounds: int | None = None) -> dict:
    """Literature novelty: the model searches (at most ``rounds`` queries) and decides, with its reason."""
    rounds = _n("SCIENTIST_NOVELTY_ROUNDS", 3) if rounds is None else rounds
    results: list[dict] = []
    papers: dict[str, dict] = {}

    def valid(v: dict) -> dict:
        d = str(v.get("Decision", "")).strip().lower()
        if d not in ("novel", "not novel", "undecided"):
            raise JSONReplyError(f"field 'Decision' must be \"novel\", \"not novel\" or \"undecided\", got {d!r}")
        v["Decision"] = d
        return v

    decision, reason, used = None, "", 0
    for rnd in range(1, rounds + 1):
        used = rnd
        last = rnd == rounds
        prompt = render("novelty.j2", template.name, round=rnd, rounds=rounds, idea=idea, results=results, last=last,
                        template=template)
        reply, _ = client.complete_json(prompt, "novelty", {"Decision": "str"}, validate=valid)
        reason = str(reply.get("Reason") or "")
        if reply["Decision"] != "undecided" and (results or not reply.get("Query") or last):
            decision = reply["Decision"]
            break
        query = str(reply.get("Query") or idea["Title"])[:200]
        found = lit.search(query, template.name)
        results.append({"query": query, "source": found["source"], "papers": found["papers"], "notes": found["notes"]})
        for p in found["papers"]:
            papers.setdefault(p["title"].lower(), p)
    if decision is None:
        decision = "not novel"
        reason = reason or f"no decision after {rounds} rounds"
    return {
        "decision": decision, "reason": reason, "backend": "llm", "rounds": used,
        "queries": [{"query": r["query"], "source": r["source"], "hits": len(r["papers"]), "notes": r["notes"]}
                    for r in results],
        "literature_sources": sorted({r["source"] for r in results}),
        "fallback_to_local": any(r["source"] == "local" for r in results),
        "literature": list(papers.values()), "nearest": None, "distance": None, "distances": {},
        "threshold": template.novelty_threshold,
    }


# ------------------------------------------------------------------------------------------------------------- code
PY_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def parse_code(text: str) -> tuple[str, str | None]:
    """The module in the reply's python block (else the whole reply) and the formula after ``LaTeX:``."""
    text = text or ""
    blocks = PY_FENCE.findall(text)
    source = max(blocks, key=len) if blocks else text
    m = re.search(r"^\s*LaTeX:\s*(.+?)\s*$", text, re.MULTILINE)
    latex = m.group(1).strip().strip("$").strip() if m else None
    return source.strip() + "\n", latex or None


def implement_candidate(client: LLMClient, template: Template, idea: dict, idea_dir: Path,
                        repair_rounds: int | None = None) -> dict:
    """The model writes the plug-in; the gate's reason goes back for ``repair_rounds`` repairs."""
    from tasks import codegen

    repair_rounds = _n("SCIENTIST_CODE_REPAIR_ROUNDS", 2) if repair_rounds is None else repair_rounds
    state: dict = {"messages": None, "source": "", "latex": None, "round": 0}
    first = next(iter(template.baselines.values()), None)  # the template's first baseline, as an example
    example, example_label = (first.source, first.label) if first is not None else ("", "")

    def write_source(_idea: dict, error: str | None) -> str:
        if error is None:
            prompt = render("code.j2", template.name, task=task_description(template.name), template=template,
                            plugin_name=template.plugin.name, idea=idea, signature=template.plugin.signature,
                            example=example.strip(), example_label=example_label)
        else:
            state["round"] += 1
            prompt = render("code_repair.j2", template.name, round=state["round"], rounds=repair_rounds, error=error,
                            source=state["source"], template=template)
        text, state["messages"] = client.complete(prompt, "code", state["messages"])
        state["source"], latex = parse_code(text)
        state["latex"] = latex or state["latex"]
        return state["source"]

    result = codegen.implement_candidate(template, idea, idea_dir, write_source=write_source,
                                         repair_rounds=repair_rounds)
    result["expression_latex"] = state["latex"]
    result["repairs"] = state["round"]
    return result


# ---------------------------------------------------------------------------------------------------------- writeup
CITE = re.compile(r"\\(cite[tp]?|citealp|citeauthor|citeyear)\*?(\[[^\]]*\]){0,2}\{([^}]*)\}")
REF = re.compile(r"\\(ref|eqref|autoref|cref|Cref)\{([^}]*)\}")
SECTION_CMD = re.compile(r"\\(sub)*section\*?\{[^}]*\}")
LATEX_FENCE = re.compile(r"```[ \t]*(?:latex|tex)?[ \t]*\n(.*?)```", re.DOTALL)


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


def sanitize_section(text: str, known_keys: set[str], known_labels: set[str]) -> tuple[str, list[str], list[str]]:
    """The section's LaTeX with forbidden commands, unknown citations and unknown references removed.

    Returns the text, the citation keys dropped (never in the paper: no invented references) and other removals.
    """
    from tasks.writeup import FORBIDDEN_TEX

    blocks = LATEX_FENCE.findall(text or "")
    body = max(blocks, key=len) if blocks else (text or "")
    body = SECTION_CMD.sub("", body)
    removed = []
    kept_lines = []
    for line in body.splitlines():
        if FORBIDDEN_TEX.search(line):
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
                context: dict, out_dir: Path) -> dict:
    """Model-written sections in the pylatex document; LaTeX repair round; offline text as the last resort."""
    from jaxlib_kernels.templates import make
    from tasks import writeup

    template = make(template_name)
    guidance, words = writeup_guidance(template_name)
    out_dir = Path(out_dir)
    bib_src = layers.template_dir(template_name) / "references.bib"
    local_keys = set(writeup.bib_keys(bib_src)) if bib_src.exists() else set()
    novelty = idea.get("novelty") or {}
    returned = list(novelty.get("literature") or [])
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
    idea_for_paper = dict(idea)
    idea_for_paper["novelty"] = {**novelty, "literature": [{"key": keymap[p["key"]], "title": p["title"]}
                                                            for p in returned if p["key"] in keymap]}
    sections: dict[str, str] = {}
    dropped: list[str] = []
    removed: list[str] = []
    for key, title in [("abstract", "Abstract")] + list(writeup.SECTIONS):
        prompt = render("writeup_section.j2", template_name, title=title, paper_title=idea.get("Title", idea["Name"]),
                        guidance=guidance.get(key, ""), idea=idea, source=idea.get("source", ""), results=res,
                        figures=figures, citations=citable, written=list(sections), words=words.get(key, 250),
                        template=template)
        text, _ = client.complete(prompt, "writeup")
        body, d, r = sanitize_section(text, known_keys, labels)
        dropped += d
        removed += r
        if body:
            sections[key] = body
    every = "\n".join(sections.values())
    missing_figs = [f for f in figures if f"fig:{writeup._label_key(f['name'])}" not in every]
    if missing_figs and "results" in sections:  # every figure is referenced (an evidence check)
        sections["results"] += "\n\n" + " ".join(
            f"Figure~\\ref{{fig:{writeup._label_key(f['name'])}}}: {writeup.escape_tex(f.get('caption', ''))}"
            for f in missing_figs)
    result = writeup.write_paper(template_name, idea_for_paper, final_info, figures, context, out_dir,
                                 sections=sections, extra_bib=extra_bib, safe_retry=False)
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
                    dropped += d
                    removed += r
                    fixed[k] = body
            sections = {**sections, **{k: v for k, v in fixed.items() if v}}
            result = writeup.write_paper(template_name, idea_for_paper, final_info, figures, context, out_dir,
                                         sections=sections, extra_bib=extra_bib, safe_retry=False)
            text_source = "llm (after a LaTeX repair round)"
        except BudgetExceeded:
            raise
        except LLMError as exc:
            result = {"error": f"LaTeX repair failed: {exc}"}
        if result.get("error"):
            result = writeup.write_paper(template_name, idea_for_paper, final_info, figures, context, out_dir,
                                         extra_bib=extra_bib)
            text_source = f"offline templates (the model's LaTeX did not compile: {repair_error})"
    (out_dir / "sections.json").write_text(json.dumps(sections, indent=2))
    result.update(text_source=text_source, dropped_citations=sorted(set(dropped)), removed_latex=removed[:20],
                  llm_repair_error=repair_error, citable=sorted(known_keys))
    return result


def _sections_dict(v):
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise JSONReplyError("expected a JSON object mapping section names to LaTeX strings")
    return v


# ----------------------------------------------------------------------------------------------------------- review
def _normalise_review(r: dict) -> dict:
    out = dict(r)
    for k in ("Originality", "Quality", "Clarity", "Significance", "Soundness", "Presentation", "Contribution"):
        out[k] = round(min(4, max(1, float(r[k]))))
    out["Confidence"] = round(min(5, max(1, float(r["Confidence"]))))
    out["Overall"] = round(min(10, max(1, float(r["Overall"]))))
    for k in ("Strengths", "Weaknesses", "Questions", "Limitations"):
        out[k] = [str(x) for x in r[k]]
    out["Ethical Concerns"] = bool(r.get("Ethical Concerns"))
    model_decision = str(r.get("Decision", ""))
    out["Decision"] = "Accept" if out["Overall"] >= ACCEPT_AT else "Reject"
    if model_decision and model_decision.strip().lower() != out["Decision"].lower():
        out["model_decision"] = model_decision
    return out


def _one_review(client: LLMClient, prompt: str, reflections: int, template_name: str | None = None) -> dict:
    review, messages = client.complete_json(prompt, "review", REVIEW_FIELDS)
    done_after = 0
    for rnd in range(1, reflections + 1):
        text, messages = client.complete(render("review_reflection.j2", template_name, round=rnd, rounds=reflections),
                                         "review", messages)
        done_after = rnd
        try:
            review = check_schema(extract_json(text), REVIEW_FIELDS)
        except JSONReplyError:
            pass  # the previous version stands
        if DONE.search(text or ""):
            break
    out = _normalise_review(review)
    out["reflections"] = done_after
    return out


def paper_text(paper: dict, limit: int = 30000) -> str:
    pdf = paper.get("pdf")
    if pdf and Path(pdf).exists():
        import pymupdf

        with pymupdf.open(pdf) as doc:
            text = "\n".join(page.get_text() for page in doc)
    elif paper.get("tex") and Path(paper["tex"]).exists():
        text = Path(paper["tex"]).read_text(errors="replace")
    else:
        text = "(no paper text: the paper did not compile)"
    return text[:limit]


def review_paper(client: LLMClient, idea: dict, final_info: dict, paper: dict, template_name: str = "lpo",
                 num_reviews: int | None = None, reflections: int | None = None) -> dict:
    """An ensemble of NeurIPS reviews with reflections, an area chair's meta-review, and the evidence beside it."""
    from tasks import review as evidence_reviewer

    num_reviews = _n("SCIENTIST_NUM_REVIEWS", 3) if num_reviews is None else num_reviews
    reflections = _n("SCIENTIST_REVIEW_REFLECTIONS", 1) if reflections is None else reflections
    offline = evidence_reviewer.review_paper(idea, final_info, paper, template_name)
    evidence = offline["evidence"]
    text = paper_text(paper)
    reviews = [_one_review(client, render("review.j2", template_name, index=i + 1, total=num_reviews,
                                          evidence=evidence, paper_text=text), reflections, template_name)
               for i in range(num_reviews)]
    if len(reviews) > 1:
        meta, _ = client.complete_json(render("meta_review.j2", template_name, reviews=reviews, evidence=evidence),
                                       "review", REVIEW_FIELDS)
        meta = _normalise_review(meta)
    else:
        meta = dict(reviews[0])
    form = {k: meta[k] for k in REVIEW_FIELDS}
    return {
        **form, "reviewer": "llm", "model": client.config.model, "reviews": reviews, "meta_review": meta,
        "evidence": evidence,
        "evidence_review": {k: v for k, v in offline.items() if k != "rule"},
        "rule": "Decision = Accept iff the meta-review's Overall >= 6; evidence_review is the offline evidence "
                "reviewer's form (prompts/review/evidence_rule.md) on the same paper",
    }


# ---------------------------------------------------------------------------------------------- Prefect tasks
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import read_json, write_json


def _client(model: str) -> LLMClient:
    from tasks.runtime.llm import active

    return active(model)


@stage(name="generate_ideas_llm", modules=("tasks.runtime.llm", "tasks.runtime.text"), paths=("prompts/llm",),
       template_parts=("llm", "*"))
def generate_ideas_task(template_name: str, profile: dict, num_ideas: int, run_id: str, archive_rows: list[dict],
                        model: str) -> list[dict]:
    """Prefect task over :func:`generate_ideas` (LLM backend; the client retries, the task does not)."""
    from prefect import get_run_logger

    from jaxlib_kernels.templates import make

    ideas = generate_ideas(_client(model), make(template_name), archive_rows, num_ideas)
    get_run_logger().info("proposed %d ideas: %s", len(ideas), ", ".join(i["Name"] for i in ideas))
    return ideas


@stage(name="check_novelty_llm", modules=("tasks.runtime.llm", "tasks.runtime.text", "tasks.runtime.literature"), paths=("prompts/llm",),
       template_parts=("llm", "references.json"))
def check_novelty_task(template_name: str, idea: dict, archive_rows: list[dict], model: str) -> dict:
    from prefect import get_run_logger

    from jaxlib_kernels.templates import make

    result = check_novelty(_client(model), make(template_name), idea)
    get_run_logger().info("%s: %s (%s)", idea["Name"], result["decision"], result["reason"])
    return result


@stage(name="implement_candidate_llm", modules=("tasks.runtime.llm", "tasks.runtime.text", "tasks.codegen", "tasks.runtime.sandbox",
                                                "tasks.runtime.sandbox_child"), paths=("prompts/llm",), template_parts=("llm",))
def implement_candidate_task(template_name: str, idea: dict, idea_dir: str, archive_rows: list[dict],
                             model: str) -> dict:
    """The model's plug-in through the gate (with repairs). Its behavioural novelty is decided by the backend
    (``tasks/backends.py``), in order over the run's ideas, so it is also compared with the ideas accepted before."""
    from prefect import get_run_logger

    from jaxlib_kernels.templates import make

    template = make(template_name)
    result = implement_candidate(_client(model), template, idea, Path(idea_dir))
    v = result["validation"]
    get_run_logger().info("%s: %s after %d attempt(s) (%s)", idea["Name"], "accepted" if result["accepted"]
                          else "rejected", len(result["attempts"]), v["reason"])
    return result


@stage(name="write_paper_llm", modules=("tasks.writeup", "tasks.runtime.text", "tasks.runtime.llm", "tasks.runtime.literature"),
       paths=("prompts/paper", "prompts/llm"), template_parts=("paper", "llm", "*"))
def write_paper_task(template_name: str, idea: dict, figures: list[dict], context: dict, idea_dir: str,
                     model: str) -> dict:
    from prefect import get_run_logger

    from jaxlib_kernels.templates import make
    from tasks.reporting import labels_of, paper_baselines

    template = make(template_name)
    final_info = read_json(Path(idea_dir) / "final_info.json")
    ctx = {**context, "labels": labels_of(template_name, idea), "baselines": paper_baselines(template, context)}
    paper = write_paper(_client(model), template_name, idea, final_info, figures, ctx, Path(idea_dir) / "paper")
    paper = {k: v for k, v in paper.items() if k != "text"}
    get_run_logger().info("%s: paper %s (%s pages, text: %s)", idea["Name"], paper.get("pdf") or "FAILED",
                          paper.get("pages"), paper.get("text_source"))
    return paper


@stage(name="review_paper_llm", modules=("tasks.review", "tasks.writeup", "tasks.runtime.text", "tasks.runtime.llm"),
       paths=("prompts/review", "prompts/paper", "prompts/llm"), template_parts=("review", "paper", "llm", "*"))
def review_paper_task(template_name: str, idea: dict, idea_dir: str, model: str) -> dict:
    from prefect import get_run_logger

    from tasks.runtime import artifacts

    final_info = read_json(Path(idea_dir) / "final_info.json")
    result = review_paper(_client(model), idea, final_info, idea["paper"], template_name)
    write_json(Path(idea_dir) / "review.json", result)
    get_run_logger().info("%s: review %s (overall %s)", idea["Name"], result["Decision"], result["Overall"])
    failed = [e["check"] for e in result["evidence"] if not e["passed"]]
    artifacts.markdown(
        key=f"review-{idea['Name'].replace('_', '-')}"[:60].lower(),
        markdown=f"# Review of {idea['Title']}\n\n**{result['Decision']}** (meta-review overall {result['Overall']}; "
        f"reviews {[r['Overall'] for r in result['reviews']]}; evidence reviewer "
        f"{result['evidence_review']['Overall']})\n\n{result['Summary']}\n\nFailed evidence checks: "
        f"{', '.join(failed) or 'none'}\n\nPDF: `{idea['paper'].get('pdf')}`",
    )
    return result


# -------------------------------------------------------------------------------------------------------- discovery
def propose_formulas(client: LLMClient, template: Template, archive_rows: list[dict], n: int, generation: int,
                     max_size: int = 48) -> dict:
    """``n`` expression trees from the model for the discovery engine (DiscoPOP's loop: the archive and its real
    fitness in the prompt). Returns ``{"proposals": [{"name", "expr", "rationale"}], "rejected": [{"name",
    "reason"}]}``: trees that are not well formed are rejected here with the reason; a reply with no well-formed
    tree goes back to the model (``complete_json``'s attempts). The engine's own gate and novelty check follow."""
    from jaxlib_kernels import symbolic

    rejected: list[dict] = []

    def valid(value: dict) -> dict:
        rows = value.get("proposals")
        if not isinstance(rows, list) or not rows:
            raise JSONReplyError("field 'proposals' must be a non-empty list")
        kept, rejected[:] = [], []
        for i, row in enumerate(rows[: 2 * n]):
            name = _slug(str((row or {}).get("name") or f"proposal_{i + 1}")) if isinstance(row, dict) else f"p{i}"
            try:
                if not isinstance(row, dict) or "expr" not in row:
                    raise symbolic.ExpressionError("no 'expr' field")
                symbolic.validate(row["expr"])
                if symbolic.size(row["expr"]) > max_size:
                    raise symbolic.ExpressionError(f"larger than {max_size} nodes")
            except symbolic.ExpressionError as exc:
                rejected.append({"name": name, "reason": str(exc)})
                continue
            kept.append({"name": name, "expr": symbolic.canonical(row["expr"]),
                         "rationale": str(row.get("rationale") or "")[:300]})
        if not kept:
            raise JSONReplyError("no proposal is a well-formed expression tree: "
                                 + "; ".join(f"{r['name']}: {r['reason']}" for r in rejected[:5]))
        return {"proposals": kept[:n]}

    baselines = {name: json.dumps(b.expression) for name, b in template.baselines.items()
                 if isinstance(b.expression, (list, str))}
    archive = [{"expr": json.dumps(r["expr"]), "fitness": round(float(r["fitness"]), 4), "origin": r["origin"],
                "fitness_long": None if r.get("fitness_long") is None else round(float(r["fitness_long"]), 4)}
               for r in archive_rows]
    prompt = render("discovery.j2", template.name, generation=generation, task=task_description(template.name),
                    metric=template.metric.name, direction=template.metric.direction,
                    variables={k: v[0] for k, v in symbolic.VARIABLES.items()}, unary=sorted(symbolic.UNARY),
                    binary=sorted(symbolic.BINARY), max_size=max_size, baselines=baselines, archive=archive, n=n)
    value, _ = client.complete_json(prompt, "discovery", {"proposals": "list"}, validate=valid)
    return {"proposals": value["proposals"], "rejected": list(rejected)}
