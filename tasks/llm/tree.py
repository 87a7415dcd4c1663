"""The research tree's proposals, LLM backend: improve, ablate and debug nodes written by the model (the tree's
design; the offline proposer is ``jaxlib_kernels.tree.stages.OfflineProposer``, with the same protocol).

Prompts ``prompts/llm/tree_improve.j2``, ``tree_ablate.j2`` and ``tree_debug.j2`` carry the template's task text
(:func:`tasks.llm.prompting.task_description`), the node's candidate, and for improve the tree's summary and the
variants already tried. A reply is one fenced block per proposal (``python`` for source plug-ins, JSON for
parametric ones), each after a ``Label: ...`` line; every proposal passes ``Template.static_check`` or is dropped.
A reply with nothing usable, or a failed model call, raises :class:`ProposalError` with one line saying why; the
tree turns it into the offline proposal and records ``"source": "llm-fallback"`` with that reason.
``tie_break`` (``tree_tie_break.j2``) lets the model choose among nodes of exactly equal best score, nothing more;
any failure there is no choice (None).
"""

from __future__ import annotations

import re

from jaxlib_kernels.templates import Template, make
from tasks import tree
from tasks.llm.prompting import task_description
from tasks.runtime.caching import stage
from tasks.runtime.llm import BudgetExceeded, LLMClient, LLMError, active, check_schema, extract_json, redact, render

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
LABEL = re.compile(r"^[ \t>*#-]*label[ \t*]*:[ \t]*(.+?)[ \t*]*$", re.IGNORECASE | re.MULTILINE)
MAX_TRIED = 8  # the variants already tried that an improve prompt shows (the latest), ...
MAX_TRIED_CHARS = 1200  # ... each cut to this length
MAX_ERROR_CHARS = 300


class ProposalError(ValueError):
    """A reply the tree cannot use (no block, nothing that passes the static check) or a failed call; one line."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"tree {stage}: " + " ".join(redact(reason).split())[:MAX_ERROR_CHARS])


def parse_blocks(text: str | None) -> list[tuple[str, str]]:
    """``(label, body)`` of every fenced block of a reply, the label from the last ``Label:`` line before it
    (``proposal <i>`` without one)."""
    out, start = [], 0
    for i, m in enumerate(FENCE.finditer(text or "")):
        labels = LABEL.findall((text or "")[start:m.start()])
        out.append((labels[-1].strip() if labels else f"proposal {i + 1}", m.group(2).strip()))
        start = m.end()
    return out


def _checked(template: Template, stage: str, blocks: list[tuple[str, str]], drop: set[str]) -> list[tuple[str, str]]:
    """The blocks that pass the template's static check and are not in ``drop``, as candidate texts; else raises."""
    if not blocks:
        raise ProposalError(stage, "the reply holds no fenced code block")
    kept, reasons = [], []
    for label, body in blocks:
        text = body + "\n" if template.plugin.kind == "source" else body
        try:
            template.static_check(text)
        except Exception as exc:  # noqa: BLE001 - every rejected proposal is dropped, its reason kept
            reasons.append(f"{label}: {exc}")
            continue
        if text not in drop and text not in {t for _, t in kept}:
            kept.append((label, text))
    if not kept:
        raise ProposalError(stage, "no proposal passes the static check" + (f" ({reasons[0]})" if reasons else
                                                                             " (all were tried already)"))
    return kept


class LLMProposer:
    """The tree's proposer protocol with a model: ``improve``, ``ablate``, ``debug`` (signatures as the offline
    proposer's). ``client``: the LLM client (default: the active one of the run)."""

    source = "llm"

    def __init__(self, client: LLMClient | None = None, model: str | None = None):
        self._client, self._model = client, model

    @property
    def client(self) -> LLMClient:
        return self._client or active(self._model)

    def _ask(self, stage: str, prompt: str) -> str:
        try:
            text, _ = self.client.complete(prompt, "tree")
        except BudgetExceeded:
            raise  # a spent budget stops the run; it is no reason to fall back to the offline proposal
        except LLMError as exc:
            raise ProposalError(stage, str(exc)) from None
        return text

    @staticmethod
    def _node(idea: dict) -> dict:
        return {"candidate": idea.get("source") or "", **(idea.get("tree_node") or {})}

    def improve(self, template_name: str, idea: dict, tree_summary: str, tried: list[str], n: int
                ) -> list[tuple[str, str]]:
        """At most ``n`` variants of the node's candidate (``idea["tree_node"]``, else the idea's source), none of
        them already ``tried``."""
        template = make(template_name)
        node = self._node(idea)
        shown = [t if len(t) <= MAX_TRIED_CHARS else t[:MAX_TRIED_CHARS] + "\n..." for t in list(tried)[-MAX_TRIED:]]
        prompt = render("tree_improve.j2", template_name, task=task_description(template_name), template=template,
                        idea=idea, candidate=node["candidate"], score=node.get("score"), summary=tree_summary,
                        tried=shown, n=int(n), metric=template.metric)
        return _checked(template, "improve", parse_blocks(self._ask("improve", prompt)),
                        set(tried) | {node["candidate"]})[: int(n)]

    def ablate(self, template_name: str, idea: dict, text: str) -> list[tuple[str, str]]:
        """Ablations of ``text``: each a part removed or replaced by its neutral form or a baseline's term."""
        template = make(template_name)
        baselines = (idea.get("tree_node") or {}).get("baselines") or {}
        prompt = render("tree_ablate.j2", template_name, task=task_description(template_name), template=template,
                        idea=idea, candidate=text, baselines=baselines)
        return _checked(template, "ablate", parse_blocks(self._ask("ablate", prompt)), {text})

    def debug(self, template_name: str, idea: dict, text: str, error: str) -> str:
        """The candidate ``text`` repaired after ``error`` (the first block of the reply that passes the check)."""
        template = make(template_name)
        prompt = render("tree_debug.j2", template_name, task=task_description(template_name), template=template,
                        idea=idea, candidate=text, error=error)
        return _checked(template, "debug", parse_blocks(self._ask("debug", prompt)), set())[0][1]

    def tie_break(self, nodes: list) -> str | None:
        """The id of the node the model chooses among ``nodes`` of exactly equal best score (each with ``id``,
        ``label``, ``candidate``, ``hparams``); None when it gives no valid choice or the call fails."""
        shown = [{"label": n.label or n.method, "candidate": n.candidate, "hparams": n.hparams} for n in nodes]
        try:
            text = self._ask("tie break", render("tree_tie_break.j2", nodes=shown, score=nodes[0].score))
            choice = check_schema(extract_json(text), {"choice": "int"})["choice"]
        except Exception:  # noqa: BLE001 - a failed tie-break leaves the first-made node, as without a model
            return None
        return nodes[choice - 1].id if isinstance(choice, int) and 1 <= choice <= len(nodes) else None


# ---- Prefect task ------------------------------------------------------------------------------------------------

@stage(name="grow_tree_llm", modules=(*tree.TREE_MODULES, "tasks.llm.prompting", "tasks.runtime.llm"),
       paths=("prompts/llm/tree_improve.j2", "prompts/llm/tree_ablate.j2", "prompts/llm/tree_debug.j2",
              "prompts/llm/tree_tie_break.j2", "prompts/llm/_tree_reply.j2"), template_parts=("llm",))
def grow_tree_task(template_name: str, idea: dict, idea_dir: str, profile: dict, baseline_tuning: dict | None,
                   model: str) -> dict:
    """:func:`tasks.tree.grow_tree` with the model's proposals (each failing one falls back to the offline one)."""
    return tree.grow_tree(template_name, idea, idea_dir, profile, baseline_tuning, proposer=LLMProposer(model=model))
