"""The paper's model-written text and figures against the scripted server: the text gate (a failing section is
asked again, then the offline section stands, recorded), placeholder references dropped, the vision review of each
figure (the image is in the request; a malformed reply and a model without vision fall back, recorded), and the
LLM reviewer bound by the paper's findings (desk reject)."""

from __future__ import annotations

import base64
import json

import pytest
from scripted_server import BROKEN_JSON, FINAL_INFO, REFUSAL, REVIEW, fenced, garbage, last_user, researcher, stage_of

from jaxlib_kernels.templates import make
from tasks import textgate, writeup
from tasks.llm import review as llm_review
from tasks.llm import writeup as llm_writeup
from tasks.runtime.llm import LLMError

LPO = make("lpo")
IDEA = {"Name": "tightening_asymmetric_clip", "Title": "A Tightening Asymmetric Trust Region",
        "Hypothesis": "An asymmetric clip range that tightens with training progress.",
        "source": "def drift(ratio, advantage, progress):\n    return 0.0 * ratio\n",
        "novelty": {"decision": "novel", "reason": "r", "distance": 0.3, "nearest": "ppo_clip",
                    "literature": [{"key": "anon2099", "title": "x", "authors": [], "year": 2099,
                                    "source": "semantic_scholar"},
                                   {"key": "lu2022dpo", "title": "Discovered Policy Optimisation",
                                    "authors": ["Chris Lu"], "year": 2022, "source": "semantic_scholar"}]}}
GOOD = ("```latex\nThe candidate changes the clip drift of PPO \\citep{schulman2017ppo}; on empty5 it reaches "
        "0.920 against 0.900 for the clip baseline over 2 seeds, a difference of +0.020 that is not significant "
        "(p = 0.4).\n```")
# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_the_text_gate_catches_model_garbage_and_passes_a_section_of_the_runs_numbers():
    facts = textgate.gate_facts(FINAL_INFO, IDEA)
    assert textgate.text_findings(llm_writeup.sanitize_section(GOOD, {"schulman2017ppo"}, set())[0], facts) == []
    checks = lambda text: {f["check"] for f in textgate.text_findings(text, facts, "s")}
    assert checks(REFUSAL) == {"refusal", "empty_section"}
    assert checks(BROKEN_JSON) == {"code", "json_fragment", "empty_section"}
    assert checks("") == {"empty_section"}
    long = " The method is evaluated on every setting the run had, with the seeds and budgets it recorded."
    assert checks("As shown by Anonymous (a) and Anonymous (b)." + long) == {"placeholder_reference"}
    assert checks("It reaches 0.953 where the baseline reaches 0.900." + long) == {"unsupported_number"}
    assert checks("It reaches 0.92 (92\\%), 3 settings, 8{,}192 steps." + long) == {"unsupported_number"}
    assert checks("It reaches 0.92 (92\\%) on 2 seeds, at p = 0.4." + long) == set()
    assert textgate.placeholder_paper({"title": "x", "authors": ["A B"]})
    assert textgate.placeholder_paper({"title": "A real title", "authors": ["Anonymous"]})
    assert not textgate.placeholder_paper(IDEA["novelty"]["literature"][1])


def _context():
    return {"profile": {"seeds": 2, "budget": 8192}, "run_id": "t", "baselines": LPO.baselines,
            "labels": {**LPO.baseline_labels, "idea": "ours"}}


@pytest.mark.slow  # one LaTeX compilation
def test_a_section_failing_the_gate_is_asked_again_then_the_offline_section_stands(serve, client_for, tmp_path):
    def script(request):
        stage = stage_of(request)
        if stage.startswith('writeup, section "Abstract"'):
            return GOOD if "second attempt" in stage else REFUSAL  # fixed by the retry
        if stage.startswith('writeup, section "Method"'):
            return BROKEN_JSON  # twice garbage: the offline method section
        if stage.startswith("writeup"):
            return GOOD
        return researcher(request)

    server = serve(script)
    paper = llm_writeup.write_paper(client_for(server), "lpo", IDEA, FINAL_INFO, [], _context(), tmp_path / "paper")
    retries = [r for r in server.requests if "second attempt" in stage_of(r)]
    assert [stage_of(r).split('"')[1] for r in retries] == ["Abstract", "Method"]
    assert "refusal: a refusal or apology" in last_user(retries[0]) and "json_fragment" in last_user(retries[1])
    gate = {g["section"]: g for g in paper["text_gate"]}
    assert gate["abstract"]["outcome"] == "accepted after a retry" and gate["introduction"]["outcome"] == "accepted"
    assert gate["method"]["outcome"] == "offline section" and paper["section_fallbacks"] == ["method"]
    assert llm_writeup.gate_fallback(paper) == ("the text gate rejected the model's method (empty_section, code, "
                                                "json_fragment); the offline sections stand")  # run.json, ideas.json
    assert llm_writeup.gate_fallback({**paper, "text_gate": [gate["abstract"], gate["introduction"]]}) is None
    assert "offline text for method (failed the text gate)" in paper["text_source"] and paper["pdf"]
    tex = (tmp_path / "paper" / "paper.tex").read_text()
    assert REFUSAL not in tex and '"Name"' not in tex and "```" not in tex and tex.count("0.920 against 0.900") >= 8
    assert paper["placeholder_references"] == ["anon2099"]
    bib = (tmp_path / "paper" / "references.bib").read_text()
    assert "anon2099" not in bib and "Anonymous" not in bib and "lu2022dpo" in bib


def test_a_model_that_fails_every_section_fails_the_stage_for_the_offline_writeup(serve, client_for, tmp_path):
    server = serve(garbage)
    with pytest.raises(LLMError, match=r"every section failed the text gate twice \(abstract: .*refusal.*method: "
                                       r"empty_section"):
        llm_writeup.write_paper(client_for(server), "lpo", IDEA, FINAL_INFO, [], _context(), tmp_path / "paper")
    assert len(server.requests) == 2 * (1 + len(writeup.SECTIONS)) and not (tmp_path / "paper" / "paper.pdf").exists()


def _figure_paper(folder, abstract="We study a tightening clip drift and measure it on every setting of the run, "
                                   "with the seeds and budget it recorded, against the strongest baseline."):
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "curves.png").write_bytes(PNG)
    tex = ("\\documentclass{article}\\begin{document}\\begin{abstract}" + abstract + "\\end{abstract}\n"
           "\\section{Results}\nFigure~\\ref{fig:curves} shows that ours learns faster than the clip baseline on "
           "every setting of the run, with the intervals of its seeds.\n\n"
           "\\begin{figure}\\includegraphics[width=\\linewidth]{figures/curves.png}\\caption{Learning curves "
           "\\emph{per} setting.}\\label{fig:curves}\\end{figure}\n\\end{document}\n")
    (folder / "paper.tex").write_text(tex)
    return {"pdf": None, "tex": str(folder / "paper.tex")}


READING = {"shows": "two rising curves", "supports_claim": False, "unclear": ["no legend"]}


def test_a_vision_model_is_shown_each_figure_with_its_caption_and_citing_paragraph(serve, client_for, tmp_path):
    server = serve(lambda r: fenced(READING))
    paper = _figure_paper(tmp_path)
    result = llm_review.figure_review(client_for(server, model="openai/gpt-4o"), paper, "lpo")
    assert server.images == [["data:image/png;base64," + base64.b64encode(PNG).decode()]]  # the image was sent
    prompt = last_user(server.requests[0])
    assert "Caption: Learning curves \\emph{per} setting." in prompt and "ours learns faster" in prompt
    assert result == {"status": "reviewed", "model": "openai/gpt-4o", "figures": [
        {"figure": "curves", "label": "fig:curves", **READING}]}
    findings = llm_review.vision_findings(result)
    assert [(f["check"], f["severity"]) for f in findings] == [("vision_support", "error"),
                                                                ("vision_unclear", "warning")]


@pytest.mark.parametrize("model", ["openai/gpt-4o", "openai/test-model"])  # a vision model; one litellm does not know
def test_a_malformed_vision_reply_falls_back_to_the_objective_check_recorded(serve, client_for, tmp_path, model):
    server = serve(lambda r: "I see a picture {not json")
    result = llm_review.figure_review(client_for(server, model=model), _figure_paper(tmp_path), "lpo")
    assert result["status"] == "fallback" and "no valid JSON" in result["reason"]
    assert "the objective figure check stands" in result["reason"] and server.images[0]  # tried with the image
    assert llm_review.vision_findings(result) == []


def test_a_model_without_vision_is_not_sent_images_and_falls_back_recorded(serve, client_for, tmp_path, llm_env):
    server = serve(lambda r: fenced(READING))
    result = llm_review.figure_review(client_for(server, model="openai/gpt-3.5-turbo"), _figure_paper(tmp_path))
    assert result == {"status": "fallback", "figures": [],
                      "reason": "openai/gpt-3.5-turbo does not take images; the objective figure check stands"}
    llm_env.setenv("SCIENTIST_VISION", "0")  # the user's word over litellm's model map
    assert llm_review.figure_review(client_for(server, model="openai/gpt-4o"), _figure_paper(tmp_path / "b"))[
        "status"] == "fallback"
    assert server.requests == []


def test_the_llm_reviewer_desk_rejects_garbage_text_whatever_the_model_scores(serve, client_for, tmp_path):
    def script(request):
        if stage_of(request).startswith("figure review"):
            return fenced({**READING, "supports_claim": True, "unclear": []})
        return fenced({**REVIEW, "Overall": 8, "Clarity": 4, "Presentation": 4, "Decision": "Accept"})

    server = serve(script)
    paper = _figure_paper(tmp_path, abstract=REFUSAL)
    review = llm_review.review_paper(client_for(server, model="openai/gpt-4o"), IDEA, FINAL_INFO, paper, "lpo",
                                     num_reviews=1, reflections=0)
    assert review["figure_review"]["status"] == "reviewed" and server.images[0]
    assert any(f["check"] == "refusal" and f["target"] == "Abstract" for f in review["findings"])
    prompt = last_user(next(r for r in server.requests if stage_of(r).startswith("review (")))
    assert "- refusal (error, Abstract):" in prompt and "desk reject" in prompt
    assert review["Decision"] == "Reject" and review["Overall"] <= 2 and review["Clarity"] == review["Presentation"] == 1
    assert review["Weaknesses"][0].startswith("Desk reject") and review["meta_review"]["Overall"] == 8
    json.dumps(review)  # review.json
