"""A population of candidate texts with hyperparameters in one compiled call (``Template.population``).

:func:`grouped_population`: each text is loaded and given its group by the template (the program it runs in: for
the templates whose candidate is a formula the interpreter runs, :func:`interpreted_population`, lpo's and marl's
drift and dpo's preference loss, every tree; for bbo, a rule structure or a strategy) and its per-member value (the tree, a rule's
constants). The members of a group train together: one compiled call per group and configuration once the
kernel's traced fields (``traced``, e.g. ``ppo.TRACED``: per-member values of one program) are set aside, padded to
:func:`padded_size` members so that the calls of a stage's size reuse one compiled program. A text of no group (a
hand-written plug-in where the template has none for it) is evaluated alone (``evaluate``: its own compiled
program); a text that does not load, hyperparameters that are not fields of the configuration, or a non-finite
metric give NaN and a one-line reason. The metric is the template's ``evaluate``'s ``final``, equal up to float
summation order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxlib_kernels import interpreter
from jaxlib_kernels.plugin import load_plugin
from jaxlib_kernels.templates.base import Setting, failure_reason, field_of, population_result, with_hparams

BUCKET = 16  # sizes up to it are padded to a power of two, larger ones to a multiple of it
# the fewest members a call trains: the small stages of a tree (1 to 4 nodes: a smoke tree's, the tune of a few
# baselines) share one compiled program instead of compiling one per size. A compile of lpo's population costs
# 20-45 s on this 2-core machine, training 4 members at a smoke tree's budget about a second.
SMALLEST = 4


def padded_size(n: int, bucket: int = BUCKET, smallest: int = SMALLEST) -> int:
    """The number of candidates ``n`` are padded to: at least ``smallest``, the next power of two up to
    ``bucket``, then the next multiple of ``bucket`` (few sizes, so few compiled programs, and at most twice the
    work above ``smallest``)."""
    if n <= bucket:
        return max(smallest, 1 << max(0, n - 1).bit_length())
    return -(-n // bucket) * bucket


def grouped_population(config: Any, candidates: Sequence[str], hparams: Sequence[Mapping], seeds: list[int], *,
                       load: Callable[[str], Any], member: Callable[[Any], tuple[Any, Any] | None],
                       train: Callable[[Any, Any, list, dict, list[int]], np.ndarray], traced: tuple[str, ...],
                       evaluate: Callable[[Any, dict | None], np.ndarray] | None = None) -> dict:
    """``{"final": (N, S), "errors": [None | reason] * N}`` of every (candidate text, hyperparameters) pair.

    ``config``: the kernel configuration of the setting and budget; ``load(text)``: the plug-in (raises on a bad
    text); ``member(plugin) -> (group, payload)``: the program the plug-in runs in (hashable) and its per-member
    value, or None for a plug-in evaluated alone by ``evaluate(plugin, hparams or None) -> (S,)``; ``train(config,
    group, payloads, {name: values} over traced, seeds) -> (C, S)``: the compiled population of one configuration
    (its traced fields set aside) and group, called once per group with the members padded to
    :func:`padded_size`."""
    n = len(candidates)
    finals = np.full((n, len(seeds)), np.nan)
    errors: list[str | None] = [None] * n
    groups: dict[Any, list[tuple[int, Any, dict]]] = {}
    for i, (text, hp) in enumerate(zip(candidates, hparams, strict=True)):
        try:
            hp = dict(hp)
            applied = with_hparams(config, hp)  # refuses a field the configuration has not
            plugin = load(text)
            found = member(plugin)
            if found is None:  # not of a batchable kind: its own program
                finals[i] = np.asarray(evaluate(plugin, hp or None), dtype=np.float64).reshape(len(seeds))
                continue
        except Exception as exc:  # noqa: BLE001 - a failing node is recorded as buggy, with its reason
            errors[i] = failure_reason(exc)
            continue
        static = with_hparams(applied, {name: field_of(config, name) for name in traced})
        group, payload = found
        groups.setdefault((static, group), []).append((i, payload, {name: field_of(applied, name) for name in traced}))
    for (static, group), members in groups.items():
        padded = members + [members[-1]] * (padded_size(len(members)) - len(members))
        try:
            values = {name: [m[2][name] for m in padded] for name in traced}
            out = np.asarray(train(static, group, [m[1] for m in padded], values, list(seeds)), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - the group's members fail together, each with the reason
            for i, _, _ in members:
                errors[i] = failure_reason(exc)
            continue
        for row, (i, _, _) in zip(out, members, strict=False):
            finals[i] = row
    return population_result(finals, errors)


def interpreted_population(config: Any, candidates: Sequence[str], hparams: Sequence[Mapping], seeds: list[int], *,
                           load: Callable[[str], Any], evaluate: Callable[[Any, dict | None], np.ndarray],
                           train: Callable[[Any, interpreter.Program, dict, list[int]], np.ndarray],
                           traced: tuple[str, ...], language: str = "drift",
                           expression: Callable[[Any], Any] = interpreter.expression_of) -> dict:
    """:func:`grouped_population` of formula plug-ins: the members that are trees in ``language`` (``expression(plugin)``,
    the drift's ``interpreter.expression_of`` by default) form one group per configuration, ``train(config, programs
    (C, L), {name: (C,) values} over traced, seeds) -> (C, S)``; the others are evaluated alone."""

    def member(plugin):
        expr = expression(plugin)
        return None if expr is None else ("tree", expr)

    def train_trees(static, _, exprs, values, seeds):
        return train(static, interpreter.encode_population(exprs, language=language), values, seeds)

    return grouped_population(config, candidates, hparams, seeds, load=load, member=member, train=train_trees,
                              traced=traced, evaluate=evaluate)


def template_population(kernel_config: Callable[[Setting, int], Any], evaluate: Callable[..., dict],
                        train: Callable[[Any, interpreter.Program, dict, list[int]], np.ndarray],
                        traced: tuple[str, ...], plugin: str = "drift", language: str = "drift",
                        expression: Callable[[Any], Any] = interpreter.expression_of) -> Callable[..., dict]:
    """A template's ``population(setting, budget, candidates, hparams, seeds)`` from its ``kernel_config``, its
    unit ``evaluate`` (for the members that are not trees), its compiled population ``train`` and the
    configuration fields that ``train`` takes per member (``traced``); ``plugin``: the plug-in function's name;
    ``language``, ``expression``: as :func:`interpreted_population`'s."""

    def population(setting: Setting, budget: int, candidates: list[str], hparams: list[dict],
                   seeds: list[int]) -> dict:
        return interpreted_population(
            kernel_config(setting, budget), candidates, hparams, seeds, load=lambda text: load_plugin(text, plugin),
            evaluate=lambda fn, hp: evaluate(setting, budget, fn, seeds, hp)["final"], train=train, traced=traced,
            language=language, expression=expression)

    return population
