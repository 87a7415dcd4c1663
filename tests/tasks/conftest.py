"""Shared fixtures of the writeup stages: a synthetic but realistic experiment of the lpo template.

The results frame follows the results.parquet contract (tidy columns idea, method, role, setting, held_out, seed,
step, metric, value: one ``curve`` row per curve point and one ``final`` row per seed); final_info is computed from it
with scipy's Welch t-test and the metric's direction (``maximize``, ``improvement``, ``better``, ``worse``), exactly as
the contract describes, so the tests never depend on hand-typed numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

CANDIDATE = "annealed_clip"
CANDIDATE_EXPR = ["mul", ["add", 0.5, "p"], ["relu", ["mul", ["sub", "r", ["clip", "r", 0.8, 1.2]], "A"]]]
SETTINGS = ("empty5", "empty_random5", "empty5_short")
BASELINES = ("ppo_clip", "kl", "no_drift", "dpo")
SEEDS = 5
UPDATES = 40
BATCH = 1024
# asymptotic final return per (setting, method); the candidate's is set per scenario
LEVELS = {
    "empty5": {"ppo_clip": 0.86, "kl": 0.82, "no_drift": 0.55, "dpo": 0.88},
    "empty_random5": {"ppo_clip": 0.80, "kl": 0.77, "no_drift": 0.50, "dpo": 0.81},
    "empty5_short": {"ppo_clip": 0.70, "kl": 0.66, "no_drift": 0.42, "dpo": 0.71},
}


def _lpo():
    """The lpo template, imported lazily so that other tests in this folder do not pay for jax at collection."""
    from jaxlib_kernels.templates import lpo

    return lpo


def synthetic_results(effect: float, seed: int = 0, noise: float = 0.012, maximize: bool = True) -> pd.DataFrame:
    """Learning curves and final values; the candidate sits ``effect`` beyond the best baseline's level.

    ``maximize=False``: the best baseline is the lowest one and the candidate sits ``effect`` below it.
    """
    lpo = _lpo()
    rng = np.random.default_rng(seed)
    rows = []
    for setting in SETTINGS:
        held_out = lpo.SETTINGS[setting].held_out
        levels = dict(LEVELS[setting])
        levels[CANDIDATE] = max(levels.values()) + effect if maximize else min(levels.values()) - effect
        for method, level in levels.items():
            role = "candidate" if method == CANDIDATE else "baseline"
            for s in range(SEEDS):
                steps = (np.arange(UPDATES) + 1) * BATCH
                tau = rng.uniform(6, 10)
                curve = level * (1 - np.exp(-np.arange(UPDATES) / tau)) + rng.normal(0, 0.03, UPDATES)
                curve = np.clip(curve, 0.0, 0.955)
                curve[:2] = np.nan  # no episode finished in the first updates
                curve[rng.random(UPDATES) < 0.05] = np.nan
                final = float(np.clip(level + rng.normal(0, noise), 0.0, 0.955))
                base = {"idea": CANDIDATE, "method": method, "role": role, "setting": setting,
                        "held_out": held_out, "seed": s}
                rows += [{**base, "step": int(x), "metric": "curve", "value": float(v)}
                         for x, v in zip(steps, curve, strict=True)]
                rows.append({**base, "step": int(steps[-1]), "metric": "final", "value": final})
    return pd.DataFrame(rows)


def final_info_from(results: pd.DataFrame, maximize: bool = True) -> dict:
    """final_info.json from the tidy frame: means, stderrs, n, t-intervals, Welch test vs the best baseline.

    The best baseline and the direction of the comparison follow ``maximize`` (the metric's direction).
    """
    lpo = _lpo()
    sign = 1.0 if maximize else -1.0
    info = {}
    finals = results[results["metric"] == "final"]
    for setting, part in finals.groupby("setting", sort=False):
        values = {m: g["value"].to_numpy() for m, g in part.groupby("method", sort=False)}
        means = {m: float(v.mean()) for m, v in values.items()}
        stderrs = {m: float(v.std(ddof=1) / math.sqrt(len(v))) for m, v in values.items()}
        n = {m: len(v) for m, v in values.items()}
        ci95 = {m: [means[m] - stats.t.ppf(0.975, n[m] - 1) * stderrs[m],
                    means[m] + stats.t.ppf(0.975, n[m] - 1) * stderrs[m]] for m in values}
        candidate = part.loc[part["role"] == "candidate", "method"].iloc[0]
        baselines = [m for m in values if m != candidate]
        best = max(baselines, key=lambda m: sign * means[m])
        a, b = values[candidate], values[best]
        test = stats.ttest_ind(a, b, equal_var=False)
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        diff = means[candidate] - means[best]
        half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
        significant = bool(test.pvalue < 0.05)
        improvement = sign * diff
        info[setting] = {
            "means": means, "stderrs": stderrs, "n": n, "ci95": ci95,
            "held_out": bool(part["held_out"].iloc[0]), "env": lpo.SETTINGS[setting].env, "maximize": maximize,
            "comparison": {"candidate": candidate, "best_baseline": best, "difference": diff,
                           "improvement": improvement, "ci95": [diff - half, diff + half],
                           "p_value": float(test.pvalue), "significant": significant,
                           "better": significant and improvement > 0, "worse": significant and improvement < 0,
                           "test": "Welch t-test"},
        }
    return info


def make_idea(**overrides) -> dict:
    from jaxlib_kernels import symbolic

    idea = {
        "Name": CANDIDATE,
        "Title": "Annealed clipping: a temporally-aware trust region for mirror learning",
        "Hypothesis": "Weakening the clip drift early (factor 0.5) and strengthening it late (factor 1.5) lets "
                      "PPO explore first and settle later, raising the final return.",
        "Experiment": "Train PPO with the drift on empty5 and evaluate on held-out grids and horizons.",
        "Interestingness": 6, "Feasibility": 9, "Novelty": 5,
        "kind": "source",
        "expression": CANDIDATE_EXPR,
        "expression_latex": symbolic.to_latex(CANDIDATE_EXPR),
        "novelty": {"decision": "novel", "reason": "behaviourally distinct from every known drift",
                    "nearest": "ppo_clip", "distance": 0.31,
                    "literature": [{"key": "jackson2024temporally", "title": "Discovering Temporally-Aware RL",
                                    "score": 7.2}, {"key": "lu2022dpo", "title": "Discovered Policy Optimisation",
                                                    "score": 5.1}]},
    }
    idea.update(overrides)
    return idea


def make_sources() -> dict[str, str]:
    from jaxlib_kernels import symbolic

    lpo = _lpo()
    sources = {name: lpo.baseline_source(name) for name in BASELINES}
    sources[CANDIDATE] = symbolic.render_source(CANDIDATE_EXPR, "drift", doc="Annealed clip drift.")
    return sources


def make_context() -> dict:
    lpo = _lpo()
    return {
        "labels": {**lpo.BASELINE_LABELS, CANDIDATE: "Annealed clip"},
        "baselines": {name: lpo.BASELINES[name] for name in BASELINES},
        "profile": {"seeds": SEEDS, "budget": UPDATES * BATCH, "settings": list(SETTINGS),
                    "baselines": list(BASELINES)},
        "run_id": "20250101-000000-lpo-test",
    }


TREE_HPARAMS = {"lr": 0.00025, "update_epochs": 4, "ent_coef": 0.01}
TREE_TUNED = {"lr": 0.00071, "update_epochs": 6, "ent_coef": 0.0042}
ABLATIONS = (("without the progress factor", 0.58), ("clip range set to PPO's", 0.66),
             ("without the relu around (r - clip(r, 0.8, 1.2)) \u00b7 |A|", 0.7))  # labels as the tree's operators write


def make_tree(path, tuned: bool = True, evaluations: int = 8) -> str:
    """A tree.json in the research tree's format (the tree's design, TREE_SPEC): implement (a draft, a failed debug
    node and its fix), tune (the candidate and every baseline, ``evaluations`` each) when ``tuned``, improve, ablate;
    search seeds 1000-1001 on empty5, replication seeds 0-4. Returns the file's path."""
    import json
    from pathlib import Path

    nodes, k = [], 0

    def node(stage, kind, score, parent=None, method=CANDIDATE, role="candidate", label="", buggy=False, hp=None):
        nonlocal k
        k += 1
        nodes.append({"id": f"n{k:04x}", "parent": parent, "stage": stage, "kind": kind, "method": method,
                      "role": role, "candidate": f"<text {k}>", "hparams": hp or {}, "label": label,
                      "metric": {"empty5": [score, score] if score is not None else [None, None]},
                      "score": score, "buggy": buggy, "why": "NaN loss" if buggy else None, "cost": 2 * 10240,
                      "source": "offline", "tie_break": None})
        return nodes[-1]["id"]

    draft = node("implement", "draft", 0.61, label="first draft")
    bug = node("implement", "debug", None, draft, label="debug", buggy=True)
    fixed = node("implement", "debug", 0.63, bug, label="repaired")
    best = {"implement": fixed}
    tuning = {}
    if tuned:
        scores = [0.63, 0.64, 0.6, 0.69, 0.66, 0.71, 0.65, 0.68][:evaluations]
        tune_ids = [node("tune", "tune", s, fixed, hp=TREE_TUNED) for s in scores]
        best["tune"] = tune_ids[scores.index(max(scores))]
        tuning[CANDIDATE] = {"role": "candidate", "before": {"hparams": TREE_HPARAMS, "constants": [0.5, 0.8, 1.2]},
                             "after": {"hparams": TREE_TUNED, "constants": [0.45, 0.78, 1.31]},
                             "score_before": 0.63, "score_after": max(scores), "evaluations": evaluations,
                             "cost": evaluations * 2 * 10240}
        for i, b in enumerate(BASELINES):
            before, after = 0.55 + 0.02 * i, 0.6 + 0.02 * i
            for s in (before, after):
                node("tune", "tune", s, method=b, role="baseline")
            tuning[b] = {"role": "baseline", "before": {"hparams": TREE_HPARAMS, "constants": []},
                         "after": {"hparams": {**TREE_HPARAMS, "lr": 0.0005 + 0.0001 * i}, "constants": []},
                         "score_before": before, "score_after": after, "evaluations": evaluations,
                         "cost": evaluations * 2 * 10240}
    parent = best.get("tune", fixed)
    improved = [node("improve", "improve", s, parent, label=f"variant {i}") for i, s in enumerate((0.7, 0.73, 0.69))]
    best["improve"] = improved[1]
    ablation = []
    for label, score in ABLATIONS:
        ablation.append({"node": node("ablate", "ablate", score, improved[1], label=label), "label": label,
                         "score": score, "delta": score - 0.73})
    record = {"idea": CANDIDATE, "template": "lpo", "metric": {"name": "final_return", "maximize": True},
              "search": {"settings": ["empty5"], "seeds": [1000, 1001], "budget": {"empty5": 10240}},
              "replication_seeds": list(range(SEEDS)),
              "budgets": {"fraction": 0.25, "seeds": 2, "tune": evaluations, "improve_rounds": 1, "improve_width": 3,
                          "ablate": 3, "stages": ["implement", "tune", "improve", "ablate", "replicate"]},
              "nodes": nodes, "best": {**best, "ablate": None},
              "final": {"node": improved[1], "candidate": "<text>", "hparams": TREE_TUNED if tuned else {}},
              "tuning": tuning, "ablation": ablation,
              "stages_done": ["implement", *(["tune"] if tuned else []), "improve", "ablate"],
              "view": {"png": "tree/tree.png", "html": "tree/tree.html"}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return str(path)


@pytest.fixture(scope="session")
def win_experiment():
    """The candidate is clearly better than the best baseline (significant on every setting)."""
    results = synthetic_results(effect=0.06, seed=1)
    return results, final_info_from(results)


@pytest.fixture(scope="session")
def null_experiment():
    """The candidate matches the best baseline's level (no significant difference)."""
    results = synthetic_results(effect=0.0, seed=2)
    return results, final_info_from(results)


@pytest.fixture(scope="session")
def win_figures(tmp_path_factory, win_experiment):
    from tasks.plotting import make_plots

    results, final_info = win_experiment
    out = tmp_path_factory.mktemp("figures")
    return make_plots(make_idea(), results, final_info, make_sources(), out, make_context()["labels"],
                      _lpo().TEMPLATE)


@pytest.fixture(scope="session")
def null_figures(tmp_path_factory, null_experiment):
    from tasks.plotting import make_plots

    results, final_info = null_experiment
    out = tmp_path_factory.mktemp("figures_null")
    return make_plots(make_idea(), results, final_info, make_sources(), out, make_context()["labels"],
                      _lpo().TEMPLATE)


@pytest.fixture(scope="session")
def win_paper(tmp_path_factory, win_experiment, win_figures):
    from tasks.writeup import write_paper

    _, final_info = win_experiment
    out = tmp_path_factory.mktemp("paper_win")
    return write_paper("lpo", make_idea(), final_info, win_figures, make_context(), out)


@pytest.fixture(scope="session")
def null_paper(tmp_path_factory, null_experiment, null_figures):
    from tasks.writeup import write_paper

    _, final_info = null_experiment
    out = tmp_path_factory.mktemp("paper_null")
    return write_paper("lpo", make_idea(), final_info, null_figures, make_context(), out)


@pytest.fixture(scope="session")
def kit():
    """The builders above, for tests that vary one input (test modules must not import conftest by name)."""
    import types

    return types.SimpleNamespace(
        SEEDS=SEEDS, CANDIDATE=CANDIDATE, CANDIDATE_EXPR=CANDIDATE_EXPR, make_idea=make_idea,
        make_sources=make_sources, make_context=make_context, synthetic_results=synthetic_results,
        final_info_from=final_info_from, make_tree=make_tree, ABLATIONS=ABLATIONS,
    )
