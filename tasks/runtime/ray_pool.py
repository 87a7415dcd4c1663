"""Ray actor pools of the flow process (ARCHITECTURE.md sections 2 and 6): :class:`PopulationEvaluator` (an ES
population of a ``scientist meta`` problem, one compiled ``jit(vmap(fitness))`` per worker: the evaluation backend
of :func:`jaxlib_kernels.es.meta.drive` in ``tasks/meta_es.py``) and :class:`ProgramTrainer` (shards of a symbolic
population for the discovery engine). Each pool is built once per process and key, split populations into equal
shards (the last padded), and is released when its search is done (the actors hold Ray CPUs). ``workers=0``
evaluates in this process, without Ray.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import numpy as np


def _wrap_key(data):
    import jax

    return jax.random.wrap_key_data(np.asarray(data, dtype=np.uint32))


class PopulationEvaluator:
    """Builds the problem of ``spec`` once and evaluates populations with one compiled ``jit(vmap(fitness))``;
    ``traces`` counts how often the fitness was traced (once per population shape)."""

    def __init__(self, spec: dict, shared_eval_key: bool = True):
        from jaxlib_kernels.es import meta, problems

        fitness, _ = problems.make_problem(spec)
        self.traces = 0

        def counted(key, candidate):
            self.traces += 1
            return fitness(key, candidate)

        import jax

        self._evaluate = jax.jit(meta.make_population_eval(counted, shared_eval_key))
        self._evaluate_keys = jax.jit(jax.vmap(fitness))  # one key per candidate (the search centre's check)

    def evaluate(self, key_data: np.ndarray, population: Any) -> np.ndarray:
        import jax

        returns = self._evaluate(_wrap_key(key_data), jax.tree_util.tree_map(np.asarray, population))
        return np.asarray(returns)

    def evaluate_keys(self, keys_data: np.ndarray, population: Any) -> np.ndarray:
        import jax

        keys = jax.random.wrap_key_data(np.asarray(keys_data, dtype=np.uint32))
        return np.asarray(self._evaluate_keys(keys, jax.tree_util.tree_map(np.asarray, population)))

    def stats(self) -> dict:
        return {"traces": self.traces, "pid": os.getpid()}


# evaluators live as long as the flow process: one set per (problem, workers, address), reused by every chunk
_POOLS: dict[tuple, list] = {}
_LOCK = threading.Lock()


def _ray_resources() -> dict:
    import ray

    if ray.cluster_resources().get("GPU", 0):
        return {"num_gpus": float(os.environ.get("SCIENTIST_GPU_FRACTION", "1.0")), "num_cpus": 1}
    return {"num_cpus": 1}


def available_workers(ray_address: str | None) -> int:
    """How many evaluators the cluster can hold at once: its GPUs, else its CPUs."""
    import ray

    from tasks.experiments import init_ray

    init_ray(ray_address)
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU", 0) or resources.get("CPU", 1)))


def evaluators(spec: dict, workers: int, ray_address: str | None, shared_eval_key: bool = True) -> list:
    """``workers`` evaluators of ``spec``: in-process objects (``workers=0``) or Ray actors, cached per process."""
    key = (json.dumps(spec, sort_keys=True), workers, ray_address, shared_eval_key)
    with _LOCK:
        if key not in _POOLS:
            if workers == 0:
                _POOLS[key] = [PopulationEvaluator(spec, shared_eval_key)]
            else:
                import ray

                from tasks.experiments import init_ray

                init_ray(ray_address)
                actor = ray.remote(PopulationEvaluator).options(**_ray_resources())
                _POOLS[key] = [actor.remote(spec, shared_eval_key) for _ in range(workers)]
        return _POOLS[key]


def release_evaluators(spec: dict | None = None) -> None:
    """Kill this process's evaluator actors of ``spec`` (default: all); they hold Ray CPUs that the next search's
    evaluators and the experiment units need."""
    with _LOCK:
        for key in list(_POOLS):
            if spec is not None and key[0] != json.dumps(spec, sort_keys=True):
                continue
            for ev in _POOLS.pop(key):
                if not isinstance(ev, PopulationEvaluator):
                    import ray

                    ray.kill(ev)


def evaluator_stats(spec: dict, workers: int, ray_address: str | None) -> list[dict]:
    pool = evaluators(spec, workers, ray_address)
    if workers == 0:
        return [pool[0].stats()]
    import ray

    return ray.get([ev.stats.remote() for ev in pool])


def _shards(size: int, workers: int) -> list[np.ndarray]:
    """Indices of ``workers`` equal shards of a population of ``size`` (the last padded with the last member), so
    every worker sees one shape."""
    shard = -(-size // workers)
    index = np.minimum(np.arange(shard * workers), size - 1)
    return [index[i * shard:(i + 1) * shard] for i in range(workers)]


def evaluate_population(pool: list, key_data: np.ndarray, population: Any) -> np.ndarray:
    """Returns of every candidate; the population split into ``len(pool)`` equal shards (the last padded)."""
    import jax

    if isinstance(pool[0], PopulationEvaluator):
        return pool[0].evaluate(key_data, population)
    import ray

    population = jax.tree_util.tree_map(np.asarray, population)
    size = jax.tree_util.tree_leaves(population)[0].shape[0]
    if len(pool) == 1:
        return ray.get(pool[0].evaluate.remote(key_data, population))
    refs = [ev.evaluate.remote(key_data, jax.tree_util.tree_map(lambda x, i=index: x[i], population))
            for ev, index in zip(pool, _shards(size, len(pool)))]
    return np.concatenate(ray.get(refs))[:size]


def evaluate_center(pool: list, seed: int, center: Any, num_seeds: int) -> list[float]:
    """Returns of the search centre on ``num_seeds`` fixed keys (the same at every generation, never used by the
    search): the meta-training progress without the per-generation noise of the population's shared key."""
    import jax

    keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(10_007 + seed), num_seeds)))
    batch = jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (num_seeds, *np.shape(x))), center)
    if isinstance(pool[0], PopulationEvaluator):
        return pool[0].evaluate_keys(keys, batch).tolist()
    import ray

    return np.asarray(ray.get(pool[0].evaluate_keys.remote(keys, batch))).tolist()


class ProgramTrainer:
    """Trains shards of a symbolic population (interpreted drift programs, a template's ``discovery.train_programs``:
    PPO for ``lpo``, IPPO for ``marl``): a Ray actor of the discovery engine, one per worker, kept for the whole
    search (its compiled shard program is reused)."""

    def train(self, template_name: str, config, ops: np.ndarray, consts: np.ndarray, seeds: list[int]) -> np.ndarray:
        from jaxlib_kernels import interpreter
        from jaxlib_kernels.templates import make

        programs = interpreter.Program(np.asarray(ops), np.asarray(consts, np.float32))
        return np.asarray(make(template_name).discovery.train_programs(config, programs, list(seeds)))

    def stats(self) -> dict:
        return {"pid": os.getpid()}


def program_trainers(workers: int, ray_address: str | None) -> list:
    """``workers`` :class:`ProgramTrainer` actors (GPU fractions where the cluster has GPUs), cached per process."""
    key = ("program-trainers", workers, ray_address)
    with _LOCK:
        if key not in _POOLS:
            import ray

            from tasks.experiments import init_ray

            init_ray(ray_address)
            actor = ray.remote(ProgramTrainer).options(**_ray_resources())
            _POOLS[key] = [actor.remote() for _ in range(workers)]
        return _POOLS[key]


def release_program_trainers() -> None:
    """Kill this process's :class:`ProgramTrainer` actors (they hold Ray CPUs)."""
    with _LOCK:
        for key in [k for k in _POOLS if k[0] == "program-trainers"]:
            import ray

            for actor in _POOLS.pop(key):
                ray.kill(actor)


def train_programs_sharded(pool: list, template_name: str, config, programs, seeds: list[int]) -> np.ndarray:
    """The template's metric (candidates, seeds) of a population split into ``len(pool)`` equal shards (the last padded with
    its last member), one shard per actor, all at once."""
    import ray

    ops, consts = np.asarray(programs.ops), np.asarray(programs.consts)
    size = ops.shape[0]
    refs = [actor.train.remote(template_name, config, ops[index], consts[index], list(seeds))
            for actor, index in zip(pool, _shards(size, len(pool)))]
    return np.concatenate(ray.get(refs))[:size]
