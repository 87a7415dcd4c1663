"""Discovery, LLM backend: expression trees proposed by the model for the discovery engine (its ``@stage``,
with the offline fallback, is ``llm_proposals_task`` in :mod:`tasks.discovery`)."""

from __future__ import annotations

import json

from jaxlib_kernels import symbolic
from jaxlib_kernels.templates import Template
from tasks.llm.prompting import slug, task_description
from tasks.runtime.llm import JSONReplyError, LLMClient, render


def propose_formulas(client: LLMClient, template: Template, archive_rows: list[dict], n: int, generation: int,
                     max_size: int = 48) -> dict:
    """``n`` expression trees from the model for the discovery engine (DiscoPOP's loop: the archive and its real
    fitness in the prompt). Returns ``{"proposals": [{"name", "expr", "rationale"}], "rejected": [{"name",
    "reason"}]}``: trees that are not well formed are rejected here with the reason; a reply with no well-formed
    tree goes back to the model (``complete_json``'s attempts). The engine's own gate and novelty check follow."""
    rejected: list[dict] = []

    def valid(value: dict) -> dict:
        rows = value.get("proposals")
        if not isinstance(rows, list) or not rows:
            raise JSONReplyError("field 'proposals' must be a non-empty list")
        kept, rejected[:] = [], []
        for i, row in enumerate(rows[: 2 * n]):
            name = slug(str((row or {}).get("name") or f"proposal_{i + 1}")) if isinstance(row, dict) else f"p{i}"
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
