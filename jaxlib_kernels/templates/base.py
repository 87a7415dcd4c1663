"""The template contract (ARCHITECTURE.md, "Templates"): what a research problem declares, and all the stages read.

A template is one folder of code (``jaxlib_kernels/templates/<name>/``) and one folder of text
(``prompts/templates/<name>/``), registered by one line in ``jaxlib_kernels/templates/__init__.py``. The generic
stages (ideation, novelty, code, experiments, aggregation, plots, writeup, review, summary, archive) know only the
fields below; nothing in them is about drifts, datasets or losses.

A *candidate* travels between stages as text: plug-in source for ``kind="source"`` templates (a Python module
defining the plug-in function), or canonical JSON for ``kind="parametric"`` ones (a configuration or a set of
parameters). :meth:`Template.load` turns that text into what :attr:`Template.evaluate` takes.

The unit result schema: ``evaluate(setting, budget, candidate, seeds)`` returns host arrays
``{"x": (T,), "curve": (S, T), "final": (S,), **extras}`` with ``S = len(seeds)``; ``curve`` may hold NaN where
nothing was measured yet. :class:`ResultSchema` names them for tables and figures.

The metric's direction lives in :class:`Metric` only: every stage compares through :meth:`Metric.improvement`
/ :meth:`Metric.best`, never with a bare ``>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxlib_kernels.hashing import ROOT, files_hash, source_hash

PROMPTS = ROOT / "prompts"
__all__ = ["PROMPTS", "ROOT", "files_hash", "source_hash"]


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument of a plug-in: its name, shape and meaning."""

    name: str
    shape: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class PluginSpec:
    """The plug-in a candidate implements. ``kind``: ``source`` (Python function) or ``parametric`` (JSON data)."""

    name: str
    args: tuple[Arg, ...]
    returns: str
    kind: str = "source"

    def __post_init__(self):
        if self.kind not in ("source", "parametric"):
            raise ValueError(f"plug-in kind must be 'source' or 'parametric', got {self.kind!r}")

    @property
    def signature(self) -> str:
        if self.kind == "parametric":
            return f"{self.name} = {self.returns}"
        return f"{self.name}({', '.join(a.name for a in self.args)}) -> {self.returns}"


@dataclasses.dataclass(frozen=True)
class Metric:
    """The headline metric of a unit's ``final`` values and its direction (the one place the sign lives)."""

    name: str
    description: str
    maximize: bool = True
    bounds: tuple[float | None, float | None] | None = None  # the range the metric can take (None: unbounded side)

    @classmethod
    def recorded(cls, maximize: bool | None = None) -> Metric:
        """The metric of a recorded result whose direction is all that was kept (a result's or ``final_info``'s
        ``maximize``; maximised where none was recorded)."""
        return cls("final", "the final value", maximize=True if maximize is None else bool(maximize))

    @property
    def sign(self) -> float:
        return 1.0 if self.maximize else -1.0

    @property
    def direction(self) -> str:
        return "maximised" if self.maximize else "minimised"

    def improvement(self, candidate: float, reference: float) -> float:
        """How much better ``candidate`` is than ``reference`` (positive = better), in the metric's units."""
        return self.sign * (float(candidate) - float(reference))

    def best(self, values: Mapping[str, float]) -> str:
        """The key of the best value."""
        return max(values, key=lambda k: self.sign * float(values[k]))

    def rank(self, values: Mapping[str, float]) -> list[str]:
        """Keys from best to worst."""
        return sorted(values, key=lambda k: -self.sign * float(values[k]))


@dataclasses.dataclass(frozen=True)
class ResultSchema:
    """Names of a unit result's arrays: the curve's x axis, the curve, the final value, named extras."""

    x_label: str = "environment steps"
    curve_label: str = "episodic return"
    final_label: str = "final return"
    extras: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A baseline as candidate text (source or JSON), with the label papers use; ``expression`` when symbolic."""

    name: str
    label: str
    source: str
    expression: Any = None
    description: str = ""
    latex: str | None = None


@dataclasses.dataclass(frozen=True)
class Setting:
    """One experimental condition; held-out settings are never used to select candidates.

    ``budget_scale`` multiplies the profile's budget; ``options`` are template-specific (a frozen tuple of pairs).
    """

    name: str
    env: str
    held_out: bool = False
    description: str = ""
    budget_scale: float = 1.0
    max_steps: int | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)


TREE_STAGES = ("implement", "tune", "improve", "ablate", "replicate")  # the research tree's stages, in order


@dataclasses.dataclass(frozen=True)
class TreeBudget:
    """Sizes of an idea's research tree (ARCHITECTURE.md, "The research tree"), in nodes; a node costs its seeds x
    settings x budget in the template's unit. ``fraction`` scales the profile's budget for the tree's nodes,
    ``seeds`` search seeds (never the replication's, which are the profile's ``seeds`` after them); ``tune``
    evaluations per method (the candidate and every baseline alike), ``improve_rounds`` x ``improve_width``
    variants, at most ``ablate`` ablations. ``stages``: which of implement, tune, improve, ablate, replicate run."""

    fraction: float = 0.25
    seeds: int = 2
    tune: int = 8
    improve_rounds: int = 2
    improve_width: int = 4
    ablate: int = 6
    stages: tuple[str, ...] = TREE_STAGES

    def with_changes(self, changes: Mapping[str, Any] | None = None, stages: Any = None) -> TreeBudget:
        """This budget with ``changes`` (field -> value, numbers or their text, as ``--tree key=value`` gives them)
        and ``stages`` (names, or one comma-separated text) applied; a bad key, value or stage is a
        :class:`ValueError` in one line."""
        values: dict[str, Any] = {}
        fields = [f.name for f in dataclasses.fields(self) if f.name != "stages"]
        for key, value in (changes or {}).items():
            if key == "stages":
                raise ValueError("the tree's stages are chosen with --stages (the flow's stages parameter)")
            if key not in fields:
                raise ValueError(f"unknown tree budget {key!r} (one of: {', '.join(fields)})")
            values[key] = _tree_value(key, value, float if key == "fraction" else int)
        if stages is not None:
            names = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
            unknown = [s for s in names if s not in TREE_STAGES]
            if unknown or not names:
                raise ValueError(f"unknown stage {unknown[0]!r} (stages: {', '.join(TREE_STAGES)})" if unknown
                                 else f"no stage named (stages: {', '.join(TREE_STAGES)})")
            values["stages"] = tuple(s for s in TREE_STAGES if s in names)
        return dataclasses.replace(self, **values)


def _tree_value(key: str, value: Any, kind: type) -> float | int:
    """One tree budget value: ``fraction`` in (0, 1], ``seeds`` at least 1, the node counts at least 0."""
    try:
        number = kind(value) if kind is float or isinstance(value, int) else int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"tree budget {key} must be a {'number' if kind is float else 'whole number'}, "
                         f"got {value!r}") from None
    if kind is float and not 0 < number <= 1:
        raise ValueError(f"tree budget fraction must be in (0, 1], got {value}")
    if kind is int and number < (1 if key == "seeds" else 0):
        raise ValueError(f"tree budget {key} must be at least {1 if key == 'seeds' else 0}, got {value}")
    return number


# the smoke profiles' tree (the suite runs every template's smoke run): a few nodes per stage
SMOKE_TREE = TreeBudget(fraction=0.25, seeds=2, tune=2, improve_rounds=1, improve_width=1, ablate=1)
PAPER_TREE = TreeBudget(fraction=0.25, seeds=4, tune=16, improve_rounds=3, improve_width=8, ablate=8)


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of a run: ideas, seeds, the budget (in the template's unit), settings, baselines, search sizes."""

    name: str
    num_ideas: int
    seeds: int
    budget: int
    settings: tuple[str, ...]
    baselines: tuple[str, ...]
    search_generations: int = 6
    search_population: int = 32
    # offline ideation by real fitness (templates whose search supports it): the proxy shortlists ``screen_pool``
    # ideas per idea wanted, each trained at ``screen_fraction`` of the budget (0 = proxy only) on ``screen_seeds``
    screen_fraction: float = 0.0
    screen_seeds: int = 2
    screen_pool: int = 4
    tree: TreeBudget = dataclasses.field(default_factory=lambda: TreeBudget())  # the research tree's stage sizes

    def budget_of(self, setting: Setting) -> int:
        return max(1, round(self.budget * setting.budget_scale))

    @property
    def screen_budget(self) -> int:
        """The screening budget of offline ideation (0: ideas are ranked by the search's proxy alone)."""
        return max(1, round(self.budget * self.screen_fraction)) if self.screen_fraction > 0 else 0


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What the symbolic discovery engine (``scientist discover``, ``flows/discovery.py``) needs of a template whose
    plug-in is an elementwise formula the interpreter runs (``jaxlib_kernels.interpreter``): how to train a
    population of programs, the formula language of its trees, and where to search and to confirm.

    ``train_programs(kernel_config, programs, seeds) -> (C, S)``: the metric of ``programs`` ((C, L) arrays) on every
    seed, trained in one compiled population call; ``kernel_config`` is :attr:`Template.kernel_config`'s for a
    setting and budget, with any fields the user overrides replaced. ``language``
    (:class:`jaxlib_kernels.search.language.FormulaLanguage`: ``jaxlib_kernels.search.drift.LANGUAGE`` for a
    ``drift(ratio, advantage, progress)``, ``jaxlib_kernels.search.preference.LANGUAGE`` for a ``preference_loss``
    in ``z = beta rho``): the search's proposals, static gate and behavioural novelty, the same for every template
    of that language."""

    train_programs: Callable[[Any, Any, list[int]], np.ndarray] = dataclasses.field(repr=False)
    language: Any  # the formula language of the trees (a ``jaxlib_kernels.search.language.FormulaLanguage``)
    setting: str  # the default training setting of a search
    held_out: tuple[str, ...]  # the default held-out settings of the admission
    baselines: tuple[str, ...]  # what a discovery must beat (their constants tuned first)
    budget: int = 16_384  # the default search budget (rung 0) of one member
    budget_field: str = "total_timesteps"  # the kernel configuration's budget (an override of it scales by rung)


@dataclasses.dataclass(frozen=True)
class Meta:
    """What ES meta-training (``scientist meta``, ``flows/meta_learning.py``) needs of a template whose candidate is
    data (network weights, a synthetic dataset). Callables take and return host values (JSON-able specs).

    * ``make_problem(spec) -> (fitness_fn(key, candidate) -> return, initial mean)``: the ES problem of a spec
      (``defaults`` with options over them, ``"template"`` added; ``jaxlib_kernels.es.problems``)
    * ``searches(request) -> {search name: spec}``: the searches one run makes; ``request`` holds the run's
      ``seed``, ``options`` (spec overrides), ``timesteps`` and whatever of :attr:`options` the user gave
    * ``like(spec) -> candidate``: a candidate of the spec's shape (the saved search mean is read into it)

    The end of a run is one of two:

    * the learned candidate becomes an idea (``idea`` set): ``idea(spec, es, generations, curve) -> idea``,
      ``render(candidate, spec) -> plug-in source``, then the AI-Scientist's per-idea stages (``flows/pipeline``)
      under ``profile(spec, request) -> Profile``; ``figures(source, out_dir) -> [figure]`` join the paper's and
      ``table(idea, profile) -> [row]`` reads the summary rows from its ``final_info``;
    * or the template evaluates its searches itself (``evaluate`` set): ``evaluate({name: {"problem", "candidate"}},
      request, figures_dir) -> results`` (with ``figures``), its rows in the results.

    ``summary(out, request) -> markdown`` is the summary table of either; ``behaviour(meta_run_dir) -> {"target",
    ...}`` (optional) reads a finished run's learned candidate as behaviour on the probe grid (``discover
    --distill``); ``options`` are the ``scientist meta`` options the template accepts beyond the common ones."""

    name: str  # the run's results file (``<name>_results.json``) and summary artifact (``meta-<name>``)
    title: str  # the summary's heading
    description: str  # the summary artifact's description
    defaults: Mapping[str, Any]
    es_defaults: Mapping[str, Any]
    make_problem: Callable[[dict], tuple[Callable, Any]] = dataclasses.field(repr=False)
    searches: Callable[[dict], dict[str, dict]] = dataclasses.field(repr=False)
    like: Callable[[dict], Any] = dataclasses.field(repr=False)
    summary: Callable[[dict, dict], str] = dataclasses.field(repr=False)
    options: tuple[str, ...] = ()  # of: profile, seeds, timesteps, settings, env, dataset_sizes, widths
    idea: Callable[..., dict] | None = dataclasses.field(default=None, repr=False)
    render: Callable[[Any, dict], str] | None = dataclasses.field(default=None, repr=False)
    profile: Callable[[dict, dict], Profile] | None = dataclasses.field(default=None, repr=False)
    figures: Callable[[str, Any], list[dict]] | None = dataclasses.field(default=None, repr=False)
    table: Callable[[dict, Profile], list[dict]] | None = dataclasses.field(default=None, repr=False)
    label: str = "learned (ours)"  # the idea's label in the paper's figures
    evaluate: Callable[..., dict] | None = dataclasses.field(default=None, repr=False)
    behaviour: Callable[[Any], dict] | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if (self.idea is None) == (self.evaluate is None):
            raise ValueError("a Meta ends a run one way: set either idea (with render, profile, table) or evaluate")


def _no_figures(**_: Any) -> list[dict]:
    return []


@dataclasses.dataclass(frozen=True)
class Template:
    """A research problem: everything the stages need, with no Prefect or Ray inside.

    Callables (all take host values and return host values):

    * ``evaluate(setting, budget, candidate, seeds) -> {"x", "curve", "final", **extras}``
    * ``check(candidate, key) -> [problem, ...]``: the gate's checks on random inputs (empty = fine)
    * ``probe(candidate) -> 1-d array``: behaviour; distances are RMS differences divided by ``probe_scale``
    * ``propose(template, profile, archive_rows, num_ideas, seed) -> [idea, ...]``: the offline search (ideation)
    * ``render(template, idea) -> candidate text``: the offline code stage
    * ``figures(template=, idea=, sources=, results=, final_info=, methods=, colors=, labels=, out_dir=)``
      -> extra figure records beyond the generic curves and final values
    * ``kernel_config(setting, budget) -> object``: the kernel's configuration of a unit (its repr keys the unit)
    """

    name: str
    title: str
    plugin: PluginSpec
    metric: Metric
    baselines: dict[str, Baseline]
    settings: dict[str, Setting]
    profiles: dict[str, Profile]
    evaluate: Callable[..., dict] = dataclasses.field(repr=False)
    check: Callable[[Any, Any], list[str]] = dataclasses.field(repr=False)
    probe: Callable[[Any], np.ndarray] = dataclasses.field(repr=False)
    propose: Callable[..., list[dict]] = dataclasses.field(repr=False)
    render: Callable[..., str] = dataclasses.field(repr=False)
    kernel_config: Callable[[Setting, int], Any] = dataclasses.field(repr=False)
    kernel_modules: tuple[str, ...] = ()  # the modules whose source computes a unit (its key covers them)
    check_imports: tuple[str, ...] = ()  # libraries ``check`` needs, imported in the gate's trusted start-up
    schema: ResultSchema = ResultSchema()
    budget_unit: str = "environment steps"
    probe_scale: float = 1.0
    novelty_threshold: float = 0.1
    figures: Callable[..., list[dict]] = dataclasses.field(default=_no_figures, repr=False)
    formula_lhs: str = "f"
    search_space: dict = dataclasses.field(default_factory=dict)
    package: str = ""  # the template's code package (for its source hash); default jaxlib_kernels.templates.<name>
    discovery: Discovery | None = None  # set where ``scientist discover`` serves the template
    meta: Meta | None = None  # set where ``scientist meta`` serves the template
    # the hyperparameters the research tree tunes: ``jaxlib_kernels.optimisers.space`` parameters named by a
    # (dotted) field of ``kernel_config``'s configuration; their untuned values are that configuration's
    hparams: tuple = ()
    # ``population(setting, budget, candidates, hparams, seeds) -> {"final": (N, S), "errors": [str | None]}``: a
    # template that trains a population in one compiled call; None: :meth:`evaluate_population`'s loop
    population: Callable[..., dict] | None = dataclasses.field(default=None, repr=False)

    # --- lookups ---------------------------------------------------------------------------------------------------
    def profile(self, name: str) -> Profile:
        from jaxlib_kernels.registry import Registry

        return Registry("profile", self.profiles)[name]

    def setting(self, name: str) -> Setting:
        from jaxlib_kernels.registry import Registry

        return Registry("setting", self.settings)[name]

    def training_setting(self, profile: Profile) -> Setting:
        """The profile's training setting: its first setting that is not held out."""
        return next(self.setting(s) for s in profile.settings if not self.setting(s).held_out)

    def baseline(self, name: str) -> Baseline:
        from jaxlib_kernels.registry import Registry

        return Registry("baseline", self.baselines)[name]

    @property
    def baseline_labels(self) -> dict[str, str]:
        return {k: b.label for k, b in self.baselines.items()}

    @property
    def plugin_name(self) -> str:
        return self.plugin.name

    @property
    def text_dir(self) -> Path:
        """The template's text: prompts, paper and review overrides, seed ideas, references."""
        return PROMPTS / "templates" / self.name

    @property
    def code_dir(self) -> Path:
        module = importlib.import_module(self.package or f"jaxlib_kernels.templates.{self.name}")
        return Path(module.__file__).resolve().parent

    # --- candidates --------------------------------------------------------------------------------------------------
    def load(self, text: str) -> Any:
        """Candidate text -> the object ``evaluate`` and ``check`` take (raises PluginError with the reason)."""
        from jaxlib_kernels.plugin import PluginError, load_plugin

        if self.plugin.kind == "source":
            return load_plugin(text, self.plugin.name)
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"a {self.name} candidate is JSON: {exc}") from None
        if not isinstance(value, dict):
            raise PluginError(f"a {self.name} candidate is a JSON object, got {type(value).__name__}")
        return value

    def static_check(self, text: str) -> None:
        """The first gate layer on candidate text, in the parent process (raises PluginError)."""
        from jaxlib_kernels.plugin import static_check

        if self.plugin.kind == "source":
            static_check(text, self.plugin.name)
        else:
            self.load(text)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Behavioural distance: RMS difference of two probes in units of ``probe_scale``."""
        diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        return float(np.sqrt(np.mean(np.square(diff)))) / self.probe_scale

    def probe_text(self, text: str) -> np.ndarray:
        return np.asarray(self.probe(self.load(text)), dtype=np.float64).reshape(-1)

    # --- hyperparameters and populations -----------------------------------------------------------------------
    def hparam_defaults(self, setting: Setting, budget: int) -> dict:
        """The untuned values of :attr:`hparams`: the kernel configuration's fields."""
        config = self.kernel_config(setting, budget)
        return {p.name: field_of(config, p.name) for p in self.hparams}

    def evaluate_population(self, setting: Setting, budget: int, candidates: list[str], hparams: list[Mapping] | None,
                            seeds: list[int]) -> dict:
        """The final metric of every (candidate text, hyperparameters) pair on ``seeds``: ``{"final": (N, S)
        float array (NaN where a node failed or its metric is not finite), "errors": [None or the one-line reason] * N}``. Through
        :attr:`population` (one compiled call) when the template has one, else one :attr:`evaluate` per node."""
        hparams = list(hparams) if hparams is not None else [{}] * len(candidates)
        if len(hparams) != len(candidates):
            raise ValueError(f"{len(candidates)} candidates but {len(hparams)} hyperparameter sets")
        if self.population is not None:
            return self.population(setting, budget, list(candidates), [dict(h) for h in hparams], list(seeds))
        finals = np.full((len(candidates), len(seeds)), np.nan)
        errors: list[str | None] = [None] * len(candidates)
        for i, (text, hp) in enumerate(zip(candidates, hparams, strict=True)):
            try:
                out = self.evaluate(setting, budget, self.load(text), list(seeds), hparams=dict(hp) or None)
                finals[i] = np.asarray(out["final"], dtype=np.float64).reshape(len(seeds))
            except Exception as exc:  # noqa: BLE001 - a failing node is recorded as buggy, with its reason
                errors[i] = failure_reason(exc)
        return population_result(finals, errors)

    # --- cache keys --------------------------------------------------------------------------------------------------
    def kernel_fingerprint(self, setting: Setting, budget: int, hparams: Mapping | None = None) -> str:
        """Hash of the kernel's configuration for a unit (with ``hparams`` applied) and of the source of the modules
        that compute it."""
        h = hashlib.sha256(repr(with_hparams(self.kernel_config(setting, budget), hparams)).encode())
        h.update(source_hash(self.kernel_modules, code_only=True).encode())
        return h.hexdigest()[:16]

    def text_hash(self) -> str:
        """Hash of every file of the template's text folder."""
        return files_hash([self.text_dir])

    def describe(self) -> dict:
        """What ``scientist templates`` prints."""
        return {
            "name": self.name, "title": self.title, "plugin": self.plugin.signature, "kind": self.plugin.kind,
            "metric": self.metric.name, "direction": self.metric.direction, "budget_unit": self.budget_unit,
            "baselines": list(self.baselines),
            "settings": {k: ("held out" if s.held_out else "training") for k, s in self.settings.items()},
            "profiles": {k: {"ideas": p.num_ideas, "seeds": p.seeds, "budget": p.budget, "settings": list(p.settings)}
                         for k, p in self.profiles.items()},
        }


def population_result(finals: np.ndarray, errors: list[str | None]) -> dict:
    """``{"final", "errors"}`` of a population, a node whose metric is not finite on every seed failed (NaN)."""
    for i, row in enumerate(finals):
        if errors[i] is None and not np.all(np.isfinite(row)):
            finals[i], errors[i] = np.nan, "non-finite metric"
    return {"final": finals, "errors": errors}


def failure_reason(exc: BaseException) -> str:
    """The one-line reason a population records for a node that failed: the exception's type and first line."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def field_of(config: Any, name: str) -> Any:
    """A (dotted) field of a nested dataclass configuration: ``"es.lr"``."""
    for part in name.split("."):
        config = getattr(config, part)
    return config


def with_hparams(config: Any, hparams: Mapping | None) -> Any:
    """The configuration with the (dotted) fields ``hparams`` replaced; the same object when there are none."""
    for name, value in (hparams or {}).items():
        head, _, rest = name.partition(".")
        if not dataclasses.is_dataclass(config) or head not in {f.name for f in dataclasses.fields(config)}:
            raise ValueError(f"{name!r} is not a field of the kernel configuration {type(config).__name__}")
        inner = getattr(config, head)
        current = type(inner)(value) if isinstance(inner, int | float) and not isinstance(inner, bool) else value
        config = dataclasses.replace(config, **{head: with_hparams(inner, {rest: value}) if rest else current})
    return config


def candidate_json(value: Mapping[str, Any]) -> str:
    """Canonical JSON text of a parametric candidate (sorted keys: the same candidate, the same text)."""
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))
