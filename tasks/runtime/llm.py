"""The LLM backend's client (ARCHITECTURE.md section 4): one client over ``litellm.completion`` for every stage.

As in The AI Scientist (Lu et al., 2024) every stage talks to the model through one function; here that function
also owns what the AI Scientist leaves to the user: timeouts, retries with exponential backoff on rate limits,
server errors, timeouts and connection errors; JSON extraction that tolerates fenced blocks and prose around them
and sends the parse or schema error back to the model; token and cost accounting per call and per stage
(thread-safe: the per-idea stages run concurrently); a per-run budget (``--max-cost`` in USD, and/or a token
budget) that raises :class:`BudgetExceeded`; a fast connectivity probe; and redaction of API keys from every
message that may reach a log, an artifact or the run folder.

Configuration (environment): ``SCIENTIST_MODEL`` (litellm model id, or ``--model``), ``SCIENTIST_API_BASE`` (else
the provider's usual variable: ``OPENAI_API_BASE``/``OPENAI_BASE_URL``, ``ANTHROPIC_API_BASE``, ``OLLAMA_API_BASE``,
``HOSTED_VLLM_API_BASE``, ...), keys from the provider's variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...;
litellm reads them itself), ``SCIENTIST_LLM_TIMEOUT`` (s, default 120), ``SCIENTIST_LLM_RETRIES`` (default 3),
``SCIENTIST_LLM_BACKOFF`` (first backoff in s, default 2, doubled each retry), ``SCIENTIST_LLM_JSON_ATTEMPTS``
(default 3), ``SCIENTIST_MAX_COST`` (USD), ``SCIENTIST_MAX_TOKENS`` (total tokens of a run),
``SCIENTIST_VISION`` (1/0: whether the model reads images, overriding litellm's model map).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jinja2

PROMPTS = Path(__file__).resolve().parents[2] / "prompts" / "llm"
STAGES = ("ideation", "novelty", "code", "writeup", "review")
# provider prefix -> environment variables holding its base URL, in order of preference
BASE_VARS = {
    "openai": ("OPENAI_API_BASE", "OPENAI_BASE_URL"),
    "text-completion-openai": ("OPENAI_API_BASE", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"),
    "ollama": ("OLLAMA_API_BASE",),
    "ollama_chat": ("OLLAMA_API_BASE",),
    "hosted_vllm": ("HOSTED_VLLM_API_BASE",),
    "openrouter": ("OPENROUTER_API_BASE",),
    "azure": ("AZURE_API_BASE",),
    "gemini": ("GEMINI_API_BASE",),
    "mistral": ("MISTRAL_API_BASE",),
    "groq": ("GROQ_API_BASE",),
    "deepseek": ("DEEPSEEK_API_BASE",),
}
# where a provider is reached when no base URL is set (for the connectivity probe only)
DEFAULT_HOSTS = {
    "openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com",
    "ollama": "http://localhost:11434", "ollama_chat": "http://localhost:11434",
    "openrouter": "https://openrouter.ai", "gemini": "https://generativelanguage.googleapis.com",
    "mistral": "https://api.mistral.ai", "groq": "https://api.groq.com", "deepseek": "https://api.deepseek.com",
}
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


class LLMError(RuntimeError):
    """A model call failed for good (after its retries), or its reply never became valid."""


class LLMUnreachable(LLMError):
    """The model's server cannot be reached at all (connectivity probe)."""


class BudgetExceeded(LLMError):
    """The run's cost or token budget is spent; the run stops cleanly, keeping what it finished."""

    stops_run = True  # no stage falls back to its offline version on this (e.g. the research tree's proposals)


# ---------------------------------------------------------------------------------------------------------- secrets
def _secrets() -> list[str]:
    return sorted({v for k, v in os.environ.items() if SECRET_NAME.search(k) and v and len(v) >= 6}, key=len,
                  reverse=True)


def redact(text: Any) -> str:
    """``text`` with the value of every key-like environment variable (``*_KEY``, ``*TOKEN*``, ...) masked."""
    out = str(text)
    for secret in _secrets():
        out = out.replace(secret, "***")
    return re.sub(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}", r"\1-***", out)


def safe_url(url: str | None) -> str | None:
    """A URL without user:password and without a query string (either may carry a key)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# ------------------------------------------------------------------------------------------------------------ config
def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    return float(value)


def provider_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Where and how to call the model; no key is stored here (litellm reads keys from the environment)."""

    model: str
    api_base: str | None = None
    timeout_s: float = 120.0
    retries: int = 3
    backoff_s: float = 2.0
    json_attempts: int = 3
    max_cost_usd: float | None = None
    max_tokens_total: int | None = None
    temperature: float = 0.7
    max_tokens: int = 4096

    @classmethod
    def from_env(cls, model: str | None = None, max_cost_usd: float | None = None,
                 max_tokens_total: int | None = None) -> LLMConfig:
        model = model or os.environ.get("SCIENTIST_MODEL")
        if not model:
            raise LLMError("no model: pass --model or set SCIENTIST_MODEL")
        base = os.environ.get("SCIENTIST_API_BASE") or None
        if base is None:
            for var in BASE_VARS.get(provider_of(model), ()):
                if os.environ.get(var):
                    base = os.environ[var]
                    break
        cost = max_cost_usd if max_cost_usd is not None else _env_float("SCIENTIST_MAX_COST", None)
        tokens = max_tokens_total if max_tokens_total is not None else _env_float("SCIENTIST_MAX_TOKENS", None)
        return cls(
            model=model, api_base=base, timeout_s=_env_float("SCIENTIST_LLM_TIMEOUT", 120.0),
            retries=int(_env_float("SCIENTIST_LLM_RETRIES", 3)), backoff_s=_env_float("SCIENTIST_LLM_BACKOFF", 2.0),
            json_attempts=int(_env_float("SCIENTIST_LLM_JSON_ATTEMPTS", 3)), max_cost_usd=cost,
            max_tokens_total=int(tokens) if tokens is not None else None,
            temperature=_env_float("SCIENTIST_LLM_TEMPERATURE", 0.7),
            max_tokens=int(_env_float("SCIENTIST_LLM_MAX_TOKENS", 4096)),
        )

    def public(self) -> dict:
        """What run.json records of the configuration (no key; the base URL without credentials)."""
        d = dataclasses.asdict(self)
        d["api_base"] = safe_url(self.api_base)
        return d


def probe(config: LLMConfig, timeout_s: float | None = None) -> None:
    """Raise :class:`LLMUnreachable` (one clear line) if the model's server does not accept a TCP connection.

    The probe opens (and closes) one TCP connection to the base URL's host, with a short timeout; it never sends
    a request, so it costs nothing. A provider with no known host and no base URL is not probed.
    """
    url = config.api_base or DEFAULT_HOSTS.get(provider_of(config.model))
    if not url:
        return
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    timeout = timeout_s if timeout_s is not None else min(5.0, config.timeout_s)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            why = f"no answer within {timeout:g} s"
        raise LLMUnreachable(
            f"cannot reach the model server for {config.model} at {safe_url(url)} ({why}); "
            "check --model / SCIENTIST_MODEL and the API base URL, or unset the model for the offline backend"
        ) from None


# -------------------------------------------------------------------------------------------------------- accounting
class Ledger:
    """Tokens, calls and cost per stage, thread-safe, with the run's budget."""

    def __init__(self, model: str, max_cost_usd: float | None = None, max_tokens_total: int | None = None):
        self.model = model
        self.max_cost_usd = max_cost_usd
        self.max_tokens_total = max_tokens_total
        self._lock = threading.Lock()
        self.stages: dict[str, dict] = {}
        self.exceeded: str | None = None
        self.failures = 0

    def load(self, previous: dict | None) -> None:
        """Continue a resumed run's accounting from its run.json."""
        if not previous:
            return
        with self._lock:
            for stage, row in (previous.get("stages") or {}).items():
                self.stages[stage] = dict(row)

    def _row(self, stage: str) -> dict:
        return self.stages.setdefault(stage, {"calls": 0, "failed_calls": 0, "prompt_tokens": 0,
                                              "completion_tokens": 0, "total_tokens": 0, "cost_usd": 0.0,
                                              "cost_known": True})

    def totals(self) -> dict:
        with self._lock:
            return self._totals()

    def _totals(self) -> dict:
        keys = ("calls", "failed_calls", "prompt_tokens", "completion_tokens", "total_tokens")
        out = {k: sum(int(r.get(k, 0)) for r in self.stages.values()) for k in keys}
        out["cost_usd"] = round(sum(float(r.get("cost_usd", 0.0)) for r in self.stages.values()), 6)
        out["cost_known"] = all(r.get("cost_known", True) for r in self.stages.values())
        return out

    def check(self) -> None:
        """Raise :class:`BudgetExceeded` if the budget is already spent (called before every request)."""
        with self._lock:
            if self.exceeded:
                raise BudgetExceeded(self.exceeded)
            t = self._totals()
            reason = self._over(t)
            if reason:
                self.exceeded = reason
                raise BudgetExceeded(reason)

    def _over(self, t: dict) -> str | None:
        if self.max_cost_usd is not None and t["cost_usd"] >= self.max_cost_usd:
            return f"cost budget spent: ${t['cost_usd']:.4f} of --max-cost ${self.max_cost_usd:g}"
        if self.max_tokens_total is not None and t["total_tokens"] >= self.max_tokens_total:
            return f"token budget spent: {t['total_tokens']} of {self.max_tokens_total} tokens"
        return None

    def record(self, stage: str, prompt_tokens: int, completion_tokens: int, cost: float | None) -> None:
        with self._lock:
            row = self._row(stage)
            row["calls"] += 1
            row["prompt_tokens"] += int(prompt_tokens)
            row["completion_tokens"] += int(completion_tokens)
            row["total_tokens"] += int(prompt_tokens) + int(completion_tokens)
            if cost is None:
                row["cost_known"] = False
            else:
                row["cost_usd"] = round(row["cost_usd"] + float(cost), 8)
            reason = self._over(self._totals())
            if reason and not self.exceeded:
                self.exceeded = reason

    def record_failure(self, stage: str) -> None:
        with self._lock:
            self._row(stage)["failed_calls"] += 1

    def to_dict(self) -> dict:
        with self._lock:
            return {
                "model": self.model, "stages": {k: dict(v) for k, v in self.stages.items()}, "total": self._totals(),
                "budget": {"max_cost_usd": self.max_cost_usd, "max_tokens": self.max_tokens_total},
                "budget_exceeded": self.exceeded,
            }

    def markdown(self) -> str:
        d = self.to_dict()
        lines = [f"# LLM usage ({d['model']})", "",
                 "| stage | calls | failed | prompt tokens | completion tokens | cost (USD) |", "|---|---|---|---|---|---|"]
        for stage, r in list(d["stages"].items()) + [("total", d["total"])]:
            cost = f"{r['cost_usd']:.4f}" if r.get("cost_known", True) else f"{r['cost_usd']:.4f} (unknown model price)"
            lines.append(f"| {stage} | {r['calls']} | {r['failed_calls']} | {r['prompt_tokens']} | "
                         f"{r['completion_tokens']} | {cost} |")
        if d["budget_exceeded"]:
            lines += ["", f"**Stopped: {d['budget_exceeded']}**"]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------- JSON
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)```", re.DOTALL)


class JSONReplyError(ValueError):
    """A reply that holds no valid JSON (or not the required fields); the message goes back to the model."""


def extract_json(text: str | None) -> Any:
    """The JSON value in a reply: a fenced ```json block, a bare one, or the first object/array in the prose."""
    if text is None or not str(text).strip():
        raise JSONReplyError("the reply was empty")
    text = str(text)
    candidates = [body for lang, body in FENCE.findall(text) if lang.lower() in ("json", "")]
    candidates.append(text)
    decoder = json.JSONDecoder()
    first_error = None
    for chunk in candidates:
        chunk = chunk.strip()
        for i, ch in enumerate(chunk):
            if ch not in "{[":
                continue
            try:
                value, _ = decoder.raw_decode(chunk, i)
                return value
            except json.JSONDecodeError as exc:
                first_error = first_error or exc
                # only the first opening bracket of each chunk is the model's attempt; keep scanning for a later one
    if first_error is not None:
        raise JSONReplyError(f"the JSON could not be parsed: {first_error.msg} at line {first_error.lineno} "
                             f"column {first_error.colno}")
    raise JSONReplyError("the reply holds no JSON object")


_TYPES = {"str": str, "int": int, "number": (int, float), "list": list, "bool": bool, "dict": dict}


def check_schema(value: Any, required: dict[str, str] | None) -> dict:
    """``value`` must be an object with every ``required`` field of the given kind ("str", "int", "number",
    "list", "bool", "dict", "score" = a number 1..10, "any")."""
    if not isinstance(value, dict):
        raise JSONReplyError(f"expected a JSON object, got a {type(value).__name__}")
    if not required:
        return value
    problems = []
    for field_name, kind in required.items():
        if field_name not in value or value[field_name] is None:
            problems.append(f"missing field {field_name!r}")
            continue
        v = value[field_name]
        if kind == "any":
            continue
        if kind == "score":
            try:
                num = float(v)
            except (TypeError, ValueError):
                problems.append(f"field {field_name!r} must be a number, got {v!r}")
                continue
            if not 1 <= num <= 10:
                problems.append(f"field {field_name!r} must be between 1 and 10, got {v!r}")
            continue
        if kind == "str" and (not isinstance(v, str) or not v.strip()):
            problems.append(f"field {field_name!r} must be a non-empty string")
        elif kind != "str" and not isinstance(v, _TYPES[kind]) or (kind in ("int", "number") and isinstance(v, bool)):
            problems.append(f"field {field_name!r} must be of type {kind}, got {type(v).__name__}")
    if problems:
        raise JSONReplyError("; ".join(problems))
    return value


# ----------------------------------------------------------------------------------------------------------- prompts
_ENVS: dict[tuple[str, str | None], jinja2.Environment] = {}


def _prompt_env(template_name: str | None) -> jinja2.Environment:
    """Jinja2 over ``prompts/templates/<template_name>/llm/`` then ``prompts/llm/`` (one per prompts root and name)."""
    from tasks.runtime import text as layers

    key = (str(layers.PROMPTS), template_name)
    if key not in _ENVS:
        env = jinja2.Environment(loader=layers.loader("llm", template_name), undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, autoescape=False)
        env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)
        _ENVS[key] = env
    return _ENVS[key]


def render(name: str, template_name: str | None = None, **ctx: Any) -> str:
    """A prompt of ``prompts/llm/`` (or the research template's override of it), rendered with Jinja2.

    ``template_name`` selects the layer ``prompts/templates/<template_name>/llm/``; undefined variables are errors.
    """
    return _prompt_env(template_name).get_template(name).render(**ctx).strip()


# ------------------------------------------------------------------------------------------------------------ client
def _retryable(exc: Exception) -> bool:
    import litellm

    retry = (litellm.RateLimitError, litellm.InternalServerError, litellm.ServiceUnavailableError,
             litellm.APIConnectionError, litellm.Timeout)
    if isinstance(exc, retry):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


def user_content(prompt: str, images: list[str] | None = None) -> str | list[dict]:
    """A user message's content: the prompt, or with ``images`` (PNG paths) a list of content parts, the text
    first and each image as a base64 ``data:image/png`` URL (the OpenAI form, which litellm maps per provider)."""
    if not images:
        return prompt
    import base64

    return [{"type": "text", "text": prompt}] + [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                            + base64.b64encode(Path(p).read_bytes()).decode("ascii")}}
        for p in images]


def takes_images(model: str) -> bool | None:
    """Whether ``model`` reads images: ``SCIENTIST_VISION`` (1/0) if set, else litellm's model map; None when
    unknown (a local Ollama or vLLM model, an unmapped name): then the caller tries and falls back on failure."""
    flag = os.environ.get("SCIENTIST_VISION", "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    if provider_of(model) in ("ollama", "ollama_chat", "hosted_vllm"):
        return None
    import litellm

    try:
        return bool(litellm.get_model_info(model).get("supports_vision"))
    except Exception:  # noqa: BLE001 - litellm does not know the model
        return None


class LLMClient:
    """``complete`` (text) and ``complete_json`` (validated JSON) over litellm, accounted per stage."""

    def __init__(self, config: LLMConfig, ledger: Ledger | None = None):
        self.config = config
        self.ledger = ledger or Ledger(config.model, config.max_cost_usd, config.max_tokens_total)
        self.transcripts: list[dict] = []
        self._lock = threading.Lock()

    def system(self) -> str:
        return render("system.j2")

    def _call(self, messages: list[dict], stage: str) -> str:
        import litellm

        litellm.suppress_debug_info = True  # no "Provider List" banners on stdout for models without a price
        cfg = self.config
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            self.ledger.check()
            kwargs = {"model": cfg.model, "messages": messages, "timeout": cfg.timeout_s,
                      "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "num_retries": 0, "max_retries": 0}
            if cfg.api_base:
                kwargs["api_base"] = cfg.api_base
            try:
                response = litellm.completion(**kwargs)
            except Exception as exc:  # noqa: BLE001 - classified below; anything else is not retried
                self.ledger.record_failure(stage)
                last = exc
                if not _retryable(exc) or attempt == cfg.retries:
                    break
                time.sleep(cfg.backoff_s * (2 ** attempt))
                continue
            usage = getattr(response, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            try:
                cost = float(litellm.completion_cost(completion_response=response, model=cfg.model))
            except Exception:  # noqa: BLE001 - litellm does not know this model's price: tokens only
                cost = None
            self.ledger.record(stage, prompt_tokens, completion_tokens, cost)
            try:
                content = response.choices[0].message.content
            except (AttributeError, IndexError):
                content = None
            return content or ""
        kind = type(last).__name__
        msg = redact(str(last).splitlines()[0] if str(last) else kind)[:300]
        raise LLMError(f"{stage}: the model call failed after {attempt + 1} attempt(s): {kind}: {msg}")

    def complete(self, prompt: str, stage: str, history: list[dict] | None = None,
                 images: list[str] | None = None) -> tuple[str, list[dict]]:
        """One reply to ``prompt`` (after ``history``); returns the text and the conversation including it.
        ``images`` (PNG files) go with the prompt as OpenAI-style ``image_url`` parts (:func:`user_content`)."""
        messages = list(history) if history else [{"role": "system", "content": self.system()}]
        messages.append({"role": "user", "content": user_content(prompt, images)})
        text = self._call(messages, stage)
        messages.append({"role": "assistant", "content": text})
        return text, messages

    def complete_json(self, prompt: str, stage: str, required: dict[str, str] | None = None,
                      history: list[dict] | None = None, validate=None,
                      images: list[str] | None = None) -> tuple[Any, list[dict]]:
        """A JSON reply with the ``required`` fields; parse/schema errors go back to the model, at most
        ``json_attempts`` replies; ``validate(value)`` may raise :class:`JSONReplyError` for further checks."""
        text, messages = self.complete(prompt, stage, history, images)
        for attempt in range(self.config.json_attempts):
            try:
                value = extract_json(text)
                if required is not None:
                    check_schema(value, required)
                if validate is not None:
                    value = validate(value)
                return value, messages
            except JSONReplyError as exc:
                if attempt == self.config.json_attempts - 1:
                    raise LLMError(f"{stage}: no valid JSON after {attempt + 1} replies: {exc}") from None
                feedback = render("json_feedback.j2", error=str(exc), required=list(required or {}))
                text, messages = self.complete(feedback, stage, messages)
        raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------- the active one
_ACTIVE: LLMClient | None = None
_ACTIVE_LOCK = threading.Lock()


def activate(client: LLMClient | None) -> None:
    """Make ``client`` the one the LLM stages of this process use (None: none)."""
    global _ACTIVE
    with _ACTIVE_LOCK:
        _ACTIVE = client


def active(model: str | None = None) -> LLMClient:
    """The active client; if none is active (a task run on its own), one is made from the environment."""
    global _ACTIVE
    with _ACTIVE_LOCK:
        if _ACTIVE is None or (model and _ACTIVE.config.model != model):
            _ACTIVE = LLMClient(LLMConfig.from_env(model))
        return _ACTIVE


def start_for_run(run, model: str, max_cost: float | None = None) -> LLMClient:
    """A run's client (``run`` is a :class:`tasks.runtime.runfolder.RunFolder`): configured from the environment, its server
    probed, its accounting resumed from ``run.json``, and made the active one."""
    from tasks.runtime.runfolder import read_json

    config = LLMConfig.from_env(model, max_cost)
    run.update_run_json(llm_config=config.public())
    probe(config)
    client = LLMClient(config)
    client.ledger.load((read_json(run.run_json, {}) or {}).get("llm"))
    activate(client)
    return client
