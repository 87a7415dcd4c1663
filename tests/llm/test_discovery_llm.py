"""``scientist discover --model``: the model proposes formulas each generation beside the mutations (DiscoPOP's loop:
the archive and its real fitness in the prompt), against the scripted OpenAI-compatible server on 127.0.0.1.

Generation 0: the model first answers with no JSON (it is told why and answers again), then with three proposals,
one of them not a formula (rejected with its reason); the two formulas are trained in the generation's population.
Generation 1: the model only babbles; the search goes on with its mutations and records the fallback. Re-running
the run id asks the model nothing and gives the same search."""

from __future__ import annotations

import json

import pytest
from scripted_server import babbler, last_user, stage_of

from flows.discovery import discover
from jaxlib_kernels import symbolic

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("on_session_server")]
TINY = {"total_timesteps": 2048, "num_envs": 4, "num_steps": 32, "num_minibatches": 2, "update_epochs": 2}
SEARCH = {"population": 8, "promote": 0, "tune": 2, "length": 32}
CLIP_PLUS_KL = ["add", ["relu", ["mul", ["sub", "r", ["clip", "r", 0.7, 1.3]], "A"]],
                ["mul", 0.5, ["sub", ["neg", "omr"], "logr"]]]
SQUARED = ["mul", ["sq", "omr"], ["abs", "A"]]
PROPOSALS = {"proposals": [
    {"name": "clip plus kl", "expr": CLIP_PLUS_KL, "rationale": "a wider clip with a KL floor"},
    {"name": "squared_ratio", "expr": SQUARED, "rationale": "a smooth quadratic trust region"},
    {"name": "not_a_formula", "expr": ["frobnicate", "r"], "rationale": "made up"},
]}


def generation_of(request: dict) -> str:
    """The ``Stage:`` line of the conversation's first prompt (a JSON-feedback message has none of its own)."""
    first = next(m["content"] for m in request["messages"] if m["role"] == "user")
    return stage_of({"messages": [{"role": "user", "content": first}]})


def model(request: dict) -> str:
    if generation_of(request) == "discovery (generation 0)":
        if "could not be used" in last_user(request):
            return "Here they are:\n```json\n" + json.dumps(PROPOSALS) + "\n```"
        return "Let me think about trust regions first."  # no JSON: sent back with the reason
    return babbler(request)


def test_the_model_proposes_formulas_that_are_trained_and_a_failing_model_falls_back(serve, llm_env, tmp_path):
    server = serve(model)
    llm_env.setenv("OPENAI_API_BASE", server.url)
    kwargs = {"runs_dir": str(tmp_path), "search": SEARCH, "ppo_overrides": TINY, "seeds": 2, "minutes": 30.0,
              "generations": 2, "admit": False, "model": "openai/test-model", "llm_proposals": 3}
    first = discover(run_id="m1", **kwargs)
    state = first["state"]

    by_origin = {r["origin"]: r for r in state["archive"] if r["generation"] == 0}
    trained = {o for o in by_origin if o.startswith("llm:")}
    assert trained == {"llm:clip_plus_kl", "llm:squared_ratio"}, sorted(by_origin)
    assert by_origin["llm:clip_plus_kl"]["expr"] == symbolic.canonical(CLIP_PLUS_KL)
    assert state["log"][0]["from_llm"] == 2 and state["log"][1]["from_llm"] == 0
    assert state["log"][1]["trained"] == SEARCH["population"]  # generation 1: the mutations filled the population

    stages = [generation_of(r) for r in server.requests]
    assert stages[:2] == ["discovery (generation 0)"] * 2  # the answer without JSON went back with the reason
    assert "could not be used" in last_user(server.requests[1])
    gen1 = [r for r in server.requests if generation_of(r) == "discovery (generation 1)"]
    assert gen1, stages
    prompt = last_user(gen1[0])
    # the archive's best formulas and their measured fitness are in the next generation's prompt
    best = max(state["archive"][: len(by_origin)], key=lambda r: r["score"])
    assert json.dumps(best["expr"]) in prompt and f"{round(best['fitness'], 4)}" in prompt

    run = json.loads((tmp_path / "m1" / "run.json").read_text())
    assert run["backend"] == "llm" and run["status"] == "finished"
    assert [f["generation"] for f in run["fallbacks"]] == [1] and "JSON" in run["fallbacks"][0]["reason"]
    usage = run["llm"]["stages"]["discovery"]
    assert usage["calls"] == len(server.requests) and usage["prompt_tokens"] > 0

    # the rejected proposal's reason is in the flow's log; a re-run asks the model nothing and repeats the search
    asked = len(server.requests)
    again = discover(run_id="m1", **kwargs)
    assert len(server.requests) == asked
    assert again["state"]["archive"] == state["archive"]
