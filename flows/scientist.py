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

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from jaxlib_kernels import symbolic
from jaxlib_kernels.templates import make as make_template
from tasks import aggregation, archive, codegen, experiments, ideation, llm, llm_stages, novelty, summary
from tasks.common import storage
from tasks.reporting import make_plots_task, review_paper_task, write_paper_task
from tasks.runfolder import RunFolder, git_revision, new_run_id, package_versions, read_json, write_json


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
            except Exception as exc:  # noqa: BLE001 - any failure of a stage is recorded on its idea
                msg = f"{type(exc).__name__}: {llm.redact(exc)}"
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
    max_cost: float | None = None,
) -> dict:
    """Propose, check, implement, run, write up and review research ideas on one template.

    With ``model`` (a litellm id) every stage but the experiments uses the LLM backend (``tasks/llm_stages.py``);
    ``max_cost`` (USD) is its budget: when it is spent the run stops cleanly, keeping what it finished.
    """
    logger = get_run_logger()
    t0 = time.time()
    tpl = make_template(template)
    prof = _profile(tpl, profile, num_ideas, seeds, timesteps)
    run = RunFolder(runs_dir, run_id or new_run_id(template))
    run.lock()
    resumed = run.exists()
    timings: dict[str, float] = {}
    ideas: list[dict] = []
    ray_warm_up = None
    client: llm.LLMClient | None = None

    def checkpoint() -> None:  # LLM usage into run.json after every stage; stop when the budget is spent
        if client is not None:
            run.update_run_json(llm=client.ledger.to_dict())
            if client.ledger.exceeded:
                raise llm.BudgetExceeded(client.ledger.exceeded)

    try:
        run.update_run_json(
            run_id=run.run_id, template=template, profile=dataclasses.asdict(prof), model=model,
            backend="llm" if model else "offline", status="running", resumed=resumed,
            versions=package_versions(), git_revision=git_revision(), ray_address=ray_address or os.environ.get("RAY_ADDRESS"),
            prefect_api_url=os.environ.get("PREFECT_API_URL"), pid=os.getpid(),
        )
        print(f"run {run.run_id} ({'resumed' if resumed else 'new'}) in {run.path}")
        ray_warm_up = experiments.start_ray_in_background(ray_address)  # overlaps Ray's start with ideation
        if model:
            client = _start_llm(run, model, max_cost)
        store = {"result_storage": storage(run.results_store)}
        archive_rows = [r for r in archive.candidates(run.archive, template) if r["run_id"] != run.run_id]

        # ideation and novelty
        s = time.time()
        if model:
            ideas = llm_stages.generate_ideas_task.with_options(**store)(
                template, dataclasses.asdict(prof), prof.num_ideas, run.run_id, archive_rows, model)
        else:
            ideas = ideation.generate_ideas_task.with_options(**store)(template, dataclasses.asdict(prof),
                                                                        prof.num_ideas, run.run_id, archive_rows)
        write_json(run.ideas_json, ideas)
        checkpoint()
        if model:
            decisions = _wait(llm_stages.check_novelty_task.with_options(**store).map(
                unmapped(template), ideas, unmapped(archive_rows), unmapped(model)), ideas, "novelty")
        else:
            decisions = _wait(novelty.check_novelty_task.with_options(**store).map(
                unmapped(template), ideas, unmapped(archive_rows)), ideas, "novelty")
        for idea, d in zip(ideas, decisions, strict=True):
            idea["novelty"] = d
            idea["status"] = "novel" if d and d["decision"] == "novel" else idea.get("status", "not novel")
        write_json(run.ideas_json, ideas)
        create_table_artifact(key="ideas", table=[{k: i.get(k) for k in ("Name", "Title", "Interestingness",
                              "Feasibility", "Novelty", "status")} for i in ideas], description=f"Ideas of {run.run_id}")
        timings["ideation+novelty"] = time.time() - s
        print(f"{len(ideas)} ideas, {sum(i['status'] == 'novel' for i in ideas)} novel")
        checkpoint()

        # code + validation gate
        s = time.time()
        novel = [i for i in ideas if i["status"] == "novel"]
        dirs = [str(run.idea_dir(i["Name"])) for i in novel]
        if model:
            impls = _wait(llm_stages.implement_candidate_task.with_options(**store).map(
                unmapped(template), novel, dirs, unmapped(archive_rows), unmapped(model)), novel, "implementation")
        else:
            impls = _wait(codegen.implement_candidate_task.with_options(**store).map(unmapped(template), novel, dirs),
                          novel, "implementation")
        for idea, impl in zip(novel, impls, strict=True):
            if impl is None:
                continue
            idea["source"], idea["validation"] = impl["source"], impl["validation"]
            attempts = len(impl.get("attempts") or [1])
            idea["status"] = "implemented" if impl["accepted"] else (
                f"rejected by the gate after {attempts} attempt{'s' if attempts != 1 else ''}: "
                f"{impl['validation']['reason']}")
            if model and impl["accepted"]:
                _apply_behaviour(idea, impl)
        write_json(run.ideas_json, ideas)
        checkpoint()
        timings["implementation"] = time.time() - s
        ready = [i for i in ideas if i["status"] == "implemented"]
        print(f"{len(ready)} candidates passed the validation gate")

        # experiments: one wave of units on Ray
        s = time.time()
        base_specs = _baseline_specs(tpl, prof)
        cand_specs = {i["Name"]: _candidate_specs(tpl, prof, i) for i in ready}
        all_specs = base_specs + [spec for specs in cand_specs.values() for spec in specs]
        print(f"running {len(all_specs)} experiment units ({prof.seeds} seeds each) on Ray")
        ray_warm_up.wait()
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
        writer = llm_stages.write_paper_task if model else write_paper_task
        extra = (unmapped(model),) if model else ()
        papers = _wait(writer.with_options(**store).map(
            unmapped(template), [i for i, _ in plotted], [f for _, f in plotted], unmapped(context),
            [str(run.idea_dir(i["Name"])) for i, _ in plotted], *extra), [i for i, _ in plotted], "writeup")
        written = []
        for (idea, _), paper in zip(plotted, papers, strict=True):
            if paper is not None:
                idea["paper"] = paper
                written.append(idea)
        checkpoint()
        reviewer = llm_stages.review_paper_task if model else review_paper_task
        reviews = _wait(reviewer.with_options(**store).map(
            unmapped(template), written, [str(run.idea_dir(i["Name"])) for i in written], *extra), written, "review")
        for idea, rev in zip(written, reviews, strict=True):
            if rev is not None:
                idea["review"] = rev
                idea["status"] = "reviewed"
        timings["analysis+writeup+review"] = time.time() - s
        checkpoint()
        return _finish(run, template, ideas, timings, t0, client, "completed")
    except llm.BudgetExceeded as exc:
        print(f"stopping: {exc}; keeping what is finished")
        return _finish(run, template, ideas, timings, t0, client, "stopped: budget exceeded", str(exc))
    except BaseException as exc:
        error = f"{type(exc).__name__}: {llm.redact(exc)}"
        fields = {"llm": client.ledger.to_dict()} if client is not None else {}
        run.update_run_json(status="failed", error=error, wall_seconds=time.time() - t0, **fields)
        logger.error("run %s failed: %s", run.run_id, error)
        raise
    finally:
        if client is not None:
            llm.activate(None)
        if ray_warm_up is not None:  # a run that stopped early: let Ray finish starting, so it shuts down whole
            ray_warm_up.wait()
        run.unlock()


def _start_llm(run: RunFolder, model: str, max_cost: float | None) -> llm.LLMClient:
    """The run's LLM client: configured from the environment, its server probed, its accounting resumed."""
    config = llm.LLMConfig.from_env(model, max_cost)
    run.update_run_json(llm_config=config.public())
    llm.probe(config)
    client = llm.LLMClient(config)
    client.ledger.load((read_json(run.run_json, {}) or {}).get("llm"))
    llm.activate(client)
    return client


def _apply_behaviour(idea: dict, impl: dict) -> None:
    """The accepted source's behavioural distance joins the model's literature decision (DESIGN.md section 4)."""
    behaviour = impl.get("behaviour") or {}
    idea["expression_latex"] = impl.get("expression_latex") or idea.get("expression_latex")
    nov = idea.setdefault("novelty", {})
    nov.update(nearest=behaviour.get("nearest"), distance=behaviour.get("distance"),
               distances=behaviour.get("distances", {}), behaviour_decision=behaviour.get("decision"),
               behaviour_reason=behaviour.get("reason"))
    if behaviour and behaviour.get("decision") != "novel":
        nov["decision"] = "not novel"
        nov["reason"] = f"{nov.get('reason', '')} Behaviour: {behaviour.get('reason')}".strip()
        idea["status"] = f"not novel: {behaviour.get('reason')}"


def _finish(run: RunFolder, template: str, ideas: list[dict], timings: dict, t0: float,
            client: llm.LLMClient | None, status: str, error: str | None = None) -> dict:
    """ideas.json, archive, summary, artifacts and run.json of a finished (or budget-stopped) run."""
    write_json(run.ideas_json, ideas)
    summary.update_archive(run.archive, run.run_id, template, [i for i in ideas if i.get("final_info")])
    text = summary.write_summary(run.path, run.run_id, ideas, timings)
    create_markdown_artifact(key="run-summary", markdown=text, description=f"Leaderboard of {run.run_id}")
    papers_out = [{"idea": i["Name"], "pdf": (i.get("paper") or {}).get("pdf"),
                   "decision": (i.get("review") or {}).get("Decision"), "overall": (i.get("review") or {}).get("Overall")}
                  for i in ideas if i.get("paper")]
    for p in papers_out:
        print(f"paper: {p['pdf']}  review: {p['decision']} (overall {p['overall']})")
    if status == "completed" and not papers_out:
        status = "completed without a paper"
    fields = {"status": status, "timings": timings, "wall_seconds": time.time() - t0, "papers": papers_out}
    if error:
        fields["error"] = error
    if client is not None:
        usage = client.ledger.to_dict()
        fields["llm"] = usage
        create_markdown_artifact(key="llm-usage", markdown=client.ledger.markdown(),
                                 description=f"LLM tokens and cost per stage of {run.run_id}")
        create_table_artifact(key="llm-usage-table", table=[{"stage": k, **v} for k, v in usage["stages"].items()],
                              description=f"LLM usage of {run.run_id}")
        t = usage["total"]
        print(f"LLM usage: {t['calls']} calls, {t['prompt_tokens']} prompt + {t['completion_tokens']} completion "
              f"tokens, ${t['cost_usd']:.4f}{'' if t['cost_known'] else ' (price unknown for this model)'}")
    run.update_run_json(**fields)
    return {"run_id": run.run_id, "run_dir": str(run.path), "papers": papers_out, "status": status}
