"""Fixtures of the LLM backend's tests: the scripted OpenAI-compatible server and an environment pointing at it."""

from __future__ import annotations

import pytest
from scripted_server import FAKE_KEY, ScriptedServer, researcher


@pytest.fixture
def serve():
    """``serve(script)``: a started :class:`ScriptedServer`; stopped after the test."""
    started = []

    def start(script=researcher, papers=None):
        server = ScriptedServer(script, papers).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def llm_env(monkeypatch):
    """Fast client settings, a fake key, the literature sources pointed at nothing (set per test)."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SCIENTIST_LLM_TIMEOUT", "5")
    monkeypatch.setenv("SCIENTIST_LLM_RETRIES", "2")
    monkeypatch.setenv("SCIENTIST_LLM_BACKOFF", "0.05")
    monkeypatch.setenv("SCIENTIST_LIT_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("SCIENTIST_LIT_BACKOFF", "0.05")
    for var in ("SCIENTIST_API_BASE", "OPENAI_API_BASE", "OPENAI_BASE_URL", "SCIENTIST_MAX_COST", "SCIENTIST_MAX_TOKENS"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def client_for(llm_env):
    """``client_for(server, **config)``: an :class:`tasks.runtime.llm.LLMClient` talking to ``server``."""
    import dataclasses

    from tasks.runtime.llm import LLMClient, LLMConfig

    def make(server, **changes):
        llm_env.setenv("OPENAI_API_BASE", server.url)
        config = dataclasses.replace(LLMConfig.from_env("openai/test-model"), **changes)
        return LLMClient(config)

    return make
