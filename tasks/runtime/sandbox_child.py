"""Child side of the validation gate (ARCHITECTURE.md section 5): ``python -m tasks.runtime.sandbox_child``.

Started by :func:`tasks.runtime.sandbox.validate_source` in a fresh session, in a private working
folder and (where the kernel allows) in new network and mount namespaces. It first sets its resource limits
from its arguments (:func:`apply_limits`), then reads one JSON request on stdin::

    {"source": "<candidate text>", "template": "lpo", "isolate_fs": true}

``source`` is the candidate as text of either kind (plug-in source, or JSON for a parametric template). The child
loads it with ``template.load`` and runs ``template.check(candidate, key)``; for a source candidate it then
compares ``template.probe`` before and after ``jax.clear_caches()``: a plug-in that keeps state between calls (a
counter in a mutable default, a key made from it) returns the same values on two calls of one jitted function,
because jit traces once, but not after a retrace, which every new compilation of an experiment is. Run as root,
the child drops every capability (the bounding set too, and sets no-new-privileges) after the read-only remount
and the trusted imports, so code that escaped the loader could not remount the file system writable again.

and writes exactly one JSON line to its original stdout, the last line there::

    {"accepted": bool, "stage": "load" | "checks" | "memory" | "crash" | "ok", "reason": str,
     "problems": [str, ...], "details": {...}}

Everything the plug-in prints goes to stderr, so it cannot forge that line. The trusted part (imports, the
read-only remount, dropping privileges) runs before the plug-in is loaded. Test-only hooks, ignored unless the
request asks for them: ``"report_env": true`` reports the names of the environment variables;
``"report_limits": true`` the resource limits in effect; ``"probe_connect": port`` tries a TCP connection to
``127.0.0.1:port`` and reports the outcome; ``"probe_write": [path, ...]`` tries to create each file (after the
remount) and ``"probe_remount": true`` tries to make ``/`` writable again (after the privileges are dropped);
``"report_modules": [name, ...]`` reports which of those modules were imported before the candidate's checks began.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback

MAX_REASON = 4000
MEMORY_HINTS = (
    "resource_exhausted",
    "out of memory",
    "bad_alloc",
    "cannot allocate memory",
    "failed to allocate",
    "memoryerror",
    "failed to map segment",
)

# mount(2) flags (linux/mount.h)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
_KEEP_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}


def _clip(text: str, limit: int = MAX_REASON) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 15] + " ... (clipped)"


def looks_like_memory(text: str) -> bool:
    """Whether an error message or stderr tail says that an allocation failed."""
    low = text.lower()
    return any(h in low for h in MEMORY_HINTS)


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def _mountinfo() -> list[tuple[str, set[str]]]:
    mounts = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 5:
                mounts.append((_unescape(fields[4]), set(fields[5].split(","))))
    return mounts


def readonly_except(folder: str) -> str:
    """In this process's own mount namespace, make every mount read-only except ``folder``.

    Must run after ``unshare -m`` (the parent does that); mounts are made private first, so nothing propagates
    back to the host. Returns a short status for the report; raises ``OSError`` when it cannot start.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)

    def mount(source: str | None, target: str, flags: int) -> None:
        if libc.mount(source.encode() if source else None, target.encode(), None, flags, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), target)

    folder = os.path.realpath(folder)
    mount(None, "/", MS_REC | MS_PRIVATE)
    mount(folder, folder, MS_BIND | MS_REC)
    os.chdir(folder)  # the old working directory is on the mount below, about to become read-only: enter the bind
    failed = []
    for target, options in _mountinfo():
        if target == folder or target.startswith(folder.rstrip("/") + "/"):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for name, flag in _KEEP_FLAGS.items():
            if name in options:
                flags |= flag
        try:
            mount(None, target, flags)
        except OSError as exc:
            failed.append(f"{target} ({exc.strerror})")
    if failed:
        return "read-only except the working folder, but not: " + ", ".join(failed[:10])
    return "read-only except the working folder"


# prctl(2) options and the capset(2) header version (linux/prctl.h, linux/capability.h)
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_privileges() -> str:
    """As root: drop every capability (bounding set, then effective/permitted/inheritable) and set no-new-privs.

    Without CAP_SYS_ADMIN the read-only remount cannot be undone, and a program the process might start gets no
    capabilities either (the bounding set is empty). Not root: nothing to drop. Returns a short status for the
    report; raises ``OSError`` when a step fails.
    """
    if os.geteuid() != 0:
        return "not root: nothing to drop"
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        rc = libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0)
        if rc != 0 and ctypes.get_errno() != 22:  # EINVAL: a capability this kernel does not know
            check(rc, f"prctl(PR_CAPBSET_DROP, {cap})")
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} sets, all zero
    check(libc.capset(header, data), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    return "dropped all capabilities"


def _probe_write(path: str) -> str:
    try:
        with open(path, "x") as fh:
            fh.write("written from the sandbox")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "written"


def _probe_remount() -> str:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
    if libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None) != 0:
        err = ctypes.get_errno()
        return f"refused: {os.strerror(err)}"
    return "remounted / writable"


def _probe_connect(port: int) -> str:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2.0):
            return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _plugin_location(exc: BaseException) -> str:
    """' (plug-in line N)' for the innermost frame of the plug-in's own source, if any."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<plugin")]
    return f" (plug-in line {lines[-1]})" if lines else ""


def _describe(exc: BaseException) -> str:
    message = str(exc).strip()
    # XLA errors carry long C++ context; the first lines say what went wrong.
    message = "\n".join(message.splitlines()[:8])
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _result(accepted: bool, stage: str, reason: str, problems=None, details=None) -> dict:
    return {
        "accepted": accepted,
        "stage": stage,
        "reason": _clip(reason),
        "problems": [_clip(str(p), 1000) for p in (problems or [])],
        "details": details or {},
    }


def run(request: dict) -> dict:
    """Validate the candidate text ``request["source"]`` against its template; never raises."""
    details: dict = {}
    candidate_text = request.get("source")
    if not isinstance(candidate_text, str):
        return _result(False, "crash", "bad request: 'source' must be a string")
    if request.get("isolate_fs"):
        try:
            details["filesystem"] = readonly_except(os.getcwd())
        except OSError as exc:
            details["filesystem"] = f"not isolated: {exc}"
    if request.get("report_env"):
        details["env"] = sorted(os.environ)
    if request.get("report_limits"):
        details["limits"] = request.get("limits")
    if request.get("probe_connect") is not None:
        details["connect"] = _probe_connect(request["probe_connect"])
    if request.get("probe_write") is not None:
        details["write"] = {str(path): _probe_write(str(path)) for path in request["probe_write"]}

    try:  # trusted imports, before any plug-in code runs (``judge`` uses them)
        import jax
        import numpy  # noqa: F401

        import jaxlib_kernels.plugin  # noqa: F401
        from jaxlib_kernels.templates import DEFAULT, make

        template = make(request.get("template", DEFAULT))
        for module in template.check_imports:  # the template's own libraries: not the candidate's time
            importlib.import_module(module)
        key = jax.random.key(0)
    except MemoryError:
        return _result(False, "memory", "the sandbox ran out of memory while importing jax", details=details)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        stage = "memory" if looks_like_memory(str(exc)) else "crash"
        return _result(False, stage, f"the sandbox could not start: {_describe(exc)}", details=details)
    if template.check is None:
        return _result(False, "crash", f"template {template.name!r} has no check", details=details)
    try:
        details["privileges"] = drop_privileges()
    except OSError as exc:
        details["privileges"] = f"not dropped: {exc}"
    if request.get("probe_remount"):
        details["remount"] = _probe_remount()
    if request.get("report_modules") is not None:
        details["modules_at_start"] = [m for m in request["report_modules"] if m in sys.modules]

    _mark_phase("checks")  # the parent's check deadline starts now: what follows is the candidate's own time
    return judge(template, candidate_text, key, details)


_RESULT_FD: int | None = None  # the real stdout (set by ``main``): the result line, and the phase line before it
PHASE_LINE = '{"phase": "%s"}'


def _mark_phase(phase: str) -> None:
    """Tell the parent (one line on the real stdout, which plug-in code cannot write to) that ``phase`` begins."""
    if _RESULT_FD is not None:
        os.write(_RESULT_FD, (PHASE_LINE % phase + "\n").encode())


def judge(template, candidate_text: str, key, details: dict | None = None) -> dict:
    """The gate's verdict on one candidate text: load it, run the template's checks, and (a source plug-in) the
    retrace check. What the child runs once its limits, isolation and trusted imports are in place; never raises."""
    import jax
    import numpy as np

    from jaxlib_kernels.plugin import PluginError

    details = {} if details is None else details
    name = template.plugin.name
    out_of_memory = False
    try:
        candidate = template.load(candidate_text)
    except MemoryError:
        out_of_memory = True
    except PluginError as exc:
        return _result(False, "load", str(exc), details=details)
    except Exception as exc:  # noqa: BLE001
        return _result(False, "load", f"loading failed: {_describe(exc)}{_plugin_location(exc)}", details=details)
    if out_of_memory:  # built after the except block, once the traceback (and its memory) is released
        return _result(False, "memory", f"ran out of memory while loading {name!r} (MemoryError)", details=details)

    def retrace_problems() -> list[str]:
        """A source candidate's probe before and after a retrace: state kept between calls shows up here."""
        if template.plugin.kind != "source":
            return []  # JSON data holds no state
        before = np.asarray(template.probe(candidate), dtype=np.float64)
        jax.clear_caches()
        after = np.asarray(template.probe(candidate), dtype=np.float64)
        if before.shape == after.shape and np.array_equal(before, after, equal_nan=True):
            return []
        problem = (
            f"not deterministic: {name!r} returns different values once traced again (state kept between calls, "
            "such as a counter in a mutable default argument, changes it), so a unit's result would depend on what "
            "was compiled before it"
        )
        return [problem]

    try:
        problems = list(template.check(candidate, key)) or retrace_problems()
    except MemoryError:
        out_of_memory = True
    except RecursionError as exc:
        return _result(False, "checks", f"calling {name!r} recursed too deep: {_describe(exc)}", details=details)
    except Exception as exc:  # noqa: BLE001
        text = _describe(exc)
        if looks_like_memory(text):
            return _result(False, "memory", f"calling {name!r} ran out of memory: {text}", details=details)
        return _result(False, "checks", f"calling {name!r} raised {text}{_plugin_location(exc)}", details=details)
    if out_of_memory:
        return _result(False, "memory", f"calling {name!r} ran out of memory (MemoryError)", details=details)
    if problems:
        return _result(False, "checks", "; ".join(problems), problems, details)
    return _result(True, "ok", "passed all checks", details=details)


def apply_limits(argv: list[str]) -> dict:
    """Set this process's resource limits from ``--as-bytes N --cpu-s S --nofile K --fsize-bytes F``.

    Runs first, before the request is read, so no plug-in code ever runs without them. (The parent does not use
    ``preexec_fn``: running Python between fork and exec in a multithreaded JAX process risks deadlocks, and JAX
    warns about it on every call.) CPU: SIGXCPU at the soft limit, SIGKILL 5 s later. No core files.
    """
    import argparse
    import resource

    parser = argparse.ArgumentParser(prog="python -m tasks.runtime.sandbox_child")
    parser.add_argument("--as-bytes", type=int)
    parser.add_argument("--cpu-s", type=int)
    parser.add_argument("--nofile", type=int)
    parser.add_argument("--fsize-bytes", type=int)
    args = parser.parse_args(argv)
    wanted = {
        resource.RLIMIT_AS: (args.as_bytes, args.as_bytes),
        resource.RLIMIT_CPU: (args.cpu_s, None if args.cpu_s is None else args.cpu_s + 5),
        resource.RLIMIT_NOFILE: (args.nofile, args.nofile),
        resource.RLIMIT_FSIZE: (args.fsize_bytes, args.fsize_bytes),
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in wanted.items():
        if soft is not None:
            resource.setrlimit(which, (soft, hard))
    names = {
        "as": resource.RLIMIT_AS,
        "cpu": resource.RLIMIT_CPU,
        "nofile": resource.RLIMIT_NOFILE,
        "fsize": resource.RLIMIT_FSIZE,
        "core": resource.RLIMIT_CORE,
    }
    return {k: list(resource.getrlimit(v)) for k, v in names.items()}


def main(argv: list[str] | None = None) -> int:
    limits = apply_limits(sys.argv[1:] if argv is None else argv)
    # Keep the real stdout for the one result line; everything else (plug-in prints included) goes to stderr.
    global _RESULT_FD
    result_fd = _RESULT_FD = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        request = json.loads(sys.stdin.read())
        if not isinstance(request, dict):
            raise TypeError("request is not a JSON object")
    except Exception as exc:  # noqa: BLE001
        result = _result(False, "crash", f"bad request: {_describe(exc)}")
    else:
        try:
            if request.get("report_limits"):
                request = {**request, "limits": limits}
            result = run(request)
        except BaseException as exc:  # noqa: BLE001 - last resort: still one clear line
            result = _result(False, "crash", f"sandbox child failed: {_describe(exc)}")
    sys.stderr.flush()
    os.write(result_fd, (json.dumps(result) + "\n").encode())
    os.close(result_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
