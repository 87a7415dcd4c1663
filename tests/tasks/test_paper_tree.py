"""The paper of an idea that grew a research tree (tree.json, see conftest.make_tree): its tuning and ablation tables,
the tree's figure (through the figure checks), the replication on fresh seeds, and the fixed-hyperparameters
limitation only where tuning did not run. Real pylatex -> latexmk -> pymupdf runs."""

from __future__ import annotations

import json
from pathlib import Path

import pymupdf
import pytest

from tasks import writeup
from tasks.plotting import TREE_FIGURE, make_plots


def pdf_text(path: str) -> str:
    with pymupdf.open(path) as doc:
        return " ".join(" ".join(page.get_text() for page in doc).replace("\u2212", "-").split())


@pytest.fixture(scope="module")
def tree_paper(tmp_path_factory, win_experiment, kit):
    from jaxlib_kernels.templates import lpo
    from tasks.aggregation import replication_of

    results, final_info = win_experiment
    out = tmp_path_factory.mktemp("tree_idea")
    idea = kit.make_idea(tree={"path": kit.make_tree(out / "tree" / "tree.json")})
    figures = make_plots(idea, results, final_info, kit.make_sources(), out / "figures", kit.make_context()["labels"],
                         lpo.TEMPLATE)
    replication = replication_of(results, kit.CANDIDATE, lpo.TEMPLATE.metric)  # the aggregation's replication.json
    (out / "replication.json").write_text(json.dumps(replication))
    context = writeup.paper_context("lpo", idea, kit.make_context(), out)
    paper = writeup.write_paper_loop("lpo", idea, final_info, figures, context, out / "paper")
    return paper, figures, json.loads(Path(idea["tree"]["path"]).read_text()), replication


def test_the_tree_paper_has_the_tuning_and_ablation_tables_and_the_tree_figure(tree_paper, kit):
    paper, figures, record, replication = tree_paper
    assert paper["pdf"] and paper["error"] is None and paper["check_errors"] == 0
    assert paper["table_numbers_found"] and paper["unresolved_refs"] == 0
    tree_fig = next(f for f in figures if f["name"] == TREE_FIGURE)
    assert tree_fig["findings"] == []  # the figure check at print width
    assert paper["figures"] == len(figures) == 4
    tex = Path(paper["tex"]).read_text()
    assert f"figures/{TREE_FIGURE}.png" in tex and "\\ref{fig:research-tree}" in tex
    assert "\\label{tab:tuning}" in tex and "\\ref{tab:tuning}" in tex
    assert "\\label{tab:ablation}" in tex and "\\ref{tab:ablation}" in tex
    text = pdf_text(paper["pdf"])
    assert "Tuning of every method before the final runs" in text
    assert "Ablations of the final candidate" in text and "The search tree of the candidate" in text
    for method, t in record["tuning"].items():  # every method's scores before and after, and its evaluations
        assert f"{t['score_before']:.3f}" in text and f"{t['score_after']:.3f}" in text, method
    assert "the same tuning budget of 8 evaluations" in text
    assert "0.45, 0.78, 1.31" in text  # the candidate's tuned constants
    final = 0.73
    for label, score in kit.ABLATIONS:  # each ablation against the final candidate, in the metric's units
        assert label.replace("'", "\u2019").replace("clip(", "clip (") in text  # set as the formulas are
        assert f"{score:.3f} {score - final:+.3f}" in text
    assert "replication on 5 fresh seeds (0, 1, 2, 3, 4)" in text and "1000, 1001" in text
    assert "Interquartile mean (IQM)" in text and "\\label{tab:iqm}" in tex
    for method, v in replication["iqm"].items():  # every method's IQM of the replication
        assert f"{v['iqm']:.3f}" in text, method
    pairs = len(replication["tests"])
    better = sum(t["significant"] for t in replication["tests"])
    assert f"Holm-corrected over all {pairs} pairs, find it significantly better in {better} of them" in text
    assert "Fixed hyperparameters" not in text and "none was tuned" not in text
    assert "Small tuning budget" in text
    assert writeup.internal_words(text, "lpo") == []


def test_without_a_tree_or_without_tuning_the_fixed_hyperparameters_limitation_stays(win_paper, win_experiment,
                                                                                    kit, tmp_path):
    assert "Fixed hyperparameters" in pdf_text(win_paper["pdf"])
    assert "tab:tuning" not in Path(win_paper["tex"]).read_text()
    _, final_info = win_experiment
    idea = kit.make_idea(tree={"path": kit.make_tree(tmp_path / "tree.json", tuned=False)})
    facts = writeup.build_facts("lpo", idea, final_info, [], kit.make_context(), [])
    assert facts["tree"] and not facts["tuned"] and facts["tree"]["ablations"]
    text = writeup.make_env("lpo").get_template("limitations.tex.j2").render(**facts)
    assert "Fixed hyperparameters" in text and "Small tuning budget" not in text
    generic = writeup.make_env("no_such_template").get_template("limitations.tex.j2").render(**facts)
    assert "none was tuned" in generic


def test_results_that_are_not_the_trees_replication_are_not_called_fresh(win_experiment, kit, tmp_path):
    import copy

    info = copy.deepcopy(win_experiment[1])
    for setting in info.values():  # more seeds per arm than the tree's 5 replication seeds
        setting["n"] = {m: 9 for m in setting["n"]}
    idea = kit.make_idea(tree={"path": kit.make_tree(tmp_path / "tree.json")})
    env = writeup.make_env("lpo")
    facts = writeup.build_facts("lpo", idea, info, [], kit.make_context(), [])
    assert facts["tree"]["fresh"] and not facts["tree"]["replicated"]
    text = " ".join(env.get_template("tree.tex.j2").render(**facts).split())
    assert "not recorded as a replication" in text and "fresh" not in text
    assert "none of them was used" not in env.get_template("caption_results.tex.j2").render(**facts)
