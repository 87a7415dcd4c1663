"""Aggregation: unit results -> a tidy pandas table (``results.parquet``) and ``final_info.json`` with means,
standard errors, 95% confidence intervals (Student t, cut to the metric's ``bounds`` where it declares them) and a
Welch t-test of the candidate against the best baseline of each setting (the best by the template's metric and its
direction, ``Metric.best``). A comparison is called ``significant`` only with ``MIN_SEEDS`` seeds in both arms and a
Holm-adjusted p (over the settings) below ``jaxlib_kernels.stats.ALPHA``; the raw test's verdict is kept as ``significant_raw``.
``replication.json`` tests the candidate against every baseline on every setting (one-sided, Holm across all the
pairs, IQM with a bootstrap interval: ``jaxlib_kernels.stats.replication``, the discovery engine's admission too).

The tidy frame has one row per curve point (``metric == "curve"``, ``step`` = the curve's x) and one per seed's
final value (``metric == "final"``); the template's ``ResultSchema`` names them for people. A comparison records
the raw ``difference`` (candidate - best) and the ``improvement`` (the metric's sign times it: positive = better),
so no later stage needs to know whether the metric is maximised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jaxlib_kernels.results import SchemaError, check_result
from jaxlib_kernels.stats import (
    MIN_SEEDS,
    clip_interval,
    difference_bounds,
    replication,
    summarize,
    verdicts,
    welch,
)
from jaxlib_kernels.templates import make
from jaxlib_kernels.templates.base import Metric
from tasks.experiments import load_unit
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import write_json

COLUMNS = ["idea", "method", "role", "setting", "held_out", "seed", "step", "metric", "value"]


def tidy_rows(idea: str, spec: dict, result: dict, held_out: bool) -> pd.DataFrame:
    """Curve points and final values of one unit as tidy rows."""
    seeds = spec["seeds"]
    check_result(result, len(seeds))
    curve = np.asarray(result["curve"], dtype=float)
    steps = np.asarray(result["x"])
    frames = []
    for i, seed in enumerate(seeds):
        frames.append(pd.DataFrame({"step": steps, "metric": "curve", "value": curve[i], "seed": seed}))
    final = np.asarray(result["final"], dtype=float)
    frames.append(pd.DataFrame({"step": steps[-1], "metric": "final", "value": final, "seed": seeds}))
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "idea", idea)
    df.insert(1, "method", spec["method"])
    df.insert(2, "role", spec["role"])
    df.insert(3, "setting", spec["setting"])
    df.insert(4, "held_out", bool(held_out))
    return df[COLUMNS]


def final_info(df: pd.DataFrame, candidate: str, metric: Metric | None = None) -> dict:
    """``{setting: {"means", "stderrs", "n", "ci95", "held_out", "maximize", "bounds", "comparison"}}`` from the tidy
    table; a comparison also records ``p_holm``, ``seeds_enough``, ``min_seeds`` and ``significant_raw``."""
    metric = metric or Metric("final", "final value")
    out = {}
    finals = df[df.metric == "final"]
    for setting, group in finals.groupby("setting", sort=False):
        entry = {"means": {}, "stderrs": {}, "n": {}, "ci95": {}, "held_out": bool(group.held_out.iloc[0]),
                 "maximize": metric.maximize, "bounds": list(metric.bounds) if metric.bounds else None}
        by_method = {m: g.sort_values("seed").value.to_numpy() for m, g in group.groupby("method", sort=False)}
        for method, values in by_method.items():
            s = summarize(values)
            entry["means"][method], entry["stderrs"][method] = s["mean"], s["stderr"]
            entry["n"][method], entry["ci95"][method] = s["n"], clip_interval(s["ci95"], metric.bounds)
        baselines = [m for m in by_method if m != candidate and (group[group.method == m].role == "baseline").all()]
        if candidate in by_method and baselines:
            best = metric.best({m: entry["means"][m] for m in baselines})
            test = welch(by_method[candidate], by_method[best])
            improvement = metric.improvement(test["difference"], 0.0)
            entry["comparison"] = {"candidate": candidate, "best_baseline": best, **test, "improvement": improvement,
                                   "ci95": clip_interval(test["ci95"], difference_bounds(metric.bounds)),
                                   "significant_raw": bool(test["significant"]),
                                   "seeds": min(entry["n"][candidate], entry["n"][best])}
        out[setting] = entry
    comps = {s: e["comparison"] for s, e in out.items() if "comparison" in e}
    judged = verdicts({s: c["p_value"] for s, c in comps.items()}, {s: c.pop("seeds") for s, c in comps.items()})
    for setting, comp in comps.items():
        comp.update(judged[setting])
        comp["better"] = bool(comp["significant"] and comp["improvement"] > 0)
        comp["worse"] = bool(comp["significant"] and comp["improvement"] < 0)
    return out


def replication_of(df: pd.DataFrame, candidate: str, metric: Metric) -> dict | None:
    """The candidate against every baseline on every setting (``jaxlib_kernels.stats.replication``: one-sided Welch,
    Holm across all (setting, baseline) pairs, IQM), over the methods with the same seeds on every setting; None
    when the candidate or every baseline is missing somewhere."""
    finals = df[df.metric == "final"]
    settings = list(dict.fromkeys(finals.setting))
    values = {(m, s): g.sort_values("seed").value.to_numpy() for (m, s), g in finals.groupby(["method", "setting"])}
    seeds = {k: len(v) for k, v in values.items()}
    n = {seeds.get((candidate, s)) for s in settings}
    if None in n or len(n) != 1:
        return None
    baselines = [m for m in dict.fromkeys(finals[finals.role == "baseline"].method) if m != candidate
                 and {seeds.get((m, s)) for s in settings} == n]
    if not baselines:
        return None
    out = replication({s: values[(candidate, s)] for s in settings},
                      {s: {b: values[(b, s)] for b in baselines} for s in settings},
                      maximize=metric.maximize, candidate=candidate, min_seeds=MIN_SEEDS)
    held = dict(zip(finals.setting, finals.held_out, strict=True))
    for t in out["tests"]:
        t["held_out"] = bool(held[t["setting"]])
    return {**out, "seeds": sorted(int(x) for x in set(finals.seed)), "settings": settings}


def aggregate(idea: dict, unit_results: list[tuple[dict, dict, bool]], out_dir: Path, env_names: dict,
              metric: Metric | None = None, ran: dict | None = None) -> dict:
    """Write ``results.parquet`` and ``final_info.json`` for one idea; failed units are listed, not hidden.

    ``ran`` (what the units ran, ``idea["replication"]`` of ``flows.pipeline``: ``{"from_tree", "tuned", ...}``)
    goes into every setting's entry: ``replication`` (whether the results replicate the research tree's final
    candidate) and, when something was tuned, ``tuned`` (``{method: {"hparams", "constants_changed"}}``, the
    methods that ran there)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, failed = [], []
    for spec, result, held_out in unit_results:
        if "error" in result:
            failed.append({"method": spec["method"], "setting": spec["setting"], "error": result["error"]})
            continue
        try:
            frames.append(tidy_rows(idea["Name"], spec, result, held_out))
        except SchemaError as exc:
            failed.append({"method": spec["method"], "setting": spec["setting"], "error": str(exc)})
    if not frames:
        raise RuntimeError(f"no experiment of idea {idea['Name']} finished: {failed}")
    df = pd.concat(frames, ignore_index=True)
    df.to_parquet(out_dir / "results.parquet", index=False)
    info = final_info(df, idea["Name"], metric)
    for setting, entry in info.items():
        entry["env"] = env_names.get(setting, "")
        if ran is not None:
            entry["replication"] = bool(ran.get("from_tree"))
            if ran.get("tuned"):
                entry["tuned"] = {m: t for m, t in ran["tuned"].items() if m in entry["means"]}
    write_json(out_dir / "final_info.json", info)
    rep = replication_of(df, idea["Name"], metric or Metric("final", "final value"))
    if rep is not None:
        write_json(out_dir / "replication.json", rep)
    if failed:
        write_json(out_dir / "failed_units.json", failed)
    return {"final_info": info, "results": str(out_dir / "results.parquet"), "failed_units": failed,
            "replication": rep}


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="aggregate_results")
def aggregate_task(template_name: str, idea: dict, specs: list[dict], units_dir: str, idea_dir: str,
                   ran: dict | None = None) -> dict:
    """Prefect task over :func:`aggregate`: reads the idea's units from the run folder."""
    template = make(template_name)
    unit_results = []
    for spec in specs:
        result = load_unit(Path(units_dir), spec)
        if result is None:
            err = Path(units_dir, f"{spec['key']}.error.json")
            result = {"error": err.read_text() if err.exists() else "no result"}
        unit_results.append((spec, result, template.setting(spec["setting"]).held_out))
    env_names = {s: template.setting(s).env for s in {spec["setting"] for spec in specs}}
    return aggregate(idea, unit_results, Path(idea_dir), env_names, template.metric, ran)
