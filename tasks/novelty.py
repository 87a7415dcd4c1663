"""Novelty, offline backend: behavioural distance to every known plug-in, plus a BM25 search of the template's
local reference list (``prompts/templates/<t>/references.json``, summaries we wrote ourselves).

Decision rule: an idea is novel iff its candidate's behaviour (``Template.probe``) lies at least
``Template.novelty_threshold`` (``Template.distance``: RMS difference in the template's probe units) from every
baseline, every candidate archived by earlier runs, and every idea already accepted in this run (ideas are
decided in order, so of two ideas of one run that behave the same only the first is novel). The literature hits
are reported beside the decision (the local list cannot prove an equation is new; the LLM backend searches real
literature).
"""

from __future__ import annotations

import json
import re

import numpy as np
from prefect import get_run_logger
from rank_bm25 import BM25Okapi

from jaxlib_kernels.plugin import PluginError
from jaxlib_kernels.search.known import probed, relation
from jaxlib_kernels.templates import Template, make
from tasks.runtime.caching import stage


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def literature(template: Template, query: str, k: int = 3) -> list[dict]:
    """The ``k`` best BM25 matches of ``query`` in the template's reference list."""
    path = template.text_dir / "references.json"
    if not path.exists():
        return []
    refs = json.loads(path.read_text())
    corpus = [_tokens(f"{r['title']} {r.get('summary', '')}") for r in refs]
    scores = BM25Okapi(corpus).get_scores(_tokens(query))
    order = np.argsort(scores)[::-1][:k]
    return [{"key": refs[i]["key"], "title": refs[i]["title"], "score": round(float(scores[i]), 3)} for i in order]


def candidate_text(template: Template, idea: dict) -> str:
    """The idea's candidate text: its source when implemented, else what the offline code stage would render."""
    return idea.get("source") or template.render(template, idea)


def known_behaviours(template: Template, archive_rows: list[dict], accepted: list[dict]) -> dict[str, np.ndarray]:
    """Probes of every baseline, every archived candidate and every accepted idea of this run, by name."""
    known = probed(template, archive_rows, row_key=lambda r: f"archived {r['idea']} (run {r['run_id']})")
    for other in accepted:
        known[f"idea {other['Name']} of this run"] = template.probe_text(candidate_text(template, other))
    return known


def known_candidates(template: Template, archive_rows: list[dict], accepted: list[dict]) -> dict[str, dict]:
    """What :func:`known_behaviours` names, by the same names: text, expression tree, label, and the baseline's key
    (None for an archived candidate or another idea)."""
    known = {f"baseline {k}": {"text": b.source, "expression": b.expression, "label": b.label, "baseline": k}
             for k, b in template.baselines.items()}
    for r in archive_rows:
        known[f"archived {r['idea']} (run {r['run_id']})"] = {
            "text": r.get("source"), "expression": r.get("expression"), "baseline": None,
            "label": f"an earlier run's candidate ({r.get('title') or r['idea']})"}
    for other in accepted:
        known[f"idea {other['Name']} of this run"] = {
            "text": candidate_text(template, other), "expression": other.get("expression"), "baseline": None,
            "label": f"another idea of this run ({other.get('Title') or other['Name']})"}
    return known


def relation_of(template: Template, idea: dict, behaviour: np.ndarray, known: dict[str, np.ndarray],
                distances: dict[str, float], archive_rows: list[dict], accepted: list[dict]) -> dict:
    """The idea's relation to the nearest known candidate (``search.known.relation``), with the nearest baseline
    (``nearest_baseline``, what its experiments must run) and whether the nearest is archived (not run)."""
    nearest = min(distances, key=distances.get)
    info = known_candidates(template, archive_rows, accepted).get(nearest, {"text": None, "expression": None,
                                                                            "label": nearest, "baseline": None})
    rel = relation(template, (candidate_text(template, idea), idea.get("expression")),
                   (info["text"], info["expression"]), name=nearest, label=info["label"], distance=distances[nearest],
                   behaviours=(behaviour, known.get(nearest)))
    baselines = {k: d for k, d in distances.items() if k.startswith("baseline ")}
    rel["nearest_baseline"] = min(baselines, key=baselines.get).removeprefix("baseline ") if baselines else None
    rel["archived"] = nearest.startswith("archived ")
    if rel["archived"]:
        rel["change"] += " It was found by an earlier run and is not run here."
    return rel


def relation_for(template: Template, idea: dict, archive_rows: list[dict]) -> dict | None:
    """:func:`relation_of` for one idea against the baselines and the archive (the LLM backend's novelty, after
    the model's decision); None where the idea has no candidate to probe yet or its probe is not finite."""
    try:
        behaviour = template.probe_text(candidate_text(template, idea))
    except (KeyError, TypeError, ValueError, PluginError):  # an idea without a candidate yet (an LLM idea before
        # its code): no relation
        return None
    if not np.all(np.isfinite(behaviour)):
        return None
    known = known_behaviours(template, archive_rows, [])
    distances = {k: round(template.distance(behaviour, v), 4) for k, v in known.items()}
    return relation_of(template, idea, behaviour, known, distances, archive_rows, []) if distances else None


def check_novelty(template: Template, idea: dict, archive_rows: list[dict], accepted: list[dict]) -> dict:
    """Decide novel / not novel for one idea, with the nearest known plug-in, its distance and a reason."""
    threshold = template.novelty_threshold
    behaviour = template.probe_text(candidate_text(template, idea))
    if not np.all(np.isfinite(behaviour)):
        return {"decision": "not novel", "reason": "its behaviour is not finite on the probe", "nearest": None,
                "distance": None, "distances": {}, "literature": [], "threshold": threshold}
    known = known_behaviours(template, archive_rows, accepted)
    distances = {k: round(template.distance(behaviour, v), 4) for k, v in known.items()}
    nearest = min(distances, key=distances.get)
    d = distances[nearest]
    hits = literature(template, f"{idea.get('Title', '')} {idea.get('Hypothesis', '')}")
    novel = d >= threshold
    lit = f"; closest reference: {hits[0]['title']} (BM25 {hits[0]['score']})" if hits else ""
    reason = (
        f"behavioural distance {d:.3f} to the nearest known candidate ({nearest}) is "
        f"{'at least' if novel else 'below'} the threshold {threshold}{lit}"
    )
    return {"decision": "novel" if novel else "not novel", "reason": reason, "nearest": nearest, "distance": d,
            "distances": distances, "literature": hits, "threshold": threshold,
            "relation": relation_of(template, idea, behaviour, known, distances, archive_rows, accepted)}


def check_all(template: Template, ideas: list[dict], archive_rows: list[dict]) -> list[dict]:
    """Decisions for the ideas of one run, in order: each is compared with those accepted before it."""
    accepted, out = [], []
    for idea in ideas:
        decision = check_novelty(template, idea, archive_rows, accepted)
        if decision["decision"] == "novel":
            accepted.append(idea)
        out.append(decision)
    return out


# ---- Prefect task -------------------------------------------------------------------------------------------


# the relation's code (outside the template's package, which the key covers)
RELATION_MODULES = ("jaxlib_kernels.search.known", "jaxlib_kernels.symbolic", "jaxlib_kernels.search.language",
                    "jaxlib_kernels.search.drift", "jaxlib_kernels.search.preference")


@stage(name="check_novelty", retries=1, modules=RELATION_MODULES, template_parts=("references.json",))
def check_novelty_task(template_name: str, ideas: list[dict], archive_rows: list[dict]) -> list[dict]:
    """Prefect task over :func:`check_all`; returns one decision record per idea."""
    results = check_all(make(template_name), ideas, archive_rows)
    for idea, result in zip(ideas, results, strict=True):
        get_run_logger().info("%s: %s (%s)", idea["Name"], result["decision"], result["reason"])
    return results
