"""Novelty, offline backend: behavioural distance to every known and archived plug-in, plus a BM25 search of the
template's local reference list (``prompts/templates/<t>/references.json``, summaries we wrote ourselves).

Decision rule: an idea is novel iff its drift's behaviour on the probe grid (r x A x n/N, evaluated with JAX from
its rendered source) lies at least ``NOVELTY_THRESHOLD`` (RMS difference in units of PPO clip's RMS drift) from
every baseline, every candidate archived by earlier runs, and every idea already accepted in this run. The
literature hits are reported beside the decision (the local list cannot prove an equation is new; the LLM
backend searches real literature).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

from jaxlib_kernels import plugin, symbolic
from jaxlib_kernels.templates import Template
from tasks.ideation import NOVELTY_THRESHOLD, distance

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def literature(template_name: str, query: str, k: int = 3) -> list[dict]:
    """The ``k`` best BM25 matches of ``query`` in the template's reference list."""
    path = PROMPTS / "templates" / template_name / "references.json"
    if not path.exists():
        return []
    refs = json.loads(path.read_text())
    corpus = [_tokens(f"{r['title']} {r.get('summary', '')}") for r in refs]
    scores = BM25Okapi(corpus).get_scores(_tokens(query))
    order = np.argsort(scores)[::-1][:k]
    return [{"key": refs[i]["key"], "title": refs[i]["title"], "score": round(float(scores[i]), 3)} for i in order]


def _probe_source(template: Template, source: str) -> np.ndarray:
    return template.probe(plugin.load_plugin(source, template.plugin_name))


def check_novelty(template: Template, idea: dict, archive_rows: list[dict], accepted: list[dict]) -> dict:
    """Decide novel / not novel for one idea, with the nearest known plug-in, its distance and a reason."""
    source = idea.get("source") or symbolic.render_source(idea["expression"], template.plugin_name)
    behaviour = _probe_source(template, source)
    known: dict[str, np.ndarray] = {}
    for name, expr in template.baselines.items():
        known[f"baseline {name}"] = _probe_source(template, symbolic.render_source(expr, template.plugin_name))
    for row in archive_rows:
        src = row.get("source") or (
            symbolic.render_source(row["expression"], template.plugin_name) if row.get("expression") is not None else None
        )
        if src:
            known[f"archived {row['idea']} (run {row['run_id']})"] = _probe_source(template, src)
    for other in accepted:
        src = other.get("source") or symbolic.render_source(other["expression"], template.plugin_name)
        known[f"idea {other['Name']} of this run"] = _probe_source(template, src)
    if not np.all(np.isfinite(behaviour)):
        return {"decision": "not novel", "reason": "its drift is not finite on the probe grid", "nearest": None,
                "distance": None, "distances": {}, "literature": [], "threshold": NOVELTY_THRESHOLD}
    distances = {k: round(distance(behaviour, v), 4) for k, v in known.items()}
    nearest = min(distances, key=distances.get)
    d = distances[nearest]
    hits = literature(template.name, f"{idea.get('Title', '')} {idea.get('Hypothesis', '')}")
    novel = d >= NOVELTY_THRESHOLD
    lit = f"; closest reference: {hits[0]['title']} (BM25 {hits[0]['score']})" if hits else ""
    reason = (
        f"behavioural distance {d:.3f} to the nearest known drift ({nearest}) is "
        f"{'at least' if novel else 'below'} the threshold {NOVELTY_THRESHOLD}{lit}"
    )
    return {"decision": "novel" if novel else "not novel", "reason": reason, "nearest": nearest, "distance": d,
            "distances": distances, "literature": hits, "threshold": NOVELTY_THRESHOLD}


# ---- Prefect task -------------------------------------------------------------------------------------------

from tasks.common import stage  # noqa: E402


@stage(name="check_novelty", retries=1)
def check_novelty_task(template_name: str, idea: dict, archive_rows: list[dict]) -> dict:
    """Prefect task over :func:`check_novelty`; returns the decision record."""
    from prefect import get_run_logger

    from jaxlib_kernels.templates import make

    result = check_novelty(make(template_name), idea, archive_rows, [])
    get_run_logger().info("%s: %s (%s)", idea["Name"], result["decision"], result["reason"])
    return result
