"""The ``hades`` template's offline ideation: a search over ES meta-training configurations.

Parents are the dataset baselines (HaDES-R, HaDES-F), the template's seed ideas
(``prompts/templates/hades/seed_ideas.json``) and the best archived candidates of earlier runs (by measured
advantage). Children change one to three keys of a parent by a factor (dataset size, ES step and perturbation
scale, behaviour-cloning steps and rate, initial state and logit scales) or switch HaDES-R <-> HaDES-F. The search
trains nothing: it ranks children by a cheap proxy (distance to everything evaluated, saturating; the parent's
measured advantage; fewer mutations first; penalties for slow fitness evaluations, for HaDES-F and for fewer pairs
than actions) and keeps ``num_ideas`` that are novel (at least ``NOVELTY_THRESHOLD`` from every baseline and
archived candidate) and differ from one another by ``DIVERSITY``. Each idea's text is rendered from its mutation
history with the Jinja2 files of the template's text folder. Everything is deterministic given ``seed``; seed
ideas count as changes of the HaDES-R baseline and may be proposed themselves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from jaxlib_kernels.search import known, offline
from jaxlib_kernels.templates.base import candidate_json
from jaxlib_kernels.templates.hades import candidate as cand

DIVERSITY = 1.0  # two ideas of one run differ by at least one doubling of one key
MAX_MUTATIONS = 3
MIN_PAIRS = 2  # the training environment's number of actions: fewer pairs cannot label both actions
TOP_ARCHIVED = 4
REFERENCE_COST = cand.DEFAULTS["num_pairs"] * cand.DEFAULTS["inner_steps"]  # pairs x cloning steps of HaDES-R

# key -> factors a mutation may apply
FACTORS = {
    "num_pairs": (0.25, 0.5, 2.0, 4.0),
    "es_lr": (0.5, 2.0, 4.0),
    "es_std": (0.5, 2.0, 3.0),
    "inner_steps": (0.5, 2.0),
    "inner_lr": (0.5, 2.0, 3.0),
    "obs_init_std": (0.5, 2.0),
    "logit_init_std": (0.5, 2.0, 3.0),
}
HEADLINES = {
    ("num_pairs", True): "Larger-dataset", ("num_pairs", False): "Smaller-dataset",
    ("es_lr", True): "Fast-step", ("es_lr", False): "Slow-step",
    ("es_std", True): "Wide-perturbation", ("es_std", False): "Narrow-perturbation",
    ("inner_steps", True): "Long-cloning", ("inner_steps", False): "Short-cloning",
    ("inner_lr", True): "Fast-cloning", ("inner_lr", False): "Slow-cloning",
    ("obs_init_std", True): "Spread-state", ("obs_init_std", False): "Concentrated-state",
    ("logit_init_std", True): "Sharp-label", ("logit_init_std", False): "Soft-label",
}
TAGS = {"num_pairs": "p", "es_lr": "lr", "es_std": "std", "inner_steps": "bc", "inner_lr": "bclr",
        "obs_init_std": "obs", "logit_init_std": "logit"}


@dataclass
class Candidate:
    config: dict  # normalised (every applicable key present)
    parent: str
    mutations: list[str] = field(default_factory=list)
    kinds: list[tuple[str, bool]] = field(default_factory=list)  # (key or "method", increased)
    prior: float = 0.0  # measured advantage of the parent over the best baseline (archive), 0 if unknown
    origin: str = ""  # the seed idea it descends from, if any


def _round(key: str, value: float) -> float | int:
    kind, low, high, _ = cand.SPEC[key]
    value = min(max(value, low), high)
    return round(value) if kind is int else float(f"{value:.4g}")


def _change(config: dict, key: str, value) -> tuple[dict, str, tuple[str, bool]]:
    """``config`` with ``key`` set to ``value``, the change in words and its kind."""
    old = config[key]
    config = {**config, key: value}
    if key == "method":
        text = ("keeps one fixed policy initialisation during the search (HaDES-F)" if value == "hades_f" else
                "samples a fresh policy initialisation for every fitness evaluation (HaDES-R)")
        return config, text, ("method", value == "hades_r")
    text = f"{'raises' if value > old else 'lowers'} {cand.DESCRIPTIONS[key]} from {old:g} to {value:g}"
    return config, text, (key, value > old)


def _mutate(c: Candidate, pool: list[Candidate], rng: np.random.Generator) -> Candidate | None:
    """One change of one key by a factor, or HaDES-R <-> HaDES-F; None when it changes nothing or breaks the
    candidate's ranges."""
    options = list(FACTORS) + ["method"]
    key = options[rng.integers(len(options))]
    if key == "method":
        value = "hades_f" if c.config["method"] == "hades_r" else "hades_r"
    else:
        value = _round(key, c.config[key] * float(FACTORS[key][rng.integers(len(FACTORS[key]))]))
        if value == c.config[key]:
            return None
    config, text, kind = _change(c.config, key, value)
    if cand.problems(config):
        return None
    return Candidate(config, c.parent, c.mutations + [text], c.kinds + [kind], c.prior, c.origin)


def _derive(base: Candidate, config: dict, origin: str) -> Candidate:
    """``config`` written as a chain of changes from ``base`` (a seed idea as a child of a baseline)."""
    c = Candidate(dict(base.config), base.parent, origin=origin)
    for key in ("method", *FACTORS):
        if config[key] != c.config[key]:
            c.config, text, kind = _change(c.config, key, config[key])
            c.mutations.append(text)
            c.kinds.append(kind)
    return c


def _cost(config: dict) -> float:
    return config["num_pairs"] * config["inner_steps"] / REFERENCE_COST


def _archived(archive_rows: list[dict]) -> list[tuple[dict, dict]]:
    """``(row, normalised candidate)`` of every archive row whose source is a valid hades candidate."""
    out = []
    for row in archive_rows:
        try:
            value = json.loads(row.get("source") or "")
        except (TypeError, ValueError):
            continue
        if not cand.problems(value):
            out.append((row, cand.normalise(value)))
    return out


def seed_pool(template, archive_rows: list[dict]) -> list[Candidate]:
    """Dataset baselines, the seed ideas (as changes of the HaDES-R baseline) and the best archived candidates."""
    pool = []
    for name, b in template.baselines.items():
        config = cand.normalise(json.loads(b.source))
        if config["method"] != "direct":
            pool.append(Candidate(config, name))
    root = next((c for c in pool if c.config["method"] == "hades_r"), None)
    seeds_file = template.text_dir / "seed_ideas.json"
    if seeds_file.exists() and root is not None:
        for s in json.loads(seeds_file.read_text()):
            if s["name"] not in template.baselines and not cand.problems(s["candidate"]):
                config = cand.normalise(s["candidate"])
                if config["method"] != "direct" and config != root.config:
                    pool.append(_derive(root, config, s["name"]))
    ranked = sorted(((r, c) for r, c in _archived(archive_rows) if r.get("advantage") is not None),
                    key=lambda rc: float(rc[0]["advantage"]), reverse=True)
    for row, config in ranked[:TOP_ARCHIVED]:
        if config["method"] != "direct":
            pool.append(Candidate(config, str(row["idea"]), prior=float(row["advantage"])))
    return pool


def known_configs(template, archive_rows: list[dict]) -> dict[str, dict]:
    """Everything already evaluated: the baselines and the archived candidates, by name."""
    return known.known_behaviours(template.baselines, [row for row, _ in _archived(archive_rows)],
                                  lambda b: cand.normalise(json.loads(b.source)),
                                  lambda row: cand.normalise(json.loads(row["source"])))


def _score(c: Candidate, known_: dict[str, dict]) -> tuple[float, float, str]:
    """Proxy of an idea's promise: novelty (saturating at two doublings), the parent's measured advantage, fewer
    changes first; slow fitness evaluations, HaDES-F (which the fresh-initialisation evaluation handicaps) and
    datasets with fewer pairs than actions (which cannot teach a state-dependent choice) last."""
    nearest, d = known.nearest(c.config, known_, cand.distance)
    score = min(d, 1.5) / 1.5 - 0.1 * len(c.mutations) + 0.5 * math.tanh(max(c.prior, 0.0) / 100.0)
    score -= 0.5 * (c.config["num_pairs"] < MIN_PAIRS)
    score -= 0.15 * max(0.0, math.log2(_cost(c.config)))
    score -= 0.2 * (c.config["method"] == "hades_f")
    return float(score), d, nearest


def search(template, archive_rows: list[dict], num_ideas: int, generations: int, population: int,
           seed: int) -> list[tuple[Candidate, float, str, float]]:
    """Mutate configurations; ``num_ideas`` distinct novel ones as (candidate, distance, nearest, score).

    Candidates are the seed ideas and every child; equal proxy scores are ordered by a jitter drawn from ``seed``.
    """
    rng = np.random.default_rng(seed)
    known_ = known_configs(template, archive_rows)
    pool = seed_pool(template, archive_rows)
    offspring = offline.evolve(pool, _mutate, lambda c: _score(c, known_)[0], lambda c: candidate_json(c.config),
                               max(1, generations), population, rng, max_mutations=MAX_MUTATIONS,
                               seen={candidate_json(v) for v in known_.values()},
                               offspring=[c for c in pool if c.origin])
    jitter = rng.random(len(offspring)) * 0.05
    scored = [(c, s + j, d, nearest) for c, j in zip(offspring, jitter) for s, d, nearest in [_score(c, known_)]]
    return offline.choose(scored, num_ideas, cand.NOVELTY_THRESHOLD, DIVERSITY,
                          lambda a, b: cand.distance(a.config, b.config), positive=False)


# ---- text ------------------------------------------------------------------------------------------------------


def idea_name(config: dict, used: set[str]) -> str:
    """A short unique identifier: the method, the dataset size and the keys that differ from the defaults."""
    parts = [config["method"], f"{config['num_pairs']}p"]
    for key, tag in TAGS.items():
        if key != "num_pairs" and config[key] != cand.DEFAULTS[key]:
            parts.append(f"{tag}{config[key]:g}".replace(".", "p").replace("-", "m"))
    return offline.unique_name("_".join(parts), used)


def render_idea(template, profile, c: Candidate, d: float, nearest: str, score: float, used: set[str]) -> dict:
    """An idea in the AI Scientist's JSON shape; its text rendered from the configuration and its mutations."""
    method_label = cand.LABELS[c.config["method"]]
    words = [HEADLINES[k] for k in dict.fromkeys(c.kinds) if k in HEADLINES]
    parent_label = template.baseline_labels.get(c.parent, c.parent.replace("_", " "))
    headline = " ".join(dict.fromkeys(words))
    rows = [{"key": k, "value": v, "description": cand.DESCRIPTIONS[k]} for k, v in c.config.items()]
    cost = _cost(c.config)
    ctx = {
        "headline": headline, "method_label": method_label, "parent_label": parent_label,
        "mutations": c.mutations, "changed": [k for k, _ in c.kinds], "config": c.config, "rows": rows,
        "distance": d, "nearest": nearest, "budget_unit": template.budget_unit,
        "fixed_init": c.config["method"] == "hades_f", "cost": cost, **offline.profile_context(template, profile),
    }
    novelty = int(np.clip(1 + round(9 * min(1.0, d / 3.0)), 1, 10))
    feasibility = int(np.clip(9 - round(max(0.0, math.log2(cost))) - (c.config["es_std"] > 0.5), 1, 10))
    interestingness = int(np.clip(round(0.5 * novelty + 3 + 2 * ("method" in ctx["changed"])
                                        + 4 * math.tanh(max(c.prior, 0.0) / 100.0)), 1, 10))
    return {
        "Name": idea_name(c.config, used),
        **offline.idea_text(offline.text_env(template), ctx),
        "Interestingness": interestingness,
        "Feasibility": feasibility,
        "Novelty": novelty,
        "kind": "parametric",
        "expression": None,
        "expression_latex": None,
        "candidate": dict(c.config),
        "parent": c.parent,
        "mutations": list(c.mutations),
        "search": {"score": score, "distance": d, "nearest": nearest, "cost": cost, "seed_idea": c.origin or None},
        "backend": "offline",
    }


def propose(template, profile, archive_rows: list[dict], num_ideas: int, seed: int) -> list[dict]:
    """The template's offline ideation: ``num_ideas`` configurations from the search, seeded by ``seed``."""
    chosen = search(template, archive_rows, num_ideas, profile.search_generations, profile.search_population, seed)
    used: set[str] = set(template.baselines)
    return [render_idea(template, profile, c, d, nearest, score, used) for c, d, nearest, score in chosen]


def render(template, idea: dict) -> str:
    """The offline code stage: the idea's configuration as canonical JSON."""
    return candidate_json(idea["candidate"])
