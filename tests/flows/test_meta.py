"""``scientist meta`` and the meta-learning flow: bad input, checkpointed chunks that resume without recomputing,
one compile per shape through the chunk task (in process and on a Ray worker), HaDES outputs."""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest

from flows import cli
from jaxlib_kernels.es import meta, problems
from jaxlib_kernels.profiling import count_compilations
from tasks import meta_es

pytestmark = pytest.mark.usefixtures("on_session_server")  # in-process flows: the session's Prefect server
TINY = {"max_steps": 40, "num_pairs": 2, "width": 8, "inner_steps": 5, "eval_episodes": 1}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "OpenEZ"], "did you mean 'Open_ES'"),
        (["--template", "hadse"], "did you mean 'hades'"),
        (["--generations", "0"], "--generations must be at least 1"),
        (["--population", "-3"], "--population must be at least 1"),
        (["--population", "7"], "antithetic sampling needs an even population"),
        (["--template", "hades", "--env", "CartPol-v1"], "did you mean 'CartPole-v1'"),
        (["--template", "hades", "--dataset-sizes", "4,0"], "--dataset-sizes must be at least 1"),
        (["--run-id", "../x"], "run id"),
        (["--env", "CartPole-v1"], "--env applies to --template hades, not lpo"),
        (["--template", "hades", "--seeds", "3"], "--seeds applies to --template lpo, not hades"),
        (["--template", "bbo"], "scientist meta serves lpo, hades"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    try:
        code = cli.main(["meta", *args])
    except SystemExit as exc:  # argparse's own errors exit from inside the parser
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_chunks_compile_once_and_equal_an_uninterrupted_run(tmp_path):
    """Three chunks through run_chunk (in process): the fitness is traced once, later chunks compile nothing, and
    the chunked history equals meta.run_meta's uninterrupted one."""
    spec = problems.problem_spec("hades", **TINY)
    es = problems.es_spec("hades", "OpenES", 8)
    folder = tmp_path / "search"
    meta_es.run_chunk(spec, es, 3, 0, 2, str(folder), workers=0)
    with count_compilations() as counter:
        meta_es.run_chunk(spec, es, 3, 2, 4, str(folder), workers=0)
        out = meta_es.run_chunk(spec, es, 3, 4, 6, str(folder), workers=0)
    assert counter.compiles == 0
    assert out["evaluator_traces"] == [1]
    assert sorted(p.name for p in folder.glob("gen_*.npz")) == ["gen_000002.npz", "gen_000004.npz", "gen_000006.npz"]
    again = meta_es.run_chunk(spec, es, 3, 4, 6, str(folder), workers=0)  # its checkpoint exists: read back
    assert again["computed"] is False and again["metrics"] == out["metrics"]
    fitness, mean = problems.make_problem(spec)
    strategy, es_params = meta.make_strategy(problems.es_config(es), mean)
    full = meta.run_meta(jax.random.key(3), strategy, es_params, fitness, mean, 6)
    for name in ("return_mean", "return_max", "best_return"):
        np.testing.assert_allclose(out["metrics"][name], full["metrics"][name], rtol=1e-5)


@pytest.mark.slow
def test_meta_flow_pauses_resumes_from_checkpoint_and_writes_outputs(tmp_path):
    """A meta-run stopped after one chunk continues from its checkpoint: the generation counter goes on, the first
    chunk is not recomputed, one Ray worker traces the fitness once for all later generations, and the HaDES
    outputs (fitness curve CSV/JSON/PNG, returns per dataset size with CIs, width transfer, dataset plots) exist."""
    from flows.meta_learning import meta_learning

    kwargs = {"template": "hades", "strategy": "OpenES", "generations": 6, "population": 8, "chunk": 2,
              "workers": 1, "run_id": "meta-test", "runs_dir": str(tmp_path), "options": TINY, "dataset_sizes": [2],
              "widths": [4, 16]}
    first = meta_learning(**kwargs, max_chunks=1)
    assert first["status"] == "paused" and first["generation"] == {"hades_r_2_pairs": 2, "direct": 2}
    search = tmp_path / "meta-test" / "searches" / "hades_r_2_pairs"
    assert [p.name for p in search.glob("gen_*.npz")] == ["gen_000002.npz"]
    run_json = json.loads((tmp_path / "meta-test" / "run.json").read_text())
    assert run_json["status"] == "paused"

    second = meta_learning(**kwargs)
    assert second["status"] == "completed" and second["generation"]["hades_r_2_pairs"] == 6
    chunks = [json.loads(line) for line in (search / "chunks.jsonl").read_text().splitlines()]
    assert [(c["start"], c["end"]) for c in chunks] == [(0, 2), (2, 4), (4, 6)]  # (0, 2) computed once
    assert chunks[-1]["evaluator_traces"] == [1]  # one Ray worker: one trace (one compile) for generations 3-6
    curve = pd.read_csv(search / "fitness.csv")
    assert list(curve.generation) == [1, 2, 3, 4, 5, 6]
    assert {"return_mean", "return_max", "best_return"} <= set(curve.columns)
    assert (tmp_path / "meta-test" / "figures" / "es_fitness.png").stat().st_size > 0
    center = pd.read_csv(search / "center.csv")  # the search centre on fixed seeds, every checkpoint
    assert list(center.generation) == [0, 2, 4, 6] and (center.n == 8).all()
    results = json.loads((tmp_path / "meta-test" / "hades_results.json").read_text())
    size = results["sizes"]["2"]
    assert size["n"] == 16 and size["ci95"][0] <= size["mean"] <= size["ci95"][1]
    assert set(results["transfer"]["2"]) == {"4", "16"}
    assert results["direct"]["n"] == 16
    assert (tmp_path / "meta-test" / "figures" / "dataset_2_pairs.png").exists()
    assert (tmp_path / "meta-test" / "figures" / "hades_sizes_widths.png").exists()
