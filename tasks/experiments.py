"""Experiments: baselines and candidates x settings, seeds vmapped inside a unit, units dispatched as Ray tasks.

A unit is (template, candidate text, setting, budget, seeds). Its key is a hash of exactly that plus the template's
kernel fingerprint (the repr of the kernel's configuration for the unit and the source of the kernel modules,
``Template.kernel_fingerprint``): a change to ``ppo.py`` or to a setting's configuration gives new keys, so the
units are computed again, while a change to the writeup keeps them. Its result
is written atomically to ``runs/<id>/units/<key>.npz`` the moment Ray returns it, so a run killed halfway
re-dispatches only the units that have no file (a line per finished or failed unit, with the Ray node and
process that ran it, goes to ``units/ledger.jsonl``). Fault handling (retries of killed workers, the per-unit time
limit, full disks) is described in :func:`run_units` and ``infra/ray/README.md``.
Workers share the JAX persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``), so a kernel compiled once is
reused by every later unit with the same shapes, across processes and runs. Baseline units do not depend on
the idea, so ideas of one run (and any later run with the same settings) share them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from prefect import get_run_logger

from jaxlib_kernels.results import check_result
from tasks.runtime.artifacts import Progress
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import RunFolderError, check_writable, write_json

# JAX warns on every fork of its (multithreaded) process. Ours are all fork+exec (subprocess with a preexec_fn:
# Ray's start of its local processes, which sets PR_SET_PDEATHSIG in the child; no Python runs after the fork but
# that hook), where nothing of JAX's state is used before exec: the warning does not apply to them.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
# Ray 2.60 says on every local start that it turned token authentication on (it found ~/.ray/auth_token): a
# notice, not a problem. Only that line is dropped; its warning that authentication is *off* still shows.
logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
    lambda record: not record.getMessage().startswith("Token authentication is enabled for this Ray cluster"))
# Ray warns that it set no SIGTERM handler when ``ray.init`` runs outside the main thread, which ours does on
# purpose (the warm-up thread, ``start_ray_in_background``). Its handler would only turn SIGTERM into sys.exit; a
# flow process ends on SIGTERM either way, and tasks/runtime/lifeline.py takes what it started with it. Only that line.
logging.getLogger("ray._private.worker").addFilter(
    lambda record: not record.getMessage().startswith("SIGTERM handler is not set because current thread"))

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "jax"
_RAY_INIT_LOCK = threading.Lock()  # the warm-up thread and the experiments stage may both ask for Ray


def unit_spec(template, method: str, role: str, source: str, setting: str, budget: int, seeds: list[int],
              hparams: dict | None = None) -> dict:
    """One unit: ``template`` (a Template or its name), candidate text, setting, budget (already scaled), seeds, and
    the hyperparameters (``Template.hparams``) its kernel configuration takes instead of the defaults (none: {})."""
    if isinstance(template, str):
        from jaxlib_kernels.templates import make

        template = make(template)
    hparams = {k: hparams[k] for k in sorted(hparams or {})}
    spec = {"template": template.name, "method": method, "role": role, "source": source, "setting": setting,
            "budget": int(budget), "seeds": [int(s) for s in seeds],
            "kernel": template.kernel_fingerprint(template.setting(setting), int(budget), hparams)}
    if hparams:
        spec["hparams"] = hparams
    # the key ignores the method's name: the same candidate on the same setting is the same experiment
    payload = {k: v for k, v in spec.items() if k not in ("method", "role")}
    spec["key"] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    return spec


def unit_specs(template, profile, method: str, role: str, source: str, hparams: dict | None = None,
               seeds: list[int] | None = None) -> list[dict]:
    """The units of one method on every setting of a profile (budget scaled per setting); ``seeds`` default to
    ``range(profile.seeds)``."""
    seeds = list(range(profile.seeds)) if seeds is None else list(seeds)
    return [unit_spec(template, method, role, source, s, profile.budget_of(template.setting(s)), seeds, hparams)
            for s in profile.settings]


def _where() -> dict:
    """The Ray node (id, IP) and process that run this code; empty ids outside Ray."""
    node_id, ip = "", ""
    try:
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id() or ""
            ip = ray.util.get_node_ip_address()
    except Exception as exc:  # noqa: BLE001 - where we ran is bookkeeping, never a reason to fail a unit
        log.debug("no Ray node information: %s", exc)
    return {"node_id": node_id, "node_ip": ip, "pid": os.getpid()}


def run_unit(spec: dict) -> dict:
    """Evaluate one unit in this process: load the candidate, evaluate every seed (vmapped inside the template)."""
    from jaxlib_kernels import templates

    template = templates.make(spec["template"])
    candidate = template.load(spec["source"])
    start = time.time()
    out = template.evaluate(template.setting(spec["setting"]), spec["budget"], candidate, spec["seeds"],
                            hparams=spec.get("hparams") or None)
    out = {k: np.asarray(v) for k, v in out.items()}
    check_result(out, len(spec["seeds"]))
    if not np.all(np.isfinite(out["final"])):
        raise FloatingPointError(f"the candidate's final {template.metric.name} is not finite on "
                                 f"{int((~np.isfinite(out['final'])).sum())} of {len(spec['seeds'])} seeds")
    out["seconds"] = np.asarray(time.time() - start)
    out.update({k: np.asarray(v) for k, v in _where().items()})
    return out


def unit_path(units_dir: Path, spec: dict) -> Path:
    return Path(units_dir) / f"{spec['key']}.npz"


def load_unit(units_dir: Path, spec: dict) -> dict | None:
    path = unit_path(units_dir, spec)
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _ledger(units_dir: Path, entry: dict) -> None:
    with open(Path(units_dir) / "ledger.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def _where_of(result: dict) -> dict:
    return {"node_id": str(result.get("node_id", "")), "node_ip": str(result.get("node_ip", "")),
            "pid": int(result.get("pid", -1))}


def _save_unit(units_dir: Path, spec: dict, result: dict) -> None:
    """Write a finished unit: ``<key>.npz`` atomically, then its ``.json`` and a ledger line.

    A write that fails (full disk, folder gone read-only) leaves no partial file behind and raises
    :class:`RunFolderError`; units saved before it are untouched.
    """
    path = unit_path(units_dir, spec)
    tmp = path.with_suffix(".tmp.npz")
    try:
        np.savez(tmp, **result)
        os.replace(tmp, path)
        write_json(path.with_suffix(".json"), {k: v for k, v in spec.items() if k != "source"} | {
            "seconds": float(result["seconds"]), **_where_of(result)})
        _ledger(units_dir, {"key": spec["key"], "method": spec["method"], "setting": spec["setting"],
                            "status": "ok", "time": time.time(), **_where_of(result)})
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if not path.with_suffix(".json").exists():
            path.unlink(missing_ok=True)  # without its .json the unit is not finished: computed again on resume
        raise RunFolderError(
            f"cannot save experiment unit {spec['key']} in {units_dir}: {exc.strerror or exc}; units saved "
            "before it are intact, free space (or fix the folder) and re-run the same --run-id to resume") from None


def _record_failure(units_dir: Path, spec: dict, reason: str, where: dict | None = None) -> dict:
    log.warning("unit %s (%s on %s) failed: %s", spec["key"], spec["method"], spec["setting"], reason)
    write_json(unit_path(units_dir, spec).with_suffix(".error.json"), {**spec, "error": reason, **(where or {})})
    _ledger(units_dir, {"key": spec["key"], "method": spec["method"], "setting": spec["setting"], "status": "failed",
                        "error": reason, "time": time.time(), **(where or {})})
    return {"error": reason}


def failure_reason(exc: BaseException) -> str:
    """One line: the exception a unit raised (unwrapped from Ray's RayTaskError) and its message's first line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and "JAX has removed its internal frames" not in line and not line.startswith("---")]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def ray_env() -> dict[str, str]:
    """Environment variables every Ray worker gets.

    The shared JAX compilation cache (so a kernel compiled once is reused by every later unit, on every node
    that sees the folder; the exported programs of ``jaxlib_kernels/exported.py`` live beside it), the CPU platform if forced, and the Prefect API of the driver: units are plain Ray
    tasks that never talk to Prefect, but anything Prefect inside a worker must report to the driver's server,
    never start a temporary server of its own (ARCHITECTURE.md section 6).
    """
    env = {
        "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", str(DEFAULT_CACHE)),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    for name in ("JAX_PLATFORMS", "XLA_FLAGS", "PREFECT_API_URL", "PREFECT_API_KEY", "SCIENTIST_EXPORT_CACHE",
                 "SCIENTIST_EXPORT_CACHE_DIR"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def init_ray(address: str | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``) when given, otherwise start a local Ray in this process."""
    import ray

    with _RAY_INIT_LOCK:
        if not ray.is_initialized():
            _init_ray(ray, address)


def _init_ray(ray, address: str | None) -> None:
    address = address or os.environ.get("RAY_ADDRESS") or None
    Path(ray_env()["JAX_COMPILATION_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    kwargs = {"runtime_env": {"env_vars": ray_env()}, "logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(include_dashboard=False, object_store_memory=256 * 1024 * 1024, num_cpus=local_ray_cpus(), **kwargs)


def local_ray_cpus() -> int | None:
    """CPUs of a local Ray (``SCIENTIST_RAY_NUM_CPUS``; unset: all of them). Each CPU is a worker process that
    imports, traces and loads every kernel it meets, so on a shared machine fewer workers can cost less in all."""
    value = os.environ.get("SCIENTIST_RAY_NUM_CPUS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"SCIENTIST_RAY_NUM_CPUS must be a whole number of CPUs >= 1, got {value!r}")
    return int(value)


def unit_resources(cluster: dict | None = None) -> dict:
    """Ray resources one unit asks for: a share of a GPU (``SCIENTIST_GPU_FRACTION``) where GPUs exist, else a CPU."""
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
    if cluster.get("GPU", 0):
        fraction = float(os.environ.get("SCIENTIST_GPU_FRACTION", "1.0"))
        if not 0 < fraction <= 1:
            raise ValueError(f"SCIENTIST_GPU_FRACTION must be in (0, 1], got {fraction}")
        return {"num_gpus": fraction, "num_cpus": 1}
    return {"num_cpus": 1}


def capacity(resources: dict, cluster: dict) -> int:
    """How many units the cluster runs at once with these requests (at least 1)."""
    slots = [cluster.get("CPU", 1) // resources.get("num_cpus", 1)]
    if resources.get("num_gpus"):
        slots.append(cluster.get("GPU", 0) // resources["num_gpus"])
    return max(1, int(min(slots)))


def _warm_worker() -> str:
    """Import what a unit imports, so the worker process Ray keeps in its pool is ready for the first unit."""
    import jax  # noqa: F401

    from jaxlib_kernels import templates  # noqa: F401 - every registered template and its kernels

    return _where().get("node_id", "")


def start_ray_in_background(address: str | None = None) -> threading.Event:
    """Start (or join) Ray and warm one worker per unit slot in a thread, while the flow's first stages run;
    the returned event is set when that is done (or has failed).

    Measured by ``benchmarks/pipeline.py``: Ray's start and the workers' imports were 10-30 s of a run's fixed
    overhead, spent inside the experiments stage. A failure here is only logged: the experiments stage starts
    Ray itself (and says why if it cannot). The thread then stays parked for the life of the process: Ray
    starts its local processes with Linux's PR_SET_PDEATHSIG, which fires when the *thread* that started them
    ends, so a thread that returned would take the local Ray cluster down with it.
    """
    ready = threading.Event()

    def warm() -> None:
        try:
            init_ray(address)
            import ray

            resources = unit_resources()
            n = capacity(resources, ray.cluster_resources())
            ray.get([ray.remote(_warm_worker).options(**resources).remote() for _ in range(n)])
        except Exception as exc:  # noqa: BLE001 - the experiments stage retries and reports
            log.warning("warming Ray up failed (the experiments stage will start it): %s", exc)
        finally:
            ready.set()
        threading.Event().wait()  # parked: see the docstring

    threading.Thread(target=warm, name="ray-warm-up", daemon=True).start()
    return ready


def unit_timeout_default() -> float | None:
    """``SCIENTIST_UNIT_TIMEOUT`` seconds (unset or 0: no limit)."""
    value = float(os.environ.get("SCIENTIST_UNIT_TIMEOUT", "0") or 0)
    return value if value > 0 else None


def run_units(specs: list[dict], units_dir: Path, ray_address: str | None = None, max_retries: int = 3,
              on_done=None, timeout_s: float | None = None) -> dict[str, dict]:
    """Run every unit that has no result yet on Ray; return ``{key: result}`` for all of them.

    * Each unit is a Ray task asking for :func:`unit_resources`, spread over the nodes. At most as many are in
      flight as the cluster can run at once, so a unit's clock starts when it is sent.
    * A worker (or node) that dies during a unit is a system failure: Ray runs the unit again, up to
      ``max_retries`` times. An exception raised by the unit itself (a candidate that crashes) is not retried:
      the unit is recorded as failed with the reason and the others go on.
    * ``timeout_s`` (default ``SCIENTIST_UNIT_TIMEOUT``): a unit running longer is cancelled (its worker is
      killed) and recorded as failed with the reason.
    * Results are written as each unit finishes, with the node and process that ran it in ``ledger.jsonl``; a
      unit that cannot be written (full disk) stops the run with :class:`RunFolderError`.
    """
    import ray

    units_dir = Path(units_dir)
    check_writable(units_dir, "the experiment units folder")
    timeout_s = unit_timeout_default() if timeout_s is None else (timeout_s if timeout_s > 0 else None)
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
    resources = unit_resources()
    remote = ray.remote(run_unit).options(max_retries=max_retries, retry_exceptions=False,
                                          scheduling_strategy="SPREAD", **resources)
    queue = list(todo.values())
    pending: dict = {}  # ref -> (spec, deadline)
    try:
        while queue or pending:
            slots = capacity(resources, ray.cluster_resources())
            while queue and len(pending) < slots:
                spec = queue.pop(0)
                pending[remote.remote(spec)] = (spec, time.time() + timeout_s if timeout_s else None)
            deadlines = [d for _, d in pending.values() if d is not None]
            wait_s = max(0.0, min(deadlines) - time.time()) + 0.05 if deadlines else None
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            for ref in ready:
                spec, _ = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the unit's own error, or retries used up: record it, keep going
                    results[spec["key"]] = _record_failure(units_dir, spec, failure_reason(exc))
                    continue
                _save_unit(units_dir, spec, result)
                results[spec["key"]] = result
                if on_done:
                    on_done(spec, result)
            now = time.time()
            for ref, (spec, deadline) in list(pending.items()):
                if deadline is not None and now >= deadline:
                    ray.cancel(ref, force=True)  # kills the worker; a cancelled task is not retried
                    pending.pop(ref)
                    results[spec["key"]] = _record_failure(
                        units_dir, spec, f"timed out: stopped after the unit time limit of {timeout_s:g} s")
    finally:
        for ref in pending:  # stopping early (an error, Ctrl-C): do not leave units running on the cluster
            ray.cancel(ref, force=True)
    return results


# ---- Prefect task -------------------------------------------------------------------------------------------

def _retry_unless_run_folder_error(task, task_run, state) -> bool:
    """Prefect retries the stage on transient errors, not on a run folder that cannot be written."""
    return not isinstance(getattr(state, "data", None), RunFolderError)


@stage(name="run_experiments", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_run_folder_error,
       modules=("jaxlib_kernels.results",))
def run_experiments_task(specs: list[dict], units_dir: str, ray_address: str | None = None) -> dict[str, str]:
    """Prefect task over :func:`run_units`; returns ``{unit key: "ok" | error}`` (results stay in files)."""
    logger = get_run_logger()
    keys = {s["key"]: s for s in specs}
    finished = sum(load_unit(Path(units_dir), s) is not None for s in keys.values())
    progress = Progress(len(keys), "experiment units", key="experiment-progress")
    progress.update(finished)

    def done(spec, result):
        nonlocal finished
        finished += 1
        progress.update(finished)
        logger.info("unit %s on %s: mean final %.3f (%.1f s, node %s pid %s)", spec["method"], spec["setting"],
                    float(np.mean(result["final"])), float(result["seconds"]), str(result.get("node_ip", "")),
                    int(result.get("pid", -1)))

    results = run_units(specs, Path(units_dir), ray_address=ray_address, on_done=done)
    progress.update(len(keys))
    failed = {k: r["error"] for k, r in results.items() if "error" in r}
    for key, reason in failed.items():
        logger.warning("unit %s failed: %s", key, reason)
    return {k: r.get("error", "ok") for k, r in results.items()}
