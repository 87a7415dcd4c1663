"""Child side of the validation gate (DESIGN.md section 5): ``python -m tasks.sandbox_child``.

Started by :func:`tasks.sandbox.validate_source` in a fresh session, in a private working
folder and (where the kernel allows) in new network and mount namespaces. It first sets its resource limits
from its arguments (:func:`apply_limits`), then reads one JSON request on stdin::

    {"source": "...", "template": "lpo", "isolate_fs": true}

and writes exactly one JSON line to its original stdout, the last line there::

    {"accepted": bool, "stage": "load" | "checks" | "memory" | "crash" | "ok", "reason": str,
     "problems": [str, ...], "details": {...}}

Everything the plug-in prints goes to stderr, so it cannot forge that line. The trusted part (imports, the
read-only remount) runs before the plug-in is loaded. Test-only hooks, ignored unless the request asks for them:
``"report_env": true`` reports the names of the environment variables; ``"report_limits": true`` the resource
limits in effect; ``"probe_connect": port`` tries a TCP
connection to ``127.0.0.1:port`` and reports the outcome.
"""

from __future__ import annotations

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
    """Validate ``request["source"]`` against its template; never raises."""
    details: dict = {}
    source = request.get("source")
    if not isinstance(source, str):
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

    try:  # trusted imports, before any plug-in code runs
        import jax

        from jaxlib_kernels.plugin import PluginError, load_plugin
        from jaxlib_kernels.templates import make

        template = make(request.get("template", "lpo"))
        key = jax.random.key(0)
    except MemoryError:
        return _result(False, "memory", "the sandbox ran out of memory while importing jax", details=details)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        stage = "memory" if looks_like_memory(str(exc)) else "crash"
        return _result(False, stage, f"the sandbox could not start: {_describe(exc)}", details=details)
    if template.check is None:
        return _result(False, "crash", f"template {template.name!r} has no check", details=details)

    name = template.plugin_name
    out_of_memory = False
    try:
        fn = load_plugin(source, name)
    except MemoryError:
        out_of_memory = True
    except PluginError as exc:
        return _result(False, "load", str(exc), details=details)
    except Exception as exc:  # noqa: BLE001
        return _result(False, "load", f"loading failed: {_describe(exc)}{_plugin_location(exc)}", details=details)
    if out_of_memory:  # built after the except block, once the traceback (and its memory) is released
        return _result(False, "memory", f"ran out of memory while loading {name!r} (MemoryError)", details=details)

    try:
        problems = list(template.check(fn, key))
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

    parser = argparse.ArgumentParser(prog="python -m tasks.sandbox_child")
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
    result_fd = os.dup(1)
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
