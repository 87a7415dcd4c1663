"""The writeup loop's model revision against the scripted server: the model gets the findings and the sections they
concern and returns revised sections; a revision that fixes the finding is kept (the loop's round in checks.json,
no findings left); a refusal, or a revised section that fails the text gate, is dropped and recorded as
"revision failed: ...", and the paper is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripted_server import FINAL_INFO, REFUSAL, last_user, stage_of

from tasks import textgate, writeup
from tasks.llm import writeup as llm_writeup

FIXED = "every seed"  # the phrase the test's check asks for
TEX = r"""\documentclass{article}
\begin{document}
\begin{abstract}
We compare a candidate drift with the clip baseline of proximal policy optimisation on one grid world setting.
\end{abstract}
\section{Results}\label{sec:results}
The candidate reaches 0.920 against 0.900 for the clip baseline, a difference of 0.02 that is not significant.
\section{Conclusion}\label{sec:conclusion}
The candidate is as good as the clip baseline on the setting the run had, within the intervals it measured.
\end{document}
"""
REVISION = ("```latex\n\\section{Results}\nThe candidate reaches 0.920 against 0.900 for the clip baseline on "
            f"{FIXED} of the 2 it ran, a difference of 0.02 that is not significant (p = 0.4).\n```")


def seeds_stated(paper_dir, tex, pdf, context) -> list[dict]:
    """A check that reports an error on the results until they say how many seeds."""
    return [] if FIXED in tex else [textgate.finding("claims", "Results", "the results do not say how many seeds")]


def _paper(tmp_path: Path) -> dict:
    out = tmp_path / "paper"
    out.mkdir()
    (out / "paper.tex").write_text(TEX)
    ok, log = writeup.compile_latex(out)
    assert ok, log
    return {"tex": str(out / "paper.tex"), "pdf": str(out / "paper.pdf"), "pages": 1}


def _loop(client, tmp_path: Path, paper: dict) -> dict:
    revise = llm_writeup.reviser(client, "lpo", textgate.gate_facts(FINAL_INFO), set(), set())
    return writeup.write_paper_loop("lpo", {"Name": "idea"}, FINAL_INFO, [], {}, tmp_path / "paper", revise=revise,
                                    checks=[seeds_stated, textgate.check_text], written=paper)


def test_a_revision_keeps_the_papers_figures_and_labels_and_passes_the_gate_with_the_sections_numbers():
    tex = TEX.replace("\\section{Conclusion}", "\\includegraphics{figures/curves.png}\n\\section{Conclusion}")
    reply = ("```latex\n\\section{Results}\nThe candidate reaches 0.920 on every seed against 0.900 for the clip "
             "baseline, a difference that is not significant \\citep{invented2099}.\n"
             "\\includegraphics{figures/curves.png}\n\\input{secrets}\n```")
    out = llm_writeup.apply_revision(tex, reply, textgate.gate_facts(FINAL_INFO), set(), set())
    results = textgate.tex_sections(out)["Results"]
    assert results.strip().startswith("\\label{sec:results}") and "every seed" in results
    assert "includegraphics{figures/curves.png}" in results and "input" not in results and "invented" not in results
    assert textgate.tex_sections(out)["Conclusion"] == textgate.tex_sections(tex)["Conclusion"]
    with pytest.raises(writeup.RevisionFailed, match=r"text gate rejected the revised Results \(unsupported_number"):
        llm_writeup.apply_revision(tex, reply.replace("0.920", "0.987"), textgate.gate_facts(FINAL_INFO), set(), set())
    with pytest.raises(writeup.RevisionFailed, match="no section of the paper"):
        llm_writeup.apply_revision(tex, "```latex\n\\section{Appendix}\nNew text.\n```", {}, set(), set())


@pytest.mark.slow  # two LaTeX compilations
def test_the_model_revises_the_section_a_check_names_and_the_loop_keeps_it(serve, client_for, tmp_path):
    server = serve(lambda request: REVISION if stage_of(request) == "latex revision" else "I do not know.")
    paper = _loop(client_for(server), tmp_path, _paper(tmp_path))
    prompt = last_user(server.requests[0])
    assert len(server.requests) == 1 and "the results do not say how many seeds" in prompt
    assert "\\section{Results}" in prompt and "\\section{Conclusion}" not in prompt  # only the concerned sections
    record = json.loads(Path(paper["checks"]).read_text())
    assert [r["actions"] for r in record["rounds"]] == [["revised the LaTeX"], []]
    assert record["rounds"][0]["findings"][0]["check"] == "claims" and record["final"] == []
    assert paper["check_errors"] == 0 and FIXED in Path(paper["tex"]).read_text()
    assert (tmp_path / "paper" / "paper.pdf").exists()


@pytest.mark.slow  # one LaTeX compilation
def test_a_refusal_or_a_gated_revision_is_dropped_recorded_and_the_paper_kept(serve, client_for, tmp_path):
    replies = iter([REFUSAL, "```latex\n\\section{Results}\nI am unable to help with that.\n```"])
    server = serve(lambda request: next(replies))
    paper = _loop(client_for(server), tmp_path, _paper(tmp_path))
    record = json.loads(Path(paper["checks"]).read_text())
    actions = [r["actions"] for r in record["rounds"]]
    assert actions[0] == [("revision failed: the reply held no section of the paper in a ```latex block: "
                           "'I am unable to help with that.'")]
    assert actions[1][0].startswith("revision failed: the text gate rejected the revised Results (")
    assert "refusal" in actions[1][0] and actions[2] == [] and len(server.requests) == 2
    assert [f["check"] for f in record["final"]] == ["claims"] and paper["check_errors"] == 1
    assert Path(paper["tex"]).read_text() == TEX
