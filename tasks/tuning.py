"""Hyperparameter tuning for the stages: :func:`jaxlib_kernels.optimisers.tune` with the project's LLM client.

:func:`tune` is the library's search (a mixed space, an objective over a batch of configurations, a budget of
evaluations, an optimiser: ``evotf`` by default, ``snes``, ``random``, ``evollm``); for ``evollm`` it closes the
``complete(prompt) -> str`` callable over ``tasks.runtime.llm`` (:func:`llm_complete`), so the kernels never import
the client.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxlib_kernels import optimisers
from jaxlib_kernels.optimisers.evollm import STAGE, NoModel
from jaxlib_kernels.optimisers.space import Space
from tasks.runtime import llm


def llm_complete(model: str | None = None, client=None) -> Callable[[str], str]:
    """``complete(prompt) -> text`` through the project's LLM backend (litellm): ``client`` (an
    ``LLMClient``) or one made for ``model`` (else ``SCIENTIST_MODEL``); :class:`NoModel` in one line without a
    model."""
    if client is None:
        try:
            client = llm.LLMClient(llm.LLMConfig.from_env(model))
        except llm.LLMError as exc:
            raise NoModel(f"EvoLLM needs a language model: {exc}") from None

    def complete(prompt: str) -> str:
        text, _ = client.complete(prompt, STAGE)
        return text

    return complete


def tune(space: Space, objective: Callable[[list[dict]], np.ndarray], budget: int, optimiser: str = "evotf", *,
         llm_model: str | None = None, client=None, **options) -> dict:
    """:func:`jaxlib_kernels.optimisers.tune`; ``evollm`` asks the LLM ``llm_model`` (or ``client``) for its
    means. ``options`` go to the library (``population``, ``seed``, ``std0``, an Evolution Transformer ``model``)."""
    complete = llm_complete(llm_model, client) if optimiser == "evollm" else None
    return optimisers.tune(space, objective, budget, optimiser, complete=complete, **options)
