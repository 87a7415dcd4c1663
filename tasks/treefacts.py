"""What the paper, its figure and the review read from an idea's research tree (``<idea_dir>/tree/tree.json``,
format in the tree's design; the flow stores ``grow_tree``'s summary, with the file's ``path``, as ``idea["tree"]``).

:func:`load` reads the record; :func:`summarize` turns it into plain numbers and names: each method's tuning (values
before and after, search score before and after, evaluations), each ablation's change against the final candidate
(in the metric's units, positive = better, through ``Metric.improvement``), the search and replication seeds and
whether they are disjoint, and the nodes per stage. Nothing here invents a number: a value the record lacks is NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jaxlib_kernels.templates.base import Metric

STAGES = ("implement", "tune", "improve", "ablate", "replicate")


def load(idea: dict) -> dict | None:
    """The idea's tree.json (``idea["tree"]["path"]``), or None without a readable one."""
    info = idea.get("tree")
    path = info.get("path") if isinstance(info, dict) else None
    if not path or not Path(path).is_file():
        return None
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def metric_of(record: dict, template: Any = None) -> Metric:
    """The tree's metric: the template's when the record agrees on its direction, else the recorded one."""
    recorded = (record.get("metric") or {}).get("maximize")
    if template is not None and (recorded is None or bool(recorded) == template.metric.maximize):
        return template.metric
    return Metric((record.get("metric") or {}).get("name") or "final", "the final value",
                  maximize=True if recorded is None else bool(recorded))


def _num(x: Any) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return math.nan
    return value


def _changes(before: dict, after: dict) -> list[dict]:
    """Each tuned hyperparameter (before, after), then the candidate's constants as one entry (two lists)."""
    hb, ha = dict((before or {}).get("hparams") or {}), dict((after or {}).get("hparams") or {})
    out = [{"name": k, "before": hb.get(k), "after": ha.get(k), "constant": False}
           for k in list(dict.fromkeys([*hb, *ha]))]
    cb, ca = list((before or {}).get("constants") or []), list((after or {}).get("constants") or [])
    if cb or ca:
        out.append({"name": "constants", "before": cb, "after": ca, "constant": True})
    return out


def summarize(record: dict, metric: Metric, methods_ran: list[str] | None = None,
              final_info: dict | None = None) -> dict:
    """The tree in numbers (see the module docstring); ``methods_ran``: the methods of the results table.

    ``replicated``: the results (``final_info``) are the tree's replication: its replication seeds are disjoint from
    the search seeds (``fresh``), no arm has more seeds than there are replication seeds, and no setting says it
    does not replicate the tree (``final_info[setting]["replication"]``, when the flow recorded it)."""
    nodes = [n for n in record.get("nodes") or [] if isinstance(n, dict)]
    by_id = {n.get("id"): n for n in nodes}
    tuning = []
    for name, t in (record.get("tuning") or {}).items():
        before, after = _num(t.get("score_before")), _num(t.get("score_after"))
        tuning.append({
            "name": name, "role": t.get("role") or "baseline", "changes": _changes(t.get("before"), t.get("after")),
            "score_before": before, "score_after": after,
            "gain": metric.improvement(after, before) if math.isfinite(before) and math.isfinite(after) else math.nan,
            "evaluations": int(t.get("evaluations") or 0), "cost": _num(t.get("cost")),
        })
    tuning.sort(key=lambda r: r["role"] == "candidate")  # the candidate last, as in the results table
    evaluations = sorted({r["evaluations"] for r in tuning})
    tuned_names = {r["name"] for r in tuning if r["evaluations"] > 0}
    candidate_tuned = any(r["role"] == "candidate" and r["evaluations"] > 0 for r in tuning)
    untuned = [m for m in (methods_ran or []) if m not in tuned_names]
    final = record.get("final") or {}
    final_score = _num((by_id.get(final.get("node")) or {}).get("score", final.get("score")))
    ablations = []
    for a in record.get("ablation") or []:
        score = _num(a.get("score"))
        if math.isfinite(score) and math.isfinite(final_score):
            change = metric.improvement(score, final_score)
        else:  # the recorded delta: already the ablation's improvement over the final candidate
            change = _num(a.get("delta"))
        ablations.append({"label": str(a.get("label") or (by_id.get(a.get("node")) or {}).get("label") or "ablation"),
                          "score": score, "change": change})
    search = record.get("search") or {}
    search_seeds = [int(s) for s in search.get("seeds") or []]
    replication = [int(s) for s in record.get("replication_seeds") or []]
    per_stage = {s: sum(1 for n in nodes if n.get("stage") == s) for s in STAGES}
    fresh = bool(search_seeds) and bool(replication) and not set(search_seeds) & set(replication)
    arms = [int(n) for i in (final_info or {}).values() for n in (i.get("n") or {}).values()]
    return {
        "tuning": tuning,
        "tuned": bool(tuned_names), "candidate_tuned": candidate_tuned,
        "equal_budget": len(evaluations) == 1 and evaluations[0] > 0 and not untuned,
        "evaluations": evaluations[0] if len(evaluations) == 1 else None,
        "untuned": untuned,
        "ablations": ablations,
        "final_score": final_score,
        "final_hparams": dict(final.get("hparams") or {}),
        "search_settings": list(search.get("settings") or []),
        "search_seeds": search_seeds,
        "search_budget": dict(search.get("budget") or {}),
        "replication_seeds": replication,
        "fresh": fresh, "most_seeds": max(arms, default=0),
        "replicated": fresh and bool(arms) and max(arms) <= len(replication)
        and all(i.get("replication", True) for i in (final_info or {}).values()),
        "nodes": len(nodes), "per_stage": per_stage, "buggy": sum(1 for n in nodes if n.get("buggy")),
        "stages_done": list(record.get("stages_done") or []),
        "tie_breaks": sum(1 for n in nodes if n.get("tie_break")),
        "metric_name": metric.name, "maximize": metric.maximize,
    }
