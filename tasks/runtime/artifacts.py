"""What a researcher sees of a run in the Prefect UI: its results, figures, papers, archive and progress.

Every function here publishes Prefect artifacts and must be called inside a flow or task run (the artifacts
belong to that run); outside one it does nothing. The keys (lower case, dashes) are stable, so the UI's
Artifacts page shows the latest version of each:

* ``results``: a table, one row per idea and setting: the candidate's mean, the best baseline's, the difference
  in the metric's direction and whether it is significant;
* ``figures``: a markdown artifact with each idea's learning curves embedded (a PNG as a data URI, so the
  browser needs no access to the run folder);
* ``paper-<idea>``: a link artifact to the idea's PDF (``file://``) with its path as the text;
* ``archive``: the open-ended archive's rows of this template, as a table, and ``lineage``: its tree as a figure;
* ``experiment-progress``: a progress artifact, units done of the total (:class:`Progress`).

Reporting is best effort: a run's work never waits on its Prefect server. :data:`SERVER` watches the API
(a cheap ``/health`` probe, backing off while it fails, shared by the whole process); every artifact call goes
through :func:`best_effort` (skipped while the server is unreachable, given up after ``REPORT_TIMEOUT_S``), and
while the server is lost Prefect's own calls (logs, task and flow states) fail fast instead of retrying for a
minute each (``PREFECT_CLIENT_MAX_RETRIES`` is 0 until the server answers again).
"""

from __future__ import annotations

import base64
import contextvars
import logging
import queue
import sys
import threading
import time
import urllib.request
from pathlib import Path

import prefect.context
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events.clients import NullEventsClient
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_API_URL, get_current_settings

log = logging.getLogger(__name__)
REPORT_TIMEOUT_S = 5.0  # the longest a report to the UI may hold up the run
PROBE_TIMEOUT_S = 5.0  # generous: a busy machine's server may be slow, a dead one refuses at once
RECHECK_S = 5.0  # a reachable server is probed again before a report after this long
BACKOFF_S = (5.0, 10.0, 20.0, 30.0)  # an unreachable one after these waits (then every 30 s)


class ServerWatch:
    """Whether this process's Prefect API answers: ``GET <PREFECT_API_URL>/health`` with a short timeout, probed at
    most every ``RECHECK_S`` while it answers and with a back-off while it does not. A process without
    ``PREFECT_API_URL`` (Prefect's temporary server, a child of this process) is taken as reachable.

    While the server is lost the Prefect client of this process makes no retries (``client.max_retries`` 0 in the
    settings), so the flow engine's own calls fail at once instead of retrying for about a minute each, and its
    events go nowhere (:func:`_events`); the first probe that succeeds restores both.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._checked = 0.0
        self._failures = 0
        self._saved_retries: list[tuple[object, int]] = []

    @staticmethod
    def api_url() -> str | None:
        return PREFECT_API_URL.value() or None

    @property
    def lost(self) -> bool:
        return self.down_since is not None

    def reachable(self, probe: bool = True, force: bool = False) -> bool:
        """Whether reports should be sent now (``probe=False``: the last known answer, never a network call;
        ``force``: probe now, whenever the last probe was)."""
        with self._lock:
            now = time.time()
            if not probe or (now < self._checked and not force):
                return self.down_since is None
            url = self.api_url()
            if url is None:
                return True
            self._checked = now + (RECHECK_S if self.down_since is None else
                                   BACKOFF_S[min(self._failures, len(BACKOFF_S) - 1)])
        ok = self._probe(url)
        (self._up if ok else self.mark_down)()
        return ok

    @staticmethod
    def _probe(url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S) as reply:
                return reply.status == 200
        except Exception:  # noqa: BLE001 - any failure means: not reachable now
            return False

    def mark_down(self) -> None:
        """The server did not answer: skip reports and fail Prefect's calls fast until a probe succeeds."""
        with self._lock:
            self._failures += 1
            self._checked = time.time() + BACKOFF_S[min(self._failures - 1, len(BACKOFF_S) - 1)]
            if self.down_since is not None:
                return
            self.down_since = time.time()
            self._saved_retries = [(s, s.client.max_retries) for s in _prefect_settings()]
            for settings, _ in self._saved_retries:
                settings.client.max_retries = 0
            _events(off=True)
        log.warning("the Prefect server %s does not answer: the run goes on without reporting to it", self.api_url())

    def _up(self) -> None:
        with self._lock:
            self._failures = 0
            if self.down_since is None:
                return
            self.down_since = None
            for settings, retries in self._saved_retries:
                settings.client.max_retries = retries
            self._saved_retries = []
            _events(off=False)
        log.warning("the Prefect server %s answers again: reporting to it again", self.api_url())

    def filter(self, record: logging.LogRecord) -> bool:
        """A logging filter for Prefect's API log handler: no log line goes to a server known to be lost."""
        return self.down_since is None

    def quiet(self, record: logging.LogRecord) -> bool:
        """A logging filter for the flow engine: no traceback of its failing to reach a server known to be lost
        (the command says so in one line)."""
        import httpx

        error = record.exc_info[1] if record.exc_info else None
        return not (self.down_since is not None and isinstance(error, httpx.TransportError))

    def watch_logs(self) -> None:
        """Filter every Prefect API log handler of this process through :meth:`filter`, and the flow engine's
        log through :meth:`quiet` (idempotent)."""
        engine = logging.getLogger("prefect.flow_runs")
        if self.quiet not in engine.filters:
            engine.addFilter(self.quiet)
        loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                           if isinstance(lg, logging.Logger)]
        for logger in loggers:
            for handler in logger.handlers:
                if isinstance(handler, APILogHandler) and self not in handler.filters:
                    handler.addFilter(self)


def _prefect_settings() -> list:
    """The settings objects Prefect's client reads in this process: the current context's and the global one."""
    found = [get_current_settings(), prefect.context.GLOBAL_SETTINGS_CONTEXT.settings]
    return [s for i, s in enumerate(found) if all(s is not t for t in found[:i])]


def _events(off: bool) -> None:
    """Prefect's events (task run states) to nowhere while the server is lost, and its pending ones dropped: its
    events worker tries some seconds to reconnect per event, and waits for them all when the process exits."""
    try:
        EventsWorker.set_client_override(NullEventsClient if off else None)
        if not off:
            return
        for worker in list(EventsWorker._instances.values()):
            if isinstance(worker, EventsWorker) and worker.client_type is not NullEventsClient:
                while True:
                    try:
                        item = worker._queue.get_nowait()
                    except queue.Empty:
                        break
                    worker._queue.task_done()
                    if item is None:  # already stopping: keep its stop signal
                        worker._queue.put_nowait(None)
                        break
                worker._stop()
    except Exception as exc:  # noqa: BLE001 - Prefect's internals changed: its events then only take longer
        log.debug("Prefect's events not redirected: %s", exc)


SERVER = ServerWatch()


def best_effort(call, *args, **kwargs):
    """``call(*args, **kwargs)`` (a report to the Prefect API, in the caller's Prefect context), or None: skipped
    while :data:`SERVER` is unreachable, left to finish in the background after ``REPORT_TIMEOUT_S`` (and the
    server probed), any error only logged. The run never waits much longer than that on its UI."""
    if not SERVER.reachable():
        return None
    context = contextvars.copy_context()
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = context.run(call, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a report must never stop a run
            box["error"] = exc

    worker = threading.Thread(target=run, name="prefect-report", daemon=True)
    worker.start()
    worker.join(REPORT_TIMEOUT_S)
    if worker.is_alive():  # slow (it finishes in the background) or lost (the probe says which)
        SERVER.reachable(force=True)
        return None
    if "error" in box:
        log.debug("report to the Prefect server failed: %s", box["error"])
        SERVER.reachable(force=True)
    return box.get("value")


def markdown(**kwargs):
    """``prefect.artifacts.create_markdown_artifact`` through :func:`best_effort`."""
    return best_effort(create_markdown_artifact, **kwargs)


def table(**kwargs):
    """``prefect.artifacts.create_table_artifact`` through :func:`best_effort`."""
    return best_effort(create_table_artifact, **kwargs)


def link(**kwargs):
    """``prefect.artifacts.create_link_artifact`` through :func:`best_effort`."""
    return best_effort(create_link_artifact, **kwargs)


def _key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _num(value) -> float | None:
    try:
        return None if value is None else round(float(value), 4)
    except (TypeError, ValueError):
        return None


def results_rows(ideas: list[dict]) -> list[dict]:
    """One row per (idea, setting) of the ideas that have results."""
    rows = []
    for idea in ideas:
        for setting, info in (idea.get("final_info") or {}).items():
            cmp = info.get("comparison") or {}
            best = cmp.get("best_baseline")
            rows.append({
                "idea": idea["Name"], "setting": setting, "held_out": bool(info.get("held_out")),
                "candidate_mean": _num((info.get("means") or {}).get(idea["Name"])),
                "best_baseline": best, "baseline_mean": _num((info.get("means") or {}).get(best)),
                "improvement": _num(cmp.get("improvement")), "p_value": _num(cmp.get("p_value")),
                "significant": bool(cmp.get("significant")),
                "verdict": "better" if cmp.get("better") else "worse" if cmp.get("worse") else "no significant difference",
            })
    return rows


def _figure_markdown(idea: dict, run_path: Path) -> str:
    figures = run_path / "ideas" / idea["Name"] / "figures"
    parts = []
    for png in sorted(figures.glob("*.png"))[:3]:
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"**{png.stem.replace('_', ' ')}** (`{png}`)\n\n![{png.stem}](data:image/png;base64,{data})\n")
    return f"## {idea['Name']}\n\n" + "\n".join(parts) if parts else ""


def publish_results(run_id: str, run_path: Path, ideas: list[dict]) -> None:
    """The ``results`` table, the ``figures`` markdown and one ``paper-<idea>`` link per PDF."""
    if not _in_run():
        return
    rows = results_rows(ideas)
    if rows:
        table(key="results", table=rows, description=f"Results of {run_id}: candidate vs best "
                              "baseline per setting (improvement in the metric's direction)")
    figures = [m for m in (_figure_markdown(i, run_path) for i in ideas if i.get("final_info")) if m]
    if figures:
        markdown(key="figures", markdown=f"# Figures of {run_id}\n\n" + "\n".join(figures),
                                 description=f"Figures of {run_id}")
    for idea in ideas:
        pdf = (idea.get("paper") or {}).get("pdf")
        if pdf:
            link(key=_key(f"paper-{idea['Name']}"), link=Path(pdf).resolve().as_uri(),
                                 link_text=str(pdf), description=f"PDF of {idea['Name']} ({run_id})")


def publish_archive(run_id: str, rows: list[dict], lineage: dict | None = None) -> None:
    """The archive (every candidate of earlier runs and this one) as the ``archive`` table, and its lineage figure
    (``lineage``: which candidate came from which, with its advantage) embedded as a PNG."""
    if not _in_run() or not rows:
        return
    keep = ("run_id", "idea", "parent", "title", "train_mean", "advantage", "overall")
    rows_out = [{k: (_num(r.get(k)) if isinstance(r.get(k), float) else r.get(k)) for k in keep} for r in rows]
    table(key="archive", table=rows_out, description=f"The open-ended archive after {run_id}")
    if lineage and Path(lineage["png"]).exists():
        data = base64.b64encode(Path(lineage["png"]).read_bytes()).decode()
        markdown(
            key="lineage", description=f"Lineage of the archive after {run_id}",
            markdown=f"# Lineage of the archive after {run_id}\n\n{lineage['nodes']} nodes, {lineage['edges']} "
                     f"derived from a parent (`{lineage['png']}`)\n\n![lineage](data:image/png;base64,{data})\n")


class Progress:
    """A Prefect progress artifact (0-100 %) plus, on a terminal, one self-overwriting line on stderr.

    ``update(done)`` is cheap to call often: the artifact is updated at most once a second and on the last unit.
    Outside a flow or task run only the terminal line is shown; when stderr is not a terminal, only the artifact.
    """

    def __init__(self, total: int, label: str, key: str = "progress"):
        self.total, self.label, self.done = max(int(total), 1), label, 0
        self.tty = sys.stderr.isatty()
        self.artifact_id = None
        self._last = 0.0
        if _in_run():
            self.artifact_id = best_effort(create_progress_artifact, progress=0.0, key=_key(key),
                                           description=f"{label}: 0 of {self.total}")

    def update(self, done: int) -> None:
        self.done = min(int(done), self.total)
        if self.tty:
            end = "\n" if self.done >= self.total else ""
            print(f"\r\x1b[K{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%)", end=end,
                  file=sys.stderr, flush=True)
        now = time.time()
        if self.artifact_id is not None and (now - self._last >= 1.0 or self.done >= self.total):
            self._last = now
            best_effort(update_progress_artifact, self.artifact_id, progress=100.0 * self.done / self.total,
                        description=f"{self.label}: {self.done} of {self.total}")
