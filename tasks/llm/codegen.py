"""Code generation, LLM backend: the model writes the plug-in, :func:`tasks.codegen.implement_candidate` runs the
validation gate, and the gate's reason goes back for a fixed number of repair rounds."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import get_run_logger

from jaxlib_kernels.templates import Template, make
from tasks import codegen
from tasks.llm.prompting import env_int, task_description
from tasks.runtime.caching import stage
from tasks.runtime.llm import LLMClient, active, render

PY_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def parse_code(text: str) -> tuple[str, str | None]:
    """The module in the reply's python block (else the whole reply) and the formula after ``LaTeX:``."""
    text = text or ""
    blocks = PY_FENCE.findall(text)
    source = max(blocks, key=len) if blocks else text
    m = re.search(r"^\s*LaTeX:\s*(.+?)\s*$", text, re.MULTILINE)
    latex = m.group(1).strip().strip("$").strip() if m else None
    return source.strip() + "\n", latex or None


def implement_candidate(client: LLMClient, template: Template, idea: dict, idea_dir: Path,
                        repair_rounds: int | None = None) -> dict:
    """The model writes the plug-in; the gate's reason goes back for ``repair_rounds`` repairs."""
    repair_rounds = env_int("SCIENTIST_CODE_REPAIR_ROUNDS", 2) if repair_rounds is None else repair_rounds
    state: dict = {"messages": None, "source": "", "latex": None, "round": 0}
    first = next(iter(template.baselines.values()), None)  # the template's first baseline, as an example
    example, example_label = (first.source, first.label) if first is not None else ("", "")

    def write_source(_idea: dict, error: str | None) -> str:
        if error is None:
            prompt = render("code.j2", template.name, task=task_description(template.name), template=template,
                            plugin_name=template.plugin.name, idea=idea, signature=template.plugin.signature,
                            example=example.strip(), example_label=example_label)
        else:
            state["round"] += 1
            prompt = render("code_repair.j2", template.name, round=state["round"], rounds=repair_rounds, error=error,
                            source=state["source"], template=template)
        text, state["messages"] = client.complete(prompt, "code", state["messages"])
        state["source"], latex = parse_code(text)
        state["latex"] = latex or state["latex"]
        return state["source"]

    result = codegen.implement_candidate(template, idea, idea_dir, write_source=write_source,
                                         repair_rounds=repair_rounds)
    result["expression_latex"] = state["latex"]
    result["repairs"] = state["round"]
    return result


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="implement_candidate_llm", modules=("tasks.llm.prompting", "tasks.runtime.llm", "tasks.runtime.text",
                                              "tasks.codegen", "tasks.runtime.sandbox", "tasks.runtime.sandbox_child"),
       paths=("prompts/llm",), template_parts=("llm",))
def implement_candidate_task(template_name: str, idea: dict, idea_dir: str, archive_rows: list[dict],
                             model: str) -> dict:
    """The model's plug-in through the gate (with repairs). Its behavioural novelty is decided by the backend
    (``tasks/backends.py``), in order over the run's ideas, so it is also compared with the ideas accepted before."""
    template = make(template_name)
    result = implement_candidate(active(model), template, idea, Path(idea_dir))
    v = result["validation"]
    get_run_logger().info("%s: %s after %d attempt(s) (%s)", idea["Name"], "accepted" if result["accepted"]
                          else "rejected", len(result["attempts"]), v["reason"])
    return result

