"""The dpo template's LLM code path against the scripted server: a loss that fails the gate gets the gate's reason
back and the model's repaired loss is accepted (DiscoPOP's loop: propose code, validate, feed back)."""

from __future__ import annotations

import json

import pytest
from scripted_server import IDEA, last_user, stage_of

from jaxlib_kernels.templates import make
from tasks.llm import codegen as llm_codegen

DPO = make("dpo")

NAN_LOSS = ("```python\nimport jax.numpy as jnp\n\n\ndef preference_loss(rho, beta):\n"
            "    return jnp.log(beta * rho)\n```")
GOOD_LOSS = ("```python\nimport jax\nimport jax.numpy as jnp\n\n\ndef preference_loss(rho, beta):\n"
             "    z = beta * rho\n    w = jax.nn.sigmoid(z)\n"
             "    return (1.0 - w) * jax.nn.softplus(-z) + w * jnp.exp(-z)\n```")


@pytest.mark.slow
def test_a_loss_that_fails_the_gate_is_repaired_from_its_reason_and_accepted(serve, client_for, tmp_path):
    replies = iter([NAN_LOSS, GOOD_LOSS])
    server = serve(lambda r: next(replies))
    idea = {**IDEA, "Name": "smooth_lrml", "Title": "LRML with a slower hand-over"}
    result = llm_codegen.implement_candidate(client_for(server), DPO, idea, tmp_path / "idea", repair_rounds=2)
    assert result["accepted"] is True and result["repairs"] == 1
    assert [stage_of(r) for r in server.requests] == ["code", "code repair (round 1 of 2)"]
    first = last_user(server.requests[0])
    assert DPO.plugin.signature in first and DPO.baselines["dpo"].source.strip() in first
    assert "Research template \"dpo\"" in first  # the template's task description
    assert "non-finite" in last_user(server.requests[1])  # the gate's reason goes back to the model
    validation = json.loads((tmp_path / "idea" / "validation.json").read_text())
    assert validation["accepted"] is True and len(validation["attempts"]) == 2
    assert "softplus" in (tmp_path / "idea" / "candidate.py").read_text()
