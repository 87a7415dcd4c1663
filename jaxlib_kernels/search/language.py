"""A *formula language*: one kind of elementwise plug-in written as trees, everything a search needs of it.

A template whose plug-in is such a formula names its language (``Template.discovery.language``, and its
``propose`` / ``render`` are the language's): the discovery engine's proposals, static gate and behavioural
novelty, and the template's offline ideation, all come from it. Adding a template of an existing language touches
the template's folder only; a new language is one module beside :mod:`.drift` and :mod:`.preference` (plus its
variables and operators in ``jaxlib_kernels.interpreter.LANGUAGES``, so the interpreter runs it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxlib_kernels import interpreter, symbolic
from jaxlib_kernels.search import offline
from jaxlib_kernels.search.known import known_behaviours


@dataclasses.dataclass(frozen=True)
class FormulaLanguage:
    """Variables, operators, mutations, plausibility and probe of one kind of formula.

    ``behaviour(tree)``: the probe (values on the language's probe grid, flattened, numpy); distances are RMS
    differences divided by ``scale``. ``plausibility(tree) -> (score in [0, 1], reasons)``: 0 refuses it (the
    static gate). ``mutate(candidate, pool, rng) -> candidate | None``: one change (``kinds`` names it;
    ``headlines`` words an idea's title by its kinds). ``describe(candidate, words) -> (words, extra idea text
    context, interestingness bonus)`` adds what the language says of a candidate beyond its mutations."""

    name: str  # the interpreter language its trees compile to (``interpreter.LANGUAGES``)
    variables: symbolic.Variables  # name -> (plug-in source, LaTeX)
    args: tuple[str, ...]  # the plug-in's arguments (the variables' sources are written in them)
    behaviour: Callable[[Any], np.ndarray] = dataclasses.field(repr=False)
    plausibility: Callable[[Any], tuple[float, list[str]]] = dataclasses.field(repr=False)
    mutate: Callable[..., Any] = dataclasses.field(repr=False)
    scale: float = 1.0
    headlines: Mapping[str, str] = dataclasses.field(default_factory=dict)
    constants: tuple[float, ...] = ()  # constants a formula typically uses (the search space a prompt shows)
    filler: Any = 0.0  # a valid tree that pads a population
    novelty_threshold: float = 0.1  # below this distance a formula counts as known
    diversity: float = 0.25  # two ideas of one run differ at least this much
    max_size: int = 60  # the largest tree the offline search keeps
    max_mutations: int = 3
    idea_source: symbolic.Variables | None = None  # variable sources in an idea's text (None: ``variables``)
    label_suffix: str = ""  # dropped from a parent baseline's label in an idea's headline
    describe: Callable[..., tuple[list[str], dict, float]] | None = dataclasses.field(default=None, repr=False)
    probe_baselines: bool = False  # baselines' behaviour is the template's probe of their source (some lack a tree)
    # contrast(candidate's probe, nearest's probe, nearest's label) -> one plain sentence: where on the probe they
    # differ (the paper's account of what a candidate changes in behaviour; ``search.known.relation``)
    contrast: Callable[[np.ndarray, np.ndarray, str], str | None] | None = dataclasses.field(default=None, repr=False)

    # --- the language ----------------------------------------------------------------------------------------------
    @property
    def unary(self) -> tuple[str, ...]:
        return interpreter.LANGUAGES[self.name][1]

    @property
    def operators(self) -> tuple[str, ...]:
        """Every operator a tree of the language may use (what the interpreter runs for it)."""
        return (*self.unary, *interpreter.BINARY_OPS, *interpreter.TERNARY_OPS)

    @property
    def search_space(self) -> dict:
        """The language as ``Template.search_space`` shows it."""
        return {"variables": list(self.variables), "unary": list(self.unary), "binary": list(interpreter.BINARY_OPS),
                "special": list(interpreter.TERNARY_OPS), "constants": list(self.constants)}

    @property
    def idea_variables(self) -> symbolic.Variables:
        return self.idea_source if self.idea_source is not None else self.variables

    def valid(self, expr) -> bool:
        """Whether ``expr`` is a well-formed tree over the language's variables."""
        try:
            symbolic.validate(expr, self.variables)
        except symbolic.ExpressionError:
            return False
        return True

    def distance(self, f: np.ndarray, g: np.ndarray) -> float:
        """Behavioural distance: RMS difference of two behaviours in units of ``scale``."""
        return float(np.sqrt(np.mean(np.square(np.asarray(f) - np.asarray(g))))) / self.scale

    def known(self, template, archive_rows: list[dict]) -> dict[str, np.ndarray]:
        """Behaviours of the template's baselines and of every archived tree of the language, by name."""
        if self.probe_baselines:
            def of_baseline(b):
                return template.probe_text(b.source)
        else:
            def of_baseline(b):
                return None if b.expression is None else self.behaviour(b.expression)
        return known_behaviours(template.baselines, archive_rows, of_baseline,
                                lambda r: self.behaviour(r["expression"]) if self.valid(r.get("expression")) else None)

    # --- a template's offline stages (``Template.propose`` / ``Template.render``) ------------------------------------
    def propose(self, template, profile, archive_rows: list[dict], num_ideas: int, seed: int) -> list[dict]:
        """The template's offline ideation: ``num_ideas`` ideas from the symbolic search (:func:`offline.propose`)."""
        return offline.propose(template, profile, archive_rows, num_ideas, seed, self)

    def render(self, template, idea: dict) -> str:
        """The offline code stage: the idea's tree rendered as plug-in source."""
        return symbolic.render_source(idea["expression"], template.plugin.name, doc=idea.get("Title"), args=self.args,
                                      variables=self.variables)

    def render_idea(self, template, profile, cand, d: float, nearest: str, score: float, used: set[str],
                    screening: dict | None = None) -> dict:
        return offline.render_idea(template, profile, self, cand, d, nearest, score, used, screening)
