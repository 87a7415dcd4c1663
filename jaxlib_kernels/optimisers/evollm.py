"""EvoLLM (Lange, Tian and Tang, 2024, "Large Language Models As Evolution Strategies"): the mean update is an LLM.

Every generation the ES samples ``P`` members around its mean, evaluates them, and asks a language model for the
next mean. The prompt follows the paper's construction: the best ``members`` of each of the last ``context``
generations, every solution *discretised* to integers (``round(x * resolution)``), listed *least to most* fit
(worst first, so the best sits next to the question), each generation's lines sorted the same way, and the
question for the next mean in the same integer format. ``std`` follows a fixed schedule (geometric decay from
``init_std`` to ``final_std``). A reply that is not a usable mean (no integer list, wrong length, non-finite)
falls back to the best member seen so far; the reason is logged and kept in the result (``fallbacks``); the run
never crashes on a reply.

The model is any ``complete(prompt) -> text`` callable, passed in by the caller (a stage or flow closes it over the
project's LLM client: ``tasks.tuning.llm_complete``); without a model it refuses with one clear line
(:class:`NoModel`). The sequence-optimiser interface shared with the Evolution Transformer (:mod:`.sequence`):
``history`` (generations of population and fitness) in, the next search distribution out
(:meth:`EvoLLM.next_distribution`); :meth:`EvoLLM.run` is :func:`.sequence.minimise`'s loop, over a mixed search
space (:mod:`.space`) when one is given.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable

import numpy as np

from jaxlib_kernels.optimisers.sequence import minimise

log = logging.getLogger(__name__)
STAGE = "evollm"


class NoModel(RuntimeError):
    """EvoLLM was asked to run without a model."""


@dataclasses.dataclass(frozen=True)
class EvoLLMConfig:
    """The paper's options: discretisation ``resolution`` (integers per unit), ``context`` generations in the
    prompt, ``members`` shown per generation; the population and std schedule of the sampling ES."""

    resolution: float = 100.0
    context: int = 5
    members: int = 5
    population: int = 8
    init_std: float = 1.0
    final_std: float = 0.05


def discretise(x: np.ndarray, resolution: float) -> np.ndarray:
    return np.round(np.asarray(x, dtype=np.float64) * resolution).astype(np.int64)


def build_prompt(history: list[tuple[np.ndarray, np.ndarray]], config: EvoLLMConfig, dim: int) -> str:
    """The EvoLLM prompt from ``history`` = [(population (P, D), fitness (P,)), ...] (oldest first)."""
    lines = [
        f"Stage: {STAGE}",
        "You are the recombination operator of an evolution strategy minimising a black-box function.",
        f"Solutions are lists of {dim} integers; a solution x is the integer list divided by {config.resolution:g}.",
        f"Below are the best members of the last {min(len(history), config.context)} generations, oldest first,",
        "each generation listed from the worst to the best member (lower fitness is better).",
    ]
    recent = history[-config.context:]
    first = len(history) - len(recent)
    for g, (pop, fit) in enumerate(recent, start=first):
        order = np.argsort(fit)[: config.members][::-1]  # the best `members`, least to most fit
        lines.append(f"Generation {g}:")
        for i in order:
            ints = ", ".join(str(v) for v in discretise(pop[i], config.resolution))
            lines.append(f"[{ints}] fitness {float(fit[i]):.4g}")
    lines.append(f"Propose the next mean: a solution likely better than all above. Answer with exactly {dim} "
                 "integers in square brackets, e.g. [" + ", ".join(["0"] * min(dim, 3)) + (", ...]" if dim > 3 else "]"))
    return "\n".join(lines)


def parse_reply(text: str | None, dim: int, resolution: float) -> tuple[np.ndarray | None, str]:
    """The proposed mean (D,) from a reply, or None and the reason it is not usable."""
    if not text:
        return None, "empty reply"
    lists = re.findall(r"\[([^\[\]]*)\]", text)
    if not lists:
        return None, "malformed reply: no bracketed list of numbers"
    body = lists[-1]
    parts = [p.strip() for p in body.split(",") if p.strip()]
    try:
        values = np.asarray([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        return None, f"malformed reply: not all entries are numbers ({body[:60]!r})"
    if values.shape != (dim,):
        return None, f"wrong length: {values.size} numbers, expected {dim}"
    if not np.all(np.isfinite(values)):
        return None, "non-finite values in the reply"
    return values / resolution, ""


class EvoLLM:
    """The ES whose mean update is one LLM call per generation."""

    def __init__(self, complete: Callable[[str], str] | None, config: EvoLLMConfig = EvoLLMConfig()):
        if complete is None:
            raise NoModel("EvoLLM needs a language model: pass --model or set SCIENTIST_MODEL")
        self.complete = complete
        self.config = config
        self.fallbacks: list[tuple[int, str]] = []
        self.prompts: list[str] = []
        self.history: list[tuple[np.ndarray, np.ndarray]] = []

    def next_distribution(self, history, best_x: np.ndarray, generation: int, progress: float):
        """History in, next (mean, std) out: the LLM's mean, or the best member with the reason logged."""
        dim = best_x.shape[0]
        prompt = build_prompt(history, self.config, dim)
        self.prompts.append(prompt)
        try:
            reply = self.complete(prompt)
        except Exception as exc:  # noqa: BLE001 - a failed call is a fallback too, never a crash
            reply, reason = None, f"model call failed: {type(exc).__name__}: {str(exc)[:120]}"
        else:
            reason = ""
        mean, why = parse_reply(reply, dim, self.config.resolution) if reply is not None else (None, reason)
        if mean is None:
            log.warning("EvoLLM generation %d: %s; falling back to the best member", generation, why)
            self.fallbacks.append((generation, why))
            mean = best_x.copy()
        c = self.config
        std = c.init_std * (c.final_std / c.init_std) ** progress
        return mean, np.full(dim, std)

    def run(self, fitness: Callable[[np.ndarray], np.ndarray], mean0: np.ndarray, generations: int,
            seed: int = 0, space=None) -> dict:
        """Minimise ``fitness`` for ``generations`` on the shared loop (:func:`.sequence.minimise`): ``(P, D) ->
        (P,)`` without a ``space``, a list of decoded configurations with one; best-so-far curve and the fallbacks."""
        c = self.config
        out = minimise(self, fitness, space, generations, c.population, seed, mean0=mean0, std0=c.init_std,
                       history=self.history)
        return {**out, "fallbacks": list(self.fallbacks)}

