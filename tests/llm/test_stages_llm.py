"""Each LLM stage against the scripted server: ideation, novelty with its literature client, code repair, writeup
sanitising, review; the faults end in a retry with feedback or a clear failure of that idea."""

from __future__ import annotations

import json
import socket

import pytest
from scripted_server import FINAL_INFO, IDEA, REVIEW, S2_PAPERS, fenced, last_user, researcher, stage_of

from jaxlib_kernels.templates import make
from tasks.llm import codegen as llm_codegen
from tasks.llm import ideation as llm_ideation
from tasks.llm import novelty as llm_novelty
from tasks.llm import prompting as llm_prompting
from tasks.llm import review as llm_review
from tasks.llm import writeup as llm_writeup
from tasks.runtime import literature
from tasks.runtime.llm import LLMError

LPO = make("lpo")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ideation_reads_the_archive_and_stops_reflecting_when_done(serve, client_for):
    server = serve(researcher)
    client = client_for(server)
    archive = [{"idea": "annealed_clip_ppo", "title": "Annealed clip", "advantage": 0.0213, "overall": 5,
                "run_id": "r0"}]
    ideas = llm_ideation.generate_ideas(client, LPO, archive, 2, reflections=3)
    assert [i["Name"] for i in ideas] == ["tightening_asymmetric_clip", "tightening_asymmetric_clip_2"]
    assert all(i["reflections"] == 1 and i["expression"] is None and i["backend"] == "llm" for i in ideas)
    assert server.stages().count("ideation reflection (round 1 of 3)") == 2  # "I am done" ended each after one
    first = last_user(server.requests[0])
    assert "annealed_clip_ppo" in first and "advantage 0.0213, review overall 5" in first
    assert "Discovering the drift function" not in first and "annealed_clip:" in first  # seed ideas of the template
    assert "tightening_asymmetric_clip: A Tightening" in last_user(server.requests[2])  # the second sees the first


def test_a_bad_reflection_keeps_the_previous_idea(serve, client_for):
    replies = iter([fenced(IDEA), "I changed my mind: {not json", fenced({**IDEA, "Title": "Better title"})])
    server = serve(lambda r: next(replies))
    ideas = llm_ideation.generate_ideas(client_for(server), LPO, [], 1, reflections=2)
    assert ideas[0]["Title"] == "Better title" and ideas[0]["reflections"] == 2 and len(server.requests) == 3


def test_novelty_searches_semantic_scholar_with_backoff_and_decides(serve, client_for, llm_env):
    server = serve(researcher, S2_PAPERS)
    server.s2_errors = [429, 429]
    llm_env.setenv("SCIENTIST_S2_API_BASE", server.url.replace("/v1", "/s2"))
    result = llm_novelty.check_novelty(client_for(server), LPO, IDEA, rounds=3)
    assert result["decision"] == "novel" and "Discovered Policy Optimisation" in result["reason"]
    assert result["queries"] == [{"query": "asymmetric clipping drift mirror learning", "source": "semantic_scholar",
                                  "hits": 2, "notes": []}]
    assert len(server.s2_queries) == 3  # two 429s, then the answer
    assert [p["key"] for p in result["literature"]] == ["lu2022discovered", "example2021asymmetric"]
    second = last_user(server.requests[1])
    assert "Asymmetric Trust Regions for Policy Gradients (2021, ICML)" in second


def test_novelty_falls_back_to_the_local_index_quickly_when_no_source_answers(serve, client_for, llm_env):
    llm_env.setenv("SCIENTIST_S2_API_BASE", f"http://127.0.0.1:{_closed_port()}/graph/v1")
    llm_env.setenv("SCIENTIST_OPENALEX_API_BASE", f"http://127.0.0.1:{_closed_port()}")
    literature._DOWN.clear()
    server = serve(researcher)
    result = llm_novelty.check_novelty(client_for(server), LPO, IDEA, rounds=2)
    [query] = result["queries"]
    assert query["source"] == "local" and result["fallback_to_local"] is True
    assert "semantic_scholar: unreachable" in query["notes"][0] and "openalex: unreachable" in query["notes"][1]
    assert all(p["source"] == "local" for p in result["literature"]) and result["literature"]
    literature._DOWN.clear()


def test_novelty_must_decide_in_the_last_round(serve, client_for, llm_env):
    llm_env.setenv("SCIENTIST_S2_API_BASE", f"http://127.0.0.1:{_closed_port()}")
    llm_env.setenv("SCIENTIST_OPENALEX_API_BASE", f"http://127.0.0.1:{_closed_port()}")
    literature._DOWN.clear()
    server = serve(lambda r: fenced({"Query": "more", "Decision": "maybe", "Reason": "?"}) if "last round" not in
                   last_user(r) else fenced({"Decision": "not novel", "Reason": "PPO already does this"}))
    client = client_for(server, json_attempts=2)
    with pytest.raises(LLMError, match="'Decision' must be"):
        llm_novelty.check_novelty(client, LPO, IDEA, rounds=2)
    literature._DOWN.clear()


def test_code_failing_the_gate_three_times_is_a_recorded_rejection(serve, client_for, tmp_path):
    bad = ["```python\nimport os\n\ndef drift(ratio, advantage, progress):\n    return ratio\n```",
           "```python\ndef drift(ratio, advantage, progress):\n    return open('/etc/passwd')\n```",
           "no code at all, sorry"]
    replies = iter(bad)
    server = serve(lambda r: next(replies))
    result = llm_codegen.implement_candidate(client_for(server), LPO, IDEA, tmp_path / "idea", repair_rounds=2)
    assert result["accepted"] is False and len(result["attempts"]) == 3 and result["repairs"] == 2
    assert [stage_of(r) for r in server.requests] == ["code", "code repair (round 1 of 2)", "code repair (round 2 of 2)"]
    first = last_user(server.requests[0])
    example = next(iter(LPO.baselines.values()))  # the template's first baseline is the code example
    assert example.source.strip() in first and LPO.plugin.signature in first
    assert "os" in last_user(server.requests[1]) and "import os" in last_user(server.requests[1])
    assert "open" in last_user(server.requests[2])
    validation = json.loads((tmp_path / "idea" / "validation.json").read_text())
    assert validation["accepted"] is False and len(validation["attempts"]) == 3 and validation["reason"]
    assert (tmp_path / "idea" / "candidate.py").read_text().startswith("no code at all")


def test_parse_code_and_the_formula():
    source, latex = llm_codegen.parse_code("text\n```python\ndef drift(r, a, p):\n    return r\n```\nLaTeX: $r^2$\n")
    assert source == "def drift(r, a, p):\n    return r\n" and latex == "r^2"


def test_sanitize_drops_invented_citations_unknown_refs_and_dangerous_tex():
    text = ("```latex\n\\section{Intro}\nAs in \\citep{schulman2017ppo, fake2030} and \\citet{ghost2099}, see "
            "Figure~\\ref{fig:learning_curves} and Figure~\\ref{fig:missing}.\n\\input{/etc/passwd}\n```")
    body, dropped, removed = llm_writeup.sanitize_section(text, {"schulman2017ppo"}, {"fig:learning_curves"})
    assert "\\citep{schulman2017ppo}" in body and "fake2030" not in body and "ghost2099" not in body
    assert "\\ref{fig:learning_curves}" in body and "fig:missing" not in body
    assert "\\input" not in body and "\\section" not in body
    assert dropped == ["fake2030", "ghost2099"] and "\\ref{fig:missing}" in removed


def test_bibtex_of_returned_papers_has_unique_keys():
    papers = [{"key": "lu2022dpo", "title": "Discovered", "authors": ["Chris Lu"], "year": 2022, "venue": "NeurIPS",
               "source": "semantic_scholar"},
              {"key": "schulman2017ppo", "title": "PPO", "source": "local"}]
    text, keys = literature.bibtex(papers, {"lu2022dpo", "schulman2017ppo"})
    assert keys == {"lu2022dpo": "lu2022dpoa", "schulman2017ppo": "schulman2017ppo"}
    assert "@article{lu2022dpoa," in text and "title = {Discovered}" in text
    text, _ = literature.bibtex([{"key": "k", "title": "Sch\u00f6lkopf & \u6df1\u5ea6 {x}_y", "year": 2020,
                                  "authors": ["Bernhard Sch\u00f6lkopf", "\u738b\u4f1f"], "source": "openalex"}], set())
    assert "title = {Scholkopf x y}" in text and "author = {Bernhard Scholkopf}" in text and text.isascii()


REVIEWED_IDEA = {**IDEA, "novelty": {"decision": "novel", "reason": "r", "distance": 0.3, "nearest": "ppo_clip"}}


def test_review_with_missing_fields_gets_feedback_and_the_ensemble_is_meta_reviewed(serve, client_for):
    def script(request):
        stage = stage_of(request)
        if stage.startswith("review (") and "reviewer 1" in stage:
            return fenced({k: v for k, v in REVIEW.items() if k not in ("Overall", "Soundness")})
        if stage == "meta-review":
            return fenced({**REVIEW, "Overall": 7, "Decision": "Reject"})
        if not stage:  # the feedback on a reply that could not be used
            return fenced(REVIEW)
        return researcher(request)

    server = serve(script)
    review = llm_review.review_paper(client_for(server), REVIEWED_IDEA, FINAL_INFO, {"pdf": None, "error": "x"}, "lpo",
                                     num_reviews=2, reflections=1)
    feedback = [r["messages"][-1]["content"] for r in server.requests if "could not be used" in
                r["messages"][-1]["content"]]
    assert len(feedback) == 1 and "missing field 'Soundness'" in feedback[0] and "missing field 'Overall'" in feedback[0]
    assert len(review["reviews"]) == 2 and review["Overall"] == 7
    assert review["Decision"] == "Accept" and review["meta_review"]["model_decision"] == "Reject"  # Overall >= 6
    assert {e["check"] for e in review["evidence"]} == {e["check"] for e in review["evidence_review"]["evidence"]}
    assert review["evidence_review"]["Overall"] <= 2  # no PDF: the evidence reviewer's cap
    prompt = last_user(server.requests[0])
    assert "pdf_compiled: FAILED" in prompt and "seeds_per_arm: FAILED" in prompt


def test_a_review_that_never_has_its_fields_fails_clearly(serve, client_for):
    server = serve(lambda r: fenced({"Summary": "short"}))
    with pytest.raises(LLMError, match=r"review: no valid JSON after 3 replies: missing field 'Strengths'"):
        llm_review.review_paper(client_for(server), REVIEWED_IDEA, FINAL_INFO, {"pdf": None}, "lpo", num_reviews=1)


def test_ideation_keeps_the_ideas_finished_when_the_budget_runs_out(serve, client_for):
    server = serve(researcher)
    client = client_for(server, max_tokens_total=100)  # the first reply alone spends it
    ideas = llm_ideation.generate_ideas(client, LPO, [], 3, reflections=2)
    assert [i["Name"] for i in ideas] == [IDEA["Name"]] and ideas[0]["reflections"] == 0
    assert len(server.requests) == 1 and client.ledger.exceeded.startswith("token budget spent")


@pytest.mark.slow  # two LaTeX compilations
def test_latex_that_does_not_compile_gets_a_repair_round(serve, client_for, tmp_path):
    def script(request):
        stage = stage_of(request)
        if stage.startswith("writeup"):
            section = stage.split('"')[1]
            words = " It states what the run measured, on the settings that ran, and nothing beyond them."
            return f"```latex\nThe {section} text \\citep{{schulman2017ppo}}.{words}\n```" if section != "Method" \
                else f"```latex\nOur drift \\frobnicate{{r}} is new.{words}\n```"
        if stage == "latex repair":
            return fenced({"method": "Our drift is new \\citep{lu2022dpo}. It states what the run measured, on the "
                                     "settings that ran, and nothing beyond them."})
        return researcher(request)

    server = serve(script)
    idea = {**REVIEWED_IDEA, "source": "def drift(ratio, advantage, progress):\n    return 0.0 * ratio\n"}
    context = {"profile": {"seeds": 2, "budget": 8192}, "run_id": "t", "baselines": LPO.baselines,
               "labels": {**LPO.baseline_labels, "idea": "ours"}}
    paper = llm_writeup.write_paper(client_for(server), "lpo", idea, FINAL_INFO, [], context, tmp_path / "paper")
    repair = next(r for r in server.requests if stage_of(r) == "latex repair")
    assert "Undefined control sequence" in last_user(repair) and "frobnicate" in last_user(repair)
    assert paper["pdf"] and paper["text_source"] == "llm (after a LaTeX repair round)"
    assert paper["llm_repair_error"].startswith("! Undefined control sequence")
    tex = (tmp_path / "paper" / "paper.tex").read_text()
    assert "Our drift is new \\citep{lu2022dpo}" in tex and "The Results text" in tex and "frobnicate" not in tex


def test_the_llm_text_is_layered_per_template():
    from tasks.runtime.llm import render
    from tasks.runtime.text import template_dir

    assert (template_dir("lpo") / "llm" / "task.md").is_file()
    assert llm_prompting.task_description("lpo") == (template_dir("lpo") / "llm" / "task.md").read_text().strip()
    assert llm_prompting.task_description("no_such_template") == "Research template no_such_template."
    lpo_guidance, lpo_words = llm_writeup.writeup_guidance("lpo")
    guidance, words = llm_writeup.writeup_guidance("no_such_template")
    assert "mirror learning" in lpo_guidance["background"] and "drift" not in guidance["background"]
    assert lpo_guidance["related_work"] == guidance["related_work"] and lpo_words == words and words["results"] == 400
    assert set(guidance) == set(words) == {"abstract", "introduction", "related_work", "background", "method",
                                           "setup", "results", "limitations", "conclusion"}
    ctx = {"round": 1, "rounds": 2, "template": LPO}
    assert "non-negative, zero at r = 1" in render("ideation_reflection.j2", "lpo", **ctx)  # lpo's override
    assert "every requirement of the plug-in" in render("ideation_reflection.j2", None, **ctx)


def test_results_text_states_the_direction_of_each_comparison():
    minimised = {"s": {**FINAL_INFO["empty5"], "maximize": False,
                       "comparison": {**FINAL_INFO["empty5"]["comparison"], "difference": -0.05, "p_value": 0.01,
                                      "significant": True}}}
    assert "; better)" in llm_writeup.results_text(minimised, {})
    recorded = {"s": {**minimised["s"], "comparison": {**minimised["s"]["comparison"], "better": False,
                                                       "worse": True}}}
    assert "; worse)" in llm_writeup.results_text(recorded, {})
    assert "; no significant difference)" in llm_writeup.results_text(FINAL_INFO, {})
