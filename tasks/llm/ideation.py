"""Ideation, LLM backend: ``num_ideas`` JSON ideas, each refined over reflection rounds that stop when the model is
done; the template's seed ideas and the archive (with its review scores) are in the prompt."""

from __future__ import annotations

import json

from prefect import get_run_logger

from jaxlib_kernels.templates import Template, make
from tasks.llm.prompting import DONE, env_int, slug, task_description
from tasks.runtime import text as layers
from tasks.runtime.caching import stage
from tasks.runtime.llm import (
    BudgetExceeded,
    JSONReplyError,
    LLMClient,
    LLMError,
    active,
    check_schema,
    extract_json,
    render,
)

IDEA_FIELDS = {"Name": "str", "Title": "str", "Experiment": "str", "Interestingness": "score",
               "Feasibility": "score", "Novelty": "score"}


def seed_ideas(template_name: str) -> list[dict]:
    path = layers.template_dir(template_name) / "seed_ideas.json"
    return json.loads(path.read_text()) if path.exists() else []


def _clean_idea(raw: dict, used: set[str], kind: str = "source") -> dict:
    name = base = slug(raw["Name"])
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
    reflections = env_int("SCIENTIST_IDEA_REFLECTIONS", 2) if reflections is None else reflections
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


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="generate_ideas_llm", modules=("tasks.llm.prompting", "tasks.runtime.llm", "tasks.runtime.text"),
       paths=("prompts/llm",), template_parts=("llm", "*"))
def generate_ideas_task(template_name: str, profile: dict, num_ideas: int, run_id: str, archive_rows: list[dict],
                        model: str) -> list[dict]:
    """Prefect task over :func:`generate_ideas` (LLM backend; the client retries, the task does not)."""
    ideas = generate_ideas(active(model), make(template_name), archive_rows, num_ideas)
    get_run_logger().info("proposed %d ideas: %s", len(ideas), ", ".join(i["Name"] for i in ideas))
    return ideas

