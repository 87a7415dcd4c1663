"""The ``lpo`` template's offline search: an evolutionary symbolic search over drift expressions.

The search starts from the template's baselines, its seed ideas (``prompts/templates/lpo/seed_ideas.json``) and
the best candidates of earlier runs (the archive); it mutates expressions (retuned constants, progress-dependent
schedules as in TA-LPO, asymmetric clip ranges, added penalty terms, split-advantage crossovers, tanh saturation)
and ranks them by a cheap proxy computed on a probe grid of (r, A, n/N): plausibility as a drift (finite, >= 0,
zero at r = 1, actually constraining the ratio), behavioural novelty against everything known, simplicity, and
the measured advantage of its parent in the archive. It does not train agents: the experiments stage does. Each
idea's text is rendered from its expression and mutation history with the Jinja2 files of the template's text
folder.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import jinja2
import numpy as np

from jaxlib_kernels import symbolic
from jaxlib_kernels.templates.lpo.expressions import PPO_CLIP

NOVELTY_THRESHOLD = 0.1  # below this behavioural distance (in PPO-clip units) an idea counts as a known drift
DIVERSITY = 0.25  # two ideas of one run differ at least this much
MAX_MUTATIONS = 3

_R = np.exp(np.linspace(np.log(0.5), np.log(2.0), 25))[:, None, None]
_A = np.linspace(-2.0, 2.0, 17)[None, :, None]
_P = np.array([0.0, 0.5, 1.0])[None, None, :]
_EDGE_R = np.array([1e-3, 1.0, 50.0])[:, None, None]

SCHEDULES = [
    (["sub", 1.0, "p"], "weakens as training progresses (factor 1 - n/N)", "Annealed"),
    (["add", 0.5, "p"], "tightens as training progresses (factor 0.5 + n/N)", "Tightening"),
    (["add", 1.0, ["mul", 2.0, "p"]], "grows threefold over training (factor 1 + 2 n/N)", "Progress-scaled"),
]
PENALTIES = [
    (["sq", "logr"], "a quadratic log-ratio penalty"),
    (["mul", ["abs", "A"], ["sq", "omr"]], "an advantage-weighted quadratic penalty on r - 1"),
    (["relu", ["mul", ["neg", "omr"], "A"]], "a penalty on moving the ratio in the advantage's direction"),
]
HEADLINES = {
    "const": "Retuned", "asym": "Asymmetric", "penalty": "Penalised", "crossover": "Split-advantage",
    "saturate": "Saturating", "magnitude": "Magnitude-weighted", "nonneg": "Rectified",
}


@dataclass
class Candidate:
    expr: object
    parent: str
    mutations: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    prior: float = 0.0  # measured advantage of the parent over the best baseline (archive), 0 if unknown


def behaviour(expr) -> np.ndarray:
    """The drift's values on the probe grid, flattened (numpy evaluation of the tree)."""
    return symbolic.evaluate_numpy(expr, _R, _A, _P).reshape(-1)


def behaviour_of(fn) -> np.ndarray:
    """The values of any drift ``fn(r, A, p)`` (numpy arrays of the full grid's shape in, an array out) on the probe
    grid, flattened like :func:`behaviour`: a learned drift's behaviour, for distillation into a formula."""
    r, a, p = np.broadcast_arrays(_R, _A, _P)
    return np.asarray(fn(r, a, p), np.float64).reshape(-1)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


# the scale of behaviours: PPO clip's RMS drift on the probe grid
SCALE = _rms(symbolic.evaluate_numpy(PPO_CLIP, _R, _A, _P))


def distance(f: np.ndarray, g: np.ndarray) -> float:
    """Behavioural distance: RMS difference on the probe grid in units of PPO clip's RMS drift."""
    return _rms(np.asarray(f) - np.asarray(g)) / SCALE


def plausibility(expr) -> tuple[float, list[str]]:
    """A score in [0, 1] for how much the tree behaves like a drift, and the reasons it loses points."""
    values = symbolic.evaluate_numpy(expr, _R, _A, _P)
    edge = symbolic.evaluate_numpy(expr, _EDGE_R, _A, _P)
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(edge))):
        return 0.0, ["not finite on the probe grid"]
    score, notes = 1.0, []
    if values.min() < -1e-9:
        return 0.0, ["negative somewhere"]
    at_one = symbolic.evaluate_numpy(expr, np.ones((1, 1, 1)), _A, _P)
    if np.abs(at_one).max() > 1e-6:
        score *= 0.5
        notes.append("not zero at r = 1")
    far = values[[0, -1]].mean()
    if far < 0.05:
        score *= 0.3
        notes.append("barely constrains the ratio")
    if values.max() > 1e3:
        score *= 0.5
        notes.append("very large values")
    return score, notes


# ---- mutations --------------------------------------------------------------------------------------------


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


def _mutate(cand: Candidate, pool: list[Candidate], rng: np.random.Generator) -> Candidate | None:
    expr = cand.expr
    nodes = list(_paths(expr))
    clips = [(p, n) for p, n in nodes if isinstance(n, list) and n[0] == "clip"]
    consts = [(p, n) for p, n in nodes if isinstance(n, float) and p and not _parent_is(expr, p, "clip")]
    kinds = ["schedule", "penalty", "crossover", "saturate", "magnitude"]
    if clips:
        kinds += ["asym", "asym"]
    if consts:
        kinds += ["const"]
    kind = str(rng.choice(kinds))
    if kind == "schedule":
        if symbolic.uses(expr, "p"):
            return None
        sched, text, _ = SCHEDULES[rng.integers(len(SCHEDULES))]
        new, desc = ["mul", sched, expr], f"is scaled so that the trust region {text}"
    elif kind == "penalty":
        term, text = PENALTIES[rng.integers(len(PENALTIES))]
        c = float(rng.choice([0.1, 0.25, 0.5, 1.0]))
        new, desc = ["add", expr, ["mul", c, term]], f"gains {text} with weight {c:g}"
    elif kind == "crossover":
        other = pool[rng.integers(len(pool))]
        if other.expr == expr or symbolic.dumps(other.expr) == symbolic.dumps(expr):
            return None
        if rng.random() < 0.5:
            new, desc = ["ifpos", "A", expr, other.expr], f"keeps its form for positive advantages and takes {other.parent}'s for negative ones"
        else:
            new, desc = ["ifpos", "A", other.expr, expr], f"takes {other.parent}'s form for positive advantages and keeps its own for negative ones"
    elif kind == "saturate":
        c = float(rng.choice([0.5, 1.0, 2.0]))
        new, desc = ["mul", c, ["tanh", ["mul", 1.0 / c, expr]]], f"is saturated at {c:g} with tanh"
    elif kind == "magnitude":
        leaves = [p for p, n in nodes if n == "A" and p and not _parent_is(expr, p, "abs")]
        if not leaves:
            return None
        p = leaves[rng.integers(len(leaves))]
        new, desc = _replace(expr, p, ["abs", "A"]), "uses the advantage's magnitude |A| in place of A in one term"
    elif kind == "asym":
        p, node = clips[rng.integers(len(clips))]
        lo, hi = node[2], node[3]
        if rng.random() < 0.5:
            lo = float(np.clip(1.0 - (1.0 - lo) * rng.choice([0.5, 1.5, 2.0]), 0.05, 0.99))
        else:
            hi = float(1.0 + (hi - 1.0) * rng.choice([0.5, 1.5, 2.0]))
        new = _replace(expr, p, ["clip", node[1], round(lo, 4), round(hi, 4)])
        desc = f"clips the ratio to the asymmetric range [{lo:.3g}, {hi:.3g}]"
    else:  # const
        p, value = consts[rng.integers(len(consts))]
        factor = float(rng.choice([0.5, 0.75, 1.5, 2.0]))
        new = _replace(expr, p, round(value * factor, 4))
        desc = f"changes the constant {value:.3g} to {value * factor:.3g}"
    try:
        symbolic.validate(new)
    except symbolic.ExpressionError:
        return None
    mutations, kinds_done = cand.mutations + [desc], cand.kinds + [kind]
    if symbolic.evaluate_numpy(new, _R, _A, _P).min() < -1e-9:
        new = ["relu", new]
        mutations.append("is rectified with a ReLU to stay non-negative")
        kinds_done.append("nonneg")
    return Candidate(new, cand.parent, mutations, kinds_done, cand.prior)


def _parent_is(expr, path, op: str) -> bool:
    node = expr
    for i in path[:-1]:
        node = node[i]
    return isinstance(node, list) and node[0] == op


# ---- the search ---------------------------------------------------------------------------------------------


def seed_pool(template, archive_rows: list[dict], top_k: int = 4) -> list[Candidate]:
    """Baselines, the template's seed ideas and the best archived candidates (by measured advantage)."""
    pool = [Candidate(copy.deepcopy(b.expression), name) for name, b in template.baselines.items()
            if isinstance(b.expression, list)]
    seeds_file = template.text_dir / "seed_ideas.json"
    if seeds_file.exists():
        for s in json.loads(seeds_file.read_text()):
            if s["name"] not in template.baselines:
                pool.append(Candidate(s["expression"], s["name"]))
    ranked = sorted(
        (r for r in archive_rows if r.get("expression") is not None and r.get("advantage") is not None),
        key=lambda r: r["advantage"], reverse=True,
    )
    for row in ranked[:top_k]:
        pool.append(Candidate(row["expression"], row["idea"], prior=float(row["advantage"])))
    return pool


def known_behaviours(template, archive_rows: list[dict]) -> dict[str, np.ndarray]:
    known = {name: behaviour(b.expression) for name, b in template.baselines.items() if b.expression is not None}
    for row in archive_rows:
        if row.get("expression") is not None:
            known[f"{row['idea']} ({row['run_id']})"] = behaviour(row["expression"])
    return known


def _score(c: Candidate, known: dict[str, np.ndarray]) -> tuple[float, float, str]:
    plaus, _ = plausibility(c.expr)
    if plaus == 0.0:
        return -1.0, 0.0, ""
    b = behaviour(c.expr)
    nearest, d = min(((k, distance(b, v)) for k, v in known.items()), key=lambda kv: kv[1])
    score = plaus * min(d, 0.5) / 0.5 - 0.01 * symbolic.size(c.expr) - 0.05 * len(c.mutations)
    score += 0.5 * max(c.prior, 0.0)
    return float(score), d, nearest


def search(template, archive_rows: list[dict], num_ideas: int, generations: int, population: int,
           seed: int) -> list[tuple[Candidate, float, str, float]]:
    """Evolve expressions; return ``num_ideas`` distinct novel candidates as (candidate, distance, nearest, score)."""
    rng = np.random.default_rng(seed)
    known = known_behaviours(template, archive_rows)
    pool = seed_pool(template, archive_rows)
    parents = list(pool)
    seen = {symbolic.dumps(c.expr) for c in pool}
    offspring: list[Candidate] = []
    for _ in range(generations):
        children = []
        attempts = 0
        while len(children) < population and attempts < population * 10:
            attempts += 1
            parent = parents[rng.integers(len(parents))]
            if len(parent.mutations) >= MAX_MUTATIONS:
                continue
            child = _mutate(parent, pool, rng)
            if child is None or symbolic.size(child.expr) > 60:
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


# ---- text ------------------------------------------------------------------------------------------------------


def _env(template) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(template.text_dir),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
    )


def render_idea(template, profile, cand: Candidate, d: float, nearest: str, score: float,
                used_names: set[str], screening: dict | None = None) -> dict:
    """An idea in the AI Scientist's JSON shape, its text rendered from the expression and mutation history."""
    env = _env(template)
    temporal = symbolic.uses(cand.expr, "p")
    words = [HEADLINES[k] for k in dict.fromkeys(cand.kinds) if k in HEADLINES]
    if temporal:
        words.insert(0, next(w for s, _, w in SCHEDULES if _contains(cand.expr, s)) if any(
            _contains(cand.expr, s) for s, _, _ in SCHEDULES) else "Progress-aware")
    headline = " ".join(dict.fromkeys(words)) or "Variant"
    parent_label = template.baseline_labels.get(cand.parent, cand.parent.replace("_", " ")).removesuffix(" drift")
    headline = f"{headline} {parent_label}"
    name = symbolic_name = "_".join(w.lower().replace("-", "_") for w in dict.fromkeys(words)) + f"_{cand.parent}"
    i = 2
    while name in used_names:
        name, i = f"{symbolic_name}_{i}", i + 1
    used_names.add(name)
    size = symbolic.size(cand.expr)
    plaus, notes = plausibility(cand.expr)
    novelty = int(np.clip(1 + round(9 * min(1.0, d / 1.5)), 1, 10))
    feasibility = int(np.clip(10 - size // 6 - (0 if plaus >= 1.0 else 2), 1, 10))
    beats = bool(screening) and screening["fitness"] > max(screening["baselines"].values(), default=-np.inf)
    interestingness = int(np.clip(round(0.5 * novelty + 3 + 2 * temporal + 4 * max(cand.prior, 0.0) + 2 * beats),
                                  1, 10))
    best_base = max(screening["baselines"], key=screening["baselines"].get) if screening else None
    settings = [template.setting(s) for s in profile.settings]
    ctx = {
        "headline": headline, "temporal": temporal, "parent_label": parent_label, "mutations": cand.mutations,
        "distance": d, "nearest": nearest, "profile": profile,
        "expression": symbolic.to_source_expr(cand.expr).replace("jnp.", "").replace("jax.nn.", ""),
        "settings_train": ", ".join(s.description for s in settings if not s.held_out),
        "settings_held_out": ", ".join(s.description for s in settings if s.held_out) or "none",
        "baselines": ", ".join(template.baseline_labels[b] for b in profile.baselines),
        "screening": screening, "screen_setting": template.setting(screening["setting"]).description
        if screening else None, "screen_best": template.baseline_labels[best_base] if screening else None,
        "screen_best_fitness": screening["baselines"][best_base] if screening else None,
    }
    return {
        "Name": name,
        "Title": env.get_template("idea_title.j2").render(ctx).strip(),
        "Hypothesis": env.get_template("idea_hypothesis.j2").render(ctx).strip(),
        "Experiment": env.get_template("idea_experiment.j2").render(ctx).strip(),
        "Interestingness": interestingness,
        "Feasibility": feasibility,
        "Novelty": novelty,
        "kind": "source",
        "expression": cand.expr,
        "expression_latex": symbolic.to_latex(cand.expr),
        "parent": cand.parent,
        "mutations": cand.mutations,
        "search": {"score": score, "distance": d, "nearest": nearest, "plausibility": plaus, "notes": notes},
        **({"screening": screening} if screening else {}),
        "backend": "offline",
    }


def _contains(expr, sub) -> bool:
    return any(node == sub for _, node in _paths(expr))


SCREEN_SEED_OFFSET = 10_000  # screening seeds: never the experiments' seeds (0, 1, ...), so no selection bias there


def screen(template, profile, chosen: list, num_ideas: int) -> tuple[list, dict]:
    """Rank the proxy's shortlist by real fitness: every shortlisted drift and every baseline of the profile trained
    (the template's ``discovery.train_programs``: PPO for ``lpo``) on the training setting at
    ``profile.screen_budget`` steps and ``profile.screen_seeds`` seeds, all in one population call of a fixed shape (the shortlist padded to ``num_ideas * screen_pool`` with PPO clip),
    so a second ideation of the same profile compiles nothing. Returns the ``num_ideas`` fittest shortlisted
    candidates (ties keep the proxy's order) and the screening record (fitness of every member, seeds, budget)."""
    from jaxlib_kernels import discovery

    setting = template.training_setting(profile)
    baselines = list(profile.baselines)
    size = num_ideas * profile.screen_pool
    members = [c.expr for c, *_ in chosen][:size]
    padded = members + [PPO_CLIP] * (size - len(members)) + [template.baselines[b].expression for b in baselines]
    evaluate = discovery.training_evaluator(template, setting, profile.screen_budget, profile.screen_seeds,
                                            discovery.SearchConfig(), seed_offset=SCREEN_SEED_OFFSET)
    fitness = np.asarray(evaluate(padded, 0), dtype=np.float64)
    order = sorted(range(len(members)), key=lambda i: -fitness[i])  # stable: the proxy's order breaks ties
    record = {
        "setting": setting.name, "budget": profile.screen_budget,
        "seeds": list(range(SCREEN_SEED_OFFSET, SCREEN_SEED_OFFSET + profile.screen_seeds)),
        "shortlist": [{"expression": symbolic.dumps(members[i]), "fitness": float(fitness[i]),
                       "proxy_rank": i + 1} for i in order],
        "baselines": {b: float(f) for b, f in zip(baselines, fitness[size:])},
    }
    return [(chosen[i], float(fitness[i]), rank + 1) for rank, i in enumerate(order[:num_ideas])], record


def propose(template, profile, archive_rows: list[dict], num_ideas: int, seed: int) -> list[dict]:
    """The template's offline ideation: ``num_ideas`` ideas from the symbolic search, seeded by ``seed``.

    With ``profile.screen_budget`` > 0 the search's proxy only shortlists (``screen_pool`` ideas per idea wanted,
    mutually diverse and novel); :func:`screen` trains the shortlist and the ideas are its fittest members."""
    wanted = num_ideas * profile.screen_pool if profile.screen_budget else num_ideas
    chosen = search(template, archive_rows, wanted, profile.search_generations, profile.search_population, seed)
    if profile.screen_budget:
        picked, record = screen(template, profile, chosen, num_ideas)
        chosen = [c for c, _, _ in picked]
        screenings = [{**record, "fitness": fitness, "rank": rank} for _, fitness, rank in picked]
    else:
        screenings = [None] * len(chosen)
    used: set[str] = set(template.baselines)
    return [render_idea(template, profile, c, d, nearest, score, used, screening=s)
            for (c, d, nearest, score), s in zip(chosen, screenings)]


def render(template, idea: dict) -> str:
    """The offline code stage: the idea's expression rendered as plug-in source."""
    return symbolic.render_source(idea["expression"], template.plugin.name, doc=idea.get("Title"))
