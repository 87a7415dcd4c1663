"""review_paper: the evidence reviewer on compiled papers (see conftest) and on papers with failed evidence."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tasks import review

SCORES_1_4 = ("Originality", "Quality", "Clarity", "Significance", "Soundness", "Presentation", "Contribution")


def assert_valid_form(rev: dict) -> None:
    for field in review.FORM_FIELDS:
        assert field in rev, field
    assert isinstance(rev["Summary"], str) and len(rev["Summary"]) > 50
    for field in ("Strengths", "Weaknesses", "Questions", "Limitations"):
        assert isinstance(rev[field], list) and rev[field] and all(isinstance(x, str) and x for x in rev[field])
    for field in SCORES_1_4:
        assert rev[field] in (1, 2, 3, 4), field
    assert 1 <= rev["Overall"] <= 10 and 1 <= rev["Confidence"] <= 5
    assert rev["Ethical Concerns"] is False
    assert rev["Decision"] == ("Accept" if rev["Overall"] >= 6 else "Reject")
    assert [e["check"] for e in rev["evidence"]] == list(review.CHECKS)
    assert all(isinstance(e["passed"], bool) and e["detail"] for e in rev["evidence"])
    assert rev["rule"] == review.RULE_PATH.read_text()


def passed(rev: dict) -> dict:
    return {e["check"]: e["passed"] for e in rev["evidence"]}


def test_a_significant_win_with_a_clean_paper_is_accepted(win_paper, win_experiment, kit):
    _, final_info = win_experiment
    rev = review.review_paper(kit.make_idea(), final_info, win_paper)
    assert_valid_form(rev)
    assert all(passed(rev).values()), [e for e in rev["evidence"] if not e["passed"]]
    assert rev["Decision"] == "Accept" and rev["Overall"] >= 6
    assert "empty5" in rev["Summary"] and "significantly better" in rev["Summary"]
    assert any("every training setting" in s for s in rev["Strengths"])


def test_a_win_scores_higher_than_no_significant_difference(win_paper, null_paper, win_experiment,
                                                           null_experiment, kit):
    win = review.review_paper(kit.make_idea(), win_experiment[1], win_paper)
    null = review.review_paper(kit.make_idea(), null_experiment[1], null_paper)
    assert_valid_form(null)
    assert win["Overall"] > null["Overall"]
    assert win["Quality"] > null["Quality"] and win["Significance"] > null["Significance"]
    assert not passed(null)["significant_training"] and not passed(null)["significant_held_out"]
    assert passed(null)["pdf_compiled"] and passed(null)["table_numbers"]
    assert null["Decision"] == "Reject" and null["Overall"] <= 5
    assert any("does not beat the strongest baseline" in w for w in null["Weaknesses"])


def test_a_failed_pdf_fails_its_evidence_checks(win_experiment, tmp_path, kit):
    tex = tmp_path / "paper.tex"
    tex.write_text("\\documentclass{article}\\begin{document}\\frac{\\end{document}")
    paper = {"pdf": None, "tex": str(tex), "log": str(tmp_path / "build.log"), "pages": 0, "figures": 0,
             "unresolved_refs": 0, "table_numbers_found": False, "error": "! Missing } inserted.", "repaired": True}
    rev = review.review_paper(kit.make_idea(), win_experiment[1], paper)
    assert_valid_form(rev)
    ok = passed(rev)
    for check in ("pdf_compiled", "figures", "references_resolved", "pages", "table_numbers"):
        assert not ok[check], check
    assert ok["significant_training"] and ok["seeds_per_arm"]  # the statistics are still judged
    assert rev["Overall"] <= 2 and rev["Decision"] == "Reject"
    assert "! Missing } inserted." in rev["Summary"]
    assert any("did not compile" in w for w in rev["Weaknesses"])


def test_too_few_seeds_or_no_novelty_cap_the_overall(win_paper, win_experiment, kit):
    info = copy.deepcopy(win_experiment[1])
    for setting in info.values():
        setting["n"] = {m: 3 for m in setting["n"]}
    rev = review.review_paper(kit.make_idea(), info, win_paper)
    assert not passed(rev)["seeds_per_arm"] and rev["Overall"] <= 4 and rev["Decision"] == "Reject"
    idea = kit.make_idea()
    idea["novelty"] = {**idea["novelty"], "decision": "not novel", "distance": 0.001}
    rev = review.review_paper(idea, win_experiment[1], win_paper)
    assert not passed(rev)["novelty"] and rev["Originality"] == 1 and rev["Overall"] <= 4


def test_originality_follows_the_novelty_distance(win_paper, win_experiment, kit):
    scores = []
    for distance in (0.01, 0.1, 0.5):
        idea = kit.make_idea()
        idea["novelty"] = {**idea["novelty"], "distance": distance}
        scores.append(review.review_paper(idea, win_experiment[1], win_paper)["Originality"])
    assert scores == [2, 3, 4]


def test_an_unreferenced_figure_fails_the_figure_check(win_paper, win_experiment, tmp_path, kit):
    tex = Path(win_paper["tex"]).read_text().replace("\\ref{fig:drift-shape}", "the drift figure")
    (tmp_path / "paper.tex").write_text(tex)
    rev = review.review_paper(kit.make_idea(), win_experiment[1], {**win_paper, "tex": str(tmp_path / "paper.tex")})
    check = next(e for e in rev["evidence"] if e["check"] == "figures")
    assert not check["passed"] and "fig:drift-shape" in check["detail"]
    assert rev["Overall"] <= 5


def test_the_review_is_deterministic(win_paper, win_experiment, kit):
    first = review.review_paper(kit.make_idea(), win_experiment[1], win_paper)
    assert review.review_paper(kit.make_idea(), win_experiment[1], win_paper) == first


def test_the_rule_text_states_the_constants_the_code_uses():
    text = review.rule_text()
    assert f"at least {review.MIN_SEEDS} seeds" in text
    assert f"p < {review.ALPHA}" in text
    assert f"at least {review.MIN_FIGURES} figures" in text and f"at least {review.MIN_PAGES} pages" in text
    assert f">= {review.NOVELTY_DISTANCES[0]}" in text and f">= {review.NOVELTY_DISTANCES[1]}" in text
    assert "probe units" in text and "`Template.probe_scale`" in text  # the distances' unit
    assert "metric's direction" in text
    assert f"at most {review.PRECISION_MAX_REL_HALFWIDTH:.2f}" in text
    assert f"at least {review.LARGE_EFFECT * 100:.0f} %" in text
    assert f"Overall >= {review.ACCEPT_AT}" in text and f"to {review.MAX_OVERALL} (all fours)" in text
    for check in review.CHECKS:
        assert f"`{check}`" in text


def _strip_directions(final_info: dict, keep_maximize: bool = True) -> dict:
    """A final_info as written before the metric's direction was recorded."""
    info = copy.deepcopy(final_info)
    for setting in info.values():
        for key in ("improvement", "better", "worse"):
            setting["comparison"].pop(key)
        if not keep_maximize:
            setting.pop("maximize")
    return info


def test_comparisons_follow_the_metric_direction(kit):
    results = kit.synthetic_results(effect=0.06, seed=3, maximize=False)  # the candidate is below every baseline
    as_min, as_max = kit.final_info_from(results, maximize=False), kit.final_info_from(results, maximize=True)
    low, high = review.comparisons(as_min), review.comparisons(as_max)
    assert [r["direction"] for r in low] == ["better"] * 3 and [r["direction"] for r in high] == ["worse"] * 3
    assert all(r["difference"] < 0 < r["improvement"] and r["relative_gain"] > 0 for r in low)
    assert all(r["difference"] < 0 and r["improvement"] < 0 and r["relative_gain"] < 0 for r in high)
    assert all(r["relative_gain"] == pytest.approx(r["improvement"] / abs(r["best_mean"])) for r in low + high)
    # without the recorded directions, final_info's "maximize" signs the difference (and maximising is the default)
    assert [r["direction"] for r in review.comparisons(_strip_directions(as_min))] == ["better"] * 3
    assert [r["direction"] for r in review.comparisons(_strip_directions(as_max))] == ["worse"] * 3
    assert [r["direction"] for r in review.comparisons(_strip_directions(as_min, False))] == ["worse"] * 3


def test_a_win_on_a_minimised_metric_is_reviewed_as_a_win(win_paper, kit):
    results = kit.synthetic_results(effect=0.06, seed=3, maximize=False)
    low = review.review_paper(kit.make_idea(), kit.final_info_from(results, maximize=False), win_paper, "lpo")
    high = review.review_paper(kit.make_idea(), kit.final_info_from(results, maximize=True), win_paper, "lpo")
    assert passed(low)["significant_training"] and passed(low)["significant_held_out"]
    assert not passed(high)["significant_training"] and not passed(high)["significant_held_out"]
    assert "significantly better" in low["Summary"] and "significantly worse" in high["Summary"]
    assert low["Significance"] > high["Significance"] and low["Overall"] > high["Overall"]


def test_review_text_comes_from_the_template_layer(win_paper, win_experiment, kit):
    lpo = review.review_paper(kit.make_idea(), win_experiment[1], win_paper, "lpo")
    generic = review.review_paper(kit.make_idea(), win_experiment[1], win_paper, "no_such_template")
    assert "drift function for mirror learning" in lpo["Summary"]
    assert "no_such_template" in generic["Summary"] and "drift" not in generic["Summary"].lower()
    assert "maximised" in generic["Summary"] and "4 baselines" in generic["Summary"]
    assert lpo["Overall"] == generic["Overall"] and lpo["evidence"] == generic["evidence"]  # same rule, other words
    assert all("drift" not in item.lower() for field in ("Strengths", "Weaknesses", "Questions", "Limitations")
               for item in generic[field])


def _paper_with(win_paper: dict, folder: Path, replace: tuple[str, str] | None = None, checks: list | None = None):
    """The win paper's .tex copied to ``folder`` (one text replaced), with a checks.json of ``checks`` beside it."""
    import json

    tex = Path(win_paper["tex"]).read_text()
    if replace:
        assert replace[0] in tex
        tex = tex.replace(*replace, 1)
    (folder / "paper.tex").write_text(tex)
    if checks is not None:
        (folder / "checks.json").write_text(json.dumps({"rounds": [], "final": checks}))
    return {**win_paper, "tex": str(folder / "paper.tex")}


def test_model_garbage_in_the_text_is_a_desk_reject_that_says_why(win_paper, win_experiment, kit, tmp_path):
    clean = review.review_paper(kit.make_idea(), win_experiment[1], win_paper)
    assert clean["findings"] == [] and clean["Decision"] == "Accept"
    paper = _paper_with(win_paper, tmp_path, ("\\section{Method}", ("\\section{Method}\nI am unable to help with that.\n"
                                              "```json\n{\"Name\": \"x\", \"Title\": \n```\n")))
    rev = review.review_paper(kit.make_idea(), win_experiment[1], paper)
    assert_valid_form(rev)
    assert {f["check"] for f in rev["findings"]} >= {"refusal", "code", "json_fragment"}
    assert rev["Decision"] == "Reject" and rev["Overall"] <= 2 and rev["Clarity"] == rev["Presentation"] == 1
    assert rev["Summary"].startswith("Desk reject") and rev["Weaknesses"][0].startswith("Desk reject")
    assert "refusal in Method" in rev["Weaknesses"][0] and rev["derivation"]["desk_reject"]


def test_the_paper_checks_bound_clarity_and_presentation_and_are_named(win_paper, win_experiment, kit, tmp_path):
    warning = {"check": "legend_over_data", "severity": "warning", "target": "figure final_returns",
               "message": "the legend covers 30 % of the data"}
    error = {"check": "text_size", "severity": "error", "target": "figure learning_curves",
             "message": "tick labels print at 4.2 pt (need 6 pt)"}
    warned = review.review_paper(kit.make_idea(), win_experiment[1], _paper_with(win_paper, tmp_path, checks=[warning]))
    assert warned["Clarity"] == warned["Presentation"] == 3 and warned["Decision"] == "Accept"
    assert any(w.startswith("Paper check legend_over_data (warning, figure final_returns)") for w in warned["Weaknesses"])
    failed = review.review_paper(kit.make_idea(), win_experiment[1],
                                 _paper_with(win_paper, tmp_path, checks=[warning, error]))
    assert failed["Clarity"] == failed["Presentation"] == 2 and failed["Overall"] <= 5
    assert next(w for w in failed["Weaknesses"] if w.startswith("Paper check")).startswith("Paper check text_size")
    assert any("paper check errors: text_size (figure learning_curves)" in c for c in failed["derivation"]["caps"])


def test_a_retuning_of_the_nearest_candidate_has_originality_at_most_2(win_paper, win_experiment, kit):
    idea = kit.make_idea()
    assert review.review_paper(idea, win_experiment[1], win_paper)["Originality"] > 2
    relation = {"kind": "retuning", "nearest": "kl", "nearest_label": "KL penalty", "distance": 0.4,
                "change": "the KL coefficient doubled"}
    retuned = {**idea, "novelty": {**idea["novelty"], "relation": relation}}
    rev = review.review_paper(retuned, win_experiment[1], win_paper)
    assert rev["Originality"] == 2 and rev["derivation"]["retuning"]
    assert any("retuning of KL penalty (the KL coefficient doubled)" in w for w in rev["Weaknesses"])
    structural = {**idea, "novelty": {**idea["novelty"], "relation": {**relation, "kind": "structural"}}}
    assert review.review_paper(structural, win_experiment[1], win_paper)["Originality"] > 2


def test_the_rule_text_states_the_findings_rules():
    text = review.rule_text()
    assert f"Originality at most {review.RETUNING_ORIGINALITY}" in text and "desk reject" in text
    assert "at most 2 with an error finding" in text and f"at most {review.DESK_REJECT_OVERALL} (Decision Reject" in text
    for check in ("refusal", "code", "json_fragment", "empty_section", "placeholder_reference"):
        assert f"`{check}`" in text
