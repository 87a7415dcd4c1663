"""Sequence models as optimisers, owned by no template: the library the hyperparameter searches use.

- :mod:`.space`: a mixed search space (continuous, log-continuous, integer, categorical) over a latent real vector.
- :mod:`.sequence`: the sequence-optimiser interface (history in, next search distribution out), the host loop
  :func:`~.sequence.minimise`, and random search and SNES through it.
- :mod:`.evotf`: the Evolution Transformer (Lange et al., 2024) and its EAD-trained weights (``evotf.pretrained()``).
- :mod:`.evollm`: EvoLLM (Lange, Tian and Tang, 2024), the ES whose mean update is a ``complete(prompt) -> str``
  callable the caller passes (a language model).

:func:`tune` runs one of them (:data:`OPTIMISERS`) on a mixed space against an objective over a batch of
configurations, for a budget of evaluations, and returns the best configuration and the history.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxlib_kernels.optimisers.sequence import SNES, RandomSearch, SequenceOptimiser, minimise
from jaxlib_kernels.optimisers.space import Categorical, Continuous, Integer, Space, SpaceError

OPTIMISERS = ("evotf", "snes", "random", "evollm")


def make(name: str, *, model=None, complete: Callable[[str], str] | None = None, population: int = 8,
         std0: float = 0.5) -> SequenceOptimiser:
    """A fresh optimiser by name: ``evotf`` (``model``, default the pretrained Evolution Transformer), ``snes``,
    ``random``, ``evollm`` (needs ``complete``; :class:`~.evollm.NoModel` without it)."""
    if name == "evotf":
        from jaxlib_kernels.optimisers import evotf

        return evotf.EvoTFOptimiser(model or evotf.pretrained())
    if name == "snes":
        return SNES()
    if name == "random":
        return RandomSearch()
    if name == "evollm":
        from jaxlib_kernels.optimisers.evollm import EvoLLM, EvoLLMConfig

        return EvoLLM(complete, EvoLLMConfig(population=population, init_std=std0))
    raise ValueError(f"unknown optimiser {name!r}; choose one of {', '.join(OPTIMISERS)}")


def tune(space: Space, objective: Callable[[list[dict]], np.ndarray], budget: int, optimiser: str = "evotf", *,
           population: int = 8, seed: int = 0, std0: float = 0.5, model=None,
           complete: Callable[[str], str] | None = None) -> dict:
    """Minimise ``objective(configs) -> (P,)`` (lower is better; non-finite counts as worst) over ``space`` with
    the optimiser named ``optimiser`` for ``budget`` evaluations: ``budget // population`` generations of
    ``population`` configurations (fewer members when the budget is smaller than one generation), the first
    generation sampled around the space's centre with latent std ``std0``, samples from ``seed``.

    Returns ``best_config``, ``best_fitness``, ``history`` (one ``{"configs", "fitness"}`` per generation, in
    order), ``curve`` (best-so-far fitness per generation), ``evaluations``, ``optimiser``, ``repairs`` (answers
    the loop repaired) and ``fallbacks`` (EvoLLM's replies it could not use)."""
    if budget < 1:
        raise ValueError(f"a search needs a budget of at least one evaluation, got {budget}")
    population = max(1, min(int(population), int(budget)))
    generations = int(budget) // population
    opt = make(optimiser, model=model, complete=complete, population=population, std0=std0)
    out = minimise(opt, objective, space, generations, population, seed, std0=std0)
    history = [{"configs": space.decode_many(pop), "fitness": fit.tolist()} for pop, fit in out["history"]]
    return {"best_config": out["best_config"], "best_fitness": float(out["best_fitness"]), "history": history,
            "curve": out["best"].tolist(), "evaluations": generations * population, "optimiser": optimiser,
            "repairs": out["repairs"], "fallbacks": list(getattr(opt, "fallbacks", []))}


__all__ = ["OPTIMISERS", "SNES", "Categorical", "Continuous", "Integer", "RandomSearch",
           "SequenceOptimiser", "Space", "SpaceError", "make", "minimise", "tune"]
