"""A tree stage's nodes in one compiled call: lpo's (and marl's) ``Template.population`` (candidates x hyperparameters, their lr,
entropy coefficient and update epochs as per-member values) gives what one ``evaluate`` per node gives, records a
broken node without losing the others, compiles nothing on a second stage of the same size, and every template's
tunable hyperparameters are fields of its configuration with their defaults inside their ranges."""

import dataclasses

import numpy as np
import pytest

from jaxlib_kernels import population, symbolic
from jaxlib_kernels.optimisers.space import Space
from jaxlib_kernels.profiling import count_compilations
from jaxlib_kernels.search.drift import DPO, PPO_CLIP
from jaxlib_kernels.templates import TEMPLATES, make
from jaxlib_kernels.templates.base import Setting, with_hparams

SETTING = Setting("tiny", "Navix-Empty-5x5-v0")
BUDGET = 4096  # two PPO updates of 16 x 128 steps
SEEDS = [0, 1]
HAND_WRITTEN = '''import jax
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    """A hand-written drift (not rendered from a tree): trained as its own compiled program."""
    return 0.5 * jnp.square(ratio - 1.0) + 0.0 * advantage
'''
BROKEN = "def drift(ratio, advantage, progress):\n    return ratio +\n"


def clip(eps: float) -> str:
    return symbolic.render_source(["relu", ["mul", ["sub", "r", ["clip", "r", 1.0 - eps, 1.0 + eps]], "A"]])


NODES = [  # (candidate text, hyperparameters): defaults, two update_epochs values, the other traced values changed
    (symbolic.render_source(PPO_CLIP), {}),
    (symbolic.render_source(DPO), {"lr": 1e-3, "ent_coef": 0.03}),
    (clip(0.3), {"update_epochs": 2, "lr": 5e-3}),
    (BROKEN, {}),
    (HAND_WRITTEN, {"ent_coef": 0.0}),
]


@pytest.fixture(scope="module")
def stage():
    lpo = make("lpo")
    texts, hparams = [t for t, _ in NODES], [h for _, h in NODES]
    together = lpo.evaluate_population(SETTING, BUDGET, texts, hparams, SEEDS)
    one_by_one = dataclasses.replace(lpo, population=None).evaluate_population(SETTING, BUDGET, texts, hparams, SEEDS)
    return lpo, together, one_by_one


@pytest.mark.slow
def test_the_population_equals_one_evaluate_per_node_and_records_a_broken_node(stage):
    _, together, one_by_one = stage
    assert together["final"].shape == (len(NODES), len(SEEDS))
    ok = [i for i, (text, _) in enumerate(NODES) if text != BROKEN]
    np.testing.assert_allclose(together["final"][ok], one_by_one["final"][ok], rtol=1e-4, atol=1e-4)
    assert np.isfinite(together["final"][ok]).all() and not any(together["errors"][i] for i in ok)
    broken = NODES.index((BROKEN, {}))
    assert np.isnan(together["final"][broken]).all()
    reason = together["errors"][broken]
    assert reason and "\n" not in reason and reason == one_by_one["errors"][broken]
    # the hyperparameters reached the training: the same drift with other ones learns something else
    assert not np.allclose(together["final"][0], together["final"][2])


@pytest.mark.slow
def test_a_second_stage_of_the_same_size_compiles_nothing(stage):
    lpo, _, _ = stage
    texts = [clip(0.1), symbolic.render_source(DPO), clip(0.25)]  # other formulas, values and epochs, same shapes
    hparams = [{"lr": 3e-4, "update_epochs": 8}, {"ent_coef": 0.05}, {"update_epochs": 1, "lr": 1e-2}]
    with count_compilations() as counter:
        out = lpo.evaluate_population(SETTING, BUDGET, texts, hparams, SEEDS)
    assert counter.compiles == 0, f"a second stage compiled {counter.compiles}x"
    assert np.isfinite(out["final"]).all() and out["errors"] == [None] * 3


@pytest.mark.slow
def test_marls_population_equals_one_evaluate_per_node():
    marl = make("marl")
    setting = marl.setting("spread")
    texts = [symbolic.render_source(PPO_CLIP), symbolic.render_source(DPO)]
    hparams = [{}, {"update_epochs": 2, "lr": 3e-3, "ent_coef": 0.0}]
    together = marl.evaluate_population(setting, BUDGET, texts, hparams, SEEDS)
    one_by_one = dataclasses.replace(marl, population=None).evaluate_population(setting, BUDGET, texts, hparams, SEEDS)
    assert together["errors"] == one_by_one["errors"] == [None, None]
    np.testing.assert_allclose(together["final"], one_by_one["final"], rtol=1e-4, atol=1e-4)


def test_unknown_hyperparameters_are_refused_in_one_line():
    config = make("lpo").kernel_config(SETTING, BUDGET)
    with pytest.raises(ValueError, match="'learning_rate' is not a field") as err:
        with_hparams(config, {"learning_rate": 1e-3})
    assert "\n" not in str(err.value)
    assert with_hparams(config, {"update_epochs": 2.0}).update_epochs == 2  # an integer field stays an integer


def test_an_unknown_hyperparameter_fails_its_node_only():
    out = make("lpo").evaluate_population(SETTING, BUDGET, [BROKEN], [{"learning_rate": 1e-3}], SEEDS)
    assert np.isnan(out["final"]).all() and "learning_rate" in out["errors"][0]


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_templates_hyperparameter_defaults_lie_in_their_ranges(name):
    template = make(name)
    space = Space(list(template.hparams)) if template.hparams else None
    for setting in template.settings.values():
        defaults = template.hparam_defaults(setting, 8)
        assert set(defaults) == {p.name for p in template.hparams}
        if space is not None:
            space.encode(defaults)  # raises SpaceError for a value outside its range
        with_hparams(template.kernel_config(setting, 8), defaults)  # every name is a field of the configuration


def test_padded_sizes_are_few():
    assert [population.padded_size(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 33)] == [4, 4, 4, 4, 8, 8, 16, 16, 32,
                                                                                      48]
