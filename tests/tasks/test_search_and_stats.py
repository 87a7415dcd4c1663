"""Ideation (symbolic search), novelty, symbolic rendering and the statistics of aggregation."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from jaxlib_kernels import plugin, symbolic
from jaxlib_kernels.search import drift as search
from jaxlib_kernels.search import offline
from jaxlib_kernels.templates import lpo, make
from jaxlib_kernels.templates.base import Metric
from tasks import aggregation, archive, ideation, novelty


@pytest.fixture(scope="module")
def template():
    return make("lpo")


def proxy_only(prof):
    """The profile with ideas ranked by the search's proxy alone (no screening by training: tested on its own)."""
    import dataclasses

    return dataclasses.replace(prof, screen_fraction=0.0)


def test_unknown_template_suggests():
    with pytest.raises(KeyError, match="did you mean 'lpo'"):
        make("lpp")


@pytest.mark.parametrize("name", list(lpo.BASELINES))
def test_rendered_source_matches_numpy_semantics(template, name):
    expr = lpo.BASELINES[name].expression
    fn = plugin.load_plugin(symbolic.render_source(expr), "drift")
    r, a, p = (np.array([0.5, 0.9, 1.0, 1.3, 2.0]), np.array([-1.0, 2.0, 0.5, 1.0, -0.3]), np.float32(0.4))
    # a plug-in takes jax arrays (the kernels and the gate call it so); numpy arrays would make numpy's C code import
    # numpy through the plug-in's restricted __import__ on a first mixed numpy/jax operation in the process
    got = fn(*(jax.numpy.asarray(x) for x in (r, a, p)))
    np.testing.assert_allclose(np.asarray(got), symbolic.evaluate_numpy(expr, r, a, p), rtol=1e-5, atol=1e-6)
    assert template.check(fn, jax.random.key(0)) == []


def test_malformed_expressions_are_rejected():
    for bad in (["pow", "r", 2.0], ["add", "r"], "x", float("nan"), ["clip", "r", "A", 1.2]):
        with pytest.raises(symbolic.ExpressionError):
            symbolic.validate(bad)


def test_ideas_are_deterministic_distinct_novel_and_complete(template):
    prof = proxy_only(template.profile("default"))
    a = ideation.generate_ideas(template, prof, [], 3, "run-a")
    b = ideation.generate_ideas(template, prof, [], 3, "run-a")
    c = ideation.generate_ideas(template, prof, [], 3, "run-c")
    assert [i["expression"] for i in a] == [i["expression"] for i in b]
    assert [i["expression"] for i in a] != [i["expression"] for i in c]
    assert len({i["Name"] for i in a}) == 3
    for idea in a:
        assert {"Name", "Title", "Hypothesis", "Experiment", "Interestingness", "Feasibility", "Novelty"} <= set(idea)
        assert all(1 <= idea[k] <= 10 for k in ("Interestingness", "Feasibility", "Novelty"))
        assert idea["search"]["distance"] >= search.NOVELTY_THRESHOLD
        plaus, _ = search.plausibility(idea["expression"])
        assert plaus > 0
    behaviours = [search.behaviour(i["expression"]) for i in a]
    assert search.distance(behaviours[0], behaviours[1]) >= search.DIVERSITY


def test_archive_feeds_the_next_search(template, tmp_path):
    prof = proxy_only(template.profile("smoke"))
    idea = ideation.generate_ideas(template, prof, [], 1, "run-1")[0]
    idea["source"] = template.render(template, idea)
    info = {"empty5": {"means": {idea["Name"]: 0.95, "ppo_clip": 0.90}, "stderrs": {idea["Name"]: 0.01}, "n": {idea["Name"]: 4},
                       "held_out": False, "comparison": {"best_baseline": "ppo_clip", "p_value": 0.01}}}
    db = tmp_path / "archive.sqlite"
    archive.record(db, "run-1", "lpo", idea, info, {"Overall": 6, "Decision": "Accept"})
    rows = archive.candidates(db, "lpo")
    assert rows[0]["idea"] == idea["Name"] and rows[0]["advantage"] == pytest.approx(0.05)
    pool = offline.seed_pool(template, rows, search.LANGUAGE, 4)
    assert any(c.parent == idea["Name"] and c.prior == pytest.approx(0.05) for c in pool)
    # the archived candidate is now known: proposing it again is not novel
    verdict = novelty.check_novelty(template, idea, rows, [])
    assert verdict["decision"] == "not novel" and "archived" in verdict["nearest"]


def test_novelty_decisions(template):
    prof = proxy_only(template.profile("smoke"))
    idea = ideation.generate_ideas(template, prof, [], 1, "run-n")[0]
    fresh = novelty.check_novelty(template, idea, [], [])
    assert fresh["decision"] == "novel" and fresh["distance"] >= template.novelty_threshold
    clip = {"Name": "my_clip", "Title": "clip", "Hypothesis": "", "expression": lpo.PPO_CLIP}
    known = novelty.check_novelty(template, clip, [], [])
    assert known["decision"] == "not novel" and known["nearest"] == "baseline ppo_clip" and known["distance"] < 1e-6


def _frame(candidate, baseline):
    rows = []
    for method, values in (("cand", candidate), ("base", baseline)):
        for seed, v in enumerate(values):
            rows.append({"idea": "cand", "method": method, "role": "candidate" if method == "cand" else "baseline",
                         "setting": "s", "held_out": False, "seed": seed, "step": 100, "metric": "final",
                         "value": v})
    return pd.DataFrame(rows)


def test_final_info_statistics():
    cand, base = [0.9, 0.92, 0.91, 0.93], [0.5, 0.55, 0.6, 0.52]
    info = aggregation.final_info(_frame(cand, base), "cand")["s"]
    assert info["means"]["cand"] == pytest.approx(np.mean(cand))
    assert info["stderrs"]["cand"] == pytest.approx(np.std(cand, ddof=1) / 2)
    lo, hi = info["ci95"]["cand"]
    assert lo < np.mean(cand) < hi
    comp = info["comparison"]
    assert comp["best_baseline"] == "base" and comp["significant"] and comp["p_value"] < 0.01
    same = aggregation.final_info(_frame([0.5, 0.6, 0.55, 0.52], [0.52, 0.58, 0.56, 0.5]), "cand")["s"]
    assert not same["comparison"]["significant"]


def test_two_ideas_of_one_run_that_behave_the_same_are_not_both_novel(template):
    prof = proxy_only(template.profile("smoke"))
    idea = ideation.generate_ideas(template, prof, [], 1, "run-twins")[0]
    twin = {**idea, "Name": f"{idea['Name']}_twin"}
    first, second = novelty.check_all(template, [idea, twin], [])
    assert first["decision"] == "novel"
    assert second["decision"] == "not novel" and second["nearest"] == f"idea {idea['Name']} of this run"


def test_a_minimised_metric_picks_the_lowest_baseline_and_calls_lower_better():
    cand, low, high = [0.10, 0.12, 0.11, 0.13], [0.50, 0.55, 0.60, 0.52], [0.90, 0.92, 0.91, 0.95]
    rows = []
    for method, values in (("cand", cand), ("low", low), ("high", high)):
        for seed, v in enumerate(values):
            rows.append({"idea": "cand", "method": method, "role": "candidate" if method == "cand" else "baseline",
                         "setting": "s", "held_out": False, "seed": seed, "step": 1, "metric": "final", "value": v})
    frame = pd.DataFrame(rows)
    minimised = aggregation.final_info(frame, "cand", Metric("loss", "a loss", maximize=False))["s"]
    assert minimised["maximize"] is False
    comp = minimised["comparison"]
    assert comp["best_baseline"] == "low" and comp["difference"] < 0 < comp["improvement"]
    assert comp["better"] and not comp["worse"]
    maximised = aggregation.final_info(frame, "cand", Metric("return", "a return", maximize=True))["s"]["comparison"]
    assert maximised["best_baseline"] == "high" and maximised["improvement"] < 0 and maximised["worse"]


def test_archive_advantage_follows_the_metric_direction(tmp_path):
    idea = {"Name": "cand", "Title": "t", "expression": None, "source": "{}"}
    info = {"s": {"means": {"cand": 0.1, "low": 0.5}, "stderrs": {"cand": 0.01}, "n": {"cand": 4}, "held_out": False,
                  "comparison": {"best_baseline": "low", "p_value": 0.01, "difference": -0.4, "improvement": 0.4}}}
    db = tmp_path / "archive.sqlite"
    archive.record(db, "run-1", "t", idea, info, None)
    assert archive.candidates(db, "t")[0]["advantage"] == pytest.approx(0.4)


def test_a_unit_result_off_the_schema_is_refused_with_its_shapes():
    with pytest.raises(aggregation.SchemaError, match=r"curve \(3, 5\)"):
        aggregation.check_result({"x": np.arange(4), "curve": np.zeros((3, 5)), "final": np.zeros(3)}, 3)
    with pytest.raises(aggregation.SchemaError, match="lacks final"):
        aggregation.check_result({"x": np.arange(4), "curve": np.zeros((3, 4))}, 3)


def test_offline_ideation_ranks_its_shortlist_by_real_fitness(template):
    """The proxy only shortlists; the ideas are the shortlist's fittest members after real PPO training (screening
    seeds apart from the experiment's), every member in one call, and a second ideation compiles nothing."""
    import dataclasses

    from sizes import smoke_size

    from jaxlib_kernels import ppo
    from jaxlib_kernels.profiling import count_compilations
    from jaxlib_kernels.templates.lpo.kernel import ppo_config

    seeds, budget = smoke_size(template)  # the smoke runs' sizes and screening fraction: their screening program
    prof = dataclasses.replace(template.profile("smoke"), seeds=seeds, budget=budget)
    assert prof.screen_budget == budget // 4  # the smoke profile screens at a quarter of the budget
    idea = ideation.generate_ideas(template, prof, [], 1, "run-screen")[0]
    rec = idea["screening"]
    fitness = [m["fitness"] for m in rec["shortlist"]]
    assert len(fitness) == prof.screen_pool and fitness == sorted(fitness, reverse=True)
    assert rec["rank"] == 1 and rec["fitness"] == fitness[0]
    assert symbolic.loads(rec["shortlist"][0]["expression"]) == idea["expression"]
    assert set(rec["baselines"]) == set(prof.baselines) and rec["setting"] == "empty_random8"
    assert not set(rec["seeds"]) & set(range(prof.seeds))  # never the experiment's seeds
    assert "Screened by training" in idea["Hypothesis"]
    # the recorded fitness is the real one: the chosen drift trained alone on the screening seeds gives it again
    drift = plugin.load_plugin(template.render(template, idea), "drift")
    alone = ppo.mean_return(ppo.train_seeds(ppo_config(template.setting("empty_random8"), prof.screen_budget), drift,
                                            rec["seeds"]))
    assert float(np.mean(alone)) == pytest.approx(rec["fitness"], abs=1e-5)
    with count_compilations() as counter:
        other = ideation.generate_ideas(template, prof, [], 1, "run-screen-2")[0]
    assert counter.compiles == 0, f"screening compiled {counter.compiles}x"
    assert other["screening"]["shortlist"] != rec["shortlist"]


def test_the_admission_tests_in_the_metric_direction():
    """Admission's Welch tests are one-sided in the metric's direction: a lower candidate beats a higher baseline
    under a minimised metric and not under a maximised one."""
    from tasks.discovery import admission_stats

    rng = np.random.default_rng(0)
    scores = {"s": 1.0 + 0.01 * rng.standard_normal(8)}
    baselines = {"s": {"b": 2.0 + 0.01 * rng.standard_normal(8)}}
    low = admission_stats(scores, baselines, 0.05, Metric("loss", "a loss", maximize=False))
    high = admission_stats(scores, baselines, 0.05, Metric("return", "a return", maximize=True))
    assert low["tests"][0]["significant"] and low["tests"][0]["p_holm"] < 1e-6
    assert not high["tests"][0]["significant"] and high["tests"][0]["p_holm"] > 0.99


def test_novelty_measures_the_relation_to_the_nearest_known_candidate(template):
    """Same form with other constants is a retuning; |A| in place of A is a structural change that names what
    changed, and its behaviour on the probe is described (the clip below the range is gone where it acted, a
    penalty appears above it for A < 0); hades's other numbers in the same fields are a retuning."""
    from jaxlib_kernels.search import drift, known

    kl6 = {"Name": "kl6", "Title": "KL x2", "Hypothesis": "", "expression": ["mul", 6.0, drift.KL[2]]}
    rel = novelty.check_novelty(template, kl6, [], [])["relation"]
    assert (rel["kind"], rel["nearest"], rel["nearest_label"], rel["nearest_baseline"]) == (
        "retuning", "baseline kl", "KL drift", "kl")
    assert "3 \u2192 6" in rel["change"] and "retuning of KL drift" in rel["change"]
    assert "2 times as strong" in rel["behaviour"]

    abs_a = ["relu", ["mul", ["sub", "r", ["clip", "r", 0.8, 1.2]], ["abs", "A"]]]
    rel = novelty.check_novelty(template, {"Name": "abs", "Title": "|A|", "Hypothesis": "", "expression": abs_a},
                                [], [])["relation"]
    assert (rel["kind"], rel["nearest"]) == ("structural", "baseline ppo_clip")
    assert "replaces A by |A| inside the product" in rel["change"]
    assert "penalty for r < 0.8 is gone when A < 0" in rel["behaviour"]
    assert "a penalty appears for r > 1.2 when A < 0" in rel["behaviour"]
    whole = f"replaces {symbolic.to_plain(drift.PPO_CLIP)} by {symbolic.to_plain(drift.KL)}"
    assert symbolic.change(drift.PPO_CLIP, drift.KL) == [whole]  # nothing shared: "new"

    hades = make("hades")
    tripled = {**json.loads(hades.baselines["hades_r"].source), "inner_lr": 0.03}
    idea = {"Name": "h", "Title": "h", "Hypothesis": "", "source": json.dumps(tripled)}
    rel = novelty.check_novelty(hades, idea, [], [])["relation"]
    assert rel["kind"] == "retuning" and "inner_lr 0.01 \u2192 0.03" in rel["change"], rel
    other = {**tripled, "method": "hades_f"}
    rel = novelty.check_novelty(hades, {**idea, "source": json.dumps(other)}, [], [])["relation"]
    assert (rel["kind"], rel["nearest"]) == ("retuning", "baseline hades_f"), rel  # HaDES-F's fields, retuned
    kind, phrase = known._params_change(json.loads(hades.baselines["hades_r"].source), other)
    assert kind == "structural" and phrase.startswith("sets method to hades_f (was hades_r)"), phrase


def test_the_nearest_baseline_of_every_idea_is_run():
    from flows.pipeline import with_nearest_baselines

    tpl = make("lpo")
    prof = tpl.profile("smoke")
    assert "dpo" not in prof.baselines
    ideas = [{"novelty": {"relation": {"nearest_baseline": "dpo"}}}, {"novelty": {"relation": {"nearest_baseline":
                                                                                                 "kl"}}}, {}]
    assert with_nearest_baselines(tpl, prof, ideas).baselines == (*prof.baselines, "dpo")
    assert with_nearest_baselines(tpl, prof, [{}]) is prof


def test_the_method_section_renders_the_measured_relation(template):
    from tasks import writeup

    abs_a = ["relu", ["mul", ["sub", "r", ["clip", "r", 0.8, 1.2]], ["abs", "A"]]]
    idea = {"Name": "abs", "Title": "|A|", "Hypothesis": "", "expression": abs_a}
    idea["novelty"] = novelty.check_novelty(template, idea, [], [])
    text = writeup.make_env("lpo").get_template("_relation.tex.j2").render(idea=idea)
    assert r"replaces A by \textbar{}A\textbar{} inside the product" in text
    assert r"a penalty appears for r \textgreater{} 1.2 when A \textless{} 0" in text
    assert writeup.make_env("lpo").get_template("_relation.tex.j2").render(idea={"Name": "x"}).strip() == ""


def test_the_replication_tests_every_baseline_on_every_setting_with_one_holm_family():
    """``replication.json``'s statistics: one test per (setting, baseline) pair, Holm over all of them (so a raw p
    just under 0.05 is not enough among four pairs), held-out settings marked, and a baseline without the
    candidate's seeds on every setting left out rather than compared on other seeds."""
    import pandas as pd

    from jaxlib_kernels import stats
    from tasks.aggregation import replication_of

    rng = np.random.default_rng(1)
    rows = []
    for method, role, mean, seeds in [("cand", "candidate", 1.0, 4), ("far", "baseline", 0.2, 4),
                                      ("near", "baseline", 0.97, 4), ("short", "baseline", 0.1, 2)]:
        for setting, held in [("train", False), ("held", True)]:
            for seed in range(seeds):
                rows.append({"idea": "cand", "method": method, "role": role, "setting": setting, "held_out": held,
                             "seed": seed, "step": 1, "metric": "final", "value": mean + 0.05 * rng.standard_normal()})
    out = replication_of(pd.DataFrame(rows), "cand", Metric("return", "a return", maximize=True))
    pairs = {(t["setting"], t["baseline"]) for t in out["tests"]}
    assert pairs == {("train", "far"), ("train", "near"), ("held", "far"), ("held", "near")}
    raw = [t["p"] for t in out["tests"]]
    assert [t["p_holm"] for t in out["tests"]] == stats.holm(raw)
    assert all(t["held_out"] == (t["setting"] == "held") for t in out["tests"])
    assert all(t["significant"] for t in out["tests"] if t["baseline"] == "far")
    assert set(out["iqm"]) == {"cand", "far", "near"} and out["seeds"] == [0, 1, 2, 3]
    assert out["iqm"]["cand"]["ci95"][0] <= out["iqm"]["cand"]["iqm"] <= out["iqm"]["cand"]["ci95"][1]


def test_the_replication_calls_nothing_significant_with_fewer_than_min_seeds():
    """With 3 seeds per arm a huge gap is reported with its Holm p, but not called significant (MIN_SEEDS = 4), as
    in the paper's main comparison; the admission (no minimum) still calls it."""
    from jaxlib_kernels import stats

    scores = {"s": np.array([1.0, 1.01, 0.99])}
    baselines = {"s": {"b": np.array([0.0, 0.01, -0.01])}}
    few = stats.replication(scores, baselines, min_seeds=stats.MIN_SEEDS)
    assert few["tests"][0]["p_holm"] < 0.01 and not few["tests"][0]["significant"]
    assert not few["tests"][0]["seeds_enough"] and few["min_seeds"] == stats.MIN_SEEDS
    assert stats.replication(scores, baselines)["tests"][0]["significant"]
