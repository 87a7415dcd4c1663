"""EvoLLM on a mixed search space through the shared sequence-optimiser loop (optimisers' sequence.minimise), against the
scripted OpenAI-compatible server: every member decoded is a valid configuration, a malformed reply falls back to
the best member, and the loop improves on its first generation."""

from __future__ import annotations

import math
import re

import numpy as np
from scripted_server import last_user

from jaxlib_kernels.optimisers import evollm, sequence
from jaxlib_kernels.optimisers.space import Categorical, Continuous, Integer, Space
from tasks import tuning

SPACE = Space([Continuous("x", -1.0, 1.0), Continuous("lr", 1e-3, 1.0, log=True), Integer("k", 1, 4),
               Categorical("act", ("tanh", "relu", "gelu"))])


def objective(configs):
    return np.asarray([(c["x"] - 0.3) ** 2 + (math.log10(c["lr"]) + 1.0) ** 2 + 0.3 * abs(c["k"] - 3)
                       + 0.5 * (c["act"] != "relu") for c in configs])


def test_evollm_searches_a_mixed_space_through_the_shared_loop_and_falls_back_on_a_malformed_reply(serve, client_for):
    calls = []

    def script(request):
        prompt = last_user(request)
        calls.append(prompt)
        if len(calls) == 2:
            return "Let me think about the mean... it should be good."
        best = prompt.split("fitness")[-2].rsplit("[", 1)[1].split("]")[0]  # the newest generation's best member
        return f"Next mean: [{best}]"

    server = serve(script)
    client = client_for(server)
    es = evollm.EvoLLM(lambda p: client.complete(p, evollm.STAGE)[0],
                       evollm.EvoLLMConfig(resolution=100.0, context=2, members=3, population=6, init_std=0.5,
                                           final_std=0.05))
    assert isinstance(es, sequence.SequenceOptimiser)
    evaluated = []

    def fitness(configs):
        evaluated.extend(configs)
        return objective(configs)

    out = es.run(fitness, None, generations=6, seed=0, space=SPACE)
    assert len(server.requests) == 6 and len(evaluated) == 36
    assert all(SPACE.valid(c) for c in evaluated)
    assert all(len(re.findall(r"^\[", p, re.MULTILINE)) <= 2 * 3 for p in calls)  # context 2 x members 3
    assert [g for g, _ in out["fallbacks"]] == [1] and "malformed" in out["fallbacks"][0][1]
    # the last reply was the newest generation's best member (discretised): the proposed mean is that member
    members = np.concatenate([p for p, _ in es.history])
    assert np.min(np.abs(members - np.round(out["mean"], 2)).max(axis=1)) < 1e-2
    assert SPACE.valid(out["best_config"]) and out["best_fitness"] == float(objective([out["best_config"]])[0])
    first = float(es.history[0][1].min())
    assert np.all(np.diff(out["best"]) <= 0) and out["best"][-1] < first


def test_the_tuning_stage_searches_with_evollm_through_the_project_client(serve, client_for):
    server = serve(lambda request: "Next mean: [" + last_user(request).split("fitness")[-2].rsplit("[", 1)[1]
                   .split("]")[0] + "]")
    out = tuning.tune(SPACE, objective, 24, "evollm", client=client_for(server), population=6, seed=1)
    assert len(server.requests) == 4 and out["evaluations"] == 24 and out["optimiser"] == "evollm"
    assert all(SPACE.valid(c) for g in out["history"] for c in g["configs"]) and out["fallbacks"] == []
    assert out["best_fitness"] == float(objective([out["best_config"]])[0]) == min(out["curve"])
