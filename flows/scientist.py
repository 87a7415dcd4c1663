"""The AI-Scientist flow (DESIGN.md section 1), after Lu et al., 2024, "The AI Scientist".

ideas -> novelty -> candidate code (sandboxed gate) -> experiments on Ray -> aggregation -> plots -> paper ->
review -> summary. One change from the design card: instead of one subflow per idea that runs its own
experiments, the flow sends the units of every idea (and the baselines once) to Ray in one wave, so the cluster
is saturated and baseline units are computed once per run, not once per idea; the per-idea stages after it run
concurrently (mapped) on Prefect's thread pool.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from jaxlib_kernels import symbolic
from jaxlib_kernels.templates import make as make_template
from tasks import aggregation, archive, codegen, experiments, ideation, novelty, summary
from tasks.reporting import make_plots_task, review_paper_task, write_paper_task
from tasks.common import storage
from tasks.runfolder import RunFolder, git_revision, new_run_id, package_versions, write_json


def _profile(template, profile: str, num_ideas: int | None, seeds: int | None, timesteps: int | None):
    prof = template.profile(profile)
    changes = {}
    if num_ideas is not None:
        changes["num_ideas"] = int(num_ideas)
    if seeds is not None:
        changes["seeds"] = int(seeds)
    if timesteps is not None:
        changes["total_timesteps"] = int(timesteps)
    return dataclasses.replace(prof, **changes)


def _baseline_specs(template, prof) -> list[dict]:
    seeds = list(range(prof.seeds))
    return [
        experiments.unit_spec(template.name, b, "baseline", symbolic.render_source(template.baselines[b],
                              template.plugin_name, doc=f"{template.baseline_labels[b]}."), s, prof.total_timesteps, seeds)
        for b in prof.baselines for s in prof.settings
    ]


def _candidate_specs(template, prof, idea: dict) -> list[dict]:
    seeds = list(range(prof.seeds))
    return [experiments.unit_spec(template.name, idea["Name"], "candidate", idea["source"], s, prof.total_timesteps,
                                  seeds) for s in prof.settings]


def _wait(futures, ideas: list[dict], stage: str) -> list:
    """Results of mapped futures; a failed one marks its idea failed with the reason and yields None."""
    out = []
    for fut, idea in zip(futures, ideas, strict=True):
        fut.wait()
        if fut.state.is_completed():
            out.append(fut.result())
        else:
            msg = fut.state.message or "failed"
            try:
                fut.result()
            except Exception as exc:  # the reason, recorded on the idea
                msg = f"{type(exc).__name__}: {exc}"
            idea["status"] = f"failed at {stage}: {msg}"
            get_run_logger().error("%s failed at %s: %s", idea["Name"], stage, msg)
            out.append(None)
    return out


def _result_summary(idea: dict, info: dict) -> dict:
    train = [v for v in info.values() if not v["held_out"]]
    held = [v for v in info.values() if v["held_out"]]
    name = idea["Name"]

    def mean(entries, key=None):
        vals = [e["means"].get(key or e.get("comparison", {}).get("best_baseline")) for e in entries]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    return {
        "train_mean": mean(train, name), "held_out_mean": mean(held, name), "best_baseline_mean": mean(train),
        "significant_wins": sum(1 for e in info.values() if e.get("comparison", {}).get("significant")
                                and e["comparison"]["difference"] > 0),
    }


@flow(name="ai-scientist", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def ai_scientist(
    template: str = "lpo",
    num_ideas: int | None = None,
    seeds: int | None = None,
    profile: str = "default",
    model: str | None = None,
    run_id: str | None = None,
    runs_dir: str = "runs",
    timesteps: int | None = None,
    ray_address: str | None = None,
) -> dict:
    """Propose, check, implement, run, write up and review research ideas on one template."""
    logger = get_run_logger()
    t0 = time.time()
    tpl = make_template(template)
    prof = _profile(tpl, profile, num_ideas, seeds, timesteps)
    run = RunFolder(runs_dir, run_id or new_run_id(template))
    run.lock()
    resumed = run.exists()
    timings: dict[str, float] = {}
    try:
        run.update_run_json(
            run_id=run.run_id, template=template, profile=dataclasses.asdict(prof), model=model,
            backend="llm" if model else "offline", status="running", resumed=resumed,
            versions=package_versions(), git_revision=git_revision(), ray_address=ray_address or os.environ.get("RAY_ADDRESS"),
            prefect_api_url=os.environ.get("PREFECT_API_URL"), pid=os.getpid(),
        )
        print(f"run {run.run_id} ({'resumed' if resumed else 'new'}) in {run.path}")
        store = {"result_storage": storage(run.results_store)}
        archive_rows = [r for r in archive.candidates(run.archive, template) if r["run_id"] != run.run_id]

        # ideation and novelty
        s = time.time()
        ideas = ideation.generate_ideas_task.with_options(**store)(template, dataclasses.asdict(prof),
                                                                    prof.num_ideas, run.run_id, archive_rows)
        decisions = _wait(novelty.check_novelty_task.with_options(**store).map(unmapped(template), ideas, unmapped(archive_rows)),
                          ideas, "novelty")
        for idea, d in zip(ideas, decisions, strict=True):
            idea["novelty"] = d
            idea["status"] = "novel" if d and d["decision"] == "novel" else idea.get("status", "not novel")
        write_json(run.ideas_json, ideas)
        create_table_artifact(key="ideas", table=[{k: i.get(k) for k in ("Name", "Title", "Interestingness",
                              "Feasibility", "Novelty", "status")} for i in ideas], description=f"Ideas of {run.run_id}")
        timings["ideation+novelty"] = time.time() - s
        print(f"{len(ideas)} ideas, {sum(i['status'] == 'novel' for i in ideas)} novel")

        # code + validation gate
        s = time.time()
        novel = [i for i in ideas if i["status"] == "novel"]
        impls = _wait(codegen.implement_candidate_task.with_options(**store).map(
            unmapped(template), novel, [str(run.idea_dir(i["Name"])) for i in novel]), novel, "implementation")
        for idea, impl in zip(novel, impls, strict=True):
            if impl is None:
                continue
            idea["source"], idea["validation"] = impl["source"], impl["validation"]
            idea["status"] = "implemented" if impl["accepted"] else f"rejected by the gate: {impl['validation']['reason']}"
        write_json(run.ideas_json, ideas)
        timings["implementation"] = time.time() - s
        ready = [i for i in ideas if i["status"] == "implemented"]
        print(f"{len(ready)} candidates passed the validation gate")

        # experiments: one wave of units on Ray
        s = time.time()
        base_specs = _baseline_specs(tpl, prof)
        cand_specs = {i["Name"]: _candidate_specs(tpl, prof, i) for i in ready}
        all_specs = base_specs + [spec for specs in cand_specs.values() for spec in specs]
        print(f"running {len(all_specs)} experiment units ({prof.seeds} seeds each) on Ray")
        experiments.run_experiments_task.with_options(**store)(all_specs, str(run.units_dir), ray_address)
        timings["experiments"] = time.time() - s

        # per idea: aggregate, plot, write, review
        s = time.time()
        specs_of = [base_specs + cand_specs[i["Name"]] for i in ready]
        aggs = _wait(aggregation.aggregate_task.with_options(**store).map(
            unmapped(template), ready, specs_of, unmapped(str(run.units_dir)), [str(run.idea_dir(i["Name"])) for i in ready]), ready, "aggregation")
        done = []
        for idea, agg in zip(ready, aggs, strict=True):
            if agg is not None:
                idea["final_info"], idea["result"] = agg["final_info"], _result_summary(idea, agg["final_info"])
                done.append(idea)
        figs = _wait(make_plots_task.with_options(**store).map(
            unmapped(template), done, [str(run.idea_dir(i["Name"])) for i in done]), done, "plotting")
        plotted = [(i, f) for i, f in zip(done, figs, strict=True) if f is not None]
        context = {"profile": dataclasses.asdict(prof), "run_id": run.run_id}
        papers = _wait(write_paper_task.with_options(**store).map(
            unmapped(template), [i for i, _ in plotted], [f for _, f in plotted], unmapped(context),
            [str(run.idea_dir(i["Name"])) for i, _ in plotted]), [i for i, _ in plotted], "writeup")
        written = []
        for (idea, _), paper in zip(plotted, papers, strict=True):
            if paper is not None:
                idea["paper"] = paper
                written.append(idea)
        reviews = _wait(review_paper_task.with_options(**store).map(
            unmapped(template), written, [str(run.idea_dir(i["Name"])) for i in written]), written, "review")
        for idea, rev in zip(written, reviews, strict=True):
            if rev is not None:
                idea["review"] = rev
                idea["status"] = "reviewed"
        timings["analysis+writeup+review"] = time.time() - s

        # summary, archive, artifacts
        write_json(run.ideas_json, ideas)
        summary.update_archive(run.archive, run.run_id, template, [i for i in ideas if i.get("final_info")])
        text = summary.write_summary(run.path, run.run_id, ideas, timings)
        create_markdown_artifact(key="run-summary", markdown=text, description=f"Leaderboard of {run.run_id}")
        papers_out = [{"idea": i["Name"], "pdf": (i.get("paper") or {}).get("pdf"),
                       "decision": (i.get("review") or {}).get("Decision"), "overall": (i.get("review") or {}).get("Overall")}
                      for i in ideas if i.get("paper")]
        for p in papers_out:
            print(f"paper: {p['pdf']}  review: {p['decision']} (overall {p['overall']})")
        status = "completed" if papers_out else "completed without a paper"
        run.update_run_json(status=status, timings=timings, wall_seconds=time.time() - t0, papers=papers_out)
        return {"run_id": run.run_id, "run_dir": str(run.path), "papers": papers_out, "status": status}
    except BaseException as exc:
        run.update_run_json(status="failed", error=f"{type(exc).__name__}: {exc}", wall_seconds=time.time() - t0)
        logger.error("run %s failed: %s", run.run_id, exc)
        raise
    finally:
        run.unlock()
