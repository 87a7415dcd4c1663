"""An idea of a run (a row of ``ideas.json``) and its status.

Ideas travel between stages as plain JSON dicts (Prefect caches them, ``ideas.json`` stores them), so
:class:`Idea` is a ``TypedDict``: the keys a stage may set, nothing else changes. ``idea["status"]`` is one of
:class:`IdeaStatus`, optionally followed by its detail (``not novel: <reason>``, ``failed at writeup: <error>``,
``rejected by the gate after 2 attempts: <reason>``); :func:`set_status` writes it, :func:`status_of` reads it back.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypedDict


class IdeaStatus(str, Enum):
    """Where an idea stands; ``ideas.json`` holds the value (a plain string)."""

    NOVEL = "novel"
    NOT_NOVEL = "not novel"
    NOT_APPROVED = "not approved"
    IMPLEMENTED = "implemented"
    REJECTED = "rejected by the gate"
    FAILED = "failed"
    PAPER_FAILED = "paper failed"
    REVIEWED = "reviewed"

    def __str__(self) -> str:
        return self.value


class Idea(TypedDict, total=False):
    """One idea: the ideation's fields (capitalised, as the AI Scientist's prompts write them) and what the
    stages add to it."""

    Name: str
    Title: str
    Experiment: str
    Interestingness: int
    Feasibility: int
    Novelty: int
    status: str  # an IdeaStatus value, optionally ": <detail>" (set_status)
    novelty: dict | None
    source: str
    validation: dict
    expression_latex: str | None
    final_info: dict
    result: dict
    paper: dict
    review: dict
    fallbacks: list[dict]
    researcher_feedback: str
    discovery: dict
    tree: dict  # grow_tree's summary (tree.json's path, final, best, tuning, ablation, nodes, view) or {"error": ...}
    replication: dict  # what the experiments ran: seeds, settings, tuned ({method: {hparams, constants_changed}})


def set_status(idea: dict, status: IdeaStatus, detail: str | None = None, *, qualifier: str | None = None) -> dict:
    """``idea["status"] = "<status>[ <qualifier>][: <detail>]"``; returns ``idea``."""
    text = status.value + (f" {qualifier}" if qualifier else "") + (f": {detail}" if detail is not None else "")
    idea["status"] = text
    return idea


def status_of(idea: dict) -> IdeaStatus | None:
    """The :class:`IdeaStatus` that ``idea["status"]`` begins with (None: no status yet, or an unknown word)."""
    text: Any = idea.get("status")
    if not isinstance(text, str):
        return None
    for status in sorted(IdeaStatus, key=lambda s: -len(s.value)):  # "not novel" before "novel"
        if text == status.value or text.startswith((status.value + ":", status.value + " ")):
            return status
    return None


def has_status(idea: dict, status: IdeaStatus) -> bool:
    """Whether ``idea``'s status is exactly ``status`` (no detail)."""
    return idea.get("status") == status.value
