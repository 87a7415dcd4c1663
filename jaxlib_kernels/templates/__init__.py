"""Registry of research templates (DESIGN.md section 2)."""

from __future__ import annotations

from jaxlib_kernels.registry import Registry
from jaxlib_kernels.templates import lpo
from jaxlib_kernels.templates.base import Profile, Setting, Template

TEMPLATES: Registry[Template] = Registry("template", {"lpo": lpo.TEMPLATE})


def make(name: str) -> Template:
    """The template registered as ``name``; unknown names get close-match suggestions."""
    return TEMPLATES[name]


__all__ = ["TEMPLATES", "Profile", "Setting", "Template", "make"]
