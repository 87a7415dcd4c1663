"""The offline evidence reviewer (ARCHITECTURE.md section 4, ``review_paper``): the NeurIPS form from evidence alone.

The form (Summary, Strengths, Weaknesses, Originality, Quality, Clarity, Significance, Questions, Limitations,
Ethical Concerns, Soundness, Presentation, Contribution, Overall, Confidence, Decision) is the one The AI Scientist's
reviewer fills (Lu et al., 2024); here every score follows a documented, deterministic rule over evidence checks
(seeds, confidence intervals, significance on training and held-out settings, novelty, PDF checks) and over the
paper's findings (:func:`paper_findings`: the writeup loop's claims and figure checks in ``paper/checks.json`` and
the text gate of :mod:`tasks.textgate` over the paper's sections). The rule's text
is ``prompts/review/evidence_rule.md``; :func:`score` implements exactly that text. Review prose comes from Jinja2
templates in ``prompts/review/``, which a research template overrides file by file in
``prompts/templates/<name>/review/`` (:mod:`tasks.runtime.text`). "Better" follows the metric's direction as recorded in
``final_info.json`` (each comparison's ``improvement``, ``better`` and ``worse``), never a bare ``>``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from statistics import median
from typing import Any

import jinja2
from prefect import get_run_logger

from jaxlib_kernels.templates import DEFAULT
from jaxlib_kernels.templates.base import Metric
from tasks import textgate, treefacts
from tasks.runtime import artifacts
from tasks.runtime import text as layers
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
REVIEW_PROMPTS = ROOT / "prompts" / "review"
RULE_PATH = REVIEW_PROMPTS / "evidence_rule.md"

MIN_SEEDS = 4
ALPHA = 0.05
MIN_FIGURES = 2
MIN_PAGES = 4
RETUNING_ORIGINALITY = 2  # the most a retuning of the nearest known candidate scores
DESK_REJECT_OVERALL = 2
MAX_NAMED_FINDINGS = 12
NOVELTY_DISTANCES = (0.05, 0.2)  # in the template's probe units (Template.distance: RMS / probe_scale)
PRECISION_MAX_REL_HALFWIDTH = 0.10
LARGE_EFFECT = 0.05
ACCEPT_AT = 6
MAX_OVERALL = 8
TREE_CAP = 7  # the highest Overall without tuned baselines, an ablation and a replication on fresh seeds
CHECKS = (
    "seeds_per_arm", "confidence_intervals", "significant_training", "significant_held_out", "novelty",
    "pdf_compiled", "figures", "references_resolved", "pages", "table_numbers",
)
TREE_CHECKS = ("tuned_baselines", "ablation", "replication")  # what the idea's research tree shows (tree.json)
FORM_FIELDS = (
    "Summary", "Strengths", "Weaknesses", "Originality", "Quality", "Clarity", "Significance", "Questions",
    "Limitations", "Ethical Concerns", "Soundness", "Presentation", "Contribution", "Overall", "Confidence", "Decision",
)


def rule_text() -> str:
    """The scoring rule, as published in ``prompts/review/evidence_rule.md``."""
    return RULE_PATH.read_text()


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def comparisons(final_info: dict) -> list[dict]:
    """One row per setting: the candidate against the best baseline, with the direction of a significant result.

    The direction comes from the comparison's ``improvement`` / ``better`` / ``worse`` (the metric's sign applied by
    the aggregation); a comparison without them is signed by ``final_info[setting]["maximize"]`` (default True).
    """
    rows = []
    for name, info in final_info.items():
        comp = info.get("comparison") or {}
        cand, best = comp.get("candidate"), comp.get("best_baseline")
        diff = float(comp["difference"]) if _finite(comp.get("difference")) else math.nan
        metric = Metric.recorded(info.get("maximize"))
        improvement = float(comp["improvement"]) if _finite(comp.get("improvement")) else metric.improvement(diff, 0.0)
        p = float(comp["p_value"]) if _finite(comp.get("p_value")) else math.nan
        sig = bool(comp.get("significant", False)) and _finite(p) and p < ALPHA
        better = bool(comp["better"]) if "better" in comp else improvement > 0
        worse = bool(comp["worse"]) if "worse" in comp else improvement < 0
        direction = "better" if sig and better else ("worse" if sig and worse else "tie")
        means = info.get("means", {})
        lo_hi = (info.get("ci95", {}) or {}).get(cand)
        cand_mean = means.get(cand, math.nan)
        rel_half = (
            (float(lo_hi[1]) - float(lo_hi[0])) / 2 / abs(cand_mean)
            if lo_hi and _finite(cand_mean) and cand_mean and all(_finite(v) for v in lo_hi) else math.inf
        )
        best_mean = means.get(best, math.nan)
        rows.append({
            "setting": name, "held_out": bool(info.get("held_out", False)), "candidate": cand, "best": best,
            "candidate_mean": cand_mean, "best_mean": best_mean, "difference": diff, "improvement": improvement,
            "p": p, "direction": direction, "rel_halfwidth": rel_half,
            "relative_gain": improvement / abs(best_mean) if _finite(best_mean) and best_mean and _finite(improvement)
            else math.nan,
        })
    return rows


def _referenced_figures(tex_path: str | None) -> tuple[list[str], list[str]]:
    """Figure labels in the .tex, and those never referenced."""
    if not tex_path or not Path(tex_path).exists():
        return [], []
    tex = Path(tex_path).read_text(errors="replace")
    labels = re.findall(r"\\label\{(fig:[^}]+)\}", tex)
    refs = set(re.findall(r"\\(?:ref|autoref|cref|Cref)\{(fig:[^}]+)\}", tex))
    return labels, [lab for lab in labels if lab not in refs]


def paper_text(paper: dict) -> str:
    """The PDF's text (pymupdf), else the .tex, else ''."""
    pdf, tex = paper.get("pdf"), paper.get("tex")
    if pdf and Path(pdf).exists():
        import pymupdf

        with pymupdf.open(pdf) as doc:
            return "\n".join(page.get_text() for page in doc)
    return Path(tex).read_text(errors="replace") if tex and Path(tex).exists() else ""


def paper_findings(paper: dict) -> list[dict]:
    """What the reviewers score beside the evidence: ``paper/checks.json``'s final findings (claims and figure
    checks) and the text gate over each section of the .tex and over the PDF's text (placeholder references)."""
    out: list[dict] = []
    folder = next((Path(p).parent for p in (paper.get("tex"), paper.get("pdf")) if p), None)
    if folder is not None and (folder / "checks.json").exists():
        out += [dict(f) for f in (read_json(folder / "checks.json", {}) or {}).get("final") or []]
    tex = paper.get("tex")
    if tex and Path(tex).exists():
        for title, body in textgate.tex_sections(Path(tex).read_text(errors="replace")).items():
            out += textgate.text_findings(body, {}, title)
    if m := textgate.PLACEHOLDER_REF.search(paper_text(paper) if paper.get("pdf") else ""):
        out.append(textgate.finding("placeholder_reference", "PDF", f"the PDF prints {m.group(0)!r}"))
    seen: set[tuple] = set()
    return [f for f in out if (k := (f.get("check"), f.get("target"), f.get("message"))) not in seen
            and not seen.add(k)]


def desk_reject(findings: list[dict]) -> list[dict]:
    """The findings that make a paper a desk reject: model garbage in its text (the text gate's error checks)."""
    return [f for f in findings if f.get("check") in textgate.GARBAGE and f.get("severity") == "error"]


def finding_caps(findings: list[dict]) -> int:
    """The highest Clarity and Presentation the findings allow: 1 desk reject, 2 an error, 3 a warning, else 4."""
    if desk_reject(findings):
        return 1
    severities = {f.get("severity") for f in findings}
    return 2 if "error" in severities else 3 if severities else 4


def retuning(idea: dict) -> dict | None:
    """The novelty stage's measured relation to the nearest known candidate when it is a retuning of it."""
    relation = (idea.get("novelty") or {}).get("relation") or {}
    return relation if relation.get("kind") == "retuning" else None


def findings_weaknesses(findings: list[dict], idea: dict) -> list[str]:
    """One weakness per problem the scores followed: desk reject, retuning, each finding (errors first)."""
    out = []
    garbage = desk_reject(findings)
    if garbage:
        out.append("Desk reject: the text holds model output that is not a paper ("
                   + "; ".join(f"{f['check']} in {f['target']}" for f in garbage[:6]) + ").")
    if rel := retuning(idea):
        out.append(f"Originality: the candidate is a retuning of {rel.get('nearest_label') or rel.get('nearest')} "
                   f"({rel.get('change') or 'the same form with other constants'}), so Originality is at most "
                   f"{RETUNING_ORIGINALITY}.")
    ordered = sorted(findings, key=lambda f: f.get("severity") != "error")
    out += [f"Paper check {f.get('check')} ({f.get('severity')}, {f.get('target')}): {f.get('message')}"
            for f in ordered[:MAX_NAMED_FINDINGS]]
    if len(ordered) > MAX_NAMED_FINDINGS:
        out.append(f"Paper check: {len(ordered) - MAX_NAMED_FINDINGS} further findings in paper/checks.json.")
    return out


def apply_findings(form: dict, findings: list[dict], idea: dict) -> dict:
    """A review form (either reviewer's) bounded by the findings and the measured novelty relation: Originality <= 2
    for a retuning, Clarity and Presentation <= :func:`finding_caps`, a desk reject at Overall <= 2 (Reject)."""
    out = dict(form)
    if retuning(idea):
        out["Originality"] = min(out["Originality"], RETUNING_ORIGINALITY)
    cap = finding_caps(findings)
    out["Clarity"] = min(out["Clarity"], cap)
    out["Presentation"] = min(out["Presentation"], cap)
    if desk_reject(findings):
        out["Overall"] = min(out["Overall"], DESK_REJECT_OVERALL)
        out["Decision"] = "Reject"
        if not str(out.get("Summary", "")).startswith("Desk reject"):
            out["Summary"] = "Desk reject: the paper's text holds model output that is not a paper. " \
                + str(out.get("Summary", ""))
    named = findings_weaknesses(findings, idea)
    out["Weaknesses"] = named + [w for w in out.get("Weaknesses", []) if w not in named]
    return out


def evidence_checks(idea: dict, final_info: dict, paper: dict) -> list[dict]:
    """The evidence checks of the rule, in its order: ``[{"check", "passed", "detail"}]``."""
    out: list[dict] = []

    def add(check: str, passed: bool, detail: str) -> None:
        out.append({"check": check, "passed": bool(passed), "detail": detail})

    ns = {(s, m): int(n) for s, info in final_info.items() for m, n in (info.get("n") or {}).items()}
    low = sorted(f"{m} on {s} ({n})" for (s, m), n in ns.items() if n < MIN_SEEDS)
    add("seeds_per_arm", bool(ns) and not low,
        f"min {min(ns.values())} seeds over {len(ns)} method-setting arms (need {MIN_SEEDS})"
        + (f"; too few: {', '.join(low)}" if low else "") if ns else "no seed counts in final_info")

    missing_ci = []
    for s, info in final_info.items():
        for m, mean in (info.get("means") or {}).items():
            ci = (info.get("ci95") or {}).get(m)
            if not ci or not all(_finite(v) for v in ci) or not (float(ci[0]) <= float(mean) <= float(ci[1])):
                missing_ci.append(f"{m} on {s}")
        comp_ci = (info.get("comparison") or {}).get("ci95")
        if not comp_ci or not all(_finite(v) for v in comp_ci):
            missing_ci.append(f"comparison on {s}")
    add("confidence_intervals", bool(final_info) and not missing_ci,
        "95% intervals for every method, setting and comparison" if not missing_ci
        else f"missing or inconsistent: {', '.join(missing_ci[:6])}")

    rows = comparisons(final_info)
    train = [r for r in rows if not r["held_out"]]
    held = [r for r in rows if r["held_out"]]

    def describe(rs: list[dict]) -> str:
        return "; ".join(f"{r['setting']}: {r['difference']:+.3f} vs {r['best']}, p={float(r['p']):.3g} "
                         f"({r['direction']})" for r in rs)

    add("significant_training", bool(train) and all(r["direction"] == "better" for r in train),
        describe(train) if train else "no training setting")
    add("significant_held_out",
        any(r["direction"] == "better" for r in held) and not any(r["direction"] == "worse" for r in held),
        describe(held) if held else "no held-out setting")

    novelty = idea.get("novelty") or {}
    dist = novelty.get("distance")
    add("novelty", novelty.get("decision") == "novel",
        f"decision {novelty.get('decision', 'missing')!r}, nearest {novelty.get('nearest')!r}"
        + (f" at distance {float(dist):.3f}" if _finite(dist) else "")
        + (f": {novelty.get('reason')}" if novelty.get("reason") else ""))

    pdf = paper.get("pdf")
    compiled = bool(pdf) and Path(pdf).exists()
    add("pdf_compiled", compiled, f"{pdf}" if compiled else f"no PDF: {paper.get('error') or 'not compiled'}")
    labels, unreferenced = _referenced_figures(paper.get("tex"))
    n_fig = int(paper.get("figures") or 0)
    add("figures", compiled and n_fig >= MIN_FIGURES and bool(labels) and not unreferenced,
        f"{n_fig} images in the PDF (need {MIN_FIGURES}), {len(labels)} figure labels"
        + (f", unreferenced: {', '.join(unreferenced)}" if unreferenced else ", all referenced"))
    unresolved = int(paper.get("unresolved_refs") or 0)
    add("references_resolved", compiled and unresolved == 0,
        f"{unresolved} unresolved references or citations" if compiled else "no PDF to check")
    pages = int(paper.get("pages") or 0)
    add("pages", compiled and pages >= MIN_PAGES, f"{pages} pages (need {MIN_PAGES})")
    add("table_numbers", compiled and bool(paper.get("table_numbers_found")),
        "every table number of final_info.json found in the PDF text" if compiled and paper.get("table_numbers_found")
        else "no PDF to check" if not compiled
        else f"missing from the PDF: {', '.join(paper.get('missing_numbers', [])[:8]) or 'some numbers'}")
    return out


def tree_checks(idea: dict, final_info: dict) -> list[dict]:
    """The research tree's checks of the rule, in :data:`TREE_CHECKS` order: ``[{"check", "passed", "detail"}]``.

    ``tuned_baselines``: the candidate and every method of the results were tuned with the same number of
    evaluations; ``ablation``: at least one ablation of the final candidate was scored; ``replication``: the results'
    seeds are the tree's replication seeds, none of them a search seed."""
    record = treefacts.load(idea)
    if record is None:
        return [{"check": c, "passed": False, "detail": "no research tree (tree.json) for this idea"}
                for c in TREE_CHECKS]
    ran = list(dict.fromkeys(m for i in final_info.values() for m in (i.get("means") or {})))
    tree = treefacts.summarize(record, treefacts.metric_of(record, layers.template_or_none(record.get("template"))),
                               ran, final_info)
    budgets = {r["name"]: r["evaluations"] for r in tree["tuning"]}
    tuned = tree["candidate_tuned"] and tree["equal_budget"]
    detail = (f"{len(budgets)} methods tuned with {tree['evaluations']} evaluations each" if tuned
              else "no tuning ran" if not tree["tuned"]
              else "the candidate was not tuned" if not tree["candidate_tuned"]
              else f"not tuned: {', '.join(tree['untuned'])}" if tree["untuned"]
              else "unequal tuning budgets: " + ", ".join(f"{k} {v}" for k, v in budgets.items()))
    scored = [a for a in tree["ablations"] if _finite(a["change"])]
    worst = min(scored, key=lambda a: a["change"]) if scored else None
    ablated = (f"{len(scored)} ablations scored; largest change {worst['change']:+.3f} ({worst['label']})"
               if worst else "no ablation of the final candidate was scored")
    replicated = tree["replicated"]
    rep = (f"results on {len(tree['replication_seeds'])} replication seeds, disjoint from the search seeds "
           f"{tree['search_seeds']}" if replicated
           else "the replication seeds overlap the search seeds or are not recorded" if not tree["fresh"]
           else f"the results have up to {tree['most_seeds']} seeds per arm, more than the "
           f"{len(tree['replication_seeds'])} replication seeds" if tree["most_seeds"] > len(tree["replication_seeds"])
           else "the results are not the replication of the tree's final candidate")
    return [{"check": "tuned_baselines", "passed": bool(tuned), "detail": detail},
            {"check": "ablation", "passed": bool(scored), "detail": ablated},
            {"check": "replication", "passed": bool(replicated), "detail": rep}]


def score(evidence: list[dict], idea: dict, final_info: dict, paper: dict, findings: list[dict] | None = None,
          tree: list[dict] | None = None) -> dict:
    """The form's scores from the evidence, exactly as ``prompts/review/evidence_rule.md`` states.

    Quality = 1 + [seeds and CIs and precise] + [significant training] + [significant held-out];
    Originality = 1 if not novel else 2 + [distance >= 0.05] + [distance >= 0.2], at most 2 for a retuning;
    Clarity = 1 + [PDF and pages] + [figures] + [references resolved and table numbers], at most 3 with a warning
    finding, 2 with an error finding, 1 for a desk reject (:func:`paper_findings`);
    Significance = 1 + [significant training] + [significant held-out] + [large effect];
    Soundness = 1 + [seeds] + [CIs] + [table numbers]; Presentation = Clarity - [repaired] (>= 1);
    Contribution = round((Originality + Significance) / 2); Confidence = 2 + [PDF] + [seeds] + [held-out exists];
    Overall = 1 + round(7 (mean of the seven 1-4 scores - 1) / 3), capped: no PDF <= 2; too few seeds or not
    novel <= 4; no significant training win <= 5; a failed PDF check or an error finding <= 5; a desk reject (model
    garbage in the text) <= 2. Accept iff Overall >= 6.
    """
    ok = {e["check"]: e["passed"] for e in evidence}
    findings = paper_findings(paper) if findings is None else findings
    rows = comparisons(final_info)
    halfwidths = [r["rel_halfwidth"] for r in rows]
    precise = bool(halfwidths) and median(halfwidths) <= PRECISION_MAX_REL_HALFWIDTH
    large = any(r["direction"] == "better" and _finite(r["relative_gain"]) and r["relative_gain"] >= LARGE_EFFECT
                for r in rows)
    novelty = idea.get("novelty") or {}
    dist = novelty.get("distance")
    if novelty.get("decision") != "novel":
        originality = 1
    elif not _finite(dist):
        originality = 2
    else:
        originality = 2 + int(float(dist) >= NOVELTY_DISTANCES[0]) + int(float(dist) >= NOVELTY_DISTANCES[1])
    if retuning(idea):
        originality = min(originality, RETUNING_ORIGINALITY)
    b = lambda *names: int(all(ok[n] for n in names))  # the rule's [condition] bracket
    quality = 1 + int(b("seeds_per_arm", "confidence_intervals") and precise) + b("significant_training") \
        + b("significant_held_out")
    clarity = min(finding_caps(findings),
                  1 + b("pdf_compiled", "pages") + b("figures") + b("references_resolved", "table_numbers"))
    significance = 1 + b("significant_training") + b("significant_held_out") + int(large)
    soundness = 1 + b("seeds_per_arm") + b("confidence_intervals") + b("table_numbers")
    presentation = max(1, clarity - int(bool(paper.get("repaired"))))
    contribution = _round_half_up((originality + significance) / 2)
    confidence = 2 + b("pdf_compiled") + b("seeds_per_arm") + int(any(r["held_out"] for r in rows))
    subscores = [quality, originality, clarity, significance, soundness, presentation, contribution]
    mean = sum(subscores) / len(subscores)
    raw = 1 + _round_half_up(7 * (mean - 1) / 3)
    caps = []
    if not ok["pdf_compiled"]:
        caps.append((2, "no PDF"))
    if not ok["seeds_per_arm"]:
        caps.append((4, f"fewer than {MIN_SEEDS} seeds on some arm"))
    if not ok["novelty"]:
        caps.append((4, "not novel"))
    if not ok["significant_training"]:
        caps.append((5, "no significant win on every training setting"))
    failed_pdf = [n for n in ("figures", "references_resolved", "pages", "table_numbers") if not ok[n]]
    if failed_pdf:
        caps.append((5, "failed PDF checks: " + ", ".join(failed_pdf)))
    errors = sorted({f"{f.get('check')} ({f.get('target')})" for f in findings if f.get("severity") == "error"})
    if errors:
        caps.append((5, "paper check errors: " + ", ".join(errors[:6])))
    garbage = desk_reject(findings)
    if garbage:
        caps.append((DESK_REJECT_OVERALL, "desk reject: model garbage in the text ("
                     + ", ".join(sorted({f"{f['check']} in {f['target']}" for f in garbage})[:6]) + ")"))
    missing = [t["check"] for t in tree if not t["passed"]]
    if missing:
        caps.append((TREE_CAP, "research tree incomplete: " + ", ".join(missing)))
    overall = min([raw, MAX_OVERALL] + [c for c, _ in caps])
    return {
        "Originality": originality, "Quality": quality, "Clarity": clarity, "Significance": significance,
        "Soundness": soundness, "Presentation": presentation, "Contribution": contribution,
        "Overall": overall, "Confidence": confidence, "Decision": "Accept" if overall >= ACCEPT_AT else "Reject",
        "derivation": {
            "precise": precise, "large_effect": large, "mean_subscore": round(mean, 3), "uncapped_overall": raw,
            "caps": [f"<= {c}: {why}" for c, why in caps], "desk_reject": bool(garbage),
            "retuning": bool(retuning(idea)), "tree": {t["check"]: t["passed"] for t in tree},
        },
    }


def _items(text: str) -> list[str]:
    """Lines starting with '- ' of a rendered template, as a list (continuation lines join the item before)."""
    items: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.strip() and items:
            items[-1] += " " + line.strip()
    return items


def _env(template_name: str | None = None) -> jinja2.Environment:
    """Jinja2 over ``prompts/templates/<template_name>/review/`` first, then ``prompts/review/``."""
    return jinja2.Environment(
        loader=layers.loader("review", template_name), trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined, autoescape=False,
    )


def _contract(template_name: str, final_info: dict) -> dict:
    """What the review text may say about the problem (generic defaults when the template is unknown)."""
    template = layers.template_or_none(template_name)
    n_baselines = max((len([m for m in i.get("means", {}) if m != (i.get("comparison") or {}).get("candidate")])
                       for i in final_info.values()), default=0)
    if template is None:
        maximize = bool(next((i["maximize"] for i in final_info.values() if "maximize" in i), True))
        return {"template_title": template_name, "plugin_name": "plug-in", "plugin_signature": "plug-in",
                "metric": "the final value", "maximize": maximize,
                "metric_direction": "maximised" if maximize else "minimised", "final_label": "final value",
                "budget_unit": "steps", "probe_scale": 1.0, "n_baselines": n_baselines}
    return {"template_title": template.title, "plugin_name": template.plugin.name,
            "plugin_signature": template.plugin.signature, "metric": template.metric.description,
            "maximize": template.metric.maximize, "metric_direction": template.metric.direction,
            "final_label": template.schema.final_label, "budget_unit": template.budget_unit,
            "probe_scale": template.probe_scale, "n_baselines": n_baselines}


def review_paper(idea: dict, final_info: dict, paper: dict, template_name: str = DEFAULT) -> dict:
    """Fill the NeurIPS review form from evidence by the documented rule; the evidence and the rule come with it."""
    evidence = evidence_checks(idea, final_info, paper)
    findings = paper_findings(paper)
    tree = tree_checks(idea, final_info)
    scores = score(evidence, idea, final_info, paper, findings, tree)
    rows = comparisons(final_info)
    ctx = {
        "idea": idea, "template": template_name, "rows": rows,
        "train": [r for r in rows if not r["held_out"]], "held": [r for r in rows if r["held_out"]],
        "evidence": evidence, "ok": {e["check"]: e["passed"] for e in evidence},
        "failed": [e for e in evidence if not e["passed"]], "scores": scores, "paper": paper,
        "tree": tree, "tree_ok": {t["check"]: t["passed"] for t in tree},
        "seeds": min((int(n) for i in final_info.values() for n in (i.get("n") or {}).values()), default=0),
        "novelty": idea.get("novelty") or {}, "alpha": ALPHA, "min_seeds": MIN_SEEDS,
        **_contract(template_name, final_info),
    }
    env = _env(template_name)
    render = lambda name: env.get_template(name).render(**ctx)
    review = {
        "Summary": " ".join(render("summary.md.j2").split()),
        "Strengths": _items(render("strengths.md.j2")),
        "Weaknesses": _items(render("weaknesses.md.j2")),
        "Originality": scores["Originality"], "Quality": scores["Quality"], "Clarity": scores["Clarity"],
        "Significance": scores["Significance"],
        "Questions": _items(render("questions.md.j2")),
        "Limitations": _items(render("limitations.md.j2")),
        "Ethical Concerns": False,
        "Soundness": scores["Soundness"], "Presentation": scores["Presentation"],
        "Contribution": scores["Contribution"], "Overall": scores["Overall"], "Confidence": scores["Confidence"],
        "Decision": scores["Decision"],
        "evidence": evidence,
        "tree_evidence": tree,
        "findings": findings,
        "derivation": scores["derivation"],
        "rule": rule_text(),
        "reviewer": "evidence",
    }
    return apply_findings(review, findings, idea)  # names each scored problem (the scores already follow them)


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="review_paper", modules=("tasks.writeup", "tasks.runtime.text", "tasks.textgate", "tasks.treefacts"),
       paths=("prompts/review", "prompts/paper"), template_parts=("review", "paper", "*"))
def review_paper_task(template_name: str, idea: dict, idea_dir: str) -> dict:
    """The evidence reviewer's NeurIPS form, written to review.json."""
    final_info = read_json(Path(idea_dir) / "final_info.json")
    result = review_paper(idea, final_info, idea["paper"], template_name)
    write_json(Path(idea_dir) / "review.json", result)
    get_run_logger().info("%s: review %s (overall %s)", idea["Name"], result["Decision"], result["Overall"])
    artifacts.markdown(
        key=f"review-{idea['Name'].replace('_', '-')}"[:60].lower(),
        markdown=f"# Review of {idea['Title']}\n\n**{result['Decision']}** (overall {result['Overall']})\n\n"
        f"{result['Summary']}\n\nPDF: `{idea['paper'].get('pdf')}`",
    )
    return result
