"""One run's lifecycle, written once for ``scientist run``, ``discover`` and ``meta``: :class:`RunSession`.

Entering a session locks ``runs/<id>/`` (a second process on the id is refused), notes whether the run resumes,
and writes ``run.json``'s opening fields (the run's configuration, package versions, git revision, pid, status
``running``). Inside it a flow starts Ray in the background (:meth:`RunSession.start_ray`) and the LLM client
(:meth:`RunSession.start_llm`), times its stages (:meth:`RunSession.timed`) and ends with
:meth:`RunSession.finish` (``completed``, ``paused``, ``stopped: ...``, the flow's own word). Leaving it on an
exception records the failure (status, error, wall time, LLM usage); leaving it in any way deactivates the LLM
client, lets a Ray start in progress finish (so it shuts down whole), runs the flow's cleanups (e.g. releasing
Ray actors) and unlocks the run.

The Prefect server is the run's window, not its engine: reports to it are best effort
(``tasks.runtime.artifacts.SERVER``), so a run whose server goes away goes on at its own pace and keeps every
result in its folder; ``run.json`` then records ``prefect_server_lost``, and the command line ends with
:func:`server_lost_line` (Prefect's flow engine cannot record the run's end on a lost server).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, Self

from tasks.runtime import artifacts, llm
from tasks.runtime.runfolder import RunFolder, git_revision, new_run_id, package_versions

log = logging.getLogger(__name__)
_open: list[RunFolder] = []  # the sessions open in this process, outermost first (a discovery's paper run nests)
_outermost: RunFolder | None = None  # the run the command started, for server_lost_line


class RunStatus:
    """The words of ``run.json``'s ``status`` (a stopped run's status also says why: ``stopped: <reason>``)."""

    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITHOUT_PAPER = "completed without a paper"
    FAILED = "failed"
    PAUSED = "paused"
    FINISHED = "finished"  # a discovery run
    INTERRUPTED = "interrupted"  # a discovery run that ended on an exception

    @staticmethod
    def stopped(reason: str) -> str:
        return f"stopped: {reason}"


class RunSession:
    """``with RunSession(runs_dir, run_id, id_prefix="lpo", kind=None, **config) as s:`` one run of a flow.

    ``run_id`` None: a new id from ``id_prefix``. ``kind`` (``discovery``, ``meta-learning``; None for the
    AI-Scientist run) and ``config`` go to ``run.json`` when the session opens. ``failed_status``: the status an
    exception leaves (``failed``; a discovery run says ``interrupted``); ``record_error`` whether the error and the
    LLM usage go with it (and to ``logger``'s error line). ``s.run`` is the :class:`RunFolder`, ``s.resumed``
    whether ``run.json`` existed.
    """

    def __init__(self, runs_dir, run_id: str | None, *, id_prefix: str, kind: str | None = None,
                 failed_status: str = RunStatus.FAILED, record_error: bool = True, logger=None, **config: Any):
        self.run = RunFolder(runs_dir, run_id or new_run_id(id_prefix))
        self.logger = logger or log
        self.kind, self.config = kind, config
        self.failed_status, self.record_error = failed_status, record_error
        self.resumed = False
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.client: llm.LLMClient | None = None
        self.ray_ready: threading.Event | None = None
        self.ended = False
        self._cleanups: list[Callable[[], None]] = []
        self._failure_fields: list[Callable[[], dict]] = []

    @property
    def run_id(self) -> str:
        return self.run.run_id

    # -- opening and closing --------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        global _outermost
        self.run.lock()
        try:
            artifacts.SERVER.watch_logs()
            artifacts.SERVER.reachable(force=True)  # each run starts from what its server answers now
            if not _open:
                _outermost = self.run
            _open.append(self.run)
            self.resumed = self.run.exists()
            self.t0 = time.time()
            head = {"run_id": self.run.run_id} | ({"kind": self.kind} if self.kind else {})
            self.update(**head, **self.config, status=RunStatus.RUNNING, resumed=self.resumed,
                        versions=package_versions(), git_revision=git_revision(), pid=os.getpid())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None and not self.ended:
                self._record_failure(exc)
        finally:
            self.close()

    def _record_failure(self, exc: BaseException) -> None:
        fields: dict[str, Any] = {"status": self.failed_status, "wall_seconds": self.wall_seconds()}
        if self.record_error:
            fields["error"] = f"{type(exc).__name__}: {llm.redact(exc)}"
            if self.client is not None:
                fields["llm"] = self.client.ledger.to_dict()
        for more in self._failure_fields:
            fields.update(more())
        self.update(**fields)
        if self.record_error:
            self.logger.error("run %s failed: %s", self.run.run_id, fields["error"])

    def close(self) -> None:
        """Deactivate the LLM client, let a Ray start finish, run the cleanups (last added first), unlock."""
        try:
            if artifacts.SERVER.lost:
                self.update(prefect_server_lost={"url": artifacts.SERVER.api_url(),
                                                 "since": artifacts.SERVER.down_since})
            if self.client is not None:
                llm.activate(None)
            if self.ray_ready is not None:  # a run that stopped early: let Ray finish starting, so it shuts down whole
                self.ray_ready.wait()
            for cleanup in reversed(self._cleanups):
                cleanup()
        finally:
            if self.run in _open:
                _open.remove(self.run)
            self.run.unlock()

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """Call ``cleanup`` when the session closes (however it ends)."""
        self._cleanups.append(cleanup)

    def on_failure(self, fields: Callable[[], dict]) -> None:
        """Add ``fields()`` to ``run.json`` when the session ends on an exception (e.g. the backend's fallbacks)."""
        self._failure_fields.append(fields)

    # -- during the run -------------------------------------------------------------------------------------------

    def update(self, **fields: Any) -> dict:
        """Merge ``fields`` into ``run.json``."""
        return self.run.update_run_json(**fields)

    def wall_seconds(self) -> float:
        return time.time() - self.t0

    def start_ray(self, address: str | None = None) -> threading.Event:
        """Start (or join) Ray and warm its workers in the background (``experiments.start_ray_in_background``)."""
        from tasks import experiments

        self.ray_ready = experiments.start_ray_in_background(address)
        return self.ray_ready

    def start_llm(self, model: str, max_cost: float | None = None) -> llm.LLMClient:
        """The run's LLM client (``llm.start_for_run``: probed, its accounting resumed from ``run.json``), active
        until the session closes."""
        self.client = llm.start_for_run(self.run, model, max_cost)
        return self.client

    def llm_usage(self) -> dict:
        """``{"llm": usage}`` of the run's client, or nothing without one."""
        return {"llm": self.client.ledger.to_dict()} if self.client is not None else {}

    def check_budget(self) -> None:
        """LLM usage into ``run.json``; :class:`llm.BudgetExceeded` once the run's budget is spent."""
        if self.client is not None:
            self.update(llm=self.client.ledger.to_dict())
            if self.client.ledger.exceeded:
                raise llm.BudgetExceeded(self.client.ledger.exceeded)

    @contextmanager
    def timed(self, stage: str):
        """Add the wall time of the block to ``timings[stage]``."""
        s = time.time()
        try:
            yield
        finally:
            self.timings[stage] = time.time() - s

    def finish(self, status: str, **fields: Any) -> dict:
        """The run's last ``run.json`` fields: ``status``, its wall time and ``fields``."""
        self.ended = True
        return self.update(status=status, wall_seconds=self.wall_seconds(), **fields)


def server_lost() -> bool:
    """Whether this process's Prefect server stopped answering during a run (and has not answered since)."""
    return artifacts.SERVER.lost


def server_lost_line() -> str:
    """The one line a command prints when its Prefect server went away during its run (the outermost session's)."""
    run_id, path = (_outermost.run_id, _outermost.path) if _outermost is not None else ("?", "runs/")
    return (f"scientist: the Prefect server {artifacts.SERVER.api_url()} was lost during run {run_id}; its results "
            f"so far are kept in {path}; once the server is back, re-run with --run-id {run_id} to resume")
