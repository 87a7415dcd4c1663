"""Registry of research templates (ARCHITECTURE.md, "Templates"): adding a template is one line here."""

from __future__ import annotations

from jaxlib_kernels.registry import Lazy, Registry
from jaxlib_kernels.templates.base import Baseline, Meta, Metric, PluginSpec, Profile, ResultSchema, Setting, Template

# name -> "module:attribute" of its Template; imported when first made (a template's kernels import their libraries)
TEMPLATES: Registry[Template] = Registry("template", {
    "lpo": Lazy("jaxlib_kernels.templates.lpo:TEMPLATE"),
    "hades": Lazy("jaxlib_kernels.templates.hades:TEMPLATE"),
    "dpo": Lazy("jaxlib_kernels.templates.dpo:TEMPLATE"),
    "marl": Lazy("jaxlib_kernels.templates.marl:TEMPLATE"),
    "bbo": Lazy("jaxlib_kernels.templates.bbo:TEMPLATE"),
})
DEFAULT = "lpo"  # the template of `scientist run` and of every flow when none is named


def make(name: str) -> Template:
    """The template registered as ``name``; unknown names get close-match suggestions."""
    return TEMPLATES[name]


def discovery_templates() -> list[str]:
    """The templates ``scientist discover`` serves, in registry order (those declaring ``Template.discovery``;
    imports every template, so only an error message asks)."""
    return [n for n in TEMPLATES if make(n).discovery is not None]


def meta_templates() -> list[str]:
    """The templates ``scientist meta`` serves, in registry order (those declaring ``Template.meta``; imports every
    template, so only an error message asks)."""
    return [n for n in TEMPLATES if make(n).meta is not None]


__all__ = ["DEFAULT", "TEMPLATES", "Baseline", "Meta", "Metric", "PluginSpec", "Profile", "ResultSchema", "Setting", "Template",
           "discovery_templates", "make", "meta_templates"]
