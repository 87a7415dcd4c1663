"""Evolutionary Algorithm Distillation (Lange et al., 2024) of the Evolution Transformer on the ``bbo`` kernel.

The model itself (architecture, step, :class:`~jaxlib_kernels.optimisers.evotf.EvoTF`) lives in the optimiser
library (:mod:`jaxlib_kernels.optimisers.evotf`); here it is trained and evaluated on BBOB. EAD (:func:`collect`,
:func:`train`): teacher trajectories of SNES and OpenES (evosax) on the training BBOB functions; the model is trained
with teacher forcing to predict the teacher's next mean and std from the same history (MSE on ``dm`` and ``ds``).
Trained parameters are cached under ``.cache/bbo/`` by a hash of the configuration and the sources, so evaluation
runs reuse them. Self-referential EAD (:func:`self_referential`): starting from random weights, the model's own best
trajectories (lowest final regret per function) become the next teacher. :func:`export` writes the default model's
weights where the library ships them (``evotf.PRETRAINED``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels.optimisers import evotf
from jaxlib_kernels.optimisers.evotf import EvoTF, init_params, step
from jaxlib_kernels.templates.bbo import kernel, problems

CACHE = Path(__file__).resolve().parents[3] / ".cache" / "bbo"


@dataclasses.dataclass(frozen=True)
class EADConfig:
    """Model and training sizes (small: CPU-trainable in a minute)."""

    functions: tuple[str, ...] = ("sphere", "ellipsoidal", "rastrigin", "attractive_sector", "rosenbrock",
                                  "bent_cigar", "rastrigin_rotated", "schaffers_f7")
    dim: int = 10
    population: int = 16
    generations: int = 60
    teachers: tuple[str, ...] = ("SNES", "Open_ES")
    seeds: int = 4
    width: int = 32
    window: int = 8
    steps: int = 400
    lr: float = 3e-3
    seed: int = 0


# ---- EAD: teacher trajectories and training ---------------------------------------------------------------------


def _trajectory_fn(strategy, bcfg: kernel.BBOConfig, plugin: bool):
    """``run(setup, fn_index)`` -> one trajectory of ``strategy`` ((init, ask, tell)), the kernel's loop."""
    init, ask, tell = strategy
    f = problems.fitness_fn(bcfg.functions, bcfg.dim)

    def mean_std(state):
        if "es" in state:
            es = state["es"]
            return es.mean, jnp.broadcast_to(es.std, es.mean.shape)
        return state["mean"], state["std"]

    def run(setup, fn_index):
        k_loop = jax.random.wrap_key_data(setup["key"], impl=kernel.PRNG)
        state = init(k_loop, setup["mean0"], jnp.full((bcfg.dim,), bcfg.init_std))
        noise = setup["z"] if plugin else jnp.zeros((bcfg.generations, 0))

        def body(state, xs):
            t, z = xs
            k_ask, k_tell = jax.random.split(jax.random.fold_in(k_loop, t))
            m, s = mean_std(state)
            pop, state = ask(k_ask, z, state)
            fit = f(pop, fn_index, setup["inst"])
            fit = jnp.where(jnp.isfinite(fit), fit, jnp.inf)
            state = tell(k_tell, pop, fit, state, t.astype(jnp.float32) / bcfg.generations)
            m2, s2 = mean_std(state)
            return state, {"pop": pop, "fitness": fit, "mean": m, "std": s, "next_mean": m2, "next_std": s2}

        return jax.lax.scan(body, state, (jnp.arange(bcfg.generations), noise))[1]

    return run


def collect(teacher, config: EADConfig, seeds, functions=None) -> dict[str, np.ndarray]:
    """Trajectories of a teacher (an EvosaxSpec or EvoTF) on the training functions: (S, F, G, ...) arrays of
    population, fitness, mean, std and the teacher's next mean and std."""
    functions = functions or config.functions
    bcfg = kernel.BBOConfig(tuple(functions), config.dim, config.population, config.generations)
    plugin = not isinstance(teacher, kernel.EvosaxSpec)
    run = _trajectory_fn(kernel.strategy_of(teacher, config.population, config.dim), bcfg, plugin)
    fns = jnp.arange(len(functions), dtype=jnp.int32)
    setup = kernel._setup(bcfg, plugin)(jnp.asarray(seeds, dtype=jnp.int32), fns)
    out = jax.jit(jax.vmap(jax.vmap(run, in_axes=(0, 0)), in_axes=(0, None)))(setup, fns)
    return {k: np.asarray(v) for k, v in out.items()}


@functools.lru_cache(maxsize=4)
def _models_collector(config: EADConfig):
    """jit of the trajectories of a stack of model parameters (traced, vmapped): one compile per configuration."""
    bcfg = kernel.BBOConfig(config.functions, config.dim, config.population, config.generations)

    def one(params, setup, fns):
        run = _trajectory_fn(EvoTF(params, config.window).strategy(config.population, config.dim), bcfg, True)
        return jax.vmap(jax.vmap(run, in_axes=(0, 0)), in_axes=(0, None))(setup, fns)

    return bcfg, jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def collect_models(params_list: list[dict], config: EADConfig, seeds) -> dict[str, np.ndarray]:
    """:func:`collect` of several models at once: (M, S, F, G, ...) arrays, one compiled call for all of them."""
    bcfg, fn = _models_collector(config)
    fns = jnp.arange(len(config.functions), dtype=jnp.int32)
    setup = kernel._setup(bcfg, True)(jnp.asarray(seeds, dtype=jnp.int32), fns)
    stack = jax.tree.map(lambda *xs: jnp.stack(xs), *params_list)
    return {k: np.asarray(v) for k, v in fn(stack, setup, fns).items()}


def _targets(traj):
    dm = (traj["next_mean"] - traj["mean"]) / traj["std"]
    ds = np.log(np.maximum(traj["next_std"], 1e-12) / traj["std"])
    return np.clip(dm, -2, 2).astype(np.float32), np.clip(ds, -1, 1).astype(np.float32)


def loss_fn(params, traj, window: int):
    """Teacher-forced MSE over one trajectory (G generations) of one seed and function."""
    D = traj["mean"].shape[-1]
    width = params["enc2"]["w"].shape[1]

    def body(carry, g):
        win, valid = carry
        m, s, win, valid = step(params, win, valid, g["pop"], g["fitness"], g["mean"], g["std"])
        dm = (m - g["mean"]) / g["std"]
        ds = jnp.log(s / g["std"])
        err = jnp.mean((dm - g["dm"]) ** 2) + jnp.mean((ds - g["ds"]) ** 2)
        return (win, valid), err

    init = (jnp.zeros((D, window, width)), jnp.zeros(window, bool))
    return jnp.mean(jax.lax.scan(body, init, traj)[1])


def _key(config: EADConfig, extra: str = "") -> str:
    src = "".join(Path(m.__file__).read_text() for m in (evotf, kernel)) + Path(__file__).read_text()
    return hashlib.sha256((repr(config) + extra + src).encode()).hexdigest()[:16]


def train(config: EADConfig, trajectories: list[dict] | None = None, init: dict | None = None,
          tag: str = "ead") -> tuple[dict, list[float]]:
    """EAD: fit the model to teacher trajectories (SNES and OpenES by default); cached on disk by configuration."""
    path = CACHE / f"evotf_{tag}_{_key(config, tag)}.npz"
    width = config.width
    template = init_params(jax.random.key(config.seed), width)
    if path.exists() and trajectories is None:
        with np.load(path) as data:
            leaves = [jnp.asarray(data[f"p{i}"]) for i in range(len(jax.tree.leaves(template)))]
            return jax.tree.unflatten(jax.tree.structure(template), leaves), list(data["losses"])
    if trajectories is None:
        seeds = list(range(config.seeds))
        trajectories = [collect(kernel.EvosaxSpec(t), config, seeds) for t in config.teachers]
    data = {k: np.concatenate([t[k] for t in trajectories]) for k in ("pop", "fitness", "mean", "std")}
    dm, ds = zip(*(_targets(t) for t in trajectories), strict=True)
    data["dm"], data["ds"] = np.concatenate(dm), np.concatenate(ds)
    flat = {k: jnp.asarray(v.reshape(-1, *v.shape[2:])) for k, v in data.items()}  # (S*F, G, ...)
    import optax

    opt = optax.adam(config.lr)
    params = init if init is not None else template
    state = opt.init(params)
    n = flat["mean"].shape[0]

    @jax.jit
    def update(params, state, idx):
        batch = jax.tree.map(lambda x: x[idx], flat)
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean(jax.vmap(lambda tr: loss_fn(p, tr, config.window))(batch)))(params)
        upd, state = opt.update(grads, state)
        return optax.apply_updates(params, upd), state, loss

    rng = np.random.default_rng(config.seed)
    losses = []
    for _ in range(config.steps):
        idx = jnp.asarray(rng.choice(n, size=min(16, n), replace=False))
        params, state, loss = update(params, state, idx)
        losses.append(float(loss))
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, losses=np.asarray(losses), **{f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))})
    return params, losses


def evaluate(model, config: kernel.BBOConfig, seeds) -> dict:
    """In-context evaluation in the kernel's loop: the unit result (final log10 regret per seed, curve)."""
    return kernel.unit_result(kernel.run_seeds(model, config, seeds), config)


def self_referential(config: EADConfig, rounds: int = 2, evaluations: dict | None = None,
                     log: list | None = None, perturbations: int = 4, sigma: float = 0.1) -> tuple[dict, list[float]]:
    """Self-referential EAD (Lange et al., 2024): from random weights, every round runs the current model and
    ``perturbations`` copies of it with Gaussian noise (std ``sigma``) added to every weight, on ``2 * seeds``
    seeds of the training functions; per function the ``seeds`` trajectories with the lowest final regret, from any
    of them, are the teacher the current model is trained on next. (Without the perturbations a model would only
    imitate itself: the zero-initialised head makes the first model exactly random search, a fixed point.)

    Returns the last parameters and, per round, the mean final log10 regret of the current (unperturbed) model on
    the training functions: rounds 0 .. rounds - 1 from its collected trajectories (seeds 100 ..), the last point
    from an evaluation on seeds 0 .. seeds - 1. ``evaluations`` ({name: (kernel.BBOConfig, seeds)}) are run on the
    model of every round, 0 (random weights) to ``rounds``; with ``log`` (a list), one entry per round is
    appended: ``{"round", "train_log_regret", "teacher_log_regret", "finals": {name: final log10 regret per seed}}``
    (``teacher_log_regret``: the mean of the chosen trajectories, the round's teacher)."""
    params = init_params(jax.random.key(config.seed + 1), config.width)
    key = jax.random.key(config.seed + 2)
    curve = []
    bcfg = kernel.BBOConfig(config.functions, config.dim, config.population, config.generations)
    seeds = list(range(100, 100 + 2 * config.seeds))

    def record(model, r, teacher=None):
        if log is not None:
            log.append({"round": r, "train_log_regret": curve[-1], "teacher_log_regret": teacher,
                        "finals": {name: evaluate(model, cfg, s)["final"].tolist()
                                   for name, (cfg, s) in (evaluations or {}).items()}})

    for r in range(rounds):
        key, k = jax.random.split(key)
        leaves, tree = jax.tree.flatten(params)
        noisy = [jax.tree.unflatten(tree, [x + sigma * jax.random.normal(kk, x.shape)
                                           for x, kk in zip(leaves, jax.random.split(kp, len(leaves)), strict=True)])
                 for kp in jax.random.split(k, perturbations)]
        traj = collect_models([params, *noisy], config, seeds)  # (M, S, F, G, ...)
        logs = kernel.log_regret(np.minimum.accumulate(traj["fitness"].min(-1), axis=-1))[..., -1]  # (M, S, F)
        curve.append(float(logs[0].mean()))
        pool = {k: v.reshape(-1, *v.shape[2:]) for k, v in traj.items()}  # (M * S, F, ...)
        pool_logs = logs.reshape(-1, logs.shape[-1])
        best = np.argsort(pool_logs, axis=0)[: config.seeds]  # the best trajectories per function
        chosen = {k: np.stack([v[best[:, j], j] for j in range(v.shape[1])], axis=1) for k, v in pool.items()}
        record(EvoTF(params, config.window, f"self{r}"), r,
               float(np.mean([pool_logs[best[:, j], j] for j in range(pool_logs.shape[1])])))
        cfg = dataclasses.replace(config, steps=max(50, config.steps // 2))
        params, _ = train(cfg, [chosen], init=params, tag=f"self{r}")
    model = EvoTF(params, config.window, f"self{rounds}")
    curve.append(float(evaluate(model, bcfg, list(range(config.seeds)))["final"].mean()))
    record(model, rounds)
    return params, curve


@functools.lru_cache(maxsize=4)
def trained(config: EADConfig = EADConfig()) -> EvoTF:
    """The EAD-trained model of ``config`` (trained once, then loaded from the cache)."""
    params, _ = train(config)
    return EvoTF(params, config.window, f"ead-{_key(config)[:6]}")


def summary(results: dict[str, np.ndarray]) -> dict:
    """Mean and 95% normal confidence half-width of each method's final values."""
    out = {}
    for k, v in results.items():
        v = np.asarray(v, dtype=np.float64)
        out[k] = {"mean": float(v.mean()), "ci95": float(1.96 * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1
                  else float("nan"), "n": len(v)}
    return out


def export(config: EADConfig = EADConfig(), path: Path = evotf.PRETRAINED) -> Path:
    """Write the EAD-trained model of ``config`` (:func:`trained`) as the library's pretrained weights."""
    model = trained(config)
    return evotf.save(EvoTF(model.params, model.window, "evotf_ead"), path, config=repr(config),
                      trained_by="jaxlib_kernels/templates/bbo/ead.py: export()")


if __name__ == "__main__":  # pragma: no cover - the report of the EAD experiment
    print(json.dumps({"config": dataclasses.asdict(EADConfig())}, indent=1))
