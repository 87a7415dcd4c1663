"""Faults at the level of experiment units (ARCHITECTURE.md section 6): a killed Ray worker, a unit past its time
limit, a candidate that crashes, a full disk, an unwritable folder, a busy run id.

The unit tests share one local Ray of one CPU started in this process (each unit is one seed, one PPO update of
2048 steps on Empty-5x5); whole-flow behaviour is in test_ray_cluster.py, test_ui.py and
tests/flows/test_cli.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from clusters import ROOT, SCIENTIST

from jaxlib_kernels.templates.lpo import baseline_source
from tasks import experiments
from tasks.runtime.runfolder import RunFolder, RunFolderError

RAISES = (Path(__file__).parents[1] / "tasks" / "hostile" / "raises.py").read_text()


def tiny(seed: int = 0, source: str | None = None, steps: int = 2048, method: str = "ppo_clip") -> dict:
    return experiments.unit_spec("lpo", method, "baseline", source or baseline_source("ppo_clip"), "empty5", steps,
                                 [seed])


def running_units() -> list[psutil.Process]:
    """Workers of this test's own Ray (descendants of this process) executing a unit now: Ray titles them
    ``ray::run_unit``. Other Ray clusters on the machine are never looked at."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if cmd and cmd[0].startswith("ray::run_unit"):
            out.append(p)
    return out


def entries(units: Path) -> list[dict]:
    path = units / "ledger.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():  # started in this process by an earlier test: start one of our own
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=128 << 20, log_to_driver=False,
             runtime_env={"env_vars": experiments.ray_env()})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    return tmp_path_factory.mktemp("units")


def test_ray_env_carries_the_compile_cache_and_the_prefect_server(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4321/api")
    env = experiments.ray_env()
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path)
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    monkeypatch.delenv("PREFECT_API_URL")
    assert "PREFECT_API_URL" not in experiments.ray_env()


def test_resources_per_unit_and_cluster_capacity(monkeypatch):
    assert experiments.unit_resources({"CPU": 16.0}) == {"num_cpus": 1}
    monkeypatch.setenv("SCIENTIST_GPU_FRACTION", "0.25")
    gpu = experiments.unit_resources({"CPU": 16.0, "GPU": 2.0})
    assert gpu == {"num_gpus": 0.25, "num_cpus": 1}
    assert experiments.capacity(gpu, {"CPU": 16.0, "GPU": 2.0}) == 8  # 4 units share each GPU
    assert experiments.capacity(gpu, {"CPU": 4.0, "GPU": 2.0}) == 4  # CPUs bound it
    assert experiments.capacity({"num_cpus": 1}, {"CPU": 3.0}) == 3
    monkeypatch.setenv("SCIENTIST_GPU_FRACTION", "2")
    with pytest.raises(ValueError, match="SCIENTIST_GPU_FRACTION"):
        experiments.unit_resources({"GPU": 1.0})


def test_unwritable_units_folder_is_a_clear_error_before_any_work():
    with pytest.raises(RunFolderError, match="cannot write the experiment units folder /proc/version/units"):
        experiments.run_units([tiny()], Path("/proc/version/units"))


def test_a_crashing_candidate_is_recorded_as_failed_and_the_others_go_on(local_ray, tmp_path):
    bad = tiny(source=RAISES, method="raises")
    results = experiments.run_units([bad], tmp_path)
    assert "ValueError" in results[bad["key"]]["error"] and "not implemented yet" in results[bad["key"]]["error"]
    [entry] = entries(tmp_path)
    assert entry["status"] == "failed" and entry["key"] == bad["key"] and "ValueError" in entry["error"]
    assert json.loads((tmp_path / f"{bad['key']}.error.json").read_text())["error"] == entry["error"]
    assert not (tmp_path / f"{bad['key']}.npz").exists()


def test_a_unit_past_its_time_limit_is_stopped_and_recorded(local_ray, tmp_path):
    slow = tiny(steps=2048 * 400)  # hundreds of PPO updates: far beyond a 3 s limit
    results = experiments.run_units([slow], tmp_path, timeout_s=3)
    reason = results[slow["key"]]["error"]
    assert "timed out" in reason and "time limit of 3 s" in reason
    [entry] = entries(tmp_path)
    assert entry["status"] == "failed" and entry["error"] == reason
    assert not (tmp_path / f"{slow['key']}.npz").exists()
    while running_units():  # the cancelled worker is killed, not left computing
        time.sleep(0.5)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_unit_completes(local_ray, units):
    spec = tiny()
    box = {}
    thread = threading.Thread(target=lambda: box.update(experiments.run_units([spec], units)))
    thread.start()
    victims = []
    while not victims:
        assert thread.is_alive(), box
        victims = running_units()
        time.sleep(0.2)
    [victim] = victims
    killed = victim.pid
    victim.kill()
    thread.join()
    result = box[spec["key"]]
    assert "error" not in result, result
    assert np.asarray(result["final"]).shape == (1,)
    [entry] = entries(units)
    assert entry["status"] == "ok" and entry["pid"] != killed and entry["node_id"]
    on_disk = experiments.load_unit(units, spec)
    assert int(on_disk["pid"]) == entry["pid"] and str(on_disk["node_id"]) == entry["node_id"]


def test_a_full_disk_stops_the_run_clearly_and_keeps_earlier_units(local_ray, units, monkeypatch):
    if not list(units.glob("*.npz")):  # normally left by the worker-kill test
        experiments.run_units([tiny()], units)
    [done] = [p for p in units.glob("*.npz")]
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in units.iterdir()}
    assert len(before) == 3  # <key>.npz, <key>.json, ledger.jsonl

    def no_space(path, **arrays):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(experiments.np, "savez", no_space)
    first = tiny()
    new = tiny(seed=1)
    with pytest.raises(RunFolderError) as err:
        experiments.run_units([first, new], units)
    message = str(err.value)
    assert "No space left on device" in message and new["key"] in message
    assert "intact" in message and "--run-id" in message
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in units.iterdir()}
    assert after == before  # nothing half-written, nothing earlier touched
    monkeypatch.undo()
    assert experiments.load_unit(units, first) is not None and done.name == f"{first['key']}.npz"


def test_a_second_process_on_a_busy_run_id_is_refused(tmp_path):
    runs = tmp_path / "runs"
    run = RunFolder(runs, "busy")
    run.lock()
    try:
        out = subprocess.run([*SCIENTIST, "run", "--profile", "smoke", "--run-id", "busy", "--runs-dir", str(runs)],
                             check=False, cwd=ROOT, capture_output=True, text=True)
    finally:
        run.unlock()
    assert out.returncode == 2, out
    assert "run busy is in use by another process" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (run.path / ".prefect").exists()  # refused before any Prefect server or Ray started


def test_the_experiments_stage_does_not_retry_a_run_folder_error():
    from prefect.states import Failed

    retry = experiments.run_experiments_task.retry_condition_fn
    assert retry(None, None, Failed(data=RunFolderError("cannot save experiment unit: disk full"))) is False
    assert retry(None, None, Failed(data=ConnectionError("Ray head unreachable"))) is True


def test_the_local_ray_size_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("SCIENTIST_RAY_NUM_CPUS", raising=False)
    assert experiments.local_ray_cpus() is None  # all the machine's CPUs
    monkeypatch.setenv("SCIENTIST_RAY_NUM_CPUS", "3")
    assert experiments.local_ray_cpus() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("SCIENTIST_RAY_NUM_CPUS", bad)
        with pytest.raises(ValueError, match="SCIENTIST_RAY_NUM_CPUS must be a whole number"):
            experiments.local_ray_cpus()


def test_a_run_session_records_a_failure_keeps_its_fields_and_always_unlocks(tmp_path):
    from tasks.runtime.session import RunSession

    with pytest.raises(ValueError, match="boom"), RunSession(tmp_path, "s1", id_prefix="lpo", template="lpo") as s:
        assert not s.resumed
        with pytest.raises(RunFolderError, match="in use by another process"):
            RunFolder(tmp_path, "s1").lock()
        raise ValueError("boom")
    run = json.loads((tmp_path / "s1" / "run.json").read_text())
    assert run["status"] == "failed" and run["error"] == "ValueError: boom" and run["template"] == "lpo"
    assert run["resumed"] is False and run["versions"]["python"] and run["pid"] > 0
    released: list[str] = []
    with RunSession(tmp_path, "s1", id_prefix="lpo", kind="discovery") as s:
        s.on_close(lambda: released.append("ray actors"))
        assert s.resumed
        with s.timed("stage"):
            pass
        s.finish("finished", generation=3)
    run = json.loads((tmp_path / "s1" / "run.json").read_text())
    assert run["status"] == "finished" and run["kind"] == "discovery" and run["generation"] == 3
    assert run["resumed"] is True and "stage" in s.timings and released == ["ray actors"]
    RunFolder(tmp_path, "s1").lock()  # unlocked when the session closed
