"""Code generation, offline backend: the template renders the idea's candidate (``Template.render``: an expression
as plug-in source, or a parametric candidate as JSON), then the sandboxed validation gate (``tasks/runtime/sandbox.py``)
checks it. The LLM backend writes the source and repairs it from the gate's reason; both end here, in
``ideas/<idea>/candidate.py`` (or ``candidate.json``) and ``validation.json``. An idea that arrives with its
``source`` already made (the meta flow's ES-learned drift) goes through the gate unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger

from jaxlib_kernels.templates import Template, make
from tasks.runtime import sandbox
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import write_json


def render_candidate(template: Template, idea: dict) -> str:
    return idea.get("source") or template.render(template, idea)


def candidate_file(template: Template) -> str:
    return "candidate.py" if template.plugin.kind == "source" else "candidate.json"


def implement_candidate(
    template: Template,
    idea: dict,
    idea_dir: Path,
    write_source: Callable[[dict, str | None], str] | None = None,
    repair_rounds: int = 0,
) -> dict:
    """Produce and validate the candidate's source; ``write_source(idea, last_error)`` is the LLM hook.

    Returns ``{"accepted", "source", "validation", "attempts"}``; a rejected candidate is data, not an error.
    """
    idea_dir = Path(idea_dir)
    idea_dir.mkdir(parents=True, exist_ok=True)
    attempts = []
    error: str | None = None
    source = ""
    for attempt in range(1 + repair_rounds):
        source = write_source(idea, error) if write_source else render_candidate(template, idea)
        result = sandbox.validate_source(source, template.name, workdir=idea_dir)
        attempts.append({"attempt": attempt + 1, **result.to_dict()})
        if result.accepted:
            break
        error = result.reason
    (idea_dir / candidate_file(template)).write_text(source)
    validation = attempts[-1]
    write_json(idea_dir / "validation.json", {"attempts": attempts, **validation})
    return {"accepted": bool(validation["accepted"]), "source": source, "validation": validation, "attempts": attempts}


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="implement_candidate", retries=1, modules=("tasks.runtime.sandbox", "tasks.runtime.sandbox_child"))
def implement_candidate_task(template_name: str, idea: dict, idea_dir: str) -> dict:
    """Prefect task over :func:`implement_candidate` (offline: render + validation gate)."""
    result = implement_candidate(make(template_name), idea, Path(idea_dir))
    v = result["validation"]
    get_run_logger().info("%s: %s (%s)", idea["Name"], "accepted" if result["accepted"] else "rejected", v["reason"])
    return result
