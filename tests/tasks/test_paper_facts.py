"""The offline paper says only what the run did, in words a reader knows, with statistics that fit the evidence.

Fast: final_info is built by hand per template and the section texts are rendered without compiling LaTeX.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxlib_kernels.stats import MIN_SEEDS, clip_interval, verdicts
from jaxlib_kernels.templates import make
from jaxlib_kernels.templates.base import Metric
from tasks import aggregation, writeup
from tasks.plotting import labels_of
from tasks.runtime import text as layers

SECTIONS = ["abstract", *(key for key, _ in writeup.SECTIONS), "caption_results", "caption_settings", "caption_tests"]


def hand_info(template_name: str, settings: list[str], baselines: list[str], seeds: int, p: float = 0.001,
              diff: float = 0.2) -> dict:
    """final_info of a run of ``settings`` and ``baselines`` with ``seeds`` seeds: the candidate ``cand`` ahead."""
    t = make(template_name)
    info = {}
    for s in settings:
        means = {b: 0.3 + 0.01 * i for i, b in enumerate(baselines)} | {"cand": 0.3 + diff}
        best = t.metric.best({b: means[b] for b in baselines})
        info[s] = {
            "means": means, "stderrs": dict.fromkeys(means, 0.01), "n": dict.fromkeys(means, seeds),
            "ci95": {m: [v - 0.05, v + 0.05] for m, v in means.items()}, "held_out": t.setting(s).held_out,
            "env": t.setting(s).env, "maximize": t.metric.maximize,
            "comparison": {"candidate": "cand", "best_baseline": best, "difference": means["cand"] - means[best],
                           "improvement": t.metric.improvement(means["cand"], means[best]),
                           "ci95": [-900.0, 900.0], "p_value": p, "significant": True, "test": "Welch t-test"},
        }
    return info


def hand_idea(template_name: str) -> dict:
    kind = make(template_name).plugin.kind
    return {"Name": "cand", "Title": "Tempered candidate for this problem: a test", "Hypothesis": "It helps.",
            "Experiment": "relu(((ratio - clip(ratio, 0.8, 1.2)) * abs(advantage)))", "kind": kind,
            "Interestingness": 6, "Feasibility": 9, "Novelty": 10, "candidate": {} if kind == "parametric" else None}


def facts_and_text(template_name: str, info: dict, budget: int = 1000) -> tuple[dict, str]:
    idea = hand_idea(template_name)
    baselines = [m for m in next(iter(info.values()))["means"] if m != "cand"]
    context = writeup.paper_context(template_name, idea, {"profile": {"budget": budget, "baselines": baselines},
                                                          "run_id": "r"})
    bib = writeup.bib_keys(layers.template_dir(template_name) / "references.bib")
    facts = writeup.build_facts(template_name, idea, info, [], context, bib)
    env = writeup.make_env(template_name)
    text = "\n".join(env.get_template(f"{key}.tex.j2").render(**facts) for key in SECTIONS)
    return facts, text


SMOKE_LIKE = {  # what a smoke run of each template had: settings, baselines
    "lpo": (["empty_random8", "empty_random5"], ["ppo_clip", "kl", "no_drift"]),
    "hades": (["cartpole", "cartpole_w16"], ["direct"]),
    "dpo": (["unigram", "unigram_betas"], ["dpo"]),
    "bbo": (["pair_d10", "heldout_pair_d10"], ["random_search", "recomb_snes", "snes"]),
    "marl": (["spread", "reference"], ["ppo_clip"]),
}


@pytest.mark.parametrize("template_name", list(SMOKE_LIKE))
def test_a_small_run_is_described_as_it_ran(template_name):
    settings, baselines = SMOKE_LIKE[template_name]
    facts, text = facts_and_text(template_name, hand_info(template_name, settings, baselines, seeds=2))
    assert writeup.unrun_mentions(text, template_name, writeup.ran_names(hand_info(
        template_name, settings, baselines, 2), hand_idea(template_name))) == []
    assert writeup.internal_words(text, template_name) == []
    assert [b["name"] for b in facts["baselines"]] == baselines  # only the baselines that ran
    assert not facts["budgets_differ"] and "scaled per setting" not in text
    assert not facts["seeds_enough"] and all(r["direction"] == "tie" for r in facts["settings"])
    assert "too few seeds" in text and "significantly better" not in text
    assert "/10" not in text and "relu(" not in text  # no self-ratings, no plan quoted with its code


def test_marl_names_neither_smax_nor_mappo_nor_five_agents_when_they_did_not_run():
    _, text = facts_and_text("marl", hand_info("marl", ["spread", "reference"], ["ppo_clip"], seeds=2))
    for word in ("SMAX", "heuristic enemy", "MAPPO setting", "two to five agents", "Overcooked"):
        assert word not in text
    _, text = facts_and_text("marl", hand_info("marl", ["spread", "smax_3m", "spread_mappo"], ["ppo_clip"], seeds=2))
    assert "SMAX" in text and "MAPPO setting" in text


def test_bbo_and_hades_name_pendulum_acrobot_and_hades_f_only_when_run():
    _, text = facts_and_text("bbo", hand_info("bbo", ["pair_d10", "heldout_pair_d10"], ["snes"], seeds=2))
    assert "Pendulum" not in text and "neuroevolution" not in text.split("Related work")[0]
    _, text = facts_and_text("bbo", hand_info("bbo", ["pair_d10", "neuro_pendulum"], ["snes"], seeds=2))
    assert "Pendulum" in text
    _, text = facts_and_text("hades", hand_info("hades", ["cartpole", "cartpole_w16"], ["direct"], seeds=2))
    assert "Acrobot" not in text and "HaDES-F" not in text
    _, text = facts_and_text("hades", hand_info("hades", ["cartpole", "acrobot"], ["direct", "hades_f"], seeds=2))
    assert "Acrobot" in text and "HaDES-F" in text


def test_lpo_says_what_its_held_out_settings_vary_and_when_budgets_are_scaled():
    facts, text = facts_and_text("lpo", hand_info("lpo", ["empty_random8", "empty_random5"], ["ppo_clip"], seeds=5))
    assert facts["held_changes"] == ["grid"] and "which vary the grid," in " ".join(text.split())
    assert "training horizon" not in text and "scaled per setting" not in text
    facts, text = facts_and_text("lpo", hand_info("lpo", ["empty5", "empty5_short", "empty6"], ["ppo_clip"], seeds=5))
    assert facts["budgets_differ"] and "scaled per setting" in text
    assert facts["held_changes"] == ["horizon", "grid"]


def test_dpo_speaks_of_gradient_steps_and_tasks():
    facts, text = facts_and_text("dpo", hand_info("dpo", ["unigram", "unigram_betas"], ["dpo"], seeds=2))
    assert "policy gradient" not in text and facts["x_label"] == "gradient steps"
    env = writeup.make_env("dpo")
    assert env.get_template("settings_env_head.tex.j2").render(**facts).strip() == "Task"
    assert writeup.make_env("lpo").get_template("settings_env_head.tex.j2").render().strip() == "Environment"


def test_significance_needs_the_minimum_seeds_and_holm():
    info = hand_info("lpo", ["empty_random8", "empty_random5"], ["ppo_clip"], seeds=MIN_SEEDS - 1, p=0.001)
    facts, text = facts_and_text("lpo", info)
    assert all(r["direction"] == "tie" and not r["seeds_enough"] for r in facts["settings"])
    assert f"fewer than the {MIN_SEEDS} a significance claim requires" in " ".join(text.split())
    enough = hand_info("lpo", ["empty_random8", "empty_random5"], ["ppo_clip"], seeds=MIN_SEEDS, p=0.03)
    facts, _ = facts_and_text("lpo", enough)  # 0.03 twice: Holm makes both 0.06, not significant
    assert all(r["p_holm"] == pytest.approx(0.06) and r["direction"] == "tie" for r in facts["settings"])
    enough = hand_info("lpo", ["empty_random8", "empty_random5"], ["ppo_clip"], seeds=MIN_SEEDS, p=0.01)
    facts, text = facts_and_text("lpo", enough)
    assert all(r["direction"] == "better" for r in facts["settings"])
    flat = " ".join(text.split())
    assert "a significant improvement of 0.200 in final return" in flat and "\\%" not in flat.split("improvement of")[1][:40]


def test_intervals_stay_inside_the_metric_range():
    facts, _ = facts_and_text("lpo", hand_info("lpo", ["empty_random8"], ["ppo_clip"], seeds=2))
    assert facts["bounds"] == (0.0, 1.0) and facts["settings"][0]["ci"] == [-1.0, 1.0]  # a difference of [0, 1]s
    assert clip_interval([-1555.6, 1277.2], (0, 500)) == [0.0, 500.0]
    assert clip_interval([-3.0, 2.0], (None, 1.0)) == [-3.0, 1.0]
    assert clip_interval([-3.0, 2.0]) == [-3.0, 2.0]
    assert clip_interval([-13.5, -11.0], (-12.0, None)) == [-12.0, -11.0]  # a lower bound only (bbo)
    for name in ("lpo", "hades", "dpo", "bbo"):
        assert make(name).metric.bounds is not None


def _frame(cand, base):
    rows = [{"idea": "cand", "method": m, "role": "candidate" if m == "cand" else "baseline", "setting": s,
             "held_out": s == "h", "seed": i, "step": 1, "metric": "final", "value": v}
            for s in ("t", "h") for m, values in (("cand", cand), ("base", base)) for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_final_info_records_what_it_computes_and_claims_nothing_on_two_seeds():
    info = aggregation.final_info(_frame([0.9, 0.91], [0.1, 0.12]), "cand", Metric("r", "a return", bounds=(0, 1)))
    for entry in info.values():
        comp = entry["comparison"]
        assert comp["significant_raw"] and not comp["significant"] and not comp["better"]
        assert comp["seeds_enough"] is False and comp["min_seeds"] == MIN_SEEDS and np.isfinite(comp["p_holm"])
        assert all(0 <= lo <= hi <= 1 for lo, hi in entry["ci95"].values()) and entry["bounds"] == [0, 1]
        assert -1 <= comp["ci95"][0] <= comp["ci95"][1] <= 1
    four = [0.9, 0.91, 0.92, 0.9]
    info = aggregation.final_info(_frame(four, [0.1, 0.12, 0.11, 0.1]), "cand")
    assert all(e["comparison"]["better"] and e["comparison"]["p_holm"] >= e["comparison"]["p_value"]
               for e in info.values())


def test_verdicts():
    out = verdicts({"a": 0.01, "b": 0.04, "c": float("nan")}, {"a": 5, "b": 5, "c": 5})
    assert out["a"]["p_holm"] == pytest.approx(0.02) and out["a"]["significant"]
    assert out["b"]["p_holm"] == pytest.approx(0.04) and out["b"]["significant"]
    assert not out["c"]["significant"]
    assert not verdicts({"a": 0.001}, {"a": MIN_SEEDS - 1})["a"]["significant"]


def test_internal_words_are_found_and_templates_extend_the_list():
    found = writeup.internal_words(
        "equal snes e25 m125 s20 a10 (ours) beats hades r 4p bclr0p03 (ours); rated 10/10 for novelty; "
        "with 1 baseline drifts; (the smoke profile's); relu(((ratio - clip(ratio, 0.8, 1.2)) * abs(advantage))); "
        "0.5 +/- 0.1; drift(ratio, advantage, progress)", "lpo")
    kinds = {f.split(":")[0] for f in found}
    assert {"a profile name", "a self-rating", "ASCII plus-minus", "a plug-in signature",
            "an identifier as a label (joined sizes)", "an identifier as a label (decimal written with p)",
            "a plural after one (drifts)", "code (a call with numeric arguments)"} <= kinds
    assert writeup.internal_words("With 3 baseline drifts and 0.5 $\\pm$ 0.1, min(x, y).", "lpo") == []
    assert writeup.unrun_mentions("SMAX 3m", "marl", {"spread"}) == ["SMAX"]
    assert writeup.unrun_mentions("SMAX 3m", "marl", {"smax_3m"}) == []
    assert writeup.unrun_mentions("SMAX 3m", "lpo", {"spread"}) == []  # the word list is marl's


def test_escaped_text_has_a_real_plus_minus_and_the_candidate_a_human_label():
    assert "+/-" not in writeup.escape_tex("0.5 +/- 0.1") and r"\pm" in writeup.escape_tex("0.5 +/- 0.1")
    labels = labels_of("bbo", {"Name": "equal_snes_e25_m125_s20_a10", "Title": "Equal-weight SNES: flat recombination"})
    assert labels["equal_snes_e25_m125_s20_a10"] == "Equal-weight SNES (ours)"
    assert labels_of("lpo", {"Name": "my_drift"})["my_drift"] == "my drift (ours)"
