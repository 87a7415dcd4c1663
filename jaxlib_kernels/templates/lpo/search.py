"""The ``lpo`` template's offline search is the drift language's (:mod:`jaxlib_kernels.search.drift`, run by
:mod:`jaxlib_kernels.search.offline`): an evolutionary symbolic search over drift expressions, seeded by the
template's baselines, its seed ideas (``prompts/templates/lpo/seed_ideas.json``) and the best archived candidates,
ranked by a probe-grid proxy and, where the profile screens, by real training. The names below are the language's,
kept here for the modules and studies that read lpo's search."""

from __future__ import annotations

from jaxlib_kernels.search import offline
from jaxlib_kernels.search.drift import (
    _A,
    _P,
    _R,
    DIVERSITY,
    LANGUAGE,
    NOVELTY_THRESHOLD,
    SCALE,
    behaviour,
    behaviour_of,
    distance,
    plausibility,
)

propose = LANGUAGE.propose
render = LANGUAGE.render


def seed_pool(template, archive_rows: list[dict], top_k: int = 4) -> list:
    """The search's first parents (:func:`jaxlib_kernels.search.offline.seed_pool` in the drift language)."""
    return offline.seed_pool(template, archive_rows, LANGUAGE, top_k)


__all__ = ["DIVERSITY", "LANGUAGE", "NOVELTY_THRESHOLD", "SCALE", "_A", "_P", "_R", "behaviour", "behaviour_of",
           "distance", "plausibility", "propose", "render", "seed_pool"]
