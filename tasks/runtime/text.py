"""Per-template text layering of the text stages (writeup, review, LLM prompts).

Generic text lives in ``prompts/<stage>/`` (``paper``, ``review``, ``llm``) and says only what every template
shares; a template overrides any file by putting one of the same name in ``prompts/templates/<name>/<stage>/``.
:func:`loader` gives Jinja2 that lookup order (the template's folder first, then the generic one), :func:`find`
the same for data files, and :func:`layered_json` merges a generic JSON object with the template's override.

The prompts root is read from :data:`PROMPTS` at call time, so a test may point it at a copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "prompts"
STAGES = ("paper", "review", "llm")


def template_dir(template_name: str) -> Path:
    """The text folder of a template: ``prompts/templates/<name>/``."""
    return PROMPTS / "templates" / template_name


def folders(stage: str, template_name: str | None = None) -> list[Path]:
    """The folders searched for a stage's files, first match wins: the template's, then the generic one."""
    if stage not in STAGES:
        raise ValueError(f"unknown text stage {stage!r} (known: {', '.join(STAGES)})")
    out = [template_dir(template_name) / stage] if template_name else []
    return [*out, PROMPTS / stage]


def loader(stage: str, template_name: str | None = None) -> jinja2.BaseLoader:
    """A Jinja2 loader over :func:`folders` (``ChoiceLoader`` of one ``FileSystemLoader`` per folder)."""
    return jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(d)) for d in folders(stage, template_name)])


def find(stage: str, template_name: str | None, filename: str) -> Path | None:
    """The first existing ``filename`` of :func:`folders`, or None."""
    for folder in folders(stage, template_name):
        path = folder / filename
        if path.is_file():
            return path
    return None


def layered_json(stage: str, template_name: str | None, filename: str) -> dict[str, Any]:
    """The generic JSON object of ``prompts/<stage>/<filename>`` updated by the template's file of that name.

    Nested objects are merged one level deep: a template's ``{"guidance": {"method": ...}}`` replaces the
    generic method guidance only.
    """
    merged: dict[str, Any] = {}
    for folder in reversed(folders(stage, template_name)):
        path = folder / filename
        if not path.is_file():
            continue
        for key, value in json.loads(path.read_text()).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def template_or_none(template_name: str | None) -> Any:
    """The registered template of that name, or None when the name is unknown (the text still renders)."""
    if not template_name:
        return None
    from jaxlib_kernels import templates

    try:
        return templates.make(template_name)
    except KeyError:
        return None
