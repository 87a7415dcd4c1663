"""An OpenAI-compatible chat-completions server on 127.0.0.1 that replies from a script (ARCHITECTURE.md section 8).

``ScriptedServer(script)``: ``script(request) -> reply`` is called for every ``POST .../chat/completions``; a reply
is a string (the assistant's content), or a dict: ``{"status": 429}`` (an HTTP error), ``{"sleep": s, "content":
...}`` (a late answer), ``{"hang": True}`` (never answers within any test timeout). A message's content may be a
list of OpenAI content parts; the images of each request (``image_url`` parts) are kept in ``images`` (one list of
data URLs per request) so that a test can assert what the model was shown. Usage counts are computed from
the text (4 characters a token), so every call has real, deterministic token numbers. The same server answers
Semantic Scholar's ``/s2/paper/search`` from ``papers`` (a list of S2 paper dicts), for the literature client.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FAKE_KEY = "sk-fake-test-key-4f1c9a7e2b8d4e55"  # the API key of every test; it must never be written anywhere


def run_env(base: dict | None = None, **extra) -> dict:
    """The environment of a ``scientist run`` subprocess that talks to a scripted server: ``base`` (default: this
    process's) without a model, a server or a Prefect API of its own, the fake key, fast literature/LLM backoff."""
    drop = ("OPENAI_API_BASE", "SCIENTIST_MODEL", "PREFECT_API_URL")
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in drop}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", OPENAI_API_KEY=FAKE_KEY, SCIENTIST_LLM_BACKOFF="0.05",
               SCIENTIST_LIT_CONNECT_TIMEOUT="1", SCIENTIST_LIT_BACKOFF="0.05", **extra)
    return env


def files_holding(folder, needle: str) -> list[str]:
    """The files under ``folder`` whose bytes contain ``needle`` (an API key must be in none of them)."""
    return [str(p) for p in Path(folder).rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def babbler(request: dict) -> str:
    """A model that never answers in the form asked: no JSON, no code block."""
    return "I am sorry, I would rather talk about the weather today."


REFUSAL = "I am unable to help with that."
BROKEN_JSON = '```json\n{"Name": "x", "Title": \n```'


def garbage(request: dict) -> str:
    """A model that answers refusals and broken JSON (and nothing at all for a paper's method section)."""
    stage = stage_of(request)
    if stage.startswith("writeup") and 'section "Method"' in stage:
        return ""
    if stage.startswith("writeup") and 'section "Abstract"' in stage:
        return REFUSAL
    return REFUSAL if len(last_user(request)) % 2 else BROKEN_JSON


def text_of(content) -> str:
    """The text of a message's content: a string, or the text parts of a list of content parts."""
    if isinstance(content, list):
        return "\n".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def images_of(request: dict) -> list[str]:
    """The image URLs (``data:image/png;base64,...``) of a request's messages."""
    return [p["image_url"]["url"] if isinstance(p.get("image_url"), dict) else p.get("image_url")
            for m in request.get("messages", []) if isinstance(m.get("content"), list)
            for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url"]


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


def stage_of(request: dict) -> str:
    """The ``Stage: ...`` line of the last user message (every prompt of prompts/llm starts with one)."""
    for m in reversed(request.get("messages", [])):
        if m.get("role") == "user":
            found = re.search(r"^Stage: (.+)$", text_of(m.get("content")), re.MULTILINE)
            return found.group(1) if found else ""
    return ""


def last_user(request: dict) -> str:
    return next((text_of(m["content"]) for m in reversed(request["messages"]) if m["role"] == "user"), "")


class ScriptedServer:
    def __init__(self, script, papers: list[dict] | None = None):
        self.script = script
        self.papers = papers or []
        self.requests: list[dict] = []
        self.images: list[list[str]] = []
        self.headers: list[dict] = []
        self.s2_queries: list[str] = []
        self.s2_errors: list[int] = []  # HTTP statuses the literature endpoint answers first, in order
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                if url.path.endswith("/paper/search"):
                    q = parse_qs(url.query).get("query", [""])[0]
                    outer.s2_queries.append(q)
                    if outer.s2_errors:
                        self._send(outer.s2_errors.pop(0), {"message": "Too Many Requests"})
                        return
                    self._send(200, {"total": len(outer.papers), "data": outer.papers})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append(request)
                outer.images.append(images_of(request))
                outer.headers.append(dict(self.headers))
                reply = outer.script(request)
                if isinstance(reply, dict) and reply.get("hang"):
                    outer._stop.wait(reply.get("seconds", 30))
                    return
                if isinstance(reply, dict) and reply.get("sleep"):
                    time.sleep(reply["sleep"])
                if isinstance(reply, dict) and reply.get("status"):
                    self._send(reply["status"], {"error": {"message": reply.get("message", "scripted error"),
                                                           "type": "server_error", "code": reply["status"]}})
                    return
                content = reply.get("content", "") if isinstance(reply, dict) else reply
                prompt = "".join(text_of(m.get("content")) for m in request.get("messages", []))
                p, c = tokens(prompt), tokens(content or "x")
                self._send(200, {
                    "id": f"chatcmpl-{len(outer.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": request.get("model", "test-model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def stages(self) -> list[str]:
        return [stage_of(r) for r in self.requests]


# ---- a script that plays a sensible researcher for every stage -----------------------------------------------

DRIFT_SOURCE = '''import jax
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    """Asymmetric clip drift whose trust region tightens over training."""
    clipped = jnp.clip(ratio, 0.7, 1.4)
    scale = 0.5 + progress
    return scale * jax.nn.relu((ratio - clipped) * advantage)
'''

IDEA = {"Name": "tightening_asymmetric_clip", "Title": "A Tightening Asymmetric Trust Region for Mirror Learning",
        "Hypothesis": "An asymmetric clip range that tightens with training progress explores early and settles late.",
        "Experiment": "Implement the drift, train PPO on Empty-5x5, evaluate on held-out grids.",
        "Interestingness": 6, "Feasibility": 9, "Novelty": 5}

REVIEW = {"Summary": "The paper proposes a tightening asymmetric clip drift.", "Strengths": ["clear", "honest stats"],
          "Weaknesses": ["few seeds", "small environments"], "Originality": 2, "Quality": 2, "Clarity": 3,
          "Significance": 2, "Questions": ["Why 0.7 and 1.4?"], "Limitations": ["two seeds"],
          "Ethical Concerns": False, "Soundness": 2, "Presentation": 3, "Contribution": 2, "Overall": 4,
          "Confidence": 3, "Decision": "Reject"}

# the results of one lpo setting with two seeds (the paper and review tests' final_info.json)
FINAL_INFO = {
    "empty5": {"means": {"ppo_clip": 0.90, "idea": 0.92}, "stderrs": {"ppo_clip": 0.01, "idea": 0.01},
               "n": {"ppo_clip": 2, "idea": 2}, "ci95": {"ppo_clip": [0.8, 1.0], "idea": [0.82, 1.02]},
               "held_out": False,
               "comparison": {"candidate": "idea", "best_baseline": "ppo_clip", "difference": 0.02,
                              "ci95": [-0.1, 0.14], "p_value": 0.4, "significant": False}},
}

S2_PAPERS = [
    {"paperId": "p1", "title": "Discovered Policy Optimisation", "year": 2022, "venue": "NeurIPS",
     "authors": [{"name": "Chris Lu"}, {"name": "Jakub Kuba"}], "abstract": "We meta-learn a drift function.",
     "citationCount": 100, "url": "https://example.org/p1"},
    {"paperId": "p2", "title": "Asymmetric Trust Regions for Policy Gradients", "year": 2021, "venue": "ICML",
     "authors": [{"name": "Ada Example"}], "abstract": "Asymmetric clipping in PPO.", "citationCount": 3,
     "url": "https://example.org/p2"},
]


def fenced(obj) -> str:
    return "Here it is:\n```json\n" + json.dumps(obj, indent=1) + "\n```\n"


def researcher(request: dict) -> str:
    """Replies for every stage of the pipeline, chosen by the prompt's ``Stage:`` line."""
    stage = stage_of(request)
    text = last_user(request)
    if stage.startswith("ideation reflection"):
        return "I am done\n" + fenced(IDEA)
    if stage.startswith("ideation"):
        return fenced(IDEA)
    if stage.startswith("novelty"):
        if "You have not searched yet" in text:
            return fenced({"Thought": "search first", "Query": "asymmetric clipping drift mirror learning",
                           "Decision": "undecided", "Reason": ""})
        return fenced({"Thought": "closest is DPO", "Query": None, "Decision": "novel",
                       "Reason": "Discovered Policy Optimisation learns a drift but not a tightening asymmetric clip."})
    if stage.startswith("code"):
        return f"```python\n{DRIFT_SOURCE}```\nLaTeX: (0.5 + \\tfrac{{n}}{{N}})\\,\\max(0, (r - \\mathrm{{clip}}(r, 0.7, 1.4))A)\n"
    if stage.startswith("writeup"):
        section = re.search(r'section "([^"]+)"', stage).group(1)
        keys = re.findall(r"^- ([A-Za-z0-9:_-]+): ", text, re.MULTILINE)
        lit = next((k for k in keys if k.startswith("example")), "lu2022dpo")  # a paper the search returned
        return (f"```latex\nThis is the {section.lower()} section. Mirror learning \\citep{{kuba2022mirror}} "
                f"generalises PPO \\citep{{schulman2017ppo,invented2099paper}}; a learned drift is in \\citet{{{lit}}}. "
                "Figure~\\ref{fig:learning_curves} shows the curves and Table~\\ref{tab:results} the means, "
                "with 95\\% intervals; Figure~\\ref{fig:nonexistent} is not a figure.\n```")
    if stage.startswith("figure review"):
        return fenced({"shows": "curves of each method", "supports_claim": True, "unclear": []})
    if stage.startswith("latex repair"):
        return fenced({})
    if stage.startswith("review reflection"):
        return "I am done\n" + fenced(REVIEW)
    if stage.startswith(("review", "meta-review")):
        return fenced(REVIEW)
    return "I do not know this stage."
