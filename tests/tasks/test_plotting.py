"""make_plots: real figures from a realistic synthetic experiment (conftest), checked on disk and in their captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks import plotting

NAMES = ["learning_curves", "final_returns", "drift_shape"]


def _lpo():
    from jaxlib_kernels.templates import make

    return make("lpo")


def test_a_template_without_figures_gets_the_two_generic_ones_with_its_axis_names(tmp_path, win_experiment, kit):
    import dataclasses

    from jaxlib_kernels.templates.base import Metric, ResultSchema

    results, final_info = win_experiment
    bare = dataclasses.replace(_lpo(), figures=lambda **_: [], schema=ResultSchema("ES generations", "mean fitness",
                               "fitness"), metric=Metric("loss", "a loss", maximize=False))
    figures = plotting.make_plots(kit.make_idea(), results, final_info, kit.make_sources(), tmp_path, {}, bare)
    assert [f["name"] for f in figures] == NAMES[:2]
    captions = {f["name"]: f["caption"] for f in figures}
    assert "mean fitness against ES generations" in captions["learning_curves"]
    assert "minimised" in captions["final_returns"]


def test_every_figure_is_written_as_png_and_pdf(win_figures):
    assert [f["name"] for f in win_figures] == NAMES
    for fig in win_figures:
        png, pdf = Path(fig["png"]).read_bytes(), Path(fig["pdf"]).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        assert pdf.startswith(b"%PDF") and len(pdf) > 5_000
        assert fig["caption"].strip()


def test_png_resolution_is_about_150_dpi(win_figures):
    import matplotlib.image

    height, width = matplotlib.image.imread(win_figures[0]["png"]).shape[:2]
    # 3 panels of 4.2 x 3.2 inches at 150 dpi, cropped to the drawn area: well over 1000 pixels wide
    assert width > 1200 and height > 350


def test_captions_are_written_from_the_data(win_figures, win_experiment, kit):
    _, final_info = win_experiment
    captions = {f["name"]: f["caption"] for f in win_figures}
    assert f"{kit.SEEDS} seeds" in captions["learning_curves"]
    held = [s for s, i in final_info.items() if i["held_out"]]
    assert all(s in captions["learning_curves"] for s in held)
    significant = [s for s, i in final_info.items() if i["comparison"]["significant"]]
    assert significant and all(s in captions["final_returns"] for s in significant)
    assert "Annealed clip" in captions["drift_shape"] and "dashed" in captions["drift_shape"]


def test_final_returns_caption_says_when_nothing_is_significant(null_figures, null_experiment):
    _, final_info = null_experiment
    assert not any(i["comparison"]["significant"] for i in final_info.values())
    caption = {f["name"]: f["caption"] for f in null_figures}["final_returns"]
    assert "no difference is significant" in caption


def test_smoothing_skips_missing_updates():
    frame = pd.DataFrame({"seed": [0, 0, 0, 0], "step": [1, 2, 3, 4], "value": [1.0, np.nan, 3.0, 5.0]})
    smoothed = plotting.smooth_curve(frame, window=2)[0].to_numpy()
    np.testing.assert_allclose(smoothed, [1.0, 1.0, 3.0, 4.0])


def test_ppo_clip_drift_has_the_clip_shape():
    from jaxlib_kernels.templates import lpo
    from jaxlib_kernels.templates.lpo.figures import evaluate_drift

    r = np.linspace(0.5, 2.0, 31)
    d = evaluate_drift(lpo.baseline_source("ppo_clip"), r, advantage=1.0, progress=0.0)
    np.testing.assert_allclose(d, np.maximum(r - 1.2, 0.0), atol=1e-6)
    d_neg = evaluate_drift(lpo.baseline_source("ppo_clip"), r, advantage=-1.0, progress=0.0)
    np.testing.assert_allclose(d_neg, np.maximum(0.8 - r, 0.0), atol=1e-6)


def test_a_broken_source_is_reported_not_fatal(tmp_path, win_experiment, kit):
    results, final_info = win_experiment
    sources = kit.make_sources()
    sources["kl"] = "import os\n\ndef drift(ratio, advantage, progress):\n    return ratio\n"
    figures = plotting.make_plots(kit.make_idea(), results, final_info, sources, tmp_path, kit.make_context()["labels"],
                                  _lpo())
    drift = {f["name"]: f for f in figures}["drift_shape"]
    assert (tmp_path / "drift_shape.png").stat().st_size > 0
    assert "Could not be evaluated: KL drift" in drift["caption"]


def test_a_setting_without_curve_points_still_plots(tmp_path, win_experiment, kit):
    results, final_info = win_experiment
    results = results[~((results["metric"] == "curve") & (results["setting"] == "empty5_short"))]
    figures = plotting.make_plots(kit.make_idea(), results, final_info, kit.make_sources(), tmp_path, {}, _lpo())
    assert all((tmp_path / f"{n}.pdf").stat().st_size > 0 for n in NAMES)
    assert len(figures) == 3


def _final_info(name: str, mean: float, best: float) -> dict:
    return {"empty5": {"held_out": False, "means": {name: mean, "ppo_clip": best}, "stderrs": {name: 0.01},
                       "n": {name: 2}, "comparison": {"best_baseline": "ppo_clip", "improvement": mean - best,
                                                      "p_value": 0.5}}}


def test_the_lineage_figure_draws_the_archive_as_a_tree_of_parents_with_advantages(tmp_path):
    """Two runs in a real archive: a child of a baseline, an idea without a parent (an LLM's), a child of an
    archived idea of the earlier run, and one whose parent nobody knows."""
    from tasks import archive

    db = tmp_path / "archive.sqlite"
    for run_id, name, parent, mean in [("r1", "wide_clip", "ppo_clip", 0.8), ("r1", "llm_idea", None, 0.6),
                                       ("r2", "wider_clip", "wide_clip", 0.9), ("r2", "orphan", "gone", 0.5)]:
        idea = {"Name": name, "Title": name, "parent": parent, "expression": None, "source": "x"}
        archive.record(db, run_id, "lpo", idea, _final_info(name, mean, 0.7), None)
    rows = archive.candidates(db, "lpo")
    assert {r["idea"]: r["parent"] for r in rows} == {"wide_clip": "ppo_clip", "llm_idea": None,
                                                      "wider_clip": "wide_clip", "orphan": "gone"}
    tree = plotting.lineage(rows, ["ppo_clip", "dpo"])
    assert sorted(tree["edges"]) == [("baseline:ppo_clip", "r1:wide_clip"), ("r1:wide_clip", "r2:wider_clip")]
    assert tree["runs"] == ["r1", "r2"]
    advantage = {n["id"]: n["advantage"] for n in tree["nodes"]}
    assert np.isclose(advantage["r2:wider_clip"], 0.2) and np.isclose(advantage["r1:llm_idea"], -0.1)

    out = plotting.plot_lineage(rows, ["ppo_clip", "dpo"], {"ppo_clip": "PPO clip"}, "r2", tmp_path,
                                _lpo().metric)
    assert out["nodes"] == 6 and out["edges"] == 2
    assert Path(out["png"]).read_bytes().startswith(b"\x89PNG") and Path(out["pdf"]).stat().st_size > 0
    assert plotting.plot_lineage([], ["ppo_clip"], {}, "r3", tmp_path / "none", _lpo().metric) is None


def test_an_archive_written_before_parents_were_recorded_gains_the_column(tmp_path):
    import sqlite3

    from tasks import archive

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:  # the table as an older version wrote it (no improvement, no parent)
        con.execute(archive.SCHEMA.replace("    improvement REAL,\n    parent TEXT,\n", ""))
        con.execute("INSERT INTO candidates (run_id, template, idea, setting, held_out, mean, created) VALUES "
                    "('old', 'lpo', 'kept', 'empty5', 0, 0.5, '2026-01-01')")
    [row] = archive.candidates(db, "lpo")
    assert row["idea"] == "kept" and row["parent"] is None
