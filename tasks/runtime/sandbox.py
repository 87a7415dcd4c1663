"""The validation gate for candidates of every template kind (ARCHITECTURE.md section 5).

A candidate is text: plug-in source for a ``kind="source"`` template, canonical JSON for a ``kind="parametric"``
one. Layers, cheapest first:

1. the template's static check (:meth:`Template.static_check`) in this process: for source, the AST check of
   :func:`jaxlib_kernels.plugin.static_check`; for parametric candidates, the JSON parse. A rejected candidate never
   starts a process;
2. a child process (``python -m tasks.runtime.sandbox_child``) in its own session (``setsid``), with resource limits
   (address space, CPU seconds, open files, file size, no core dumps; the child sets them from its arguments as
   its very first step, before it reads the request: a ``preexec_fn`` would run Python between fork and exec of a
   multithreaded JAX process, which risks deadlocks and makes JAX warn on every call), a private fresh working
   folder (removed afterwards), a minimal environment (no API keys or other variables of the parent), no network
   (a new network namespace via ``unshare -n`` where the kernel allows it) and, with it, a new mount namespace in
   which every mount except the working folder is read-only (``unshare -m``; this stops writes that the static
   check cannot see; the folder is entered again through its bind mount, so relative paths stay writable);
3. a wall-clock timeout that kills the child's whole process group;
4. inside the child: ``template.load`` (for source, the restricted loader: allowed modules only, seen through
   read-only views that refuse modules outside the allow-list), the template's ``check`` (shape, finiteness, sign,
   finite gradients, determinism), and for source a determinism check across a retrace; run as root, the child
   drops all capabilities before it loads the candidate.

Every failure comes back as a :class:`ValidationResult` whose ``reason`` the repair loop feeds to the model.

Default limits and why:

* ``memory_mb=6144`` (RLIMIT_AS, virtual memory). ``import jax`` plus the template and one jit reserves far more
  address space than it touches. Measured on a 2-core host: VmPeak 1.8 GiB (VmHWM 0.43 GiB) with glibc's default
  malloc arenas (64 MiB reserved per arena, up to 8 per core), 0.9 GiB with ``MALLOC_ARENA_MAX=2``, which the
  child gets; through the gate a baseline then passes at 1 GiB and dies at 768 MiB (LLVM cannot map code
  sections). What still grows with the core count is one 8 MiB stack reservation per XLA pool thread (about
  +0.5 GiB at 64 cores), so 6 GiB leaves a margin of 3x or more even on big hosts, while still stopping a
  runaway allocation (a 4 TiB array, a list that doubles forever) well before it hurts the machine.
* ``cpu_s=120`` (RLIMIT_CPU) and ``timeout_s=120`` (wall clock) for the whole child, and for the candidate's own
  part, counted from the line the child writes on its real stdout once its trusted start-up (imports, the
  template's ``check_imports``, isolation, privilege drop) is done: ``check_cpu_s=12`` CPU-seconds
  (``SCIENTIST_GATE_CHECK_CPU``, read from ``/proc/<pid>/stat``) and ``check_timeout_s=60`` wall-clock seconds
  (``SCIENTIST_GATE_CHECK_TIMEOUT``, for a check that waits without computing). CPU time, not wall time, is
  the tight limit because a loaded host stretches wall time: in CI (2 cores, the test suite's other workers
  and a Ray cluster busy beside it) a HaDES candidate whose checks took 5.9 s on an idle host ran past a 12 s
  wall-clock limit; 5 s of that was importing gymnax and navix after the mark, which is now the start-up's
  (checks 1.1-1.2 s, start-up 4.2 s). Measured on a 2-core host (AMD EPYC, warm compilation cache): each
  template's first baseline passed in 1.5-3.6 s, 1.0-1.6 s of start-up and 0.5-2.1 s of checks (lpo: 1.5 +
  2.1 s); an endless loop is stopped once it has used 12 CPU-seconds, a few times lpo's normal check, instead
  of the 120 s (34x) of the wall clock alone.
* 64 open files, 16 MiB per written file, no core files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jaxlib_kernels.templates import DEFAULT

if TYPE_CHECKING:
    from jaxlib_kernels.templates.base import Template

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CHECK_CPU_S = 12.0  # the candidate's own CPU time, from the end of the trusted start-up (see the module doc)
DEFAULT_CHECK_TIMEOUT_S = 60.0  # its own wall-clock time (a candidate that sleeps uses no CPU)
DEFAULT_MEMORY_MB = 6144
DEFAULT_CPU_S = 120
NOFILE = 64
FSIZE_BYTES = 16 << 20
STDOUT_KEEP = 1 << 20  # bytes of the child's stdout tail kept (the result is its last line)
STDERR_KEEP = 64 << 10
STDERR_TAIL_CHARS = 2000  # how much of the stderr tail goes into a crash reason
PROJECT_ROOT = Path(__file__).resolve().parents[2]
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"


@dataclasses.dataclass
class ValidationResult:
    """The gate's verdict. ``stage``: static | load | checks | timeout | memory | crash | ok."""

    accepted: bool
    reason: str
    stage: str
    problems: list[str] = dataclasses.field(default_factory=list)
    duration_s: float = 0.0
    details: dict = dataclasses.field(default_factory=dict)  # isolation in effect; test-hook reports

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- isolation probes


@functools.cache
def unshare_args() -> tuple[str, ...]:
    """The ``unshare`` prefix this host supports, probed once: network + mount namespaces, network only, or none."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for flags in (("-n", "-m"), ("-n",)):
        try:
            done = subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return (exe, *flags)
    return ()


def network_isolated() -> bool:
    """Whether children run without network (a private network namespace)."""
    return "-n" in unshare_args()


def filesystem_isolated() -> bool:
    """Whether children get a private mount namespace (everything read-only except their folder)."""
    return "-m" in unshare_args()


# --------------------------------------------------------------------------- the child process


def _limit_args(memory_mb: int, cpu_s: int) -> list[str]:
    """The child's resource limits as command-line arguments (see :func:`tasks.runtime.sandbox_child.apply_limits`)."""
    return [
        "--as-bytes",
        str(int(memory_mb) << 20),
        "--cpu-s",
        str(max(1, int(cpu_s))),
        "--nofile",
        str(NOFILE),
        "--fsize-bytes",
        str(FSIZE_BYTES),
    ]


def _child_env(home: Path) -> dict[str, str]:
    """A minimal environment: nothing of the parent's passes except PATH."""
    return {
        "PATH": os.environ.get("PATH") or os.defpath,
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "LANG": "C.UTF-8",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": XLA_FLAGS,
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB per arena and thread otherwise: see the module doc
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",  # a threaded OpenBLAS can hang after a fork: jaxlib_kernels/__init__.py
        "MPLCONFIGDIR": str(home),
        "XDG_CACHE_HOME": str(home),
    }


class _Tail(threading.Thread):
    """Drain a pipe, keeping only its last ``keep`` bytes (a flood of output cannot fill our memory); the time the
    line ``marker`` first arrived is ``marked_at`` (monotonic clock), and process ``pid``'s CPU time then is
    ``cpu_at_mark``."""

    def __init__(self, stream, keep: int, marker: bytes | None = None, pid: int | None = None):
        super().__init__(daemon=True)
        self.stream, self.keep, self.data = stream, keep, bytearray()
        self.marker, self.marked_at, self.pid, self.cpu_at_mark = marker, None, pid, None

    def run(self) -> None:
        try:
            while chunk := self.stream.read1(1 << 16):
                self.data += chunk
                if self.marker and self.marked_at is None and self.marker in self.data:
                    self.cpu_at_mark = cpu_seconds(self.pid)
                    self.marked_at = time.monotonic()
                if len(self.data) > 2 * self.keep:
                    del self.data[: len(self.data) - self.keep]
        except (OSError, ValueError):
            pass
        finally:
            del self.data[: max(0, len(self.data) - self.keep)]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


_CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU seconds of process ``pid`` (all its threads) from ``/proc``; ``None`` where unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK  # utime, stime (fields 14 and 15 of proc(5))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tail(text: str, chars: int = STDERR_TAIL_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


def _parse(stdout: str) -> dict | None:
    """The child's result: its stdout's last line, when that is a result object."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    if isinstance(data, dict) and {"accepted", "stage", "reason"} <= data.keys():
        return data
    return None


def _run_child(request: dict, *, timeout_s: float, memory_mb: int, cpu_s: int, workdir,
               check_cpu_s: float, check_timeout_s: float) -> ValidationResult:
    prefix = unshare_args()
    isolation = {
        "network": "isolated" if "-n" in prefix else "not isolated (unshare -n unavailable)",
        "filesystem": "not isolated (unshare -m unavailable)",
    }
    request = {**request, "isolate_fs": "-m" in prefix}
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="sandbox-", dir=str(workdir) if workdir is not None else None))
    try:
        work = root / "work"
        work.mkdir()
        request_file = root / "request.json"
        request_file.write_text(json.dumps(request))
        cmd = [*prefix, sys.executable, "-m", "tasks.runtime.sandbox_child", *_limit_args(memory_mb, cpu_s)]
        try:
            with open(request_file, "rb") as stdin:
                proc = subprocess.Popen(
                    cmd,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=work,
                    env=_child_env(work),
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            return ValidationResult(
                False,
                f"could not start the sandboxed process: {type(exc).__name__}: {exc}",
                "crash",
                [],
                0.0,
                isolation,
            )
        from tasks.runtime.sandbox_child import PHASE_LINE

        out = _Tail(proc.stdout, STDOUT_KEEP, marker=(PHASE_LINE % "checks").encode(), pid=proc.pid)
        err = _Tail(proc.stderr, STDERR_KEEP)
        out.start()
        err.start()
        timed_out, limit_hit = False, None
        started = time.monotonic()
        deadline = started + timeout_s
        while True:  # the whole child's wall clock; once its checks began, the candidate's CPU and wall time
            limit, which = deadline, "wall"
            marked = out.marked_at
            if marked is not None and marked + check_timeout_s < deadline:
                limit, which = marked + check_timeout_s, "checks"
            try:
                proc.wait(timeout=max(0.0, min(limit - time.monotonic(), 0.25)))
                break
            except subprocess.TimeoutExpired:
                used = None
                if marked is not None and out.cpu_at_mark is not None:
                    now = cpu_seconds(proc.pid)
                    used = None if now is None else now - out.cpu_at_mark
                if used is not None and used >= check_cpu_s:
                    which = "checks-cpu"
                elif time.monotonic() < limit:
                    continue
                timed_out, limit_hit = True, which
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                break
        ended = time.monotonic()
        if out.marked_at is not None:  # the trusted start-up, and the candidate's own time after it
            isolation["timing_s"] = {"start": round(out.marked_at - started, 3),
                                     "checks": round(ended - out.marked_at, 3)}
        out.join(timeout=10)
        err.join(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
        stdout, stderr = out.text(), err.text()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    return verdict(
        proc.returncode,
        stdout,
        stderr,
        timed_out=timed_out,
        timeout_s={"checks": check_timeout_s, "checks-cpu": check_cpu_s}.get(limit_hit, timeout_s),
        memory_mb=memory_mb,
        cpu_s=cpu_s,
        details=isolation,
        limit=limit_hit or "wall",
    )


def verdict(
    returncode: int,
    stdout: str,
    stderr: str,
    *,
    timed_out: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    cpu_s: int = DEFAULT_CPU_S,
    details: dict | None = None,
    limit: str = "wall",
) -> ValidationResult:
    """Turn how the child ended (exit status or signal, its output) into a :class:`ValidationResult`; ``limit``:
    which deadline a timed-out child hit (``wall``: the whole child's; ``checks-cpu`` and ``checks``: the
    candidate's own CPU and wall-clock time)."""
    from tasks.runtime.sandbox_child import looks_like_memory

    def result(accepted, stage, reason, problems=(), extra=None) -> ValidationResult:
        return ValidationResult(
            bool(accepted), str(reason), stage, list(problems), 0.0, {**(details or {}), **(extra or {})}
        )

    if timed_out and limit == "checks-cpu":
        return result(
            False,
            "timeout",
            f"timed out: the candidate's checks used {timeout_s:g} s of CPU time without finishing (an endless "
            "loop, or far too much work for the check's small inputs); the process was killed",
        )
    if timed_out and limit == "checks":
        return result(
            False,
            "timeout",
            f"timed out: the candidate's checks were still running {timeout_s:g} s after they began (a candidate "
            "that waits or sleeps, or far too much work for the check's small inputs); the process was killed",
        )
    if timed_out:
        return result(
            False,
            "timeout",
            f"timed out: still running after the {timeout_s:g} s wall-clock limit "
            "(an endless loop, or far too much work for the check's small inputs); the process was killed",
        )
    parsed = _parse(stdout) if returncode == 0 else None
    if parsed is not None:
        return result(
            parsed["accepted"], parsed["stage"], parsed["reason"], parsed.get("problems") or [], parsed.get("details")
        )
    stderr_tail = _tail(stderr)
    said = f"; its stderr ends with:\n{stderr_tail}" if stderr_tail else ""
    if returncode < 0:
        sig = _signal_name(-returncode)
        if sig == "SIGXCPU":
            return result(False, "timeout", f"exceeded the CPU-time limit of {cpu_s} s and was killed ({sig}){said}")
        if sig == "SIGXFSZ":
            return result(False, "crash", f"wrote a file larger than the {FSIZE_BYTES >> 20} MiB limit ({sig}){said}")
        if looks_like_memory(stderr):
            return result(False, "memory", f"ran out of memory (limit {memory_mb} MiB) and died from {sig}{said}")
        if sig == "SIGKILL":
            return result(False, "memory", f"killed by SIGKILL, most likely for memory (limit {memory_mb} MiB){said}")
        return result(False, "crash", f"the sandboxed process died from {sig}{said}")
    stage = "memory" if looks_like_memory(stderr) else "crash"
    return result(False, stage, f"the sandboxed process exited with status {returncode} without a result{said}")


# --------------------------------------------------------------------------- public API


def validate_source(
    source: str,
    template: str | Template = DEFAULT,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    cpu_s: int = DEFAULT_CPU_S,
    workdir: str | Path | None = None,
    check_cpu_s: float | None = None,
    check_timeout_s: float | None = None,
    _hooks: dict | None = None,
) -> ValidationResult:
    """Validate a candidate's text for ``template`` (a name or a registered template): static check here, then the
    checks in a sandboxed child. ``source`` is plug-in source or, for a parametric template, its JSON text.

    ``workdir``: where the child's private temporary folder is made (and removed afterwards); the system's
    temporary folder when ``None``. ``_hooks`` is for tests only (``report_env``, ``report_limits``,
    ``probe_connect``, ``probe_write``, ``probe_remount``: see :mod:`tasks.runtime.sandbox_child`). Never raises for a bad candidate; an unknown ``template`` raises.
    """
    from jaxlib_kernels.plugin import PluginError
    from jaxlib_kernels.templates import make

    start = time.monotonic()
    spec = make(template if isinstance(template, str) else template.name)
    if not isinstance(source, str):
        what = "source" if spec.plugin.kind == "source" else "candidate text (JSON)"
        return ValidationResult(
            False,
            f"{what} of {spec.plugin.name!r} must be a string, not {type(source).__name__}",
            "static",
            [],
            time.monotonic() - start,
        )
    try:
        spec.static_check(source)
    except PluginError as exc:
        return ValidationResult(False, str(exc), "static", [], time.monotonic() - start)
    request = {**(_hooks or {}), "source": source, "template": spec.name}
    if check_cpu_s is None:
        check_cpu_s = float(os.environ.get("SCIENTIST_GATE_CHECK_CPU") or DEFAULT_CHECK_CPU_S)
    if check_timeout_s is None:
        check_timeout_s = float(os.environ.get("SCIENTIST_GATE_CHECK_TIMEOUT") or DEFAULT_CHECK_TIMEOUT_S)
    res = _run_child(request, timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s, workdir=workdir,
                     check_cpu_s=check_cpu_s, check_timeout_s=check_timeout_s)
    res.duration_s = time.monotonic() - start
    return res


def validate_file(path: str | Path, template: str | Template = DEFAULT, **kw) -> ValidationResult:
    """:func:`validate_source` on a file's text; a missing or unreadable file is a rejected result."""
    start = time.monotonic()
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return ValidationResult(
            False,
            f"cannot read candidate file {str(path)!r}: {type(exc).__name__}: {exc}",
            "static",
            [],
            time.monotonic() - start,
        )
    return validate_source(source, template, **kw)


__all__ = [
    "DEFAULT_CPU_S",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "ValidationResult",
    "filesystem_isolated",
    "network_isolated",
    "unshare_args",
    "validate_file",
    "validate_source",
]
