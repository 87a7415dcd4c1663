"""The AI-Scientist flow (ARCHITECTURE.md, "The main flow"), after Lu et al., 2024, "The AI Scientist".

ideas -> novelty -> candidate code (sandboxed gate) -> research tree (tune, improve, ablate) -> experiments on
Ray (the replication) -> aggregation -> plots -> paper -> review -> summary, on any registered template. The run's
backend (``tasks/backends.py``: offline, or the LLM with a per-idea fallback to the offline stage) is chosen once;
the per-idea stages are ``flows/pipeline.py``, shared with the meta-learning flow.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from prefect import flow, get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows import pipeline
from jaxlib_kernels.templates import DEFAULT
from jaxlib_kernels.templates import make as make_template
from tasks import archive, summary
from tasks.backends import make_backend
from tasks.idea import Idea, IdeaStatus, has_status, set_status
from tasks.runtime import artifacts, llm
from tasks.runtime.caching import storage
from tasks.runtime.runfolder import RunFolder, write_json
from tasks.runtime.session import RunSession, RunStatus


def _profile(template, profile: str, num_ideas: int | None, seeds: int | None, budget: int | None,
             stages: str | list[str] | None = None, tree: dict | None = None):
    """The named profile with the run's overrides; ``stages`` and ``tree`` change its research tree
    (``TreeBudget.with_changes``: a bad key, value or stage is a ValueError)."""
    prof = template.profile(profile)
    changes = {}
    if stages is not None or tree:
        changes["tree"] = prof.tree.with_changes(tree, stages)
    if num_ideas is not None:
        changes["num_ideas"] = int(num_ideas)
    if seeds is not None:
        changes["seeds"] = int(seeds)
    if budget is not None:
        changes["budget"] = int(budget)
    return dataclasses.replace(prof, **changes)


@flow(name="ai-scientist", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def ai_scientist(
    template: str = DEFAULT,
    num_ideas: int | None = None,
    seeds: int | None = None,
    profile: str = "default",
    model: str | None = None,
    run_id: str | None = None,
    runs_dir: str = "runs",
    budget: int | None = None,
    ray_address: str | None = None,
    max_cost: float | None = None,
    fallback: bool = True,
    approve: str | None = None,
    approval_timeout: int = 3600,
    given_ideas: list[dict] | None = None,
    stages: list[str] | None = None,
    tree: dict | None = None,
) -> dict:
    """Propose, check, implement, run, write up and review research ideas on one template.

    ``budget``: the training budget per unit in the template's unit (lpo: environment steps; hades: ES
    generations), default the profile's. With ``model`` (a litellm id) every stage but the experiments uses the
    LLM backend; a stage whose model keeps failing falls back to the offline stage for that idea (recorded in
    ideas.json and run.json) unless ``fallback`` is False. ``max_cost`` (USD) is its budget: when it is spent
    the run stops cleanly, keeping what it finished. ``approve="ideas"``: after novelty the run pauses until a
    person resumes it (the Prefect UI's form, or ``scientist approve``) with the ideas to run and free-text
    feedback for the next stage's prompt; unresumed after ``approval_timeout`` seconds it stops cleanly.
    ``given_ideas`` (ideas in the ideation's JSON shape, e.g. the confirmed discoveries of ``scientist discover``)
    replace ideation; they pass novelty, the gate and every later stage as ideation's would.
    ``stages`` (of implement, tune, improve, ablate, replicate; default the profile's, all) and ``tree`` (TreeBudget
    fields -> values, e.g. ``{"tune": 4}``) size each idea's research tree.
    """
    tpl = make_template(template)
    prof = _profile(tpl, profile, num_ideas, seeds, budget, stages, tree)
    ideas: list[Idea] = []
    backend = None
    with RunSession(runs_dir, run_id, id_prefix=template, logger=get_run_logger(), template=template,
                    profile=dataclasses.asdict(prof), model=model, backend="llm" if model else "offline",
                    fallback=bool(fallback), ray_address=ray_address or os.environ.get("RAY_ADDRESS"),
                    prefect_api_url=os.environ.get("PREFECT_API_URL")) as session:
        run, timings = session.run, session.timings
        session.on_failure(lambda: _fallbacks(backend))

        def checkpoint() -> None:  # LLM usage into run.json after every stage; stop when the budget is spent
            if backend is not None and getattr(backend, "fallbacks", None):
                run.update_run_json(fallbacks=backend.fallbacks)
            session.check_budget()

        try:
            print(f"run {run.run_id} ({'resumed' if session.resumed else 'new'}) in {run.path}")
            # overlaps Ray's start with ideation (with an approval: after it, if ideas run); a resumed run starts Ray
            # only if a unit is missing (the experiments stage does), so re-running a finished run id starts none
            if approve != "ideas" and not session.resumed:
                session.start_ray(ray_address)
            if model:
                session.start_llm(model, max_cost)
            backend = make_backend(model, {"result_storage": storage(run.results_store)}, fallback)
            archive_rows = [r for r in archive.candidates(run.archive, template) if r["run_id"] != run.run_id]

            # ideation and novelty (each idea against the baselines, the archive and the ideas accepted before it)
            with session.timed("ideation+novelty"):
                ideas = ([dict(i) for i in given_ideas] if given_ideas else
                         backend.ideas(template, dataclasses.asdict(prof), prof.num_ideas, run.run_id, archive_rows))
                write_json(run.ideas_json, ideas)
                checkpoint()
                decisions = backend.novelty(template, ideas, archive_rows)
                for idea, d in zip(ideas, decisions, strict=True):
                    idea["novelty"] = d
                    if d and d["decision"] == "novel":
                        set_status(idea, IdeaStatus.NOVEL)
                    elif "status" not in idea:
                        set_status(idea, IdeaStatus.NOT_NOVEL)
                write_json(run.ideas_json, ideas)
                _ideas_artifact(run, ideas)
            print(f"{len(ideas)} ideas, {sum(has_status(i, IdeaStatus.NOVEL) for i in ideas)} novel")
            checkpoint()
            if approve == "ideas" and any(has_status(i, IdeaStatus.NOVEL) for i in ideas):
                s = time.time()
                try:
                    approval = ask_approval(run, ideas, approval_timeout)
                except FlowPauseTimeout:
                    print(f"no approval within {approval_timeout} s: stopping, keeping the ideas")
                    _running_again_after_a_timed_out_pause()
                    run.update_run_json(approval={"status": "timed out", "timeout_s": approval_timeout})
                    return _finish(session, template, ideas, RunStatus.stopped("approval timed out"),
                                   f"the ideas were not approved within {approval_timeout} s", backend)
                timings["approval"] = time.time() - s
                write_json(run.ideas_json, ideas)
                run.update_run_json(approval=approval)
                if not approval["approved"]:
                    print("no idea approved: stopping before the experiments")
                    return _finish(session, template, ideas, RunStatus.stopped("no idea approved"), backend=backend)
                session.start_ray(ray_address)

            # code + validation gate
            with session.timed("implementation"):
                ready = pipeline.implement(backend, tpl, run, [i for i in ideas if has_status(i, IdeaStatus.NOVEL)],
                                           archive_rows)
                write_json(run.ideas_json, ideas)
                checkpoint()
            print(f"{len(ready)} candidates passed the validation gate")

            # the research tree of each idea: the baselines tuned once, then per idea tune, improve, ablate
            with session.timed("tree"):
                tuning = pipeline.grow_trees(backend, tpl, prof, run, ready, checkpoint)

            # experiments (the replication of each tree's final candidate), aggregation, plots, papers, reviews
            pipeline.evaluate_and_write(backend, tpl, prof, run, ready, ray_address, timings, session.ray_ready,
                                        checkpoint, tuning=tuning)
            checkpoint()
            return _finish(session, template, ideas, RunStatus.COMPLETED, backend=backend)
        except llm.BudgetExceeded as exc:
            print(f"stopping: {exc}; keeping what is finished")
            return _finish(session, template, ideas, RunStatus.stopped("budget exceeded"), str(exc), backend)


def _fallbacks(backend) -> dict:
    """``{"fallbacks": [...]}`` of a backend that fell back to the offline stage for some idea, else nothing."""
    return {"fallbacks": backend.fallbacks} if backend is not None and getattr(backend, "fallbacks", None) else {}


def _running_again_after_a_timed_out_pause() -> None:
    """The server's pause-expiry service fails a paused run whose timeout has passed ("The flow was paused and never
    resumed"), racing the flow's own check of the same timeout. A run whose approval timed out stops cleanly, so
    the flow takes its run back to Running (forced: Failed is terminal) and then ends it Completed."""
    context = FlowRunContext.get()
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(context.flow_run.id).state
        if state is None or not state.is_running():
            client.set_flow_run_state(context.flow_run.id, Running(message="approval timed out: ending cleanly"),
                                      force=True)


class IdeaApproval(RunInput):
    """The form of a run paused for approval (``--approve ideas``): which ideas run on, and what to tell the model."""

    ideas: str = Field(description="comma-separated names of the ideas to implement and run (the others are "
                                   "recorded as not approved); empty: none")
    feedback: str = Field(default="", description="free text for the next stage (with a model: its code prompt)")


def ask_approval(run: RunFolder, ideas: list[Idea], timeout: int) -> dict:
    """Pause the flow run with the :class:`IdeaApproval` form (all novel ideas proposed); apply the answer to
    ``ideas`` (statuses, ``researcher_feedback``) and return what was approved."""
    novel = [i["Name"] for i in ideas if has_status(i, IdeaStatus.NOVEL)]
    lines = "\n".join(f"- `{i['Name']}`: {i.get('Title', '')}" for i in ideas if has_status(i, IdeaStatus.NOVEL))
    form = IdeaApproval.with_initial_data(
        description=f"## Approve the ideas of {run.run_id}\n\n{lines}\n\nKeep the names to run, separated by "
                    "commas; feedback goes to the next stage.", ideas=",".join(novel))
    print(f"waiting for approval of {len(novel)} ideas ({', '.join(novel)}): resume the flow run in the Prefect UI "
          f"or run `scientist approve {run.run_id} [--ideas A,B] [--feedback TEXT]` (timeout {timeout} s)")
    # a read of the flow run's state every 2 s (Prefect's default waits 10 s between reads): an approval is taken up
    # within 2 s, a short timeout ends near its time; one small request to the server per read
    answer = pause_flow_run(wait_for_input=form, timeout=timeout, key="approve-ideas",
                            poll_interval=max(1, min(2, timeout // 10)))
    chosen = [n.strip() for n in answer.ideas.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(novel))
    for idea in ideas:
        if not has_status(idea, IdeaStatus.NOVEL):
            continue
        if idea["Name"] in chosen:
            if answer.feedback.strip():
                idea["researcher_feedback"] = answer.feedback.strip()
        else:
            set_status(idea, IdeaStatus.NOT_APPROVED)
    approved = [n for n in novel if n in chosen]
    print(f"approved: {', '.join(approved) or 'none'}" + (f" (unknown names ignored: {', '.join(unknown)})"
                                                          if unknown else ""))
    return {"status": "resumed", "approved": approved, "feedback": answer.feedback, "ignored": unknown}


def _ideas_artifact(run: RunFolder, ideas: list[Idea]) -> None:
    """The ``ideas`` table (after novelty, then again with the final statuses when the run ends)."""
    artifacts.table(key="ideas", table=[{k: i.get(k) for k in ("Name", "Title", "Interestingness",
                          "Feasibility", "Novelty", "status")} for i in ideas], description=f"Ideas of {run.run_id}")


def _finish(session: RunSession, template: str, ideas: list[Idea], status: str, error: str | None = None,
            backend=None) -> dict:
    """ideas.json, archive, summary, artifacts and run.json of a finished (or budget-stopped) run."""
    run, timings, client = session.run, session.timings, session.client
    write_json(run.ideas_json, ideas)
    summary.update_archive(run.archive, run.run_id, template, [i for i in ideas if i.get("final_info")])
    archived = archive.candidates(run.archive, template)
    lineage = summary.draw_lineage(run.path, run.run_id, template, archived)
    text = summary.write_summary(run.path, run.run_id, ideas, timings, lineage=lineage)
    if ideas:
        _ideas_artifact(run, ideas)
    artifacts.publish_results(run.run_id, run.path, ideas)
    artifacts.publish_archive(run.run_id, archived, lineage)
    pdfs = [f"- {i['Name']}: [{i['paper']['pdf']}]({Path(i['paper']['pdf']).resolve().as_uri()})"
            for i in ideas if (i.get("paper") or {}).get("pdf")]
    more = ("\n\n## Papers\n\n" + "\n".join(pdfs) if pdfs else "") + (
        "\n\nArtifacts of this run: `results` (table), `figures`, `paper-<idea>` (PDF links), `archive` (table), "
        "`lineage` (the archive's tree).")
    artifacts.markdown(key="run-summary", markdown=text + more, description=f"Leaderboard of {run.run_id}")
    papers_out = [{"idea": i["Name"], "pdf": (i.get("paper") or {}).get("pdf"),
                   "decision": (i.get("review") or {}).get("Decision"), "overall": (i.get("review") or {}).get("Overall")}
                  for i in ideas if i.get("paper")]
    for p in papers_out:
        print(f"paper: {p['pdf']}  review: {p['decision']} (overall {p['overall']})")
    if status == RunStatus.COMPLETED and not papers_out:
        status = RunStatus.COMPLETED_WITHOUT_PAPER
    fields = {"timings": timings, "papers": papers_out, **_fallbacks(backend)}
    if error:
        fields["error"] = error
    if client is not None:
        usage = client.ledger.to_dict()
        fields["llm"] = usage
        artifacts.markdown(key="llm-usage", markdown=client.ledger.markdown(),
                                 description=f"LLM tokens and cost per stage of {run.run_id}")
        artifacts.table(key="llm-usage-table", table=[{"stage": k, **v} for k, v in usage["stages"].items()],
                              description=f"LLM usage of {run.run_id}")
        t = usage["total"]
        print(f"LLM usage: {t['calls']} calls, {t['prompt_tokens']} prompt + {t['completion_tokens']} completion "
              f"tokens, ${t['cost_usd']:.4f}{'' if t['cost_known'] else ' (price unknown for this model)'}")
    session.finish(status, **fields)
    return {"run_id": run.run_id, "run_dir": str(run.path), "papers": papers_out, "status": status}
