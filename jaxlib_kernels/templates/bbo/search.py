"""The ``bbo`` template's offline search: evolve rules of the parametric family (:mod:`.rules`) by measuring them.

Unlike the symbolic searches of other templates, an update rule is cheap to measure, so the search *runs* it: every
generation of the search evaluates its whole population of rules in one compiled call (the rule's parameters are
traced arrays, vmapped over rules, seeds and functions) on the profile's first training setting, with search seeds
(1000 + i) that the experiments never use and a fifth of the profile's budget. Held-out settings are never seen.
Parents are the family's default rule (the ``recomb_snes`` baseline), the seed ideas
(``prompts/templates/bbo/seed_ideas.json``) and archived candidates with family parameters; children change one or
two parameters. The ideas are the best measured rules that are behaviourally novel (probe distance at least the
template's threshold from every baseline and archived candidate) and differ from one another.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import jinja2
import numpy as np

from jaxlib_kernels.search.known import nearest as closest
from jaxlib_kernels.search.known import probed
from jaxlib_kernels.templates.bbo import kernel, rules

NOVELTY_THRESHOLD = 0.05
PROBE_SCALE = 1.0  # probe entries are mean steps in units of std and log std ratios
DIVERSITY = 0.05
SEARCH_SEEDS = (1000, 1001)
FACTORS = {"elite": (0.5, 0.7, 1.4, 2.0), "lr_mean": (0.5, 0.75, 1.25, 1.5), "lr_std": (0.3, 0.5, 1.5, 2.0, 3.0)}
ANNEALS = (0.0, 0.01, 0.03)


@functools.lru_cache(maxsize=16)
def _batched(config: kernel.BBOConfig):
    """jit(vmap over rules) of the family's unit run: one compile per configuration and population size."""

    def one(theta, setup, fns):
        update = functools.partial(rules.family_update, theta)
        run = kernel.make_run(update, config)
        return jax.vmap(jax.vmap(run, in_axes=(0, 0)), in_axes=(0, None))(setup, fns)["best"]

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def measure(params_list: list[dict], config: kernel.BBOConfig, seeds=SEARCH_SEEDS) -> np.ndarray:
    """Mean final log10 regret of each rule over seeds and the configuration's functions (one call)."""
    thetas = [rules.as_arrays(p) for p in params_list]
    theta = jax.tree.map(lambda *x: jnp.stack(x), *thetas)
    fns = jnp.arange(len(config.functions), dtype=jnp.int32)
    setup = kernel.setup_of(config, True, np.asarray(seeds, dtype=np.int32), fns)
    best = np.asarray(_batched(config)(theta, setup, fns))  # (R, S, F, G)
    return kernel.log_regret(best[..., -1]).mean(axis=(1, 2))


def _key(p: dict) -> str:
    return json.dumps(rules.normalise(p), sort_keys=True)


def mutate(p: dict, rng: np.random.Generator) -> tuple[dict, list[str]]:
    child, notes = dict(rules.normalise(p)), []
    for _ in range(int(rng.integers(1, 3))):
        kind = str(rng.choice(["elite", "lr_mean", "lr_std", "weights", "std_rule", "anneal"]))
        if kind in FACTORS:
            f = float(rng.choice(FACTORS[kind]))
            old = child[kind]
            child[kind] = old * f if old else 0.1 * f
            child = rules.normalise(child)
            notes.append(f"changes {kind} from {old:g} to {child[kind]:g}")
        elif kind == "weights":
            new = str(rng.choice([w for w in rules.WEIGHTS if w != child["weights"]]))
            notes.append(f"uses {new} recombination weights instead of {child['weights']}")
            child["weights"] = new
        elif kind == "std_rule":
            new = str(rng.choice([s for s in rules.STD_RULES if s != child["std_rule"]]))
            notes.append(f"adapts std by the {new} rule instead of {child['std_rule']}")
            child["std_rule"] = new
        else:
            new = float(rng.choice([a for a in ANNEALS if a != child["anneal"]]))
            notes.append(f"anneals std by the factor 1 - {new:g} n/N each generation" if new
                         else "drops the std annealing")
            child["anneal"] = new
    return rules.normalise(child), notes


def parents(template, archive_rows: list[dict]) -> list[tuple[str, dict, list[str]]]:
    pool = [("recomb_snes", rules.normalise(rules.DEFAULT), [])]
    seeds_file = template.text_dir / "seed_ideas.json"
    if seeds_file.exists():
        for s in json.loads(seeds_file.read_text()):
            pool.append((s["name"], rules.normalise(s["params"]), [s["idea"]]))
    ranked = sorted((r for r in archive_rows if r.get("params") and r.get("advantage") is not None),
                    key=lambda r: r["advantage"], reverse=True)
    pool += [(r["idea"], rules.normalise(r["params"]), []) for r in ranked[:4]]
    return pool


def search(template, profile, archive_rows, num_ideas: int, seed: int) -> list[dict]:
    """Measured evolution of family rules; ``num_ideas`` novel, distinct rules with their scores and notes."""
    setting = template.training_setting(profile)
    budget = max(10, profile.budget_of(setting) // 5)
    config = template.kernel_config(setting, budget)
    rng = np.random.default_rng(seed)
    pool = parents(template, archive_rows)
    size = max(4, profile.search_population // 4)
    known = probed(template, archive_rows, row_key=lambda r: f"archived {r['idea']}")
    scores: dict[str, float] = {}
    entries: dict[str, dict] = {}
    current = [{"parent": n, "params": p, "notes": notes} for n, p, notes in pool]
    for _ in range(max(1, profile.search_generations)):
        children = []
        for _ in range(size):
            par = current[int(rng.integers(len(current)))]
            params, notes = mutate(par["params"], rng)
            children.append({"parent": par["parent"], "params": params, "notes": par["notes"] + notes})
        batch = [c for c in current + children if _key(c["params"]) not in scores]
        # a fixed batch size keeps one compiled program for the whole search
        padded = batch + [batch[-1]] * ((-len(batch)) % size) if batch else []
        for i in range(0, len(padded), size):
            values = measure([c["params"] for c in padded[i:i + size]], config)
            for c, v in zip(padded[i:i + size], values, strict=True):
                scores.setdefault(_key(c["params"]), float(v))
                entries.setdefault(_key(c["params"]), c)
        ranked = sorted(entries.values(), key=lambda c: scores[_key(c["params"])])
        current = ranked[: max(2, size // 2)]
    chosen: list[dict] = []
    for c in sorted(entries.values(), key=lambda c: scores[_key(c["params"])]):
        b = template.probe_text(rules.render(c["params"]))
        nearest, d = closest(b, known, template.distance)
        if d < template.novelty_threshold or not c["notes"]:
            continue
        if any(template.distance(b, o["probe"]) < DIVERSITY for o in chosen):
            continue
        chosen.append({**c, "score": scores[_key(c["params"])], "distance": d, "nearest": nearest, "probe": b,
                       "search_budget": budget, "search_setting": setting.name})
        if len(chosen) == num_ideas:
            break
    return chosen


def idea_name(params: dict, used: set[str]) -> str:
    p = rules.normalise(params)
    base = f"{p['weights']}_{p['std_rule']}_e{round(100 * p['elite'])}_m{round(100 * p['lr_mean'])}"
    base += f"_s{round(100 * p['lr_std'])}" + (f"_a{round(1000 * p['anneal'])}" if p["anneal"] else "")
    name, i = base, 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


def propose(template, profile, archive_rows: list[dict], num_ideas: int, seed: int) -> list[dict]:
    """The template's offline ideation: ``num_ideas`` measured, novel rules of the family."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template.text_dir), undefined=jinja2.StrictUndefined)
    used: set[str] = set(template.baselines)
    settings = [template.setting(s) for s in profile.settings]
    ideas = []
    for c in search(template, profile, archive_rows, num_ideas, seed):
        p = rules.normalise(c["params"])
        ctx = {"params": p, "notes": c["notes"], "parent": template.baseline_labels.get(c["parent"], c["parent"]),
               "score": c["score"], "distance": c["distance"], "nearest": c["nearest"], "profile": profile,
               "search_budget": c["search_budget"], "search_setting": c["search_setting"],
               "settings_train": ", ".join(s.description for s in settings if not s.held_out),
               "settings_held_out": ", ".join(s.description for s in settings if s.held_out) or "none",
               "baselines": ", ".join(template.baseline_labels[b] for b in profile.baselines)}
        novelty = int(np.clip(1 + round(9 * min(1.0, c["distance"] / 1.0)), 1, 10))
        ideas.append({
            "Name": idea_name(p, used),
            "Title": env.get_template("idea_title.j2").render(ctx).strip(),
            "Hypothesis": env.get_template("idea_hypothesis.j2").render(ctx).strip(),
            "Experiment": env.get_template("idea_experiment.j2").render(ctx).strip(),
            "Interestingness": int(np.clip(3 + len(c["notes"]) + (p["std_rule"] != "snes"), 1, 10)),
            "Feasibility": 9,
            "Novelty": novelty,
            "kind": "source",
            "params": p,
            "expression_latex": rules.to_latex(p),
            "parent": c["parent"],
            "mutations": c["notes"],
            "search": {"score": c["score"], "distance": c["distance"], "nearest": c["nearest"],
                       "budget": c["search_budget"], "setting": c["search_setting"]},
            "backend": "offline",
        })
    return ideas


def render(template, idea: dict) -> str:
    """The offline code stage: the idea's family parameters as plug-in source."""
    return rules.render(idea["params"], idea.get("Title"))
