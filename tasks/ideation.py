"""Ideation, offline backend: the template's own search (``Template.propose``), seeded by the run id.

Each template brings its search (lpo: an evolutionary symbolic search over drift expressions; hades: a search
over dataset sizes and ES settings); this stage seeds it deterministically from the run id, hands it the archive
of earlier runs (open-ended research: the best archived candidates are parents), and checks what comes back: the
AI Scientist's fields, unique names, a kind that matches the template's plug-in.
"""

from __future__ import annotations

import hashlib

from prefect import get_run_logger

from jaxlib_kernels.templates import Profile, Template, make
from tasks.runtime.caching import stage

IDEA_FIELDS = ("Name", "Title", "Hypothesis", "Experiment", "Interestingness", "Feasibility", "Novelty")


def run_seed(run_id: str) -> int:
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)


def generate_ideas(template: Template, profile, archive_rows: list[dict], num_ideas: int, run_id: str) -> list[dict]:
    """Offline ideation: ``num_ideas`` ideas from the template's search, seeded deterministically by the run id."""
    ideas = template.propose(template, profile, archive_rows, num_ideas, run_seed(run_id))
    seen: set[str] = set()
    for idea in ideas:
        missing = [k for k in IDEA_FIELDS if k not in idea]
        if missing:
            raise ValueError(f"template {template.name!r} proposed an idea without {', '.join(missing)}")
        if idea["Name"] in seen or idea["Name"] in template.baselines:
            raise ValueError(f"template {template.name!r} proposed the name {idea['Name']!r} twice")
        seen.add(idea["Name"])
        idea.setdefault("kind", template.plugin.kind)
        idea.setdefault("backend", "offline")
    return ideas[:num_ideas]


# ---- Prefect task -------------------------------------------------------------------------------------------


@stage(name="generate_ideas", retries=1, template_parts=("*",))
def generate_ideas_task(template_name: str, profile: dict, num_ideas: int, run_id: str,
                        archive_rows: list[dict]) -> list[dict]:
    """Prefect task over :func:`generate_ideas` (offline backend)."""
    ideas = generate_ideas(make(template_name), Profile(**profile), archive_rows, num_ideas, run_id)
    get_run_logger().info("proposed %d ideas: %s", len(ideas), ", ".join(i["Name"] for i in ideas))
    return ideas
