"""The ``dpo`` template's offline search is the preference language's (:mod:`jaxlib_kernels.search.preference`,
run by :mod:`jaxlib_kernels.search.offline`): an evolutionary symbolic search over losses in ``z = beta * rho``,
seeded by the elementwise baselines (DPO, SLiC, LRML, PADLL, CELL), the template's seed ideas and the best archived
losses, ranked by a probe-grid proxy. It trains nothing: the experiments stage does. The names below are the
language's, kept here for the modules and studies that read dpo's search."""

from __future__ import annotations

from jaxlib_kernels.search.preference import (
    BASE_LOSSES,
    DIVERSITY,
    LANGUAGE,
    behaviour,
    distance,
    plausibility,
    values,
)

propose = LANGUAGE.propose
render = LANGUAGE.render

__all__ = ["BASE_LOSSES", "DIVERSITY", "LANGUAGE", "behaviour", "distance", "plausibility", "propose", "render",
           "values"]
