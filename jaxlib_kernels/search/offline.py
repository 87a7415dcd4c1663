"""The offline proposal loop every template's ideation shares, and the rendering of its ideas.

:func:`evolve` mutates a pool of parents for some generations and keeps the best by a cheap proxy;
:func:`choose` keeps the best novel children that differ from one another. For a formula language
(:class:`~jaxlib_kernels.search.language.FormulaLanguage`) the rest is generic too: :func:`seed_pool` (baselines,
seed ideas, the best archived candidates), :func:`proxy_score` (plausibility, novelty, simplicity, the parent's
measured advantage), :func:`search`, :func:`screen` (the proxy's shortlist ranked by real training), :func:`propose`
(the template's offline ideation) and :func:`render_idea` (an idea's text from its tree and mutation history, with
the Jinja2 files of the template's text folder). The search trains nothing unless it screens.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import jinja2
import numpy as np

from jaxlib_kernels import discovery, symbolic
from jaxlib_kernels.search.candidates import Candidate
from jaxlib_kernels.search.known import nearest as nearest_known

SCREEN_SEED_OFFSET = 10_000  # screening seeds: never the experiments' seeds (0, 1, ...), so no selection bias there


# ---- the loop (any candidate with a ``mutations`` list) -----------------------------------------------------------


def evolve(pool: list, mutate: Callable, fitness: Callable[[object], float], key: Callable[[object], str],
           generations: int, population: int, rng: np.random.Generator, *, max_mutations: int = 3,
           seen: set[str] | None = None, offspring: list | None = None) -> list:
    """``generations`` rounds of up to ``population`` new children (``mutate(parent, pool, rng)``, None: refused;
    a parent with ``max_mutations`` changes has no child; a ``key`` already seen is dropped); the parents of the
    next round are the best ``max(4, population // 4)`` of children and parents by ``fitness``. Returns every
    child (after ``offspring``, the candidates that count as children from the start)."""
    parents = list(pool)
    seen = {key(c) for c in pool} | set(seen or ())
    offspring = list(offspring or [])
    for _ in range(generations):
        children, attempts = [], 0
        while len(children) < population and attempts < population * 10:
            attempts += 1
            parent = parents[rng.integers(len(parents))]
            if len(parent.mutations) >= max_mutations:
                continue
            child = mutate(parent, pool, rng)
            if child is None:
                continue
            k = key(child)
            if k in seen:
                continue
            seen.add(k)
            children.append(child)
        offspring += children
        ranked = sorted(children + parents, key=fitness, reverse=True)
        parents = ranked[: max(4, population // 4)]
    return offspring


def choose(scored: list[tuple], num_ideas: int, threshold: float, diversity: float,
           distance: Callable[[object, object], float], positive: bool = True) -> list[tuple]:
    """From ``(candidate, score, distance to the nearest known, nearest)`` rows: the best-scoring ones at least
    ``threshold`` from everything known (and, with ``positive``, of positive score) that lie ``diversity`` apart
    (``distance(a, b)`` between candidates), as ``(candidate, distance, nearest, score)``."""
    rows = [s for s in scored if (s[1] > 0 or not positive) and s[2] >= threshold]
    rows.sort(key=lambda s: s[1], reverse=True)
    chosen: list[tuple] = []
    for c, score, d, nearest in rows:
        if all(distance(c, o) >= diversity for o, *_ in chosen):
            chosen.append((c, d, nearest, score))
        if len(chosen) == num_ideas:
            break
    return chosen


# ---- formula languages ---------------------------------------------------------------------------------------------


def seed_pool(template, archive_rows: list[dict], language, top_k: int = 4) -> list[Candidate]:
    """Baselines with a tree, the template's seed ideas and the best archived candidates (by measured advantage)
    whose trees are of ``language``."""
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
        if language.valid(row["expression"]):
            pool.append(Candidate(row["expression"], row["idea"], prior=float(row["advantage"])))
    return pool


def proxy_score(c: Candidate, known: dict[str, np.ndarray], language) -> tuple[float, float, str]:
    """(score, distance to the nearest known behaviour, its name): plausibility times novelty (saturating at 0.5),
    minus size and mutation count, plus half the parent's measured advantage; -1 for an implausible tree."""
    plaus, _ = language.plausibility(c.expr)
    if plaus == 0.0:
        return -1.0, 0.0, ""
    nearest, d = nearest_known(language.behaviour(c.expr), known, language.distance)
    score = plaus * min(d, 0.5) / 0.5 - 0.01 * symbolic.size(c.expr) - 0.05 * len(c.mutations)
    score += 0.5 * max(c.prior, 0.0)
    return float(score), d, nearest


def search(template, archive_rows: list[dict], num_ideas: int, generations: int, population: int, seed: int,
           language) -> list[tuple[Candidate, float, str, float]]:
    """Evolve trees of ``language``; ``num_ideas`` distinct novel candidates as (candidate, distance, nearest,
    score)."""
    rng = np.random.default_rng(seed)
    known = language.known(template, archive_rows)

    def mutate(parent, pool, rng):
        child = language.mutate(parent, pool, rng)
        return None if child is None or symbolic.size(child.expr) > language.max_size else child

    pool = seed_pool(template, archive_rows, language)
    offspring = evolve(pool, mutate, lambda c: proxy_score(c, known, language)[0], lambda c: symbolic.dumps(c.expr),
                       generations, population, rng, max_mutations=language.max_mutations)
    scored = [(c, *proxy_score(c, known, language)) for c in offspring]
    return choose(scored, num_ideas, language.novelty_threshold, language.diversity,
                  lambda a, b: language.distance(language.behaviour(a.expr), language.behaviour(b.expr)))


def screen(template, profile, chosen: list, num_ideas: int) -> tuple[list, dict]:
    """Rank the proxy's shortlist by real fitness: every shortlisted tree and every baseline of the profile trained
    (the template's ``discovery.train_programs``) on the training setting at ``profile.screen_budget`` and
    ``profile.screen_seeds`` seeds, all in one population call of a fixed shape (the shortlist padded to
    ``num_ideas * screen_pool`` with the language's ``filler``), so a second ideation of the same profile compiles
    nothing. Returns the ``num_ideas`` best shortlisted candidates in the metric's direction (ties keep the proxy's
    order) and the screening record (fitness of every member, seeds, budget)."""
    language = template.discovery.language
    setting = template.training_setting(profile)
    baselines = list(profile.baselines)
    size = num_ideas * profile.screen_pool
    members = [c.expr for c, *_ in chosen][:size]
    padded = members + [language.filler] * (size - len(members)) + [template.baselines[b].expression for b in baselines]
    evaluate = discovery.training_evaluator(template, setting, profile.screen_budget, profile.screen_seeds,
                                            discovery.SearchConfig(), seed_offset=SCREEN_SEED_OFFSET)
    fitness = np.asarray(evaluate(padded, 0), dtype=np.float64)
    order = template.metric.rank({i: fitness[i] for i in range(len(members))})  # stable: proxy order breaks ties
    record = {
        "setting": setting.name, "budget": profile.screen_budget,
        "seeds": list(range(SCREEN_SEED_OFFSET, SCREEN_SEED_OFFSET + profile.screen_seeds)),
        "shortlist": [{"expression": symbolic.dumps(members[i]), "fitness": float(fitness[i]),
                       "proxy_rank": i + 1} for i in order],
        "baselines": {b: float(f) for b, f in zip(baselines, fitness[size:])},
    }
    return [(chosen[i], float(fitness[i]), rank + 1) for rank, i in enumerate(order[:num_ideas])], record


def propose(template, profile, archive_rows: list[dict], num_ideas: int, seed: int, language) -> list[dict]:
    """A template's offline ideation in ``language``: ``num_ideas`` ideas from :func:`search`, seeded by ``seed``.

    With ``profile.screen_budget`` > 0 the search's proxy only shortlists (``screen_pool`` ideas per idea wanted,
    mutually diverse and novel); :func:`screen` trains the shortlist and the ideas are its best members."""
    wanted = num_ideas * profile.screen_pool if profile.screen_budget else num_ideas
    chosen = search(template, archive_rows, wanted, profile.search_generations, profile.search_population, seed,
                    language)
    if profile.screen_budget:
        picked, record = screen(template, profile, chosen, num_ideas)
        chosen = [c for c, _, _ in picked]
        screenings = [{**record, "fitness": fitness, "rank": rank} for _, fitness, rank in picked]
    else:
        screenings = [None] * len(chosen)
    used: set[str] = set(template.baselines)
    return [render_idea(template, profile, language, c, d, nearest, score, used, screening=s)
            for (c, d, nearest, score), s in zip(chosen, screenings)]


# ---- text -----------------------------------------------------------------------------------------------------------


def text_env(template) -> jinja2.Environment:
    """The Jinja2 environment of the template's text folder (undefined names are errors)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(template.text_dir), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=False)


def unique_name(base: str, used: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``, ... if taken; the name is added to ``used``."""
    name, i = base, 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


def profile_context(template, profile) -> dict:
    """What every idea text says of the run: the profile, its training and held-out settings, its baselines."""
    settings = [template.setting(s) for s in profile.settings]
    return {
        "profile": profile,
        "settings_train": ", ".join(s.description for s in settings if not s.held_out),
        "settings_held_out": ", ".join(s.description for s in settings if s.held_out) or "none",
        "baselines": ", ".join(template.baseline_labels[b] for b in profile.baselines),
    }


def idea_text(env: jinja2.Environment, ctx: dict) -> dict:
    """The idea's Title, Hypothesis and Experiment from the template's ``idea_*.j2`` files."""
    return {key.title(): env.get_template(f"idea_{key}.j2").render(ctx).strip()
            for key in ("title", "hypothesis", "experiment")}


def render_idea(template, profile, language, cand: Candidate, d: float, nearest: str, score: float,
                used: set[str], screening: dict | None = None) -> dict:
    """An idea in the AI Scientist's JSON shape, its text rendered from the tree and mutation history."""
    words = [language.headlines[k] for k in dict.fromkeys(cand.kinds) if k in language.headlines]
    extra, bonus = {}, 0
    if language.describe is not None:
        words, extra, bonus = language.describe(cand, words)
    words = list(dict.fromkeys(words)) or ["Variant"]
    parent_label = template.baseline_labels.get(cand.parent, cand.parent.replace("_", " "))
    parent_label = parent_label.removesuffix(language.label_suffix) if language.label_suffix else parent_label
    name = unique_name("_".join(w.lower().replace("-", "_") for w in words) + f"_{cand.parent}", used)
    size = symbolic.size(cand.expr)
    plaus, notes = language.plausibility(cand.expr)
    novelty = int(np.clip(1 + round(9 * min(1.0, d / 1.5)), 1, 10))
    feasibility = int(np.clip(10 - size // 6 - (0 if plaus >= 1.0 else 2), 1, 10))
    beats = False  # the screening found it better than every baseline of the profile
    if screening:
        base = screening["baselines"]
        beats = not base or template.metric.improvement(screening["fitness"], base[template.metric.best(base)]) > 0
    interestingness = int(np.clip(round(0.5 * novelty + 3 + bonus + 4 * max(cand.prior, 0.0) + 2 * beats), 1, 10))
    best_base = template.metric.best(screening["baselines"]) if screening else None
    ctx = {
        "headline": f"{' '.join(words)} {parent_label}", "parent_label": parent_label, "mutations": cand.mutations,
        "distance": d, "nearest": nearest, **profile_context(template, profile), **extra,
        "expression": symbolic.to_source_expr(cand.expr, language.idea_variables).replace("jnp.", "")
        .replace("jax.nn.", ""),
        "screening": screening, "screen_setting": template.setting(screening["setting"]).description
        if screening else None, "screen_best": template.baseline_labels[best_base] if screening else None,
        "screen_best_fitness": screening["baselines"][best_base] if screening else None,
    }
    return {
        "Name": name,
        **idea_text(text_env(template), ctx),
        "Interestingness": interestingness,
        "Feasibility": feasibility,
        "Novelty": novelty,
        "kind": "source",
        "expression": cand.expr,
        "expression_latex": symbolic.to_latex(cand.expr, language.variables),
        "parent": cand.parent,
        "mutations": cand.mutations,
        "search": {"score": score, "distance": d, "nearest": nearest, "plausibility": plaus, "notes": notes},
        **({"screening": screening} if screening else {}),
        "backend": "offline",
    }
