"""One interface for the sequence optimisers (history in, next search distribution out) and the host loop.

:class:`SequenceOptimiser`: ``next_distribution(history, best_x, generation, progress) -> (mean (D,), std (D,))``,
with ``history`` the generations so far, oldest first, each ``(population (P, D), fitness (P,))`` (lower is
better), ``best_x`` the best member seen so far (D,), ``generation`` the index of the newest generation and
``progress`` the fraction of the budget used after it, in (0, 1]. An optimiser may also have ``start(mean, std)``,
which :func:`minimise` calls once with the initial distribution before the first generation (stateful optimisers
reset there). Through it, on the same loop, samples and budget:

- :class:`~.evollm.EvoLLM` as it is (an LLM proposes the mean);
- :class:`~.evotf.EvoTFOptimiser`: an Evolution Transformer (e.g. ``evotf.pretrained()``) whose window of
  generation tokens is kept from the history, one jitted ``evotf.step`` a generation (compiled once per shape);
- the baselines :class:`RandomSearch` (the initial distribution, every generation) and :class:`SNES` (separable
  natural evolution strategies, Wierstra et al., 2014, with its default learning rates).

:func:`minimise` samples every generation from N(mean, std) in the latent space, decodes it through a
:class:`~.space.Space` (none: the latent vectors are the solutions), evaluates the
population in one ``fitness`` call, and records the best-so-far curve and the best decoded configuration. A
distribution that is not usable (wrong shape, non-finite, std <= 0) is repaired (mean: the best member so far; std:
the previous one), logged and kept in ``repairs``; the loop never stops on an optimiser's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

History = list[tuple[np.ndarray, np.ndarray]]
STD_RANGE = (1e-12, 1e3)  # the std clip of every optimiser here (numbers, so that the loop needs no JAX)


@runtime_checkable
class SequenceOptimiser(Protocol):
    def next_distribution(self, history: History, best_x: np.ndarray, generation: int,
                          progress: float) -> tuple[np.ndarray, np.ndarray]: ...


def _repair(mean, std, previous_std: np.ndarray, best_x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    dim, why = best_x.shape[0], []
    try:
        mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (dim,)).copy()
    except (ValueError, TypeError):
        mean, why = best_x.copy(), [f"mean of shape {np.shape(mean)}, expected ({dim},)"]
    if not np.all(np.isfinite(mean)):
        mean, why = best_x.copy(), [*why, "non-finite mean"]
    try:
        std = np.broadcast_to(np.asarray(std, dtype=np.float64), (dim,)).copy()
    except (ValueError, TypeError):
        std, why = previous_std.copy(), [*why, f"std of shape {np.shape(std)}, expected ({dim},)"]
    bad = ~np.isfinite(std) | (std <= 0)
    if bad.any():
        std, why = np.where(bad, previous_std, std), [*why, "non-finite or non-positive std"]
    return mean, np.clip(std, *STD_RANGE), why


def minimise(optimiser: SequenceOptimiser, fitness: Callable, space=None, generations: int = 10,
             population: int = 8, seed: int = 0, mean0=None, std0=0.5, history: History | None = None) -> dict:
    """Minimise ``fitness`` with ``optimiser`` for ``generations`` of ``population`` members.

    ``space`` (a :class:`~.space.Space`): ``fitness(configs)`` gets the decoded list of configurations; without one,
    ``fitness(population)`` gets the (P, D) latent array (then ``mean0`` is required). Non-finite fitness counts as
    ``inf``. ``mean0`` defaults to the space's centre, ``std0`` (a number or (D,)) is the initial std; samples come
    from ``np.random.default_rng(seed)``, so two optimisers with the same seed share their first generation.
    ``history`` (a list) receives the generations as they come. Returns ``best`` (best-so-far fitness per
    generation), ``best_x`` (latent), ``best_config`` (decoded; the latent vector without a space),
    ``best_fitness``, ``history``, ``mean``/``std`` (the last distribution the optimiser proposed) and ``repairs``
    ([(generation, reason)])."""
    if mean0 is None:
        if space is None:
            raise ValueError("minimise without a space needs mean0")
        mean0 = space.centre()
    mean = np.asarray(mean0, dtype=np.float64).reshape(-1).copy()
    dim = mean.size
    if space is not None and space.dim != dim:
        raise ValueError(f"mean0 has {dim} entries, the space {space.dim}")
    std = np.broadcast_to(np.asarray(std0, dtype=np.float64), (dim,)).copy()
    if hasattr(optimiser, "start"):
        optimiser.start(mean.copy(), std.copy())
    rng = np.random.default_rng(seed)
    history = [] if history is None else history
    best, best_x, best_config, curve, repairs = np.inf, mean.copy(), None, [], []
    for g in range(generations):
        pop = mean + std * rng.standard_normal((population, dim))
        members = space.decode_many(pop) if space is not None else pop
        fit = np.asarray(fitness(members), dtype=np.float64).reshape(-1)
        if fit.shape != (population,):
            raise ValueError(f"fitness returned {fit.size} values for {population} members")
        fit = np.where(np.isfinite(fit), fit, np.inf)
        i = int(np.argmin(fit))
        if fit[i] < best or best_config is None:
            best, best_x = float(fit[i]), pop[i].copy()
            best_config = members[i] if space is not None else pop[i].copy()
        curve.append(best)
        history.append((pop, fit))
        proposed = optimiser.next_distribution(history, best_x.copy(), g, (g + 1) / generations)
        try:
            new_mean, new_std = proposed
        except (TypeError, ValueError):
            new_mean, new_std = None, None
        mean, std, why = _repair(new_mean, new_std, std, best_x)
        if why:
            reason = "; ".join(why)
            log.warning("%s generation %d: %s; repaired", type(optimiser).__name__, g, reason)
            repairs.append((g, reason))
    return {"best": np.asarray(curve), "best_x": best_x, "best_config": best_config, "best_fitness": best,
            "history": history, "mean": mean, "std": std, "repairs": repairs}


class RandomSearch:
    """Random search through the interface: every generation is sampled from the initial distribution."""

    name = "random_search"

    def start(self, mean, std):
        self.mean, self.std = np.array(mean, dtype=np.float64), np.array(std, dtype=np.float64)

    def next_distribution(self, history, best_x, generation, progress):
        if not hasattr(self, "mean"):  # used without start(): the first generation's distribution, estimated
            self.start(*_estimate(history[0][0]))
        return self.mean.copy(), self.std.copy()


def _estimate(pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distribution a population was sampled from, as far as the sample tells (mean, std > 0)."""
    return pop.mean(axis=0), np.maximum(pop.std(axis=0, ddof=1) if len(pop) > 1 else np.ones(pop.shape[1]), 1e-6)


class Tracking:
    """An optimiser that knows the distribution each generation was sampled from: its own answers, the first
    from ``start`` (estimated from the population when ``start`` was not called)."""

    def start(self, mean, std):
        self._dists = [(np.array(mean, dtype=np.float64), np.array(std, dtype=np.float64))]
        self._seen = 0
        self._reset()

    def _reset(self):
        pass

    def _distribution_of(self, g: int, pop: np.ndarray):
        if g < len(self._dists):
            return self._dists[g]
        return _estimate(pop)

    def next_distribution(self, history, best_x, generation, progress):
        if not hasattr(self, "_dists") or len(history) < self._seen:  # no start(), or a new run: begin again
            self.start(*_estimate(history[0][0]))
        while self._seen < len(history):
            g = self._seen
            pop, fit = (np.asarray(a, dtype=np.float64) for a in history[g])
            mean, std = self._distribution_of(g, pop)
            new = self._update(pop, fit, mean, std)
            self._dists[g + 1:] = [new]
            self._seen += 1
        return self._dists[len(history)][0].copy(), self._dists[len(history)][1].copy()


class SNES(Tracking):
    """Separable NES (Wierstra et al., 2014): rank utilities, natural-gradient steps of the mean (rate 1) and of
    the log-std (rate ``(3 + ln D) / (5 sqrt D)``), as evosax's SNES defaults."""

    name = "snes"

    def _update(self, pop, fit, mean, std):
        P, D = pop.shape
        ranks = np.argsort(np.argsort(fit))  # 0 = best
        u = np.maximum(0.0, np.log(P / 2 + 1) - np.log(ranks + 1.0))
        u = u / u.sum() - 1.0 / P
        z = (pop - mean) / std
        lr_std = (3 + np.log(D)) / (5 * np.sqrt(D))
        return mean + std * (u @ z), std * np.exp(0.5 * lr_std * (u @ (z ** 2 - 1)))
