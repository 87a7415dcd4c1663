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

from jaxlib_kernels.search.known import probed
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
            "distances": distances, "literature": hits, "threshold": threshold}


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


@stage(name="check_novelty", retries=1, template_parts=("references.json",))
def check_novelty_task(template_name: str, ideas: list[dict], archive_rows: list[dict]) -> list[dict]:
    """Prefect task over :func:`check_all`; returns one decision record per idea."""
    results = check_all(make(template_name), ideas, archive_rows)
    for idea, result in zip(ideas, results, strict=True):
        get_run_logger().info("%s: %s (%s)", idea["Name"], result["decision"], result["reason"])
    return results
