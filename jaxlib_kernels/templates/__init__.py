"""Registry of research templates (ARCHITECTURE.md, "Templates"): adding a template is one line here."""

from __future__ import annotations

from jaxlib_kernels.registry import Registry
from jaxlib_kernels.templates import bbo, hades, lpo
from jaxlib_kernels.templates.base import Baseline, Metric, PluginSpec, Profile, ResultSchema, Setting, Template

TEMPLATES: Registry[Template] = Registry("template", {
    "lpo": lpo.TEMPLATE,
    "hades": hades.TEMPLATE,
    "bbo": bbo.TEMPLATE,
})


def make(name: str) -> Template:
    """The template registered as ``name``; unknown names get close-match suggestions."""
    return TEMPLATES[name]


__all__ = ["TEMPLATES", "Baseline", "Metric", "PluginSpec", "Profile", "ResultSchema", "Setting", "Template", "make"]
