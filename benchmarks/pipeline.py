"""A whole ``scientist run``: time per stage, Prefect + Ray overhead against kernel time, compilations, and a
warm persistent compilation cache against a cold one.

For each profile (``--profiles``, default ``smoke default``) the script runs ``scientist run --profile P`` in a
subprocess with a fresh runs folder and a fresh ``JAX_COMPILATION_CACHE_DIR`` (cold), then, for the profiles in
``--warm-profiles``, runs it again with the same run id (so offline ideation proposes the same ideas) in another
fresh runs folder but the now-filled cache (warm): nothing of the first run is reused but the compiled
executables. ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0`` makes every XLA compilation of the flow process and
the Ray workers write a cache entry, so the new entries of a run are its compilations, and the entries the warm
run adds are what it compiled that the cold one had not (0 is the goal).

Times: the process's wall time; the flow's own stage timings (``run.json``); the experiment units' compute
intervals (``units/<key>.json`` seconds, ending at the ledger's time): their union is the time spent in kernels
(compile included, in the Ray workers). Overhead = (wall - sum of stages: interpreter start, imports, Prefect's
server and flow start and finish) + (experiments stage - kernel time: Ray start, worker start and imports,
scheduling, result transfer). Prints markdown tables, writes ``benchmarks/results/pipeline.json``.

    .venv/bin/python benchmarks/pipeline.py                             # smoke + default, smoke warm (~15 min)
    .venv/bin/python benchmarks/pipeline.py --profiles smoke            # smoke cold + warm (~6 min)
    .venv/bin/python benchmarks/pipeline.py --analyse RUNS_DIR CACHE    # only analyse a finished run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]


def cache_keys(cache_dir: Path) -> set[str]:
    """The entries of a JAX persistent cache folder (``<key>-cache`` / ``<key>-atime`` files count once)."""
    if not cache_dir.exists():
        return set()
    keys = set()
    for path in cache_dir.rglob("*"):
        if path.is_file():
            name = path.name
            for suffix in ("-cache", "-atime"):
                name = name.removesuffix(suffix)
            keys.add(name)
    return keys


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def analyse_run(run_dir: Path, wall_s: float | None) -> dict:
    """Stage times, kernel time and overhead of one finished run folder."""
    run_json = json.loads((run_dir / "run.json").read_text())
    timings = run_json.get("timings") or {}
    units_dir = run_dir / "units"
    ledger = []
    if (units_dir / "ledger.jsonl").exists():
        ledger = [json.loads(line) for line in (units_dir / "ledger.jsonl").read_text().splitlines() if line.strip()]
    units, intervals = [], []
    for entry in ledger:
        meta_path = units_dir / f"{entry['key']}.json"
        seconds = json.loads(meta_path.read_text()).get("seconds") if meta_path.exists() else None
        units.append({"method": entry.get("method"), "setting": entry.get("setting"), "seconds": seconds,
                      "pid": entry.get("pid")})
        if seconds is not None:
            intervals.append((entry["time"] - seconds, entry["time"]))
    wall = float(wall_s if wall_s is not None else run_json.get("wall_seconds") or sum(timings.values()))
    stages = float(sum(timings.values()))
    experiments = float(timings.get("experiments", 0.0))
    kernel = union_length(intervals)
    outside = max(0.0, wall - stages)
    ray = max(0.0, experiments - kernel)
    return {
        "run_id": run_json.get("run_id"), "status": run_json.get("status"), "wall_s": wall,
        "flow_wall_s": run_json.get("wall_seconds"), "stages_s": timings, "units": units,
        "unit_seconds_sum": float(sum(u["seconds"] or 0.0 for u in units)), "kernel_busy_s": kernel,
        "workers": len({u["pid"] for u in units}),
        "overhead_outside_stages_s": outside, "overhead_ray_in_experiments_s": ray,
        "overhead_s": outside + ray, "overhead_share": (outside + ray) / wall if wall else None,
        "kernel_share": kernel / wall if wall else None,
    }


def run_once(profile: str, run_id: str, runs_dir: Path, cache_dir: Path, extra: list[str]) -> dict:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               LITELLM_LOCAL_MODEL_COST_MAP="True", SCIENTIST_RUNS_DIR=str(runs_dir))
    before = cache_keys(cache_dir)
    cmd = [str(Path(sys.executable).parent / "scientist"), "run", "--profile", profile, "--run-id", run_id,
           "--runs-dir", str(runs_dir), *extra]
    log = runs_dir.parent / f"{runs_dir.name}.log"
    runs_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    after = cache_keys(cache_dir)
    result = {"profile": profile, "command": " ".join(cmd[1:]), "returncode": proc.returncode,
              "new_cache_entries": sorted(after - before), "compilations": len(after - before),
              "cache_entries_after": len(after), "log": str(log)}
    run_dir = runs_dir / run_id
    if (run_dir / "run.json").exists():
        result.update(analyse_run(run_dir, wall))
    else:
        result["wall_s"] = wall
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["smoke", "default"])
    parser.add_argument("--warm-profiles", nargs="*", default=["smoke"],
                        help="profiles also run a second time on the warm cache (default: smoke)")
    parser.add_argument("--extra", default="", help="more `scientist run` flags, e.g. '--budget 8192'")
    parser.add_argument("--workdir", default=None, help="where runs and caches go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--analyse", nargs=2, metavar=("RUN_DIR", "CACHE_DIR"),
                        help="only analyse a finished run folder (no run)")
    parser.add_argument("--out", default=str(common.RESULTS / "pipeline.json"))
    args = parser.parse_args(argv)

    runs, facts = [], common.machine()
    if args.analyse:
        run_dir, cache_dir = map(Path, args.analyse)
        entry = {"profile": "analysed", **analyse_run(run_dir, None), "cache_entries_after": len(cache_keys(cache_dir))}
        runs.append({"cache": "given", **entry})
        workdir = None
    else:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-"))
        workdir.mkdir(parents=True, exist_ok=True)
        extra = args.extra.split()
        for profile in args.profiles:
            run_id = f"bench-{profile}"
            cache = workdir / f"cache-{profile}"
            shutil.rmtree(cache, ignore_errors=True)
            print(f"{profile}: cold run ...", flush=True)
            cold = run_once(profile, run_id, workdir / f"runs-{profile}-cold", cache, extra)
            runs.append({"cache": "cold", **cold})
            if profile in (args.warm_profiles or []):
                print(f"{profile}: warm run ...", flush=True)
                warm = run_once(profile, run_id, workdir / f"runs-{profile}-warm", cache, extra)
                # a program the cold run compiled has the same key here: a hit, no new entry; every new entry is a
                # compilation the cold run's cache could not serve
                warm["cache_misses"] = warm["compilations"]
                runs.append({"cache": "warm", **warm})

    result = {"benchmark": "pipeline", "runs": runs, "workdir": str(workdir) if workdir else None,
              "machine": facts, "versions": common.versions()}
    print(f"\n## pipeline: whole `scientist run`, {result['machine'].get('device')}\n")
    print(common.table(
        ["profile", "cache", "exit", "wall (s)", "stages (s)", "kernel busy (s)", "unit s (sum)", "overhead (s)",
         "overhead share", "compilations (new cache entries)"],
        [[r["profile"], r["cache"], r.get("returncode"), r.get("wall_s"),
          " · ".join(f"{k} {v:.0f}" for k, v in (r.get("stages_s") or {}).items()), r.get("kernel_busy_s"),
          r.get("unit_seconds_sum"), r.get("overhead_s"),
          f"{100 * r['overhead_share']:.1f}%" if r.get("overhead_share") is not None else None,
          r.get("compilations")] for r in runs]))
    print("\noverhead = outside the stages (interpreter, imports, Prefect server and flow start/finish) + Ray's part "
          "of the experiments stage (the stage minus the union of the units' compute intervals)")
    for r in runs:
        if r["cache"] == "warm":
            print(f"{r['profile']} warm: {r['cache_misses']} compilations missed the cache the cold run filled "
                  f"({r['cache_entries_after']} entries in it)")
    print(f"\nwrote {common.write(result, args.out)}")
    if workdir and not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
