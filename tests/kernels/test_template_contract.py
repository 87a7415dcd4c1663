"""The template contract, checked for every registered template (ARCHITECTURE.md, "Templates").

For each template: its declaration is complete and consistent, every baseline passes the validation gate, the
evaluation follows the result schema, compiles once per shape and gives the same result for the same seeds, the
offline search proposes valid distinct ideas, and the metric's direction is honoured by aggregation, the review
and the summary. A smoke run of each template through the CLI is in ``tests/flows/test_template_runs.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sizes import smoke_size

from jaxlib_kernels.templates import TEMPLATES, make

NAMES = list(TEMPLATES)


@pytest.mark.parametrize("name", NAMES)
def test_the_declaration_is_complete_and_consistent(name):
    template = make(name)
    assert template.plugin.kind in ("source", "parametric") and template.plugin.signature.startswith(template.plugin.name)
    assert template.baselines and all(b.name == k and b.label and b.source for k, b in template.baselines.items())
    assert any(not s.held_out for s in template.settings.values()), "a template needs a training setting"
    assert any(s.held_out for s in template.settings.values()), "a template needs a held-out setting"
    assert {"smoke", "default", "paper"} <= set(template.profiles)
    for prof in template.profiles.values():
        assert set(prof.settings) <= set(template.settings) and set(prof.baselines) <= set(template.baselines)
        assert any(not template.setting(s).held_out for s in prof.settings)
        assert prof.budget > 0 and prof.seeds >= 2
    assert template.text_dir.is_dir() and (template.text_dir / "references.bib").exists()
    assert (template.text_dir / "llm" / "task.md").exists(), "the LLM backend needs the template's task description"
    assert template.probe_scale > 0 and template.novelty_threshold > 0
    described = template.describe()
    assert described["direction"] in ("maximised", "minimised") and described["plugin"] == template.plugin.signature


@pytest.mark.parametrize("name", NAMES)
def test_every_baseline_passes_the_gate(name, tmp_path):
    """The first baseline through the whole gate (a sandbox child), every baseline through the child's verdict
    (``sandbox_child.judge``: load, the template's checks, the retrace check) in this process: the child's
    isolation does not depend on the candidate, and a child costs an interpreter with jax per baseline (dpo has
    nine). The libraries the template's check needs are imported in the child's trusted start-up, so their import
    time is not counted against the candidate's own limit."""
    import jax

    from tasks.runtime import sandbox, sandbox_child

    template = make(name)
    first = next(iter(template.baselines.values()))
    result = sandbox.validate_source(first.source, name, workdir=tmp_path / first.name,
                                     _hooks={"report_modules": list(template.check_imports)})
    assert result.accepted, f"{name}/{first.name}: {result.reason}"
    assert result.details["modules_at_start"] == list(template.check_imports)
    for baseline in template.baselines.values():
        verdict = sandbox_child.judge(template, baseline.source, jax.random.key(0))
        assert verdict["accepted"], f"{name}/{baseline.name}: {verdict['reason']}"


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_follows_the_schema_compiles_once_and_repeats(name):
    from jaxlib_kernels.profiling import count_compilations
    from tasks.aggregation import check_result

    template = make(name)
    setting = template.setting(template.profile("smoke").settings[0])
    n_seeds, budget = smoke_size(template)  # the smoke runs' sizes: the same compiled program as their first unit
    budget = dataclasses.replace(template.profile("smoke"), budget=budget).budget_of(setting)
    baseline = next(iter(template.baselines.values()))
    seeds = list(range(n_seeds))
    candidate = template.load(baseline.source)  # a source plug-in is a static callable: one compile per candidate
    first = template.evaluate(setting, budget, candidate, seeds)
    check_result(first, len(seeds))
    assert np.all(np.isfinite(first["final"]))
    with count_compilations() as counter:
        again = template.evaluate(setting, budget, candidate, seeds)
    assert counter.compiles == 0, f"{name}: the second evaluation with the same shapes compiled {counter.compiles}x"
    np.testing.assert_array_equal(first["final"], again["final"])
    np.testing.assert_array_equal(np.asarray(first["curve"]), np.asarray(again["curve"]))


@pytest.mark.parametrize("name", NAMES)
def test_the_offline_search_proposes_valid_distinct_novel_ideas(name):
    from tasks import ideation, novelty

    template = make(name)
    prof = dataclasses.replace(template.profile("smoke"), screen_fraction=0.0)  # lpo's screening: test_search_and_stats
    ideas = ideation.generate_ideas(template, prof, [], 2, "contract")
    assert ideas and len({i["Name"] for i in ideas}) == len(ideas)
    assert ideas == ideation.generate_ideas(template, prof, [], 2, "contract")
    for idea, decision in zip(ideas, novelty.check_all(template, ideas, []), strict=True):
        text = template.render(template, idea)
        template.static_check(text)
        assert template.check(template.load(text), __import__("jax").random.key(0)) == []
        assert decision["decision"] == "novel", decision["reason"]


@pytest.mark.parametrize("name", [n for n in NAMES if make(n).discovery is not None])
def test_a_discovery_template_searches_in_the_formula_language_it_names(name):
    """The template's offline search, code stage, probe units and baselines' trees are those of the formula
    language its ``Template.discovery`` names (one language object serves ideation and the discovery engine)."""
    template = make(name)
    language = template.discovery.language
    assert template.propose == language.propose and template.render == language.render
    assert template.probe_scale == language.scale and template.novelty_threshold == language.novelty_threshold
    trees = {b: template.baselines[b].expression for b in template.discovery.baselines}
    assert trees and all(language.valid(t) and language.plausibility(t)[0] > 0 for t in trees.values())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("maximize", [True, False])
def test_the_metric_direction_is_honoured_by_aggregation_review_and_summary(name, maximize):
    """A candidate that is better in the metric's direction is 'better' everywhere, whichever the direction."""
    from tasks import aggregation, review, summary

    template = dataclasses.replace(make(name), metric=dataclasses.replace(make(name).metric, maximize=maximize))
    sign = template.metric.sign
    levels = {"cand": 1.0 + sign * 0.5, "b1": 1.0, "b2": 1.0 - sign * 0.3}
    rows = []
    for setting, held in (("train", False), ("held", True)):
        for method, level in levels.items():
            for seed in range(4):
                rows.append({"idea": "cand", "method": method, "role": "candidate" if method == "cand" else "baseline",
                             "setting": setting, "held_out": held, "seed": seed, "step": 1, "metric": "final",
                             "value": level + 0.01 * seed})
    info = aggregation.final_info(pd.DataFrame(rows), "cand", template.metric)
    for entry in info.values():
        comp = entry["comparison"]
        assert comp["best_baseline"] == "b1" and comp["better"] and comp["improvement"] > 0
    assert all(r["direction"] == "better" for r in review.comparisons(info))
    worse = {"Name": "worse", "result": {"train_mean": 1.0 - sign * 0.9, "maximize": maximize}}
    good = {"Name": "good", "result": {"train_mean": levels["cand"], "maximize": maximize}}
    assert [r["idea"] for r in summary.leaderboard_rows([worse, good])] == ["good", "worse"]


@pytest.mark.parametrize("name", NAMES)
def test_editing_the_templates_paper_text_changes_the_text_stages_keys_and_no_unit_key(name, tmp_path, monkeypatch):
    """What a re-run after a text edit recomputes (tests/flows/test_template_runs.py re-runs lpo for real): the
    paper and review stages of this template, and no experiment unit, since a unit key covers kernel and setting.
    The edit is made on a copy of the template's text folder (other tests may be writing papers meanwhile)."""
    import shutil

    from flows import pipeline
    from jaxlib_kernels.templates.base import Template
    from tasks.runtime.caching import code_key

    template = make(name)
    copy = tmp_path / name
    shutil.copytree(template.text_dir, copy)
    monkeypatch.setattr(Template, "text_dir", property(lambda self: copy if self.name == name else tmp_path / "x"))
    prof = template.profile("smoke")

    def keys():
        paper = code_key(("tasks.writeup", "tasks.plotting", "tasks.figcheck", "tasks.textgate", "tasks.runtime.text"),
                         ("prompts/paper",), ("paper", "*"), name)
        review = code_key(("tasks.review", "tasks.writeup", "tasks.runtime.text"), ("prompts/review", "prompts/paper"),
                          ("review", "paper", "*"), name)
        units = [s["key"] for s in pipeline.baseline_specs(template, prof)]
        return paper, review, units

    before = keys()
    text_file = min((copy / "paper").glob("*.tex.j2"))
    text_file.write_text(text_file.read_text() + "\n% edited after the run\n")
    after = keys()
    assert after[0] != before[0] and after[1] != before[1]  # the paper and its review are written again
    assert after[2] == before[2]  # no experiment unit is computed again
