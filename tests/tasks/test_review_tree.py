"""The evidence reviewer and the research tree (tree.json, see conftest.make_tree): tuned baselines on an equal budget,
an ablation and a replication on fresh seeds are credited; what is missing is named and caps the Overall."""

from __future__ import annotations

import copy

from tasks import review


def test_a_complete_tree_is_credited(win_paper, win_experiment, kit, tmp_path):
    _, final_info = win_experiment
    idea = kit.make_idea(tree={"path": kit.make_tree(tmp_path / "tree.json")})
    rev = review.review_paper(idea, final_info, win_paper, "lpo")
    assert [t["check"] for t in rev["tree_evidence"]] == list(review.TREE_CHECKS)
    assert all(t["passed"] for t in rev["tree_evidence"]), rev["tree_evidence"]
    assert "5 methods tuned with 8 evaluations each" in rev["tree_evidence"][0]["detail"]
    strengths = " ".join(rev["Strengths"])
    assert "baselines are tuned" in strengths and "ablation" in strengths and "fresh seeds" in strengths
    assert not any("not tuned" in w or "No ablation" in w for w in rev["Weaknesses"])
    assert not any("not tuned for the candidate" in q for q in rev["Questions"])
    assert not any("research tree" in c for c in rev["derivation"]["caps"])
    bare = review.review_paper(kit.make_idea(), final_info, win_paper, "lpo")
    assert rev["Overall"] >= bare["Overall"] and rev["Decision"] == "Accept"


def test_what_the_tree_lacks_is_named_and_caps_the_overall(win_paper, win_experiment, kit, tmp_path):
    _, final_info = win_experiment
    bare = review.review_paper(kit.make_idea(), final_info, win_paper)
    assert not any(t["passed"] for t in bare["tree_evidence"])
    weaknesses = " ".join(bare["Weaknesses"])
    assert "The baselines were not tuned" in weaknesses and "No ablation" in weaknesses
    assert "No replication on fresh seeds" in weaknesses
    assert bare["Overall"] <= review.TREE_CAP
    assert any("research tree incomplete: tuned_baselines, ablation, replication" in c
               for c in bare["derivation"]["caps"])
    untuned = kit.make_idea(tree={"path": kit.make_tree(tmp_path / "untuned.json", tuned=False)})
    rev = review.review_paper(untuned, final_info, win_paper, "lpo")
    assert [t["passed"] for t in rev["tree_evidence"]] == [False, True, True]
    assert rev["tree_evidence"][0]["detail"] == "no tuning ran"
    assert any("not tuned for the candidate" in q for q in rev["Questions"])
    more = copy.deepcopy(final_info)  # more seeds per arm than the tree's replication seeds: not its replication
    for info in more.values():
        info["n"] = {m: 9 for m in info["n"]}
    assert not review.tree_checks(kit.make_idea(tree={"path": kit.make_tree(tmp_path / "t.json")}), more)[2]["passed"]


def test_the_rule_text_states_the_tree_checks_and_their_cap():
    text = review.rule_text()
    for check in review.TREE_CHECKS:
        assert f"`{check}`" in text
    assert f"at most {review.TREE_CAP}" in text
