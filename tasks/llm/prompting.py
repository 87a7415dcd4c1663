"""What several LLM stages share: the task description a prompt starts from, the sizes read from the environment,
the reflection rounds' stop phrase and the identifier made of a name the model wrote."""

from __future__ import annotations

import os
import re

from tasks.runtime import text as layers

DONE = re.compile(r"i\s+am\s+done", re.IGNORECASE)  # a reflection round's reply that ends the rounds


def env_int(name: str, default: int) -> int:
    """A stage's size from the environment (``SCIENTIST_*``), else ``default``."""
    return int(os.environ.get(name) or default)


def slug(text: str) -> str:
    """An identifier (lower case, underscores, at most 40 characters, starting with a letter) from a model's name."""
    s = re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")[:40].strip("_")
    return s if s and s[0].isalpha() else f"idea_{s}".strip("_")


def task_description(template_name: str) -> str:
    """The template's ``prompts/templates/<name>/llm/task.md``; else a description written from its contract."""
    path = layers.template_dir(template_name) / "llm" / "task.md"
    if path.exists():
        return path.read_text().strip()
    template = layers.template_or_none(template_name)
    if template is None:
        return f"Research template {template_name}."
    plugin = template.plugin
    args = "; ".join(f"`{a.name}` ({a.shape}{': ' + a.description if a.description else ''})" for a in plugin.args)
    kind = "a Python function" if plugin.kind == "source" else "a JSON object"
    held = [k for k, v in template.settings.items() if v.held_out]
    train = [k for k, v in template.settings.items() if not v.held_out]
    return (
        f'Research template "{template.name}": {template.title}.\n\n'
        f"The plug-in is {kind}, `{plugin.signature}`" + (f", with the arguments {args}" if args else "")
        + f"; it returns {plugin.returns}.\n"
        f"The metric is {template.metric.name} ({template.metric.description}); it is {template.metric.direction}.\n"
        f"The budget of a run is counted in {template.budget_unit}. Training settings: {', '.join(train) or 'none'}; "
        f"held-out settings: {', '.join(held) or 'none'}. Baselines: {', '.join(template.baseline_labels.values())}."
    )
