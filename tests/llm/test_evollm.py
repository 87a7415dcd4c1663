"""EvoLLM (the optimiser library) against the scripted OpenAI-compatible server: the paper's prompt construction
(least-to-most sorted, discretised members, a context of the last generations), the fallbacks on bad replies, and
the refusal without a model."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from scripted_server import last_user

from jaxlib_kernels.optimisers import evollm
from tasks import tuning


def _sphere(pop):
    return np.sum(np.square(pop - 0.3), axis=1)


def _lines(prompt: str) -> dict[int, list[tuple[list[int], float]]]:
    gens, current = {}, None
    for line in prompt.splitlines():
        if m := re.match(r"Generation (\d+):", line):
            current = int(m.group(1))
            gens[current] = []
        elif (m := re.match(r"\[([-\d, ]+)\] fitness (\S+)", line)) and current is not None:
            gens[current].append(([int(v) for v in m.group(1).split(",")], float(m.group(2))))
    return gens


def test_evollm_prompts_discretised_sorted_members_and_falls_back_on_bad_replies(serve, client_for, caplog):
    bad = {1: "I think the answer is somewhere near the origin.", 2: "[1, 2]", 3: "[nan, 0, 0]"}
    calls = []

    def script(request):
        prompt = last_user(request)
        calls.append(prompt)
        g = len(calls)
        if g in bad:
            return bad[g]
        best = _lines(prompt)[max(_lines(prompt))][-1][0]  # the last line of the newest generation: its best
        return "Next mean: [" + ", ".join(str(v) for v in best) + "]"

    server = serve(script)
    client = client_for(server)
    config = evollm.EvoLLMConfig(resolution=10.0, context=2, members=3, population=6)
    es = evollm.EvoLLM(lambda p: client.complete(p, evollm.STAGE)[0], config)
    with caplog.at_level(logging.WARNING, logger=evollm.__name__):
        out = es.run(_sphere, np.array([2.0, -1.0, 1.5]), generations=6, seed=0)
    assert len(server.requests) == 6
    # construction: at most `context` generations, `members` lines each, integers, worst to best
    for i, prompt in enumerate(calls):
        gens = _lines(prompt)
        assert list(gens) == list(range(max(0, i + 1 - 2), i + 1))
        for members in gens.values():
            assert len(members) == 3 and all(len(x) == 3 for x, _ in members)
            fit = [f for _, f in members]
            assert fit == sorted(fit, reverse=True), "least to most fit"
    # the discretisation: round(x * resolution) of the 3 best members of generation 0, worst of them first
    pop0, fit0 = es.history[0]
    expected = [list(evollm.discretise(pop0[i], 10.0)) for i in np.argsort(fit0)[:3][::-1]]
    assert [x for x, _ in _lines(calls[0])[0]] == expected
    # fallbacks: malformed, wrong length, non-finite, each logged with its reason; the run went on
    reasons = [r for _, r in out["fallbacks"]]
    assert [g for g, _ in out["fallbacks"]] == [0, 1, 2]
    assert "malformed" in reasons[0] and "wrong length" in reasons[1] and "non-finite" in reasons[2]
    assert sum("falling back to the best member" in r.message for r in caplog.records) == 3
    assert np.all(np.diff(out["best"]) <= 0) and out["best"][-1] < out["best"][0]


def test_evollm_without_a_model_is_refused_with_one_line(monkeypatch):
    monkeypatch.delenv("SCIENTIST_MODEL", raising=False)
    with pytest.raises(evollm.NoModel) as info:
        tuning.llm_complete(None)
    assert "\n" not in str(info.value) and "model" in str(info.value)
    with pytest.raises(evollm.NoModel):
        evollm.EvoLLM(None)
