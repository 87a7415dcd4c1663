"""Experiments: baselines and candidates x settings, seeds vmapped inside a unit, units dispatched as Ray tasks.

A unit is (template, method source, setting, budget, seeds). Its key is a hash of exactly that, and its result
is written atomically to ``runs/<id>/units/<key>.npz`` the moment Ray returns it, so a run killed halfway
re-dispatches only the units that have no file (a line per computed unit goes to ``units/ledger.jsonl``).
Workers share the JAX persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``), so a kernel compiled once is
reused by every later unit with the same shapes, across processes and runs. Baseline units do not depend on
the idea, so ideas of one run (and any later run with the same settings) share them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from tasks.runfolder import write_json

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "jax"


def unit_spec(template: str, method: str, role: str, source: str, setting: str, total_timesteps: int,
              seeds: list[int]) -> dict:
    spec = {"template": template, "method": method, "role": role, "source": source, "setting": setting,
            "total_timesteps": int(total_timesteps), "seeds": [int(s) for s in seeds]}
    # the key ignores the method's name: the same source on the same setting is the same experiment
    payload = {k: v for k, v in spec.items() if k not in ("method", "role")}
    spec["key"] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    return spec


def run_unit(spec: dict) -> dict:
    """Evaluate one unit in this process: load the plug-in, train every seed in one compiled call."""
    from jaxlib_kernels import plugin, templates

    template = templates.make(spec["template"])
    fn = plugin.load_plugin(spec["source"], template.plugin_name)
    start = time.time()
    out = template.evaluate(template.setting(spec["setting"]), spec["total_timesteps"], fn, spec["seeds"])
    out = {k: np.asarray(v) for k, v in out.items()}
    out["seconds"] = np.asarray(time.time() - start)
    out["pid"] = np.asarray(os.getpid())
    return out


def unit_path(units_dir: Path, spec: dict) -> Path:
    return Path(units_dir) / f"{spec['key']}.npz"


def load_unit(units_dir: Path, spec: dict) -> dict | None:
    path = unit_path(units_dir, spec)
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _save_unit(units_dir: Path, spec: dict, result: dict) -> None:
    path = unit_path(units_dir, spec)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **result)
    os.replace(tmp, path)
    write_json(path.with_suffix(".json"), {k: v for k, v in spec.items() if k != "source"} | {
        "seconds": float(result["seconds"]), "pid": int(result["pid"])})
    with open(Path(units_dir) / "ledger.jsonl", "a") as f:
        f.write(json.dumps({"key": spec["key"], "method": spec["method"], "setting": spec["setting"],
                            "time": time.time(), "pid": int(result["pid"])}) + "\n")


def ray_env() -> dict[str, str]:
    """Environment variables every Ray worker gets: the shared JAX compilation cache, CPU platform if forced."""
    env = {
        "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", str(DEFAULT_CACHE)),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    for name in ("JAX_PLATFORMS", "XLA_FLAGS"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def init_ray(address: str | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``) when given, otherwise start a local Ray in this process."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    Path(ray_env()["JAX_COMPILATION_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    kwargs = {"runtime_env": {"env_vars": ray_env()}, "logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(include_dashboard=False, object_store_memory=256 * 1024 * 1024, **kwargs)


def _resources() -> dict:
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus:
        return {"num_gpus": float(os.environ.get("SCIENTIST_GPU_FRACTION", "1.0")), "num_cpus": 1}
    return {"num_cpus": 1}


def run_units(specs: list[dict], units_dir: Path, ray_address: str | None = None, max_retries: int = 2,
              on_done=None) -> dict[str, dict]:
    """Run every unit that has no result yet on Ray; return ``{key: result}`` for all of them.

    Results are written as each unit finishes; a unit whose task fails after its retries is recorded as
    ``{"error": reason}`` and the others go on.
    """
    import ray

    units_dir = Path(units_dir)
    units_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    todo: dict[str, dict] = {}
    for spec in specs:
        done = load_unit(units_dir, spec)
        if done is not None:
            results[spec["key"]] = done
        else:
            todo.setdefault(spec["key"], spec)
    log.info("%d units cached, %d to run", len(results), len(todo))
    if not todo:
        return results
    init_ray(ray_address)
    remote = ray.remote(max_retries=max_retries, retry_exceptions=False)(run_unit).options(**_resources())
    pending = {remote.remote(spec): spec for spec in todo.values()}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            spec = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # a unit that failed for good: record it, keep going
                reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
                log.warning("unit %s (%s on %s) failed: %s", spec["key"], spec["method"], spec["setting"], reason)
                results[spec["key"]] = {"error": reason}
                write_json(unit_path(units_dir, spec).with_suffix(".error.json"), {**spec, "error": reason})
                continue
            _save_unit(units_dir, spec, result)
            results[spec["key"]] = result
            if on_done:
                on_done(spec, result)
    return results


# ---- Prefect task -------------------------------------------------------------------------------------------

from tasks.common import stage  # noqa: E402


@stage(name="run_experiments", retries=2, retry_delay_seconds=5)
def run_experiments_task(specs: list[dict], units_dir: str, ray_address: str | None = None) -> dict[str, str]:
    """Prefect task over :func:`run_units`; returns ``{unit key: "ok" | error}`` (results stay in files)."""
    from prefect import get_run_logger

    logger = get_run_logger()

    def done(spec, result):
        logger.info("unit %s on %s: mean final return %.3f (%.1f s)", spec["method"], spec["setting"],
                    float(np.mean(result["final_return"])), float(result["seconds"]))

    results = run_units(specs, Path(units_dir), ray_address=ray_address, on_done=done)
    return {k: (r["error"] if "error" in r else "ok") for k, r in results.items()}
