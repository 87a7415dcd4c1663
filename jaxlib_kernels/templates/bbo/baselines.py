"""The ``bbo`` baselines: stateless rules as plug-in source, stateful ES through evosax 0.3 and the pretrained
Evolution Transformer of the optimiser library (JSON text)."""

from __future__ import annotations

from jaxlib_kernels.templates.bbo import rules
from jaxlib_kernels.templates.bbo.kernel import evosax_text, sequence_model_text

RANDOM_SEARCH = '''import jax.numpy as jnp


def update(population, fitness, mean, std, progress):
    """Random search: every generation is sampled around the initial mean with the initial std."""
    return mean, std
'''

HILL_CLIMB = '''import jax.numpy as jnp


def update(population, fitness, mean, std, progress):
    """Gaussian hill climbing (comma selection): move to the best member, shrink std by 2% a generation."""
    return population[jnp.argmin(fitness)], 0.98 * std
'''

SOURCES = {
    "random_search": RANDOM_SEARCH,
    "hill_climb": HILL_CLIMB,
    "recomb_snes": rules.render(rules.DEFAULT, "Weighted recombination of the best half (CMA-ES weights) with the "
                                "separable NES std step (lr 0.3): the offline search's starting rule."),
    "open_es": evosax_text("Open_ES", lr=0.05, std=0.5),
    "snes": evosax_text("SNES"),
    "sep_cma_es": evosax_text("Sep_CMA_ES"),
    "cma_es": evosax_text("CMA_ES"),
    "evotf_ead": sequence_model_text(),
}
LABELS = {
    "random_search": "Random search", "hill_climb": "Hill climbing", "recomb_snes": "Recombination + SNES step",
    "open_es": "OpenES", "snes": "SNES", "sep_cma_es": "Sep-CMA-ES", "cma_es": "CMA-ES",
    "evotf_ead": "Evolution Transformer (EAD)",
}
DESCRIPTIONS = {
    "random_search": "samples every generation around the initial mean with the initial std",
    "hill_climb": "moves the mean to the best member and shrinks std by 2% a generation",
    "recomb_snes": "the family rule elite 0.5, log weights, lr_mean 1, SNES std step 0.3",
    "open_es": "evosax Open_ES: antithetic sampling, centred ranks, Adam 0.05 on the mean, fixed std 0.5",
    "snes": "evosax SNES: rank weights, natural-gradient mean and log-std steps, default rates",
    "sep_cma_es": "evosax Sep_CMA_ES with its default parameters",
    "cma_es": "evosax CMA_ES with its default parameters",
    "evotf_ead": "the optimiser library's pretrained Evolution Transformer (EAD from SNES and OpenES on the training "
                 "functions in 10 dimensions), run in context",
}
LATEX = {
    "random_search": r"m' = m,\ \sigma' = \sigma",
    "hill_climb": r"m' = x_{1:P},\ \sigma' = 0.98\,\sigma",
    "recomb_snes": rules.to_latex(rules.DEFAULT),
}
