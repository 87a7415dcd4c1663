"""Evolution-strategy meta-learning kernels (ARCHITECTURE.md section 2, parametric candidates): the generation loop over
evosax 0.3 (:mod:`jaxlib_kernels.es.meta`, whose :func:`~jaxlib_kernels.es.meta.drive` is the one ES driver), the
problems a template declares for ``scientist meta`` (:mod:`jaxlib_kernels.es.problems`, ``Template.meta``), and the
TA-LPO drift network (:mod:`jaxlib_kernels.es.talpo`).
"""

from jaxlib_kernels.es.meta import (
    FITNESS_SHAPING,
    STRATEGIES,
    ESConfig,
    ask_tell_step,
    canonical_state,
    drive,
    evosax_fitness,
    flat_candidate,
    init_state,
    latest_checkpoint,
    load_candidate,
    load_checkpoint,
    make_meta_step,
    make_population_eval,
    make_strategy,
    meta_train,
    run_meta,
    save_candidate,
    save_checkpoint,
    search_mean,
)

__all__ = [
    "FITNESS_SHAPING",
    "STRATEGIES",
    "ESConfig",
    "ask_tell_step",
    "canonical_state",
    "drive",
    "evosax_fitness",
    "flat_candidate",
    "init_state",
    "latest_checkpoint",
    "load_candidate",
    "load_checkpoint",
    "make_meta_step",
    "make_population_eval",
    "make_strategy",
    "meta_train",
    "run_meta",
    "save_candidate",
    "save_checkpoint",
    "search_mean",
]
