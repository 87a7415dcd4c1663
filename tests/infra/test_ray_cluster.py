"""Two runs at once on a real Ray cluster of two nodes (a head and a second node, separate processes on
127.0.0.1), as two researchers sharing a cluster start them, each against its own scripted OpenAI-compatible
model server on 127.0.0.1 (tests/llm/scripted_server.py):

* ``llm``: the LLM-backed smoke run through litellm over HTTP; the model plays a sensible researcher, the
  literature search answers from a Semantic Scholar script. It reports to the session's ``scientist server`` and
  pauses for approval (``--approve ideas``); ``scientist approve llm --feedback ...`` resumes it, and the feedback
  reaches the model's code prompt. It ends in a paper, and every stage's tokens are accounted.
* ``flaky``: a model that never answers in the form asked (refusals and broken JSON, nothing for the paper's
  method section); the run still ends in a paper, each failing stage falling back to its offline stage for that
  idea, recorded in ``run.json`` and ``ideas.json``, with none of the model's garbage in the PDF and a review that
  scores it as what it is. It runs on a temporary Prefect server of its own, as ``make run`` does.

Both complete; their units ran on both nodes; neither disturbed the other (the baseline units they share were
computed apart and agree); the one without a server kept its own Prefect database; both are in the shared
archive. The ``--no-fallback`` counterpart of ``flaky`` (a hard failure at ideation) is in tests/llm/test_flow_llm.py.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import numpy as np
import pymupdf
import pytest
from clusters import ROOT, SCIENTIST, SMALLEST, api, ledger
from scripted_server import (
    BROKEN_JSON,
    FAKE_KEY,
    REFUSAL,
    S2_PAPERS,
    ScriptedServer,
    files_holding,
    garbage,
    researcher,
    run_env,
    stage_of,
)

from tasks.experiments import load_unit

pytestmark = pytest.mark.slow
FORM = ["Summary", "Strengths", "Weaknesses", "Originality", "Quality", "Clarity", "Significance", "Questions",
        "Limitations", "Ethical Concerns", "Soundness", "Presentation", "Contribution", "Overall", "Confidence",
        "Decision"]
S2_KEY = "s2-fake-key-98765"
FEEDBACK = "keep the clip range between 0.7 and 1.4"


def _paused(api_url: str, run_id: str, proc: subprocess.Popen, log) -> None:
    """Wait until the flow run of ``run_id`` is paused on the server ``api_url``."""
    while not any((r.get("parameters") or {}).get("run_id") == run_id for r in api(
            api_url, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}})):
        assert proc.poll() is None, log.read_text()[-4000:]
        time.sleep(1)


@pytest.fixture(scope="module")
def two_runs(ray_cluster, prefect_api, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-runs")
    runs = tmp / "runs"
    with ScriptedServer(researcher, S2_PAPERS) as good, ScriptedServer(garbage) as bad:
        envs = {
            "llm": run_env(ray_cluster, SCIENTIST_MODEL="openai/test-model", OPENAI_API_BASE=good.url,
                           SCIENTIST_S2_API_BASE=good.url.replace("/v1", "/s2"), SEMANTIC_SCHOLAR_API_KEY=S2_KEY,
                           PREFECT_API_URL=prefect_api),
            "flaky": run_env(ray_cluster, SCIENTIST_MODEL="openai/test-model", OPENAI_API_BASE=bad.url,
                             SCIENTIST_IDEA_REFLECTIONS="0", SCIENTIST_CODE_REPAIR_ROUNDS="0",
                             SCIENTIST_NUM_REVIEWS="1", SCIENTIST_REVIEW_REFLECTIONS="0"),
        }
        # neither run tunes (the tune stage and its equal budgets are checked in tests/flows/test_template_runs.py):
        # both replicate the untuned baselines, so they share those units, as checked below. The llm run's
        # candidate is the model's hand-written source, whose every tree node compiles on its own (about 25 s each
        # here): it runs no tree search; the flaky run grows improve and ablate nodes with the model's failing
        # proposals falling back to the offline ones (the proposals themselves: tests/llm/test_tree_llm.py).
        more = {"llm": ["--approve", "ideas", "--stages", "implement,replicate"],
                "flaky": ["--stages", "implement,improve,ablate,replicate"]}
        procs = {
            run_id: subprocess.Popen([*SCIENTIST, "run", *SMALLEST, "--run-id", run_id, "--runs-dir", str(runs),
                                      *more[run_id]], cwd=ROOT, env=env,
                                     stdout=open(tmp / f"{run_id}.log", "w"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT)
            for run_id, env in envs.items()
        }
        _paused(prefect_api, "llm", procs["llm"], tmp / "llm.log")
        approve = subprocess.run([*SCIENTIST, "approve", "llm", "--feedback", FEEDBACK], cwd=ROOT,
                                 env=envs["llm"], capture_output=True, text=True, check=False)
        codes = {run_id: proc.wait() for run_id, proc in procs.items()}
    logs = {run_id: (tmp / f"{run_id}.log").read_text() for run_id in procs}
    return {"runs": runs, "codes": codes, "logs": logs, "servers": {"llm": good, "flaky": bad},
            "address": ray_cluster["RAY_ADDRESS"], "approve": approve}


def _run(two_runs, run_id: str) -> dict:
    assert two_runs["codes"][run_id] == 0, (run_id, two_runs["logs"][run_id][-4000:])
    return json.loads((two_runs["runs"] / run_id / "run.json").read_text())


def test_two_runs_at_once_on_a_two_node_cluster_use_both_nodes_and_do_not_interfere(two_runs):
    runs = two_runs["runs"]
    keys, nodes = {}, set()
    for run_id in ("llm", "flaky"):
        run_dir = runs / run_id
        run = _run(two_runs, run_id)
        assert run["status"] == "completed" and run["ray_address"] == two_runs["address"]
        assert run["papers"] and run["papers"][0]["pdf"]
        units = ledger(run_dir)
        # 3 baselines + 1 candidate on 2 settings, each computed once, all fine
        assert len(units) == 8 and len({u["key"] for u in units}) == 8, units
        assert all(u["status"] == "ok" for u in units)
        nodes |= {u["node_id"] for u in units}
        keys[run_id] = {u["key"]: (u["method"], u["setting"]) for u in units}
        # the run without a server kept its own temporary Prefect database; the other reported to the server
        assert (run_dir / ".prefect" / "prefect.db").exists() is (run_id == "flaky")

    # the two runs' units ran on both nodes (which run's units went where is Ray's choice: with both runs at once
    # on nodes of one CPU each, one run's units can all land on one node while the other run holds the other)
    assert len(nodes) == 2 and "" not in nodes, nodes
    # the baseline units are the same experiments in both runs: computed apart, they agree
    shared = set(keys["llm"]) & set(keys["flaky"])
    assert len(shared) >= 6
    for key in shared:
        a = load_unit(runs / "llm" / "units", {"key": key})
        b = load_unit(runs / "flaky" / "units", {"key": key})
        np.testing.assert_allclose(a["final"], b["final"], rtol=1e-5, atol=1e-6)
    # both runs are in the shared archive
    with sqlite3.connect(runs / "archive.sqlite") as db:
        archived = {row[0] for row in db.execute("SELECT DISTINCT run_id FROM candidates")}
    assert archived == {"llm", "flaky"}


def test_llm_smoke_run_writes_a_paper_and_accounts_tokens_per_stage(two_runs):
    server, run_dir = two_runs["servers"]["llm"], two_runs["runs"] / "llm"
    run = _run(two_runs, "llm")
    assert run["status"] == "completed" and run["backend"] == "llm"
    usage = run["llm"]
    assert set(usage["stages"]) == {"ideation", "novelty", "code", "writeup", "review"}
    for stage, row in usage["stages"].items():
        assert row["calls"] >= 1 and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0, stage
    assert usage["total"]["calls"] == len(server.requests)
    assert usage["total"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in usage["stages"].values())
    assert usage["total"]["cost_known"] is False  # litellm has no price for "test-model": tokens only
    print("LLM usage of the smoke run:", json.dumps(usage["stages"]))

    # approved from the command line with feedback, which reached the model's code prompt
    assert two_runs["approve"].returncode == 0, two_runs["approve"].stderr[-2000:]
    assert run["approval"]["status"] == "resumed" and run["approval"]["feedback"] == FEEDBACK
    code_prompts = [r["messages"][-1]["content"] for r in server.requests if "Stage: code" in json.dumps(r)]
    assert code_prompts and FEEDBACK in code_prompts[0]
    assert not any(FEEDBACK in json.dumps(r) for r in server.requests if "Stage: ideation" in json.dumps(r))

    [idea] = json.loads((run_dir / "ideas.json").read_text())
    assert idea["backend"] == "llm" and idea["status"] == "reviewed" and idea["researcher_feedback"] == FEEDBACK
    assert idea["novelty"]["decision"] == "novel" and idea["novelty"]["literature_sources"] == ["semantic_scholar"]
    assert idea["novelty"]["distance"] >= idea["novelty"]["threshold"]  # behaviour of the accepted source
    idea_dir = run_dir / "ideas" / idea["Name"]
    assert "0.7, 1.4" in (idea_dir / "candidate.py").read_text()  # the model's source is what ran

    [paper] = run["papers"]
    with pymupdf.open(paper["pdf"]) as doc:
        text = " ".join(page.get_text() for page in doc)
    assert "This is the results section" in text and "??" not in text
    tex = (idea_dir / "paper" / "paper.tex").read_text()
    bib = (idea_dir / "paper" / "references.bib").read_text()
    assert "invented2099paper" not in tex and "example2021asymmetric" in tex and "example2021asymmetric" in bib
    flat = " ".join(text.lower().split())
    assert "asymmetric trust regions for policy gradients" in flat  # a paper the search returned, in the bibliography
    assert idea["paper"]["dropped_citations"] == ["invented2099paper"]

    review = json.loads((idea_dir / "review.json").read_text())
    assert set(FORM) <= set(review) and review["reviewer"] == "llm"
    assert len(review["reviews"]) == 3 and review["Decision"] == ("Accept" if review["Overall"] >= 6 else "Reject")
    assert {e["check"] for e in review["evidence"]} >= {"seeds_per_arm", "pdf_compiled"}
    assert review["evidence_review"]["reviewer"] == "evidence"
    seeds_check = next(e for e in review["evidence"] if e["check"] == "seeds_per_arm")
    assert not seeds_check["passed"]  # 2 seeds: the model was told, and the reader sees it
    assert "seeds_per_arm: FAILED" in next(r for r in server.requests if "Stage: review (" in json.dumps(r))[
        "messages"][-1]["content"]

    # keys never reach the run folder, the output, or anything but the Authorization header
    for key in (FAKE_KEY, S2_KEY):
        assert files_holding(run_dir, key) == [] and key not in two_runs["logs"]["llm"]
    assert all(h.get("Authorization", h.get("authorization")) == f"Bearer {FAKE_KEY}" for h in server.headers)


def test_a_model_that_keeps_answering_badly_still_ends_in_a_paper_through_the_fallback(two_runs):
    run = _run(two_runs, "flaky")
    assert run["status"] == "completed" and run["backend"] == "llm" and run["papers"] and run["fallback"] is True
    stages = {f["stage"] for f in run["fallbacks"]}
    assert {"ideation", "novelty", "implementation", "review"} <= stages, stages
    assert all("JSON" in f["reason"] or "json" in f["reason"] or "code" in f["reason"].lower()
               for f in run["fallbacks"] if f["stage"] in ("ideation", "novelty", "review")), run["fallbacks"]
    [idea] = json.loads((two_runs["runs"] / "flaky" / "ideas.json").read_text())
    assert idea["status"] == "reviewed" and {f["stage"] for f in idea["fallbacks"]} >= {"ideation", "review"}
    assert idea["review"]["reviewer"] == "evidence"  # the offline reviewer stood in for the model
    # its tree's improve and ablate nodes came from the offline proposals, each recording why the model's failed
    tree = json.loads((two_runs["runs"] / "flaky" / "ideas" / idea["Name"] / "tree" / "tree.json").read_text())
    searched = [n for n in tree["nodes"] if n["stage"] in ("improve", "ablate")]
    assert {n["stage"] for n in searched} == {"improve", "ablate"}, tree["nodes"]
    assert all(n["source"] == "llm-fallback" and n["why"].startswith("ProposalError") for n in searched), searched
    assert not any(n["stage"] == "tune" for n in tree["nodes"])  # --stages without tune
    with pymupdf.open(run["papers"][0]["pdf"]) as doc:
        assert doc.page_count >= 4
    assert len(two_runs["servers"]["flaky"].requests) > 0  # the model was asked, and answered badly


def test_a_garbage_model_leaves_no_garbage_in_the_paper_and_the_review_scores_it_as_such(two_runs):
    """The flaky run's writeup: the sections fail the text gate twice and the offline writeup stands in (recorded),
    the PDF holds none of the model's words, and the review does not score the paper as the best."""
    server, runs = two_runs["servers"]["flaky"], two_runs["runs"]
    writeups = [r for r in server.requests if stage_of(r).startswith("writeup")]
    assert any('(second attempt)' in stage_of(r) for r in writeups)  # each failing section was asked again
    run = json.loads((runs / "flaky" / "run.json").read_text())
    assert run["status"] == "completed" and run["papers"]
    writeup_fallbacks = [f for f in run["fallbacks"] if f["stage"] == "writeup"]
    assert writeup_fallbacks and "text gate" in writeup_fallbacks[0]["reason"], run["fallbacks"]
    [idea] = json.loads((runs / "flaky" / "ideas.json").read_text())
    assert "writeup" in {f["stage"] for f in idea["fallbacks"]}
    with pymupdf.open(run["papers"][0]["pdf"]) as doc:
        text = "\n".join(page.get_text() for page in doc)
    for junk in (REFUSAL, "unable to help", '"Name"', "\u201dName\u201d", "Name\u201d:", "```", "Anonymous",
                 BROKEN_JSON.splitlines()[1]):
        assert junk not in text, junk
    review = json.loads((runs / "flaky" / "ideas" / idea["Name"] / "review.json").read_text())
    assert review["Decision"] == "Reject" and review["Overall"] <= 4  # 2 seeds: never the best paper's score
    findings = [w for w in review["Weaknesses"] if w.startswith("Paper check")]
    assert review["Clarity"] <= 4 - bool(findings) and review["Presentation"] <= review["Clarity"]
