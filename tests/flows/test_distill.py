"""``scientist discover --distill META_RUN``: a learned TA-LPO drift (data: the search mean a meta run saved) distilled
into a formula by the discovery engine, with closeness to the learned drift as fitness, then confirmed on fresh
seeds like any candidate."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from flows import cli
from flows.discovery import discover
from jaxlib_kernels.es import meta, problems, talpo
from jaxlib_kernels.search import drift as search
from jaxlib_kernels.templates.lpo.meta import drift_net, learned_drift_behaviour
from tasks.runtime.runfolder import write_json

pytestmark = pytest.mark.usefixtures("on_session_server")
TINY = {"total_timesteps": 2048, "num_envs": 4, "num_steps": 32, "num_minibatches": 2, "update_epochs": 2}
SEARCH = {"population": 8, "promote": 2, "tune": 2, "length": 32}


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    """A meta run's folder as `scientist meta --template lpo` leaves it: searches/talpo/search.json and the search
    mean (here the ES's starting drift: a random drift network, as at generation 0)."""
    folder = tmp_path_factory.mktemp("meta") / "meta-lpo"
    search_dir = folder / "searches" / "talpo"
    search_dir.mkdir(parents=True)
    spec = problems.problem_spec("lpo")
    write_json(search_dir / "search.json", {"problem": spec, "es": {}, "seed": 0, "generations": 0, "chunk": 1})
    theta = talpo.init_drift_params(jax.random.key(7), drift_net(spec))
    meta.save_candidate(search_dir / "search_mean.npz", theta)
    return folder, theta, spec


def test_the_learned_drift_is_read_as_data_and_evaluated_on_the_probe_grid(meta_run):
    folder, theta, spec = meta_run
    learned = learned_drift_behaviour(folder)
    net = drift_net(spec)
    r, a, p = 1.3, -0.7, 0.5
    i = (np.abs(search._R[:, 0, 0] - r).argmin(), np.abs(search._A[0, :, 0] - a).argmin(), 1)
    grid = np.asarray(learned["target"]).reshape(search._R.shape[0], search._A.shape[1], search._P.shape[2])
    one = talpo.drift_apply(theta, np.float32(search._R[i[0], 0, 0]), np.float32(search._A[0, i[1], 0]),
                            np.float32(p), net)
    np.testing.assert_allclose(grid[i], float(one), rtol=1e-5, atol=1e-7)
    assert (grid >= 0).all() and set(learned["distances"]) >= {"ppo_clip", "dpo"}


def test_a_folder_without_a_search_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["discover", "--distill", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no TA-LPO search here" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_distillation_searches_by_closeness_and_confirms_on_fresh_seeds(meta_run, tmp_path):
    folder, *_ = meta_run
    target = np.asarray(learned_drift_behaviour(folder)["target"])
    out = discover(run_id="distill", runs_dir=str(tmp_path), search=SEARCH, ppo_overrides=TINY, seeds=2,
                   generations=4, minutes=30.0, distill=str(folder), fresh_seeds=2, admit_top=1,
                   held_out=["empty_random5"], min_held_out=1)
    state = out["state"]
    # the fitness of every trained formula is minus its behavioural distance to the learned drift
    for row in state["archive"]:
        assert row["fitness"] == pytest.approx(-search.distance(search.behaviour(row["expr"]), target))
    best = [e["best_fitness"] for e in state["log"]]
    assert best == sorted(best)  # the archive keeps its best
    run = json.loads((tmp_path / "distill" / "run.json").read_text())
    assert run["distill"]["from"] == str(folder) and set(run["distill"]["baseline_distances"]) >= {"ppo_clip"}
    # then confirmed like any candidate: retrained with PPO on fresh seeds against untuned baselines
    [admitted] = out["admitted"]
    assert {(t["setting"], t["baseline"]) for t in admitted["admission"]["tests"]} == {
        (s, b) for s in ("empty5", "empty_random5") for b in ("ppo_clip", "dpo")}
    assert all(t["generations"] == 0 for t in json.loads((tmp_path / "distill" / "baseline_tuning.json")
                                                           .read_text()).values())
    assert out["top"][0]["fitness"] == pytest.approx(
        -search.distance(search.behaviour(out["top"][0]["expr"]), target))
