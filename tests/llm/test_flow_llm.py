"""The whole LLM-backed smoke run through litellm over HTTP, and the command line's unreachable-server path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pymupdf
import pytest
from scripted_server import FAKE_KEY, IDEA, S2_PAPERS, fenced, researcher, stage_of

ROOT = Path(__file__).resolve().parents[2]
SCIENTIST = [sys.executable, "-m", "flows.cli"]
FORM = ["Summary", "Strengths", "Weaknesses", "Originality", "Quality", "Clarity", "Significance", "Questions",
        "Limitations", "Ethical Concerns", "Soundness", "Presentation", "Contribution", "Overall", "Confidence",
        "Decision"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_BASE", "SCIENTIST_MODEL", "PREFECT_API_URL")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", OPENAI_API_KEY=FAKE_KEY, SCIENTIST_LLM_BACKOFF="0.05",
               SCIENTIST_LIT_CONNECT_TIMEOUT="1", SCIENTIST_LIT_BACKOFF="0.05", **extra)
    return env


def _files_holding(folder: Path, needle: str) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


@pytest.mark.slow
def test_llm_smoke_run_writes_a_paper_and_accounts_tokens_per_stage(tmp_path, serve, prefect_api):
    server = serve(researcher, S2_PAPERS)
    runs = tmp_path / "runs"
    env = _env(PREFECT_API_URL=prefect_api, SCIENTIST_MODEL="openai/test-model", OPENAI_API_BASE=server.url,
               SCIENTIST_S2_API_BASE=server.url.replace("/v1", "/s2"), SEMANTIC_SCHOLAR_API_KEY="s2-fake-key-98765")
    out = subprocess.run([*SCIENTIST, "run", "--profile", "smoke", "--seeds", "2", "--budget", "8192",
                          "--run-id", "llm", "--runs-dir", str(runs)], cwd=ROOT, env=env, capture_output=True, check=False,
                         text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    run_dir = runs / "llm"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["backend"] == "llm"
    usage = run["llm"]
    assert set(usage["stages"]) == {"ideation", "novelty", "code", "writeup", "review"}
    for stage, row in usage["stages"].items():
        assert row["calls"] >= 1 and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0, stage
    assert usage["total"]["calls"] == len(server.requests)
    assert usage["total"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in usage["stages"].values())
    assert usage["total"]["cost_known"] is False  # litellm has no price for "test-model": tokens only
    print("LLM usage of the smoke run:", json.dumps(usage["stages"]))

    [idea] = json.loads((run_dir / "ideas.json").read_text())
    assert idea["backend"] == "llm" and idea["status"] == "reviewed"
    assert idea["novelty"]["decision"] == "novel" and idea["novelty"]["literature_sources"] == ["semantic_scholar"]
    assert idea["novelty"]["distance"] >= idea["novelty"]["threshold"]  # behaviour of the accepted source
    idea_dir = run_dir / "ideas" / idea["Name"]
    assert "0.7, 1.4" in (idea_dir / "candidate.py").read_text()  # the model's source is what ran

    [paper] = run["papers"]
    doc = pymupdf.open(paper["pdf"])
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
    for key in (FAKE_KEY, "s2-fake-key-98765"):
        assert _files_holding(run_dir, key) == [] and key not in out.stdout + out.stderr
    assert all(h.get("Authorization", h.get("authorization")) == f"Bearer {FAKE_KEY}" for h in server.headers)


@pytest.mark.slow  # about 20 s on a busy 2-core machine: the command imports JAX before it probes
def test_unreachable_server_is_one_line_nonzero_and_recorded(tmp_path):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runs = tmp_path / "runs"
    env = _env(SCIENTIST_MODEL="openai/test-model", OPENAI_API_BASE=f"http://127.0.0.1:{port}/v1")
    started = time.monotonic()
    out = subprocess.run([*SCIENTIST, "run", "--profile", "smoke", "--run-id", "down", "--runs-dir", str(runs)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the model server" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    run = json.loads((runs / "down" / "run.json").read_text())
    assert run["status"] == "failed" and "cannot reach the model server" in run["error"]
    assert FAKE_KEY not in out.stdout + out.stderr and _files_holding(runs, FAKE_KEY) == []
    print(f"unreachable server: exit {out.returncode} after {elapsed:.1f} s")


@pytest.mark.slow
def test_max_cost_stops_the_run_cleanly_and_keeps_what_is_finished(tmp_path, serve):
    """A priced model (litellm knows gpt-4o-mini's price) whose first reply alone spends the budget."""

    def script(request):
        if stage_of(request).startswith("ideation"):
            return "Let me think at length. " + "x" * 40000 + "\n" + fenced(IDEA)  # about 10,000 completion tokens
        return researcher(request)

    server = serve(script)
    runs = tmp_path / "runs"
    env = _env(SCIENTIST_MODEL="openai/gpt-4o-mini", OPENAI_API_BASE=server.url, SCIENTIST_IDEA_REFLECTIONS="0")
    out = subprocess.run([*SCIENTIST, "run", "--profile", "smoke", "--run-id", "budget", "--runs-dir", str(runs),
                          "--max-cost", "0.005"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "stopping: cost budget spent" in out.stdout + out.stderr and "stopped: budget exceeded" in out.stdout
    run = json.loads((runs / "budget" / "run.json").read_text())
    assert run["status"] == "stopped: budget exceeded" and run["error"].startswith("cost budget spent: $0.006")
    assert run["llm"]["budget"]["max_cost_usd"] == 0.005 and run["llm"]["total"]["cost_usd"] > 0.005
    assert list(run["llm"]["stages"]) == ["ideation"] and len(server.requests) == 1  # nothing sent after the stop
    [idea] = json.loads((runs / "budget" / "ideas.json").read_text())  # the finished stage is kept
    assert idea["Name"] == IDEA["Name"]
    assert (runs / "budget" / "summary.md").exists()


@pytest.mark.parametrize("args, message", [
    (["--max-cost", "-1", "--model", "openai/x"], "--max-cost must be positive"),
    (["--max-cost", "lots", "--model", "openai/x"], "--max-cost must be a number"),
    (["--max-cost", "1"], "--max-cost needs a model"),
])
def test_bad_budget_is_one_line_and_exit_2(tmp_path, args, message):
    out = subprocess.run([*SCIENTIST, "run", "--runs-dir", str(tmp_path), *args], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr


def _babbler(request: dict) -> str:
    """A model that never answers in the form asked: no JSON, no code block."""
    return "I am sorry, I would rather talk about the weather today."


@pytest.mark.slow
def test_a_model_that_keeps_answering_badly_still_ends_in_a_paper_through_the_fallback(tmp_path, serve, prefect_api):
    server = serve(_babbler)
    runs = tmp_path / "runs"
    env = _env(PREFECT_API_URL=prefect_api, SCIENTIST_MODEL="openai/test-model", OPENAI_API_BASE=server.url,
               SCIENTIST_IDEA_REFLECTIONS="0", SCIENTIST_CODE_REPAIR_ROUNDS="0", SCIENTIST_NUM_REVIEWS="1", SCIENTIST_REVIEW_REFLECTIONS="0")
    base = [*SCIENTIST, "run", "--profile", "smoke", "--seeds", "2", "--budget", "8192", "--runs-dir", str(runs)]

    strict = subprocess.run([*base, "--run-id", "strict", "--no-fallback"], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=False)
    assert strict.returncode == 1, strict.stdout[-3000:] + strict.stderr[-3000:]
    failed = json.loads((runs / "strict" / "run.json").read_text())
    assert failed["status"] == "failed" and failed["fallback"] is False and "ideation" in failed["error"]

    out = subprocess.run([*base, "--run-id", "flaky"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    run = json.loads((runs / "flaky" / "run.json").read_text())
    assert run["status"] == "completed" and run["backend"] == "llm" and run["papers"]
    stages = {f["stage"] for f in run["fallbacks"]}
    assert {"ideation", "novelty", "implementation", "review"} <= stages, stages
    assert all("JSON" in f["reason"] or "json" in f["reason"] or "code" in f["reason"].lower()
               for f in run["fallbacks"] if f["stage"] in ("ideation", "novelty", "review")), run["fallbacks"]
    [idea] = json.loads((runs / "flaky" / "ideas.json").read_text())
    assert idea["status"] == "reviewed" and {f["stage"] for f in idea["fallbacks"]} >= {"ideation", "review"}
    assert idea["review"]["reviewer"] == "evidence"  # the offline reviewer stood in for the model
    assert pymupdf.open(run["papers"][0]["pdf"]).page_count >= 4
