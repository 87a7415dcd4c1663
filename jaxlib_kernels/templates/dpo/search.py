"""The ``dpo`` template's offline search: an evolutionary symbolic search over preference losses in ``z``.

Expressions are trees of :mod:`jaxlib_kernels.symbolic` over one variable, ``z = beta * rho`` (the dpo template's
``VARIABLES``), with the preference operators ``logsig`` (-log sigmoid), ``sig``, ``expneg`` (exp(-x)) beside the
generic ones. The pool starts from the elementwise baselines (DPO, SLiC, LRML, PADLL, CELL), the template's seed
ideas and the best archived losses; mutations are DiscoPOP's moves written as operators: a margin (z -> z - m), a
temperature (z -> z / t), a convex blend with another base loss, a LRML-style blend modulated by sigmoid(z / tau),
an asymmetric weight for rho < 0 (as PADLL), a retuned constant. A cheap proxy ranks them on the probe grid of z:
plausibility as a preference loss (finite, mostly decreasing in z so that the winner is preferred, bounded
gradients), behavioural novelty of its gradient against everything known, simplicity, and the measured advantage
of its parent in the archive. It trains nothing: the experiments stage does.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import jinja2
import numpy as np

from jaxlib_kernels import symbolic
from jaxlib_kernels.templates.dpo.candidate import NOVELTY_THRESHOLD, PROBE_BETAS, PROBE_RHO, PROBE_SCALE
from jaxlib_kernels.templates.dpo.losses import ARGS, VARIABLES

DIVERSITY = 0.25
MAX_MUTATIONS = 3
_Z = np.concatenate([b * PROBE_RHO for b in PROBE_BETAS])
_H = 1e-4
BASE_LOSSES = {
    "logistic": (["logsig", "z"], "the logistic loss -log sigmoid(z)"),
    "hinge": (["relu", ["sub", 1.0, "z"]], "the hinge loss max(0, 1 - z)"),
    "exponential": (["expneg", "z"], "the exponential loss exp(-z)"),
    "squared": (["sq", ["sub", "z", 1.0]], "the squared loss (z - 1)^2"),
}
HEADLINES = {"margin": "Margin", "temperature": "Tempered", "blend": "Blended", "modulate": "Modulated",
             "asym": "Asymmetric", "const": "Retuned"}


@dataclass
class Candidate:
    expr: object
    parent: str
    mutations: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    prior: float = 0.0


def values(expr, z: np.ndarray = _Z) -> np.ndarray:
    return symbolic.evaluate_env(expr, {"z": z})


def behaviour(expr) -> np.ndarray:
    """d loss / dz on the probe grid (central differences): the same quantity as the template's probe."""
    return (values(expr, _Z + _H) - values(expr, _Z - _H)) / (2 * _H)


def distance(f: np.ndarray, g: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(f) - np.asarray(g))))) / PROBE_SCALE


def plausibility(expr) -> tuple[float, list[str]]:
    """A score in [0, 1] for how much the tree behaves like a preference loss, and the reasons it loses points."""
    v, g = values(expr), behaviour(expr)
    edge = values(expr, np.array([-15.0, 15.0]))
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(g)) and np.all(np.isfinite(edge))):
        return 0.0, ["not finite on the probe grid"]
    score, notes = 1.0, []
    decreasing = float(np.mean(g < 0))
    if decreasing < 0.5:
        return 0.0, ["increases with the margin on most of the grid: it would prefer the rejected completion"]
    if decreasing < 0.8:
        score *= 0.6
        notes.append("increases with the margin on part of the grid")
    if np.abs(g).max() > 50:
        score *= 0.5
        notes.append("very steep gradients")
    if np.abs(g).max() < 1e-3:
        return 0.0, ["flat: no gradient"]
    return score, notes


def _paths(expr, path=()):
    yield path, expr
    if isinstance(expr, list):
        for i, child in enumerate(expr[1:], start=1):
            yield from _paths(child, path + (i,))


def _replace(expr, path, new):
    if not path:
        return new
    out = copy.deepcopy(expr)
    node = out
    for i in path[:-1]:
        node = node[i]
    node[path[-1]] = new
    return out


def _substitute(expr, new_z):
    """Every occurrence of z replaced by ``new_z``."""
    if expr == "z":
        return copy.deepcopy(new_z)
    if isinstance(expr, list):
        return [expr[0], *[_substitute(a, new_z) for a in expr[1:]]]
    return expr


def _mutate(cand: Candidate, pool: list[Candidate], rng: np.random.Generator) -> Candidate | None:
    expr = cand.expr
    nodes = list(_paths(expr))
    consts = [(p, n) for p, n in nodes if isinstance(n, float) and p]
    kinds = ["margin", "temperature", "blend", "modulate", "asym"] + (["const"] if consts else [])
    kind = str(rng.choice(kinds))
    if kind == "margin":
        m = float(rng.choice([0.1, 0.25, 0.5, 1.0]))
        new, desc = _substitute(expr, ["sub", "z", m]), f"asks for a margin: z is replaced by z - {m:g}"
    elif kind == "temperature":
        t = float(rng.choice([0.5, 0.7, 1.5, 2.0]))
        new, desc = _substitute(expr, ["mul", round(1.0 / t, 4), "z"]), f"is tempered: z is replaced by z / {t:g}"
    elif kind == "blend":
        name = str(rng.choice(list(BASE_LOSSES)))
        other, text = BASE_LOSSES[name]
        w = float(rng.choice([0.25, 0.5, 0.75]))
        new, desc = ["add", ["mul", w, expr], ["mul", round(1 - w, 4), other]], f"is blended {w:g} : {1 - w:g} with {text}"
    elif kind == "modulate":
        name = str(rng.choice(list(BASE_LOSSES)))
        other, text = BASE_LOSSES[name]
        tau = float(rng.choice([0.05, 0.25, 0.5, 1.0]))
        w = ["sig", ["mul", round(1.0 / tau, 4), "z"]]
        new = ["add", ["mul", ["sub", 1.0, w], expr], ["mul", w, other]]
        desc = f"hands over to {text} for large margins, weighted by sigmoid(z / {tau:g}) as in LRML"
    elif kind == "asym":
        a, b = (1.0, float(rng.choice([0.5, 1.5, 2.0]))) if rng.random() < 0.5 else (float(rng.choice([0.5, 0.8])), 1.0)
        new, desc = ["mul", ["ifpos", "z", a, b], expr], f"weighs pairs with rho >= 0 by {a:g} and rho < 0 by {b:g}"
    else:
        p, value = consts[rng.integers(len(consts))]
        factor = float(rng.choice([0.5, 0.75, 1.5, 2.0]))
        new = _replace(expr, p, round(value * factor, 4))
        desc = f"changes the constant {value:.3g} to {value * factor:.3g}"
    try:
        symbolic.validate(new, VARIABLES)
    except symbolic.ExpressionError:
        return None
    return Candidate(new, cand.parent, cand.mutations + [desc], cand.kinds + [kind], cand.prior)


def seed_pool(template, archive_rows: list[dict], top_k: int = 4) -> list[Candidate]:
    pool = [Candidate(copy.deepcopy(b.expression), name) for name, b in template.baselines.items()
            if isinstance(b.expression, list)]
    seeds_file = template.text_dir / "seed_ideas.json"
    if seeds_file.exists():
        for s in json.loads(seeds_file.read_text()):
            if s["name"] not in template.baselines and s.get("expression") is not None:
                pool.append(Candidate(s["expression"], s["name"]))
    ranked = sorted((r for r in archive_rows if r.get("expression") is not None and r.get("advantage") is not None),
                    key=lambda r: r["advantage"], reverse=True)
    for row in ranked[:top_k]:
        try:
            symbolic.validate(row["expression"], VARIABLES)
        except symbolic.ExpressionError:
            continue
        pool.append(Candidate(row["expression"], row["idea"], prior=float(row["advantage"])))
    return pool


def known_behaviours(template, archive_rows: list[dict]) -> dict[str, np.ndarray]:
    known = {name: template.probe_text(b.source) for name, b in template.baselines.items()}
    for row in archive_rows:
        try:
            symbolic.validate(row.get("expression"), VARIABLES)
        except symbolic.ExpressionError:
            continue
        known[f"{row['idea']} ({row['run_id']})"] = behaviour(row["expression"])
    return known


def _score(c: Candidate, known: dict[str, np.ndarray]) -> tuple[float, float, str]:
    plaus, _ = plausibility(c.expr)
    if plaus == 0.0:
        return -1.0, 0.0, ""
    b = behaviour(c.expr)
    nearest, d = min(((k, distance(b, v)) for k, v in known.items()), key=lambda kv: kv[1])
    score = plaus * min(d, 0.5) / 0.5 - 0.01 * symbolic.size(c.expr) - 0.05 * len(c.mutations)
    return float(score + 0.5 * max(c.prior, 0.0)), d, nearest


def search(template, archive_rows: list[dict], num_ideas: int, generations: int, population: int,
           seed: int) -> list[tuple[Candidate, float, str, float]]:
    rng = np.random.default_rng(seed)
    known = known_behaviours(template, archive_rows)
    pool = seed_pool(template, archive_rows)
    parents = list(pool)
    seen = {symbolic.dumps(c.expr) for c in pool}
    offspring: list[Candidate] = []
    for _ in range(generations):
        children, attempts = [], 0
        while len(children) < population and attempts < population * 10:
            attempts += 1
            parent = parents[rng.integers(len(parents))]
            if len(parent.mutations) >= MAX_MUTATIONS:
                continue
            child = _mutate(parent, pool, rng)
            if child is None or symbolic.size(child.expr) > 40:
                continue
            key = symbolic.dumps(child.expr)
            if key in seen:
                continue
            seen.add(key)
            children.append(child)
        offspring += children
        ranked = sorted(children + parents, key=lambda c: _score(c, known)[0], reverse=True)
        parents = ranked[: max(4, population // 4)]
    scored = [(c, *_score(c, known)) for c in offspring]
    scored = [s for s in scored if s[1] > 0 and s[2] >= NOVELTY_THRESHOLD]
    scored.sort(key=lambda s: s[1], reverse=True)
    chosen: list[tuple[Candidate, float, str, float]] = []
    for c, score, d, nearest in scored:
        b = behaviour(c.expr)
        if all(distance(b, behaviour(o.expr)) >= DIVERSITY for o, *_ in chosen):
            chosen.append((c, d, nearest, score))
        if len(chosen) == num_ideas:
            break
    return chosen


def _env(template) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(template.text_dir), undefined=jinja2.StrictUndefined)


def render_idea(template, profile, cand: Candidate, d: float, nearest: str, score: float, used: set[str]) -> dict:
    env = _env(template)
    words = [HEADLINES[k] for k in dict.fromkeys(cand.kinds) if k in HEADLINES] or ["Variant"]
    parent_label = template.baseline_labels.get(cand.parent, cand.parent.replace("_", " "))
    headline = f"{' '.join(words)} {parent_label}"
    base = "_".join(w.lower() for w in words) + f"_{cand.parent}"
    name, i = base, 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    plaus, notes = plausibility(cand.expr)
    size = symbolic.size(cand.expr)
    novelty = int(np.clip(1 + round(9 * min(1.0, d / 1.5)), 1, 10))
    settings = [template.setting(s) for s in profile.settings]
    ctx = {
        "headline": headline, "parent_label": parent_label, "mutations": cand.mutations, "distance": d,
        "nearest": nearest, "profile": profile,
        "expression": symbolic.to_source_expr(cand.expr, {"z": ("z", "z")}).replace("jnp.", "").replace("jax.nn.", ""),
        "settings_train": ", ".join(s.description for s in settings if not s.held_out),
        "settings_held_out": ", ".join(s.description for s in settings if s.held_out) or "none",
        "baselines": ", ".join(template.baseline_labels[b] for b in profile.baselines),
    }
    return {
        "Name": name,
        "Title": env.get_template("idea_title.j2").render(ctx).strip(),
        "Hypothesis": env.get_template("idea_hypothesis.j2").render(ctx).strip(),
        "Experiment": env.get_template("idea_experiment.j2").render(ctx).strip(),
        "Interestingness": int(np.clip(round(0.5 * novelty + 3 + 4 * max(cand.prior, 0.0)), 1, 10)),
        "Feasibility": int(np.clip(10 - size // 6 - (0 if plaus >= 1.0 else 2), 1, 10)),
        "Novelty": novelty,
        "kind": "source",
        "expression": cand.expr,
        "expression_latex": symbolic.to_latex(cand.expr, VARIABLES),
        "parent": cand.parent,
        "mutations": cand.mutations,
        "search": {"score": score, "distance": d, "nearest": nearest, "plausibility": plaus, "notes": notes},
        "backend": "offline",
    }


def propose(template, profile, archive_rows: list[dict], num_ideas: int, seed: int) -> list[dict]:
    """The template's offline ideation: ``num_ideas`` losses from the symbolic search, seeded by ``seed``."""
    chosen = search(template, archive_rows, num_ideas, profile.search_generations, profile.search_population, seed)
    used: set[str] = set(template.baselines)
    return [render_idea(template, profile, c, d, nearest, score, used) for c, d, nearest, score in chosen]


def render(template, idea: dict) -> str:
    """The offline code stage: the idea's expression in z rendered as ``preference_loss(rho, beta)`` source."""
    return symbolic.render_source(idea["expression"], template.plugin.name, doc=idea.get("Title"), args=ARGS,
                                  variables=VARIABLES)
