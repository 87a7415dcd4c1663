"""The litellm client against the scripted server: JSON with feedback, retries, timeouts, accounting, budget, keys."""

from __future__ import annotations

import json
import threading

import pytest
from scripted_server import FAKE_KEY

from tasks.runtime import llm


def _script(*replies):
    """Replies in order (the last one repeats)."""
    queue = list(replies)

    def script(_request):
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return script


@pytest.mark.parametrize("text, value", [
    ('{"a": 1}', {"a": 1}),
    ('Sure! Here it is:\n```json\n{"a": [1, 2]}\n```\nHope that helps.', {"a": [1, 2]}),
    ('THOUGHT: x\n```\n{"a": "b"}\n```', {"a": "b"}),
    ('The idea is {"Name": "x", "Novelty": 3} as requested.', {"Name": "x", "Novelty": 3}),
])
def test_extract_json_tolerates_fences_and_prose(text, value):
    assert llm.extract_json(text) == value


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("no json here", "no JSON"), ('```json\n{"a": 1,,}\n```', "could not be parsed"),
])
def test_extract_json_rejects_with_a_reason(text, message):
    with pytest.raises(llm.JSONReplyError, match=message):
        llm.extract_json(text)


def test_malformed_json_goes_back_to_the_model_and_the_next_reply_is_used(serve, client_for):
    server = serve(_script('```json\n{"Name": "x", "Title": \n```', '```json\n{"Name": "x", "Title": "T"}\n```'))
    client = client_for(server)
    value, _ = client.complete_json("Stage: test\nGive JSON", "ideation", {"Name": "str", "Title": "str"})
    assert value == {"Name": "x", "Title": "T"}
    assert len(server.requests) == 2
    feedback = server.requests[1]["messages"][-1]["content"]
    assert "could not be parsed" in feedback and "Name, Title" in feedback
    assert server.requests[1]["messages"][-2] == {"role": "assistant", "content": '```json\n{"Name": "x", "Title": \n```'}
    assert client.ledger.to_dict()["stages"]["ideation"]["calls"] == 2


def test_empty_replies_are_retried_with_feedback_then_fail_clearly(serve, client_for):
    server = serve(_script(""))
    client = client_for(server, json_attempts=3)
    with pytest.raises(llm.LLMError, match=r"ideation: no valid JSON after 3 replies: the reply was empty"):
        client.complete_json("Stage: test", "ideation", {"Name": "str"})
    assert len(server.requests) == 3 and "the reply was empty" in server.requests[1]["messages"][-1]["content"]


def test_missing_fields_are_named_in_the_feedback(serve, client_for):
    server = serve(_script('{"Name": "x"}', '{"Name": "x", "Novelty": 11}', '{"Name": "x", "Novelty": 7}'))
    client = client_for(server)
    value, _ = client.complete_json("Stage: test", "ideation", {"Name": "str", "Novelty": "score"})
    assert value["Novelty"] == 7
    assert "missing field 'Novelty'" in server.requests[1]["messages"][-1]["content"]
    assert "between 1 and 10" in server.requests[2]["messages"][-1]["content"]


def test_http_429_is_retried_with_backoff_then_succeeds(serve, client_for):
    server = serve(_script({"status": 429, "message": "rate limited"}, {"status": 429}, "fine"))
    client = client_for(server, retries=3, backoff_s=0.05)
    text, _ = client.complete("Stage: test", "novelty")
    assert text == "fine" and len(server.requests) == 3
    row = client.ledger.to_dict()["stages"]["novelty"]
    assert row["calls"] == 1 and row["failed_calls"] == 2 and row["prompt_tokens"] > 0


def test_http_500_fails_clearly_after_the_retries(serve, client_for):
    server = serve(_script({"status": 500, "message": "boom"}))
    client = client_for(server, retries=2, backoff_s=0.01)
    with pytest.raises(llm.LLMError, match=r"review: the model call failed after 3 attempt\(s\): InternalServerError"):
        client.complete("Stage: test", "review")
    assert len(server.requests) == 3  # our retries only: litellm's and the OpenAI SDK's own retries are off


def test_a_reply_that_never_comes_times_out_and_is_retried(serve, client_for):
    server = serve(_script({"hang": True, "seconds": 10}, "late but here"))
    client = client_for(server, timeout_s=1.0, retries=1, backoff_s=0.01)
    text, _ = client.complete("Stage: test", "code")
    assert text == "late but here" and len(server.requests) == 2
    row = client.ledger.to_dict()["stages"]["code"]
    assert row["calls"] == 1 and row["failed_calls"] == 1


def test_a_reply_that_never_comes_at_all_is_a_clear_failure(serve, client_for):
    server = serve(_script({"hang": True, "seconds": 10}))
    client = client_for(server, timeout_s=0.5, retries=1, backoff_s=0.01)
    with pytest.raises(llm.LLMError, match=r"code: the model call failed after 2 attempt\(s\): Timeout"):
        client.complete("Stage: test", "code")


def test_accounting_is_per_stage_and_thread_safe(serve, client_for):
    server = serve(_script("0123456789" * 8))  # 80 characters: 20 completion tokens a call
    client = client_for(server)

    def work(stage):
        for _ in range(5):
            client.complete("Stage: x\n" + "y" * 400, stage)

    threads = [threading.Thread(target=work, args=(s,)) for s in ("ideation", "review", "review", "writeup")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    usage = client.ledger.to_dict()
    assert usage["stages"]["review"]["calls"] == 10 and usage["stages"]["ideation"]["calls"] == 5
    assert usage["stages"]["review"]["completion_tokens"] == 200
    assert usage["total"]["calls"] == 20 == len(server.requests)
    assert usage["total"]["cost_known"] is False  # litellm knows no price for "test-model"


def test_cost_is_litellms_where_it_knows_the_model_and_the_budget_stops_calls(serve, client_for):
    server = serve(_script("x" * 4000))  # 1000 completion tokens
    client = client_for(server, model="openai/gpt-4o-mini", max_cost_usd=0.001)
    client.complete("Stage: x\n" + "y" * 4000, "ideation")
    row = client.ledger.to_dict()["stages"]["ideation"]
    import litellm

    expected = sum(litellm.cost_per_token(model="openai/gpt-4o-mini", prompt_tokens=row["prompt_tokens"],
                                          completion_tokens=row["completion_tokens"]))
    assert row["cost_known"] and row["cost_usd"] == pytest.approx(expected)
    client.complete("Stage: x", "ideation")  # sent under budget; it crosses 0.001, and its reply is still used
    with pytest.raises(llm.BudgetExceeded, match=r"cost budget spent: \$0\.00\d+ of --max-cost \$0\.001"):
        client.complete("Stage: x", "novelty")
    assert client.ledger.to_dict()["budget_exceeded"].startswith("cost budget spent")
    assert len(server.requests) == 2  # the third call was never sent


def test_token_budget(serve, client_for):
    server = serve(_script("abcd" * 10))
    client = client_for(server, max_tokens_total=30)
    client.complete("Stage: x\n" + "y" * 40, "ideation")
    with pytest.raises(llm.BudgetExceeded, match="token budget spent"):
        client.complete("Stage: x", "ideation")


def test_keys_are_redacted_and_never_in_the_config_record(llm_env):
    llm_env.setenv("OPENAI_API_BASE", "http://user:pw@127.0.0.1:9/v1?key=abc")
    config = llm.LLMConfig.from_env("openai/test-model")
    record = json.dumps(config.public())
    assert FAKE_KEY not in record and "pw" not in record and "key=abc" not in record
    assert llm.redact(f"Incorrect API key provided: {FAKE_KEY}.") == "Incorrect API key provided: ***."
    assert "sk-" + "a" * 20 not in llm.redact("sk-" + "a" * 20)


def test_probe_is_fast_and_names_the_server(llm_env):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm_env.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(llm.LLMUnreachable, match=rf"cannot reach the model server for openai/test-model at "
                                                  rf"http://127.0.0.1:{port}/v1 \(Connection refused\)"):
        llm.probe(llm.LLMConfig.from_env("openai/test-model"))


def test_model_and_base_come_from_the_usual_variables(llm_env):
    llm_env.setenv("SCIENTIST_MODEL", "ollama/llama3.1")
    llm_env.setenv("OLLAMA_API_BASE", "http://127.0.0.1:11434")
    assert llm.LLMConfig.from_env().api_base == "http://127.0.0.1:11434"
    llm_env.setenv("SCIENTIST_API_BASE", "http://gpu-box:8000/v1")
    assert llm.LLMConfig.from_env("hosted_vllm/qwen").api_base == "http://gpu-box:8000/v1"
    llm_env.delenv("SCIENTIST_MODEL")
    with pytest.raises(llm.LLMError, match="no model"):
        llm.LLMConfig.from_env()
