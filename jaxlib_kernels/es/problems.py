"""Meta-learning problems as JSON-able specs: the same spec builds the same fitness function and initial candidate
in the flow process and in every Ray worker. The problems are the templates' (``Template.meta``, a
:class:`~jaxlib_kernels.templates.base.Meta`): its spec defaults, its ES defaults and its ``make_problem``.

``problem_spec(template, **options)`` fills the defaults; ``make_problem(spec)`` returns ``(fitness_fn, mean)``
where ``fitness_fn(key, candidate) -> return`` (maximised) and ``mean`` is the initial ES search centre.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxlib_kernels.es import meta


def meta_of(template: str):
    """``Template.meta`` of ``template``; unknown names get close matches, a template without one a ValueError
    naming those that have one."""
    from jaxlib_kernels.templates import make, meta_templates

    declared = make(template).meta
    if declared is None:
        raise ValueError(f"the {template!r} template declares no meta-learning problem (scientist meta serves "
                         f"{', '.join(meta_templates())})")
    return declared


def problem_spec(template: str, **options: Any) -> dict:
    """The full spec of ``template`` with ``options`` over its defaults; unknown option names are refused."""
    defaults = meta_of(template).defaults
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {template} option(s) {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **{k: v for k, v in options.items() if v is not None}, "template": template}


def es_spec(template: str, strategy: str = "Open_ES", population: int = 16, **options: Any) -> dict:
    """An :class:`meta.ESConfig` as a dict (the strategy name resolved), with the template's std / lr defaults."""
    spec = {"strategy": meta.resolve_strategy(strategy), "population_size": int(population),
            **meta_of(template).es_defaults, **{k: v for k, v in options.items() if v is not None}}
    meta.make_strategy(es_config(spec), jax.numpy.zeros(2))  # validates (names, sizes, antithetic parity)
    return spec


def es_config(spec: dict) -> meta.ESConfig:
    return meta.ESConfig(**spec)


def make_problem(spec: dict) -> tuple[Callable[[jax.Array, Any], jax.Array], Any]:
    """``(fitness_fn, initial mean)`` of a spec made by :func:`problem_spec` (its template's ``make_problem``)."""
    return meta_of(spec["template"]).make_problem(spec)


def learned_behaviour(meta_run_dir: str | Path) -> dict:
    """The behaviour of the candidate a ``scientist meta`` run learned, as the first template whose ``Meta.behaviour``
    finds its search in ``meta_run_dir`` reads it (``{"target", "problem", "generation", "distances", ...}``).
    Raises ``FileNotFoundError`` with one line (each such template's reason) when none does."""
    from jaxlib_kernels.templates import TEMPLATES, make

    reasons = []
    for name in TEMPLATES:  # in registry order, each imported only when the ones before it found nothing
        declared = make(name).meta
        reader = declared.behaviour if declared is not None else None
        if reader is None:
            continue
        try:
            return reader(meta_run_dir)
        except FileNotFoundError as exc:
            reasons.append(str(exc))
    raise FileNotFoundError("; ".join(reasons) or f"{meta_run_dir}: no template reads a learned behaviour")
