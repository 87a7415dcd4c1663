"""Novelty, LLM backend: the model writes queries, :mod:`tasks.runtime.literature` searches Semantic Scholar /
OpenAlex (or the local index), at most N rounds; a decision with its reason."""

from __future__ import annotations

from prefect import get_run_logger

from jaxlib_kernels.templates import Template, make
from tasks.llm.prompting import env_int
from tasks.novelty import RELATION_MODULES, relation_for
from tasks.runtime import literature as lit
from tasks.runtime.caching import stage
from tasks.runtime.llm import JSONReplyError, LLMClient, active, render


def check_novelty(client: LLMClient, template: Template, idea: dict, rounds: int | None = None,
                  archive_rows: list[dict] | None = None) -> dict:
    """Literature novelty: the model searches (at most ``rounds`` queries) and decides, with its reason; beside it
    the measured relation to the nearest known candidate (``tasks.novelty.relation_for``: None until the idea has
    a candidate; the code stage's behaviour check adds it then)."""
    rounds = env_int("SCIENTIST_NOVELTY_ROUNDS", 3) if rounds is None else rounds
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
        "threshold": template.novelty_threshold, "relation": relation_for(template, idea, archive_rows or []),
    }


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="check_novelty_llm", modules=("tasks.llm.prompting", "tasks.runtime.llm", "tasks.runtime.text",
                                        "tasks.runtime.literature", "tasks.novelty", *RELATION_MODULES),
       paths=("prompts/llm",), template_parts=("llm", "references.json"))
def check_novelty_task(template_name: str, idea: dict, archive_rows: list[dict], model: str) -> dict:
    result = check_novelty(active(model), make(template_name), idea, archive_rows=archive_rows)
    get_run_logger().info("%s: %s (%s)", idea["Name"], result["decision"], result["reason"])
    return result

