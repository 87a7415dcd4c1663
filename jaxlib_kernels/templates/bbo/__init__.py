"""The ``bbo`` template: ES update rules for black-box optimisation on BBOB (and the Evolution Transformer's EAD).

Plug-in: ``update(population, fitness, mean, std, progress) -> (mean, std)`` (population (P, D), fitness (P,),
lower is better); the kernel samples the next population around what it returns (:mod:`.kernel`). Problems: the
noiseless BBOB functions of evosax 0.3 (:mod:`.problems`), a training group and a held-out group of functions, in
10 dimensions (training) and 30 and 5 dimensions (held out); and, held out, neuroevolution (:mod:`.neuro`): the 81
weights of a small MLP policy on gymnax's Pendulum-v1, whose regret is minus its mean episodic return (0 bounds
every return), floored at 0.01. Metric: log10 of the final best regret, averaged over a setting's functions,
minimised. Baselines: random search, hill climbing, the family's default rule (plug-in
source), OpenES, SNES, Sep-CMA-ES, CMA-ES through evosax (JSON text naming the strategy, :class:`EvosaxSpec`) and
the optimiser library's pretrained Evolution Transformer (JSON naming its weights; in the paper profile).
Offline search: measured evolution of a parametric family of rules (:mod:`.rules`, :mod:`.search`). The
Evolution Transformer (:mod:`jaxlib_kernels.optimisers.evotf`) is trained here by EAD on the training functions
(:mod:`.ead`, whose ``export`` wrote the library's pretrained weights); the sequence optimisers themselves (EvoLLM,
the Evolution Transformer, SNES and random search over a mixed space) live in :mod:`jaxlib_kernels.optimisers`.
A research tree stage's nodes (:func:`population`) and the units (:func:`evaluate`, a population of one) run one
compiled program per rule structure or strategy, ``init_std`` and a family rule's constants traced per member
(:mod:`.kernel`).

Sources: Hansen et al., 2009 (BBOB); Wierstra et al., 2014 (SNES); Salimans et al., 2017 (OpenES); Hansen and
Ostermeier, 2001 (CMA-ES); Ros and Hansen, 2008 (Sep-CMA-ES); Lange, Tian and Tang, 2024 (EvoLLM); Lange et al.,
2024 (Evolution Transformer, EAD); Lange, 2023 (evosax).
"""

from __future__ import annotations

from jaxlib_kernels.optimisers.space import Continuous
from jaxlib_kernels.plugin import PluginError
from jaxlib_kernels.population import grouped_population
from jaxlib_kernels.templates.base import (
    PAPER_TREE,
    SMOKE_TREE,
    Arg,
    Baseline,
    Metric,
    PluginSpec,
    Profile,
    ResultSchema,
    Setting,
    Template,
    TreeBudget,
    with_hparams,
)
from jaxlib_kernels.templates.bbo import baselines, kernel, neuro, problems, rules, search
from jaxlib_kernels.templates.bbo.kernel import (
    EVOSAX_PREFIX,
    SEQUENCE_PREFIX,
    BBOConfig,
    EvosaxSpec,
    check,
    parse_evosax,
    parse_sequence_model,
    probe,
)

TRAIN_FUNCTIONS = ("sphere", "ellipsoidal", "rastrigin", "attractive_sector", "rosenbrock", "bent_cigar",
                   "rastrigin_rotated", "schaffers_f7")
HELD_OUT_FUNCTIONS = ("bueche_rastrigin", "step_ellipsoidal", "ellipsoidal_rotated", "discus", "sharp_ridge",
                      "different_powers", "weierstrass", "gallagher_101_me")


def _setting(name, fns, dim, population, held_out, description):
    return Setting(name, f"BBOB-{dim}D", held_out=held_out, description=description,
                   options=(("functions", fns), ("dim", dim), ("population", population)))


SETTINGS = {
    "train_d10": _setting("train_d10", TRAIN_FUNCTIONS, 10, 16, False,
                          "8 training BBOB functions in 10 dimensions, population 16"),
    "sphere_d10": _setting("sphere_d10", ("sphere",), 10, 16, False, "the sphere function in 10 dimensions"),
    "heldout_fns_d10": _setting("heldout_fns_d10", HELD_OUT_FUNCTIONS, 10, 16, True,
                                "8 held-out BBOB functions in 10 dimensions (held-out functions)"),
    "train_fns_d30": _setting("train_fns_d30", TRAIN_FUNCTIONS, 30, 24, True,
                              "the training functions in 30 dimensions, population 24 (held-out dimension)"),
    "train_fns_d5": _setting("train_fns_d5", TRAIN_FUNCTIONS, 5, 12, True,
                             "the training functions in 5 dimensions, population 12 (held-out dimension)"),
    "pair_d10": _setting("pair_d10", ("sphere", "rastrigin"), 10, 16, False,
                         "two training functions (sphere, Rastrigin) in 10 dimensions"),
    "heldout_pair_d10": _setting("heldout_pair_d10", ("discus", "different_powers"), 10, 16, True,
                                 "two other functions (discus, different powers) in 10 dimensions (held-out functions)"),
    "heldout_fns_d30": _setting("heldout_fns_d30", HELD_OUT_FUNCTIONS, 30, 24, True,
                                "the held-out functions in 30 dimensions (held-out functions and dimension)"),
    # neuroevolution (neuro.py): a 3-16-1 tanh MLP's 81 weights on Pendulum-v1, 4 episodes of 200 steps from the
    # seed's start states; half the profile's generations (default 100, paper 200), population 16, initial mean
    # uniform in [-0.5, 0.5]^81 and std 0.5. Measured (seeds 0-7, 100 generations): final log10 regret of random
    # search 2.93, OpenES 2.81, Sep-CMA-ES 2.39, SNES 2.33, CMA-ES 2.32, hill climbing 2.26; the per-seed best of
    # all of them and of a SNES run of 1000 generations x 64 (which itself ends at 2.36) averages 2.09
    "neuro_pendulum": Setting("neuro_pendulum", "gymnax Pendulum-v1", held_out=True, budget_scale=0.5,
                              description="neuroevolution: an MLP policy (81 weights) on gymnax's Pendulum-v1, "
                              "regret = minus the mean return of 4 episodes of 200 steps, half the budget",
                              options=(("functions", ("gymnax_pendulum",)),
                                       ("dim", neuro.num_params("gymnax_pendulum")), ("population", 16),
                                       ("init_std", 0.5), ("init_range", 0.5))),
}

PROFILES = {
    # smoke: two cheap functions per setting (a unit's compile grows with the functions it switches over)
    "smoke": Profile("smoke", num_ideas=1, seeds=2, budget=60, settings=("pair_d10", "heldout_pair_d10"),
                     baselines=("random_search", "recomb_snes", "snes"), search_generations=2,
                     search_population=16, tree=SMOKE_TREE),
    "default": Profile("default", num_ideas=2, seeds=4, budget=200,
                       settings=("train_d10", "heldout_fns_d10", "train_fns_d30", "neuro_pendulum"),
                       baselines=("random_search", "hill_climb", "recomb_snes", "open_es", "snes", "sep_cma_es",
                                  "cma_es"), search_generations=4, search_population=32, tree=TreeBudget()),
    "paper": Profile("paper", num_ideas=4, seeds=8, budget=400, settings=tuple(SETTINGS),
                     baselines=tuple(baselines.SOURCES), search_generations=8, search_population=64, tree=PAPER_TREE),
}

BASELINES = {
    name: Baseline(name, baselines.LABELS[name], src, description=baselines.DESCRIPTIONS[name],
                   latex=baselines.LATEX.get(name))
    for name, src in baselines.SOURCES.items()
}


def kernel_config(setting: Setting, budget: int) -> BBOConfig:
    return BBOConfig(tuple(setting.option("functions")), int(setting.option("dim")),
                     int(setting.option("population")), int(budget), init_std=float(setting.option("init_std", 1.0)),
                     init_range=float(setting.option("init_range", 4.0)))


def evaluate(setting: Setting, budget: int, candidate, seeds: list[int], hparams: dict | None = None) -> dict:
    """Run the candidate on every seed and function of the setting in one compiled call (its program's, as a
    population of one: see :func:`population`); the unit result."""
    config = with_hparams(kernel_config(setting, budget), hparams)
    return kernel.unit_result(kernel.run_seeds(candidate, config, seeds), config)


def _train(config: BBOConfig, program: kernel.Program, constants: list, values: dict, seeds: list[int]):
    raw = kernel.run_population(program, constants, values["init_std"], config, seeds)
    return kernel.final(raw["best"])


def population(setting: Setting, budget: int, candidates: list[str], hparams: list[dict], seeds: list[int]) -> dict:
    """A tree stage's nodes in one compiled call per program (:func:`kernel.program_of`: the rules of the family
    of one structure, whatever their constants; each evosax strategy, sequence model or other plug-in text) and
    padded size, ``init_std`` and a rule's float literals traced per member."""
    return grouped_population(kernel_config(setting, budget), candidates, hparams, seeds, load=TEMPLATE.load,
                              member=kernel.program_of, train=_train, traced=kernel.TRACED)


PARSERS = {EVOSAX_PREFIX: parse_evosax, SEQUENCE_PREFIX: parse_sequence_model}


def _parser(text):
    return next((p for prefix, p in PARSERS.items() if isinstance(text, str) and text.lstrip().startswith(prefix)),
                None)


class BBOTemplate(Template):
    """A source template whose stateful baselines are JSON naming an evosax strategy or the pretrained Evolution
    Transformer instead of plug-in source."""

    def load(self, text: str):
        if (parse := _parser(text)) is not None:
            try:
                return parse(text)
            except ValueError as exc:
                raise PluginError(str(exc)) from None
        return super().load(text)

    def static_check(self, text: str) -> None:
        if _parser(text) is not None:
            self.load(text)
            return
        super().static_check(text)


TEMPLATE = BBOTemplate(
    name="bbo",
    title="Discovering ES update rules for black-box optimisation",
    plugin=PluginSpec(
        "update",
        (Arg("population", "(P, D) float32", "this generation's members, sampled as mean + std * N(0, I)"),
         Arg("fitness", "(P,) float32", "their regret f(x) - f(x*), lower is better"),
         Arg("mean", "(D,) float32", "the search distribution's mean"),
         Arg("std", "(D,) float32", "its per-dimension standard deviation"),
         Arg("progress", "() float32", "fraction of the budget (generations) used, in [0, 1)")),
        "(mean (D,), std (D,) > 0): the next search distribution",
    ),
    metric=Metric("log_regret", "log10 of the final best regret f(x_best) - f(x*), floored at 1e-12, averaged over "
                  "the setting's functions", maximize=False,  # neuroevolution's regret: max(-mean episodic return, 0.01)
                  bounds=(-12.0, None)),  # the regret is floored at 1e-12
    baselines=BASELINES,
    settings=SETTINGS,
    profiles=PROFILES,
    evaluate=evaluate,
    check=check,
    probe=probe,
    propose=search.propose,
    render=search.render,
    kernel_config=kernel_config,
    kernel_modules=("jaxlib_kernels.templates.bbo.kernel", "jaxlib_kernels.templates.bbo.problems",
                    "jaxlib_kernels.templates.bbo.neuro", "jaxlib_kernels.optimisers.evotf"),
    schema=ResultSchema("generations", "log10 best regret", "final log10 regret", extras=("per_function", "repairs")),
    budget_unit="generations",
    probe_scale=search.PROBE_SCALE,
    novelty_threshold=search.NOVELTY_THRESHOLD,
    formula_lhs=r"(m', \sigma')",
    search_space={"kind": "source", "family": {"weights": list(rules.WEIGHTS), "std_rule": list(rules.STD_RULES),
                                               "ranges": {k: list(v) for k, v in rules.RANGES.items()}}},
    # the initial search distribution's scale (CMA-ES's sigma0), the same for every method; the update rule's own
    # constants are the candidate's (the research tree tunes those as candidate constants)
    hparams=(Continuous("init_std", 0.1, 4.0, log=True),),
    population=population,
)

__all__ = ["BASELINES", "HELD_OUT_FUNCTIONS", "PROFILES", "SETTINGS", "TEMPLATE", "TRAIN_FUNCTIONS", "BBOConfig",
           "BBOTemplate", "EvosaxSpec", "baselines", "evaluate", "kernel", "kernel_config", "neuro", "problems", "rules",
           "search"]
