"""The discovery engine's generation step: symbolic drifts proposed, gated, de-duplicated and trained as one population.

A search's state is plain JSON (``init_state``/``generation``), so a generation is a pure function of the previous
state, the configuration and the seed: the flow (``flows/discovery.py``) runs each generation as a cached task, and
a killed search resumes with identical results. One generation:

1. **propose**: the waiting proposals first (the seeds; with a model, the formulas it proposed for this generation,
   ``origin`` ``llm:<name>``), then, per island, children of its elites by the formula language's mutations (the
   drift language's: retuned constants, schedules in n/N, asymmetric clips, penalties, saturation, crossovers with
   elites of other islands) and local variations that do not grow a tree (a constant perturbed, ever wider while
   the near neighbourhood is archived; a subtree hoisted), so the population stays full of new formulas;
2. **static gate**: a valid tree of the language that fits the interpreter and is plausible on the language's
   probe grid (``FormulaLanguage.plausibility``: a drift finite and non-negative, a preference loss decreasing);
3. **novelty rejection before evaluation** (ShinkaEvolve): a proposal whose behaviour on the probe grid is within
   ``novelty`` (the language's distance units) of an archived or already accepted one is dropped untrained;
4. **constants of the best elite tuned by an evosax strategy**: the strategy's ``ask`` members (the elite's
   program with other constants) pass the same static gate and join the population (a refused one is told the
   generation's worst fitness, untrained), its ``tell`` moves the mean, which the next generation proposes;
5. **one compiled evaluation**: every member trained on the training setting at a short budget in one
   population call of the template's kernel (PPO for ``lpo``, IPPO / MAPPO for ``marl``, the LM's preference
   training for ``dpo``; fixed population size
   and program length: one compile for the whole search);
6. **successive halving**: the best ``promote`` members are trained again with twice the budget and seeds (again
   one call of fixed shape); their long-budget fitness ranks the archive's elites;
7. **archive update** with islands (a migrant every ``migrate`` generations).

The formula language (:class:`jaxlib_kernels.search.language.FormulaLanguage`, the template's
``Template.discovery.language``) and the metric (:class:`jaxlib_kernels.templates.base.Metric`: every ranking, the
elites, the promotions, the constants' evosax step, the tuned baselines, in its direction) are passed in. A row's
``score`` is its fitness in the metric's direction (higher is better; long-rung fitness first).

Kept free of Prefect and Ray (``jaxlib_kernels``); the evaluator is passed in so tests can use a tiny PPO.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import numpy as np

from jaxlib_kernels import interpreter, symbolic
from jaxlib_kernels.search import trees
from jaxlib_kernels.search.candidates import Candidate
from jaxlib_kernels.templates.base import Metric

Evaluator = Callable[[list, int], np.ndarray]  # (expressions, rung) -> fitness per expression


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Static settings of a discovery search."""

    population: int = 16  # members trained per generation (fixed: one compile)
    islands: int = 2
    elites: int = 4  # per island
    promote: int = 4  # successive halving: members re-trained at the long rung
    tune: int = 4  # evosax members around the best elite's constants (even; 0 = no tuning)
    tune_std: float = 0.1
    length: int = 64  # program length of every member
    novelty: float = 0.1  # behavioural distance (the language's units) below which a proposal is a duplicate
    migrate: int = 3
    max_size: int = 48

    def __post_init__(self):
        if self.promote > self.population or self.tune >= self.population:
            raise ValueError("promote and tune must fit in the population")
        if self.tune % 2:
            raise ValueError("tune must be even (antithetic sampling)")


# the fitness of a distillation (:func:`distillation_evaluator`): closeness, whatever the template's metric
CLOSENESS = Metric("closeness", "minus the behavioural distance to the learned formula", maximize=True)


def _key(expr) -> str:
    return symbolic.dumps(expr)


def gate(expr, config: SearchConfig, language) -> str | None:
    """Why the static gate refuses ``expr`` (None: it passes)."""
    if symbolic.size(expr) > config.max_size:
        return f"larger than {config.max_size} nodes"
    try:
        interpreter.encode(expr, config.length, language.name)  # validates the tree in the language
    except (interpreter.ProgramError, symbolic.ExpressionError) as exc:
        return str(exc)
    score, notes = language.plausibility(expr)
    if score <= 0.0:
        return "; ".join(notes)
    return None


def init_state(seed_exprs: dict[str, object], config: SearchConfig, language) -> dict:
    """Generation -1: the seeds (name -> tree, e.g. the baselines), spread over the islands, not yet trained."""
    pending = [{"expr": symbolic.canonical(e), "origin": name, "island": i % config.islands}
               for i, (name, e) in enumerate(seed_exprs.items()) if gate(e, config, language) is None]
    return {"generation": 0, "archive": [], "pending": pending, "tune_mean": None, "log": []}


def _elites(archive: list[dict], island: int, k: int) -> list[dict]:
    rows = [r for r in archive if r["island"] == island]
    return sorted(rows, key=lambda r: (-r["score"], r["order"]))[:k]


def _score(row: dict, metric: Metric) -> float:
    """The row's fitness in the metric's direction (higher is better): the long rung's where it was promoted, else
    the short rung's, one unit lower."""
    if row.get("fitness_long") is not None:
        return metric.improvement(row["fitness_long"], 0.0)
    return metric.improvement(row["fitness"], 0.0) - 1.0


def _propose(state: dict, config: SearchConfig, rng: np.random.Generator, room: int,
             language) -> tuple[list[dict], dict]:
    """Up to ``room`` new gated, novel proposals; counts of what the gate and novelty refused."""
    archive = state["archive"]
    behaviours = [language.behaviour(r["expr"]) for r in archive]
    seen = {_key(r["expr"]) for r in archive}
    out, counts = [], {"proposed": 0, "gate": 0, "novelty": 0}

    def admit(expr, origin: str, island: int) -> None:
        counts["proposed"] += 1
        if _key(expr) in seen:
            counts["novelty"] += 1
            return
        why = gate(expr, config, language)
        if why is not None:
            counts["gate"] += 1
            return
        b = language.behaviour(expr)
        if any(language.distance(b, other) < config.novelty for other in behaviours):
            counts["novelty"] += 1
            return
        seen.add(_key(expr))
        behaviours.append(b)
        out.append({"expr": symbolic.canonical(expr), "origin": origin, "island": island})

    for p in state.get("pending", []):
        admit(p["expr"], p["origin"], p["island"])
    elites = {i: _elites(archive, i, config.elites) for i in range(config.islands)}
    pool = [Candidate(copy.deepcopy(r["expr"]), r["origin"]) for i in elites for r in elites[i]]
    attempts = 0
    while len(out) < room and pool and attempts < 40 * room:
        attempts += 1
        island = attempts % config.islands
        parents = elites[island] or [r for rows in elites.values() for r in rows]
        parent = parents[rng.integers(len(parents))]
        if rng.random() < VARY_SHARE or symbolic.size(parent["expr"]) > 0.75 * config.max_size:
            # size-keeping or shrinking, ever wider while the near neighbourhood of the elites is already archived
            varied, kind = _vary(parent["expr"], rng, scale=0.25 * (1 + attempts / room))  # any language's tree
            if varied is not None:
                admit(varied, f"{parent['origin']}+{kind}", island)
            continue
        cand = Candidate(copy.deepcopy(parent["expr"]), parent["origin"])
        child = language.mutate(cand, pool, rng)  # the language's mutation operators (the drift's: crossover too)
        if child is not None:
            admit(child.expr, f"{parent['origin']}+{child.kinds[-1] if child.kinds else 'mutation'}", island)
    return out[:room], counts


VARY_SHARE = 0.35  # share of proposals made by _vary rather than the language's (mostly growing) mutations


def _vary(expr, rng: np.random.Generator, scale: float = 0.25):
    """A local variation of ``expr`` that does not grow it: ``perturb`` one constant by a log-normal factor of
    spread ``scale`` (clip
    bounds kept ordered), or ``hoist`` a subtree in place of its parent node. The languages' mutations mostly grow
    a tree (the drift's add schedules, penalties and crossovers), so an elite soon reaches the size limit and its
    neighbourhood is all refused; these keep the search moving there. Returns (tree, kind) or (None, kind)."""
    nodes = list(trees.paths(expr))
    consts = [(p, n) for p, n in nodes if isinstance(n, float) and p]
    inner = [(p, n) for p, n in nodes if isinstance(n, list) and len(n) > 1]
    if consts and (not inner or rng.random() < 0.6):
        path, node = consts[rng.integers(len(consts))]
        new = trees.replace(expr, path, float(round(node * float(np.exp(scale * rng.standard_normal())), 4)))
        if trees.parent_is(new, path, "clip"):
            bounds = new
            for i in path[:-1]:
                bounds = bounds[i]
            if not bounds[2] < bounds[3]:
                return None, "perturb"
        return new, "perturb"
    if not inner:
        return None, "hoist"
    path, node = inner[rng.integers(len(inner))]
    children = [c for c in node[1:] if not isinstance(c, (int, float))]
    if not children:
        return None, "hoist"
    return trees.replace(expr, path, copy.deepcopy(children[rng.integers(len(children))])), "hoist"


def _constant_slots(expr, config: SearchConfig, language) -> tuple[interpreter.Program, np.ndarray]:
    """The program of ``expr`` and the indices of its constants (what an evosax strategy tunes)."""
    program = interpreter.encode(expr, config.length, language.name)
    return program, np.flatnonzero(np.asarray(program.ops) == interpreter.CONST)


def _constant_strategy(config: SearchConfig, size: int):
    """The evosax strategy (and params) that tunes ``size`` constants: Open_ES, ``config.tune`` members."""
    import jax.numpy as jnp

    from jaxlib_kernels.es import meta

    return meta.make_strategy(meta.ESConfig("Open_ES", config.tune, std=config.tune_std, lr=0.05), jnp.zeros(size))


def _with_constants(program: interpreter.Program, slots: np.ndarray, consts) -> object:
    """The tree of ``program`` with ``consts`` in its constant ``slots``."""
    c = np.asarray(program.consts).copy()
    c[slots] = consts
    return symbolic.canonical(interpreter.decode(interpreter.Program(program.ops, c.astype(np.float32))))


def _tune_members(state: dict, config: SearchConfig, seed: int, language) -> tuple[list[dict], dict | None]:
    """evosax ``ask`` around the constants of the best elite: members that differ from it only in constants."""
    if config.tune == 0 or not state["archive"]:
        return [], None
    import jax
    import jax.numpy as jnp

    from jaxlib_kernels.es import meta

    best = max(state["archive"], key=lambda r: (r["score"], -r["order"]))
    program, slots = _constant_slots(best["expr"], config, language)
    if slots.size == 0:
        return [], None
    start = np.asarray(program.consts)[slots]
    if state.get("tune_mean") and state["tune_mean"]["parent"] == _key(best["expr"]):
        start = np.asarray(state["tune_mean"]["mean"], np.float32)
    strategy, params = _constant_strategy(config, slots.size)
    key = jax.random.key(seed)
    es_state = meta.init_state(key, strategy, params, jnp.asarray(start))
    population, es_state = strategy.ask(jax.random.fold_in(key, 1), es_state, params)
    members = [{"expr": _with_constants(program, slots, consts), "origin": f"{best['origin']}+evosax",
                "island": best["island"]} for consts in np.asarray(population)]
    return members, {"strategy": strategy, "params": params, "state": es_state, "population": population, "key": key,
                     "parent": _key(best["expr"])}


def generation(state: dict, config: SearchConfig, evaluate: Evaluator, seed: int, language, metric: Metric) -> dict:
    """One generation (see the module docstring) of trees of ``language`` ranked by ``metric``; returns the next
    state (the input is not modified)."""
    state = copy.deepcopy(state)
    g = state["generation"]
    rng = np.random.default_rng([seed, g])
    asked, es = _tune_members(state, config, seed * 100_003 + g, language)
    proposals, counts = _propose(state, config, rng, config.population - len(asked), language)
    # the evosax members pass the same static gate (other constants can make a drift negative somewhere); a refused
    # one is not trained, and the strategy is told the generation's worst fitness for it
    passes = [gate(m["expr"], config, language) is None for m in asked]
    tuned = [m for m, ok in zip(asked, passes, strict=True) if ok]
    counts["gate"] += len(asked) - len(tuned)
    members = proposals + tuned
    real = len(members)
    padding = [copy.deepcopy(members[i % real]) for i in range(config.population - real)] if real else []
    fitness = np.asarray(evaluate([m["expr"] for m in members + padding], 0), np.float64)[:real] if real else []
    order = len(state["archive"])
    rows = []
    for m, f in zip(members, fitness, strict=True):
        rows.append({**m, "fitness": float(f), "fitness_long": None, "generation": g, "order": order})
        order += 1
    # successive halving: the best of this generation and the archive's current leaders, at the long rung
    contenders = [rows[i] for i in metric.rank({i: r["fitness"] for i, r in enumerate(rows)})][: config.promote]
    if contenders and config.promote:
        exprs = [r["expr"] for r in contenders]
        exprs += [exprs[i % len(exprs)] for i in range(config.promote - len(exprs))]
        long = np.asarray(evaluate(exprs, 1), np.float64)
        for r, f in zip(contenders, long, strict=False):
            r["fitness_long"] = float(f)
    for r in rows:
        r["score"] = _score(r, metric)
    if es is not None:
        import jax
        import jax.numpy as jnp

        from jaxlib_kernels.es import meta

        # evosax is told the fitness in the metric's direction (higher is better)
        trained = iter(metric.improvement(r["fitness"], 0.0) for r in rows[len(proposals):])
        worst = min((metric.improvement(r["fitness"], 0.0) for r in rows), default=0.0)
        tuned_fitness = jnp.asarray([next(trained) if ok else worst for ok in passes], jnp.float32)
        es_state, _ = meta._tell(es["strategy"], jax.random.fold_in(es["key"], 2), es["population"], tuned_fitness,
                                 es["state"], es["params"])
        state["tune_mean"] = {"parent": es["parent"],
                              "mean": np.asarray(meta.search_mean(es["strategy"], es_state)).astype(float).tolist()}
    state["archive"].extend(rows)
    if config.islands > 1 and g % config.migrate == config.migrate - 1:
        for i in range(config.islands):
            best = _elites(state["archive"], i, 1)
            if best:
                migrant = {**copy.deepcopy(best[0]), "island": (i + 1) % config.islands, "order": order,
                           "origin": best[0]["origin"] + "+migrant"}
                order += 1
                state["archive"].append(migrant)
    state["pending"] = []
    best = max(state["archive"], key=lambda r: (r["score"], -r["order"])) if state["archive"] else None
    from_llm = sum(1 for m in members if m["origin"].startswith("llm:") and "+" not in m["origin"])
    state["log"].append({"generation": g, **counts, "trained": real, "tuned": len(tuned), "tune_asked": len(asked), "from_llm": from_llm,
                         "best_fitness": None if best is None else best["fitness"],
                         "best_fitness_long": None if best is None else best["fitness_long"],
                         "best": None if best is None else symbolic.dumps(best["expr"])})
    state["generation"] = g + 1
    return state


def tuning_generations(state: dict) -> int:
    """How many evosax steps the search spent on its elites' constants (its generations that tuned): the budget
    each baseline's own constants get in :func:`tune_baselines`."""
    return sum(1 for e in state["log"] if e.get("tuned"))


def tune_baselines(baselines: dict[str, object], config: SearchConfig, evaluate: Evaluator, generations: int,
                   seed: int, language, metric: Metric) -> dict[str, dict]:
    """The baselines' own constants (PPO clip's epsilon, DPO's alpha and beta, ...) tuned with the budget the
    search spends on a candidate's: the same evosax strategy, ``config.tune`` members per step, ``generations``
    steps, the same rung-0 fitness, every baseline's members of a step trained together in one population call.
    Returns, per baseline, the best formula seen in the metric's direction (the untuned one included) and the
    record."""
    import jax
    import jax.numpy as jnp

    from jaxlib_kernels.es import meta

    es, out = {}, {}
    for i, (name, expr) in enumerate(baselines.items()):
        program, slots = _constant_slots(expr, config, language)
        start = np.asarray(program.consts)[slots]
        out[name] = {"start": symbolic.canonical(expr), "start_constants": start.astype(float).tolist(),
                     "expr": symbolic.canonical(expr), "constants": start.astype(float).tolist(),
                     "start_fitness": None, "fitness": None, "generations": generations, "evaluated": 0}
        if slots.size and config.tune and generations:
            strategy, params = _constant_strategy(config, slots.size)
            key = jax.random.fold_in(jax.random.key(seed), i)
            es[name] = {"program": program, "slots": slots, "strategy": strategy, "params": params, "key": key,
                        "state": meta.init_state(key, strategy, params, jnp.asarray(start))}

    # every step's members in one population call of exactly that size (one more compile than the search's, but
    # a step costs its members, not a whole search population)
    width = min(config.population, max(len(out), len(es) * config.tune))

    def fitness_of(exprs: list) -> np.ndarray:
        values = []
        for lo in range(0, len(exprs), width):
            chunk = exprs[lo:lo + width]
            padded = chunk + [chunk[j % len(chunk)] for j in range(width - len(chunk))]
            values.extend(np.asarray(evaluate(padded, 0), np.float64)[: len(chunk)].tolist())
        return np.asarray(values)

    for name, f in zip(out, fitness_of([o["start"] for o in out.values()]), strict=True):
        out[name].update(start_fitness=float(f), fitness=float(f), evaluated=1)
    def step(g: int, states: dict, params: dict) -> tuple[dict, dict]:
        """One step of every baseline's strategy: ask each, train all members in one call, tell each."""
        asked, members = {}, []
        for name, e in es.items():
            asked[name], states[name] = e["strategy"].ask(jax.random.fold_in(e["key"], 2 * g + 1), states[name],
                                                          params[name])
            members += [(name, _with_constants(e["program"], e["slots"], consts), consts)
                        for consts in np.asarray(asked[name])]
        fitness = fitness_of([m[1] for m in members])
        for name, e in es.items():
            rows = [(f, m) for f, m in zip(fitness, members, strict=True) if m[0] == name]
            states[name], _ = meta._tell(e["strategy"], jax.random.fold_in(e["key"], 2 * g + 2), asked[name],
                                         jnp.asarray([metric.improvement(f, 0.0) for f, _ in rows], jnp.float32),
                                         states[name], params[name])
            out[name]["evaluated"] += len(rows)
            f, (_, expr, consts) = rows[metric.best({i: row[0] for i, row in enumerate(rows)})]
            if metric.improvement(f, out[name]["fitness"]) > 0:
                out[name].update(expr=expr, constants=np.asarray(consts, float).tolist(), fitness=float(f))
        return states, {}

    # the package's one ES loop; a step's key is its index (each baseline folds it into its own key)
    meta.drive(step, {n: e["state"] for n, e in es.items()}, {n: e["params"] for n, e in es.items()}, 0,
               generations if es else 0, key_of=lambda g: g)
    return out


def best(state: dict, k: int = 1, exclude=()) -> list[dict]:
    """The archive's top ``k`` by score (long-rung fitness first), one row per distinct formula, leaving out rows
    whose origin is in ``exclude`` (e.g. the baselines the search was seeded with)."""
    rows, seen = [], set()
    for r in sorted(state["archive"], key=lambda r: (-r["score"], r["order"])):
        if r["origin"] in exclude:
            continue
        if _key(r["expr"]) not in seen:
            seen.add(_key(r["expr"]))
            rows.append(r)
    return rows[:k]


def distillation_evaluator(target, language) -> Evaluator:
    """Fitness for distilling a learned formula into a tree of ``language``: minus the behavioural distance (the
    language's units, on its probe grid) between each formula and ``target`` (the learned formula's values there);
    the same at every rung, ranked by :data:`CLOSENESS`. Numpy only: a distillation generation trains nothing."""
    target = np.asarray(target, np.float64)

    def evaluate(exprs: list, rung: int) -> np.ndarray:
        return np.asarray([-language.distance(language.behaviour(e), target) for e in exprs])

    return evaluate


def training_evaluator(template, setting, budget: int, seeds: int, config: SearchConfig,
                       overrides: dict | None = None, seed_offset: int = 0, train: Callable | None = None) -> Evaluator:
    """The real fitness: the template's metric after training with each drift on ``setting`` (rung 0: ``budget``,
    ``seeds`` seeds; rung 1: twice both), every member in one population call (``template.discovery``'s
    ``train_programs``: PPO for ``lpo``, IPPO / MAPPO for ``marl``, preference training for ``dpo``).
    ``overrides`` replace fields of the
    template's kernel configuration (its ``discovery.budget_field`` among them scales with the rung too);
    ``train(kernel_config, programs, seeds) -> metric (members, seeds)`` replaces that call (the flow passes one
    that shards the population over Ray)."""
    if template.discovery is None:
        raise ValueError(f"the {template.name!r} template does not declare what the discovery engine needs")
    train = train or template.discovery.train_programs

    def evaluate(exprs: list, rung: int) -> np.ndarray:
        scale = 2 ** rung
        cfg = dataclasses.replace(template.kernel_config(setting, budget * scale), **(overrides or {}))
        field = template.discovery.budget_field
        if overrides and field in overrides:
            cfg = dataclasses.replace(cfg, **{field: overrides[field] * scale})
        programs = interpreter.encode_population(exprs, config.length, template.discovery.language.name)
        return np.asarray(train(cfg, programs, list(range(seed_offset, seed_offset + seeds * scale)))).mean(axis=1)

    return evaluate
