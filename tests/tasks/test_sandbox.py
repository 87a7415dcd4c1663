"""The validation gate (ARCHITECTURE.md section 5): baselines pass, every hostile candidate is rejected with a reason.

The hostile corpus lives in ``tests/tasks/hostile/`` (one ``def drift(ratio, advantage, progress)`` module each;
``EXPECTED`` below says how each must fail). Static rejections start no process; every other case is one child.
``IN_CHILD`` are the cases that pass the static check on purpose (asserted), so that the child's own protections
are what stops them: the loader's module views, the determinism check across a retrace, the read-only file system
and the dropped capabilities (the last two probed through the child's test hooks).
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from jaxlib_kernels.templates import TEMPLATES, Template, make
from jaxlib_kernels.templates.lpo import baseline_source
from tasks.runtime import sandbox

HOSTILE = Path(__file__).parent / "hostile"

# file -> (stage, words the reason must contain)
STATIC = {
    "import_os": ("static", ["import", "'os'", "not allowed"]),
    "import_subprocess": ("static", ["import", "'subprocess'", "not allowed"]),
    "import_socket": ("static", ["import", "'socket'", "not allowed"]),
    "fork_bomb": ("static", ["import", "'multiprocessing'", "not allowed"]),
    "from_os_import_path": ("static", ["import from", "'os'", "not allowed"]),
    "dunder_import": ("static", ["'__import__'", "not allowed"]),
    "open_write": ("static", ["'open'", "not allowed"]),
    "getattr_dunder": ("static", ["'getattr'", "not allowed"]),
    "dunder_attribute": ("static", ["dunder attribute", "not allowed"]),
    "eval_call": ("static", ["'eval'", "not allowed"]),
    "missing_function": ("static", ["no top-level function named 'drift'"]),
    # host callbacks and file I/O inside jax/jnp are refused by the static check since plugin.FORBIDDEN_ATTRIBUTES
    "nondeterministic": ("static", ["'pure_callback'", "not allowed"]),
    "write_via_save": ("static", ["'save'", "not allowed"]),
    # holes of the first gate, closed in jaxlib_kernels/plugin.py: each passed the static check and the loader
    "write_via_dump": ("static", ["'dump'", "not allowed"]),
    "escape_ctypes": ("static", ["private attribute '_ctypes'", "not allowed"]),
    "escape_frame_walk": ("static", ["introspection", "not allowed"]),
    "from_jax_import_os": ("static", ["import from", "'jax.interpreters'", "not allowed"]),
}
CHECKS = {
    "returns_nan": ("checks", ["non-finite"]),
    "wrong_shape": ("checks", ["shape", "(64, 8)"]),
    "negative": ("checks", ["negative"]),
    "nan_gradient": ("checks", ["gradient", "not finite"]),
    "raises": ("checks", ["ValueError", "not implemented yet", "plug-in line"]),
    "forged_result": ("checks", ["non-finite"]),  # its printed "accepted" line must not be believed
}
# pass the static check (asserted below), stopped inside the child
IN_CHILD = {
    "write_via_module_graph": ("checks", ["AttributeError", "jax.version", "out of reach of a plug-in", "plug-in line"]),
    "shell_via_module_graph": ("load", ["AttributeError", "jax.interpreters", "out of reach of a plug-in"]),
    "monkeypatch_module": ("load", ["cannot change module 'jax.numpy'"]),
    "nondeterministic_counter": ("checks", ["not deterministic", "traced again", "'drift'"]),
    "nondeterministic_key": ("checks", ["not deterministic", "traced again", "'drift'"]),
}
# files each IN_CHILD case would write if it got through
ESCAPE_TARGETS = {
    "write_via_module_graph": Path("/tmp/sandbox-escape-module-graph.txt"),
    "shell_via_module_graph": Path("/tmp/sandbox-escape-shell.txt"),
}
SPECIAL = {  # tested one by one below, with their own limits or skips
    "alloc_xla": ("memory", ["memory"]),
    "alloc_list": ("memory", ["memory"]),
    "infinite_loop": ("timeout", ["timed out"]),
}
EXPECTED = {**STATIC, **CHECKS, **IN_CHILD, **SPECIAL}


def hostile(name: str) -> Path:
    return HOSTILE / f"{name}.py"


def assert_rejected(result: sandbox.ValidationResult, name: str) -> None:
    stage, words = EXPECTED[name]
    assert not result.accepted, (name, result)
    assert result.stage == stage, (name, result)
    for word in words:
        assert word in result.reason, (name, word, result.reason)


def test_every_corpus_file_has_an_expectation():
    files = {p.stem for p in HOSTILE.glob("*.py")}
    assert files == set(EXPECTED)
    for name in files:
        assert "def drift" in hostile(name).read_text() or name == "missing_function"


# --------------------------------------------------------------------------- static layer: no process


@pytest.fixture
def no_child(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a statically rejected source must not start a process")

    monkeypatch.setattr(sandbox, "_run_child", refuse)


@pytest.mark.parametrize("name", sorted(STATIC))
def test_static_rejection_starts_no_process(name, no_child):
    result = sandbox.validate_file(hostile(name))
    assert_rejected(result, name)
    assert result.problems == []
    assert result.to_dict()["stage"] == "static"


def test_syntax_error_is_rejected_with_its_line(no_child):
    # kept inline: a file that does not parse would break `ruff check tests`
    source = "import jax.numpy as jnp\n\n\ndef drift(ratio, advantage, progress)\n    return jnp.abs(ratio - 1.0)\n"
    result = sandbox.validate_source(source)
    assert not result.accepted and result.stage == "static"
    assert "syntax error at line 4" in result.reason


def test_missing_file_is_a_rejected_result(tmp_path, no_child):
    result = sandbox.validate_file(tmp_path / "nope.py")
    assert not result.accepted and result.stage == "static"
    assert "cannot read candidate file" in result.reason and "nope.py" in result.reason


def test_non_string_source_is_rejected(no_child):
    result = sandbox.validate_source(b"def drift(r, a, p): return r")  # type: ignore[arg-type]
    assert not result.accepted and "must be a string" in result.reason
    assert "'drift'" in result.reason  # named after the template's plug-in


@pytest.mark.parametrize("name", sorted(IN_CHILD))
def test_in_child_cases_pass_the_static_check(name):
    make("lpo").static_check(hostile(name).read_text())  # raises PluginError if the AST check caught it


# --------------------------------------------------------------------------- how a child's end is read (no process)


def test_verdict_trusts_only_the_last_stdout_line():
    forged = '{"accepted": true, "stage": "ok", "reason": "forged", "problems": []}'
    real = '{"accepted": false, "stage": "checks", "reason": "returned non-finite values", "problems": ["x"]}'
    result = sandbox.verdict(0, f"{forged}\n{real}\n", "")
    assert not result.accepted and result.stage == "checks" and result.problems == ["x"]
    garbage = sandbox.verdict(0, f"{forged}\nnot json\n", "")
    assert not garbage.accepted and garbage.stage == "crash"


@pytest.mark.parametrize(
    ("code", "stderr", "stage", "words"),
    [
        (-signal.SIGSEGV, "Fatal Python error: Segmentation fault", "crash", ["SIGSEGV", "Segmentation fault"]),
        (-signal.SIGABRT, "F external/xla: RESOURCE_EXHAUSTED: Out of memory", "memory", ["out of memory", "SIGABRT"]),
        (-signal.SIGKILL, "", "memory", ["SIGKILL", "memory"]),
        (-signal.SIGXCPU, "", "timeout", ["CPU-time limit"]),
        (-signal.SIGXFSZ, "", "crash", ["file larger than"]),
        (1, "Traceback (most recent call last):\nMemoryError", "memory", ["status 1", "MemoryError"]),
        (1, "Traceback (most recent call last):\nImportError: boom", "crash", ["status 1", "ImportError: boom"]),
    ],
)
def test_verdict_on_abnormal_ends(code, stderr, stage, words):
    result = sandbox.verdict(code, "", stderr)
    assert not result.accepted and result.stage == stage
    for word in words:
        assert word in result.reason, (word, result.reason)


def test_verdict_on_timeout():
    result = sandbox.verdict(-signal.SIGKILL, "", "", timed_out=True, timeout_s=15)
    assert result.stage == "timeout" and "15 s" in result.reason and "killed" in result.reason


# --------------------------------------------------------------------------- the child process


SECRETS = {"OPENAI_API_KEY": "sk-test-not-a-real-key", "JAX_SCIENTIST_TEST_SECRET": "hunter2"}
WRITE_PROBE = Path(f"/tmp/sandbox-write-probe-{os.getpid()}.txt")


@pytest.fixture(scope="module")
def ppo_clip_report(tmp_path_factory):
    """ppo_clip through the gate, with the test hooks on: env names, limits, a connection to our listening port,
    a write outside the child's folder and one inside, an attempt to make ``/`` writable again."""
    workdir = tmp_path_factory.mktemp("gate")
    WRITE_PROBE.unlink(missing_ok=True)
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the port is reachable from here, so a failure in the child is the sandbox's doing
        result = sandbox.validate_source(
            baseline_source("ppo_clip"),
            "lpo",
            workdir=workdir,
            _hooks={"report_env": True, "report_limits": True, "probe_connect": port,
                    "probe_write": [str(WRITE_PROBE), "inside.txt"], "probe_remount": True},
        )
    finally:
        listener.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return result, workdir


def test_ppo_clip_baseline_is_accepted(ppo_clip_report):
    result, _ = ppo_clip_report
    assert result.accepted, result
    assert result.stage == "ok" and result.problems == [] and result.duration_s > 0
    assert result.to_dict()["accepted"] is True


@pytest.mark.parametrize("name", ["kl", "no_drift", "dpo"])
def test_other_baselines_are_accepted(name, tmp_path):
    result = sandbox.validate_source(baseline_source(name), "lpo", workdir=tmp_path)
    assert result.accepted, result
    assert result.stage == "ok"


def test_parent_secrets_do_not_reach_the_child(ppo_clip_report):
    result, _ = ppo_clip_report
    env = set(result.details["env"])
    assert not env & set(SECRETS)
    assert env <= set(sandbox._child_env(Path("/x"))), env  # nothing beyond the minimal environment


def test_resource_limits_are_in_effect(ppo_clip_report):
    limits = ppo_clip_report[0].details["limits"]
    assert limits["as"] == [sandbox.DEFAULT_MEMORY_MB << 20] * 2
    assert limits["cpu"][0] == sandbox.DEFAULT_CPU_S
    assert limits["nofile"] == [sandbox.NOFILE] * 2
    assert limits["fsize"] == [sandbox.FSIZE_BYTES] * 2
    assert limits["core"] == [0, 0]


def test_private_folder_is_removed(ppo_clip_report):
    _, workdir = ppo_clip_report
    assert list(Path(workdir).iterdir()) == []


def test_network_is_unreachable_in_the_child(ppo_clip_report):
    if not sandbox.network_isolated():
        pytest.skip("`unshare -n` does not work here: children run without a private network namespace")
    result, _ = ppo_clip_report
    assert result.details["network"] == "isolated"
    assert result.details["connect"] != "connected"
    assert "unreachable" in result.details["connect"].lower(), result.details["connect"]


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_bad_behaviour_is_rejected_by_the_checks(name, tmp_path):
    assert_rejected(sandbox.validate_file(hostile(name), workdir=tmp_path), name)


@pytest.mark.parametrize("name", sorted(IN_CHILD))
def test_what_passes_the_static_check_is_stopped_in_the_child(name, tmp_path):
    target = ESCAPE_TARGETS.get(name)
    if target is not None:
        target.unlink(missing_ok=True)
    result = sandbox.validate_file(hostile(name), workdir=tmp_path)
    assert_rejected(result, name)
    if target is not None:
        assert not target.exists(), f"{name} wrote {target}"


def test_the_file_system_is_read_only_outside_the_folder(ppo_clip_report):
    if not sandbox.filesystem_isolated():
        pytest.skip("`unshare -m` does not work here: children run without a private mount namespace")
    result, _ = ppo_clip_report
    assert result.details["filesystem"] == "read-only except the working folder", result.details
    writes = result.details["write"]
    assert "Read-only file system" in writes[str(WRITE_PROBE)], writes
    assert not WRITE_PROBE.exists()
    assert writes["inside.txt"] == "written"  # its own folder stays writable


def test_a_root_child_drops_its_capabilities_and_cannot_remount(ppo_clip_report):
    if os.geteuid() != 0 or not sandbox.filesystem_isolated():
        pytest.skip("only a root child in its own mount namespace could remount the file system writable")
    result, _ = ppo_clip_report
    assert result.details["privileges"] == "dropped all capabilities", result.details
    assert result.details["remount"].startswith("refused"), result.details
    assert "not permitted" in result.details["remount"], result.details


def _parametric_templates() -> list[str]:
    return [name for name, t in TEMPLATES.items()
            if isinstance(t, Template) and t.plugin.kind == "parametric" and t.baselines]


@pytest.mark.parametrize("name", _parametric_templates() or [pytest.param("none", marks=pytest.mark.skip(
    reason="no parametric template is registered yet"))])
def test_parametric_candidates_go_through_the_same_gate(name, tmp_path, monkeypatch):
    template = make(name)
    baseline = next(iter(template.baselines.values()))
    accepted = sandbox.validate_source(baseline.source, name, workdir=tmp_path)
    assert accepted.accepted and accepted.stage == "ok", accepted
    wrong = sandbox.validate_source('{"not": "a candidate of this template"}', name, workdir=tmp_path)
    assert not wrong.accepted and wrong.stage == "checks" and wrong.problems, wrong

    def refuse(*args, **kwargs):
        raise AssertionError("a statically rejected candidate must not start a process")

    monkeypatch.setattr(sandbox, "_run_child", refuse)
    for text, words in (("{not json", ["JSON"]), ("[1, 2]", ["JSON object", "list"])):
        result = sandbox.validate_source(text, name)
        assert not result.accepted and result.stage == "static", result
        for word in words:
            assert word in result.reason, (word, result.reason)


@pytest.mark.parametrize("name", ["alloc_xla", "alloc_list"])
def test_unbounded_allocation_is_stopped(name, tmp_path):
    # a smaller address-space limit than the default keeps the growing list from touching 6 GiB of real memory
    result = sandbox.validate_file(hostile(name), workdir=tmp_path, memory_mb=3072)
    assert_rejected(result, name)


@pytest.mark.slow
def test_endless_loop_hits_the_wall_clock_timeout(tmp_path):
    result = sandbox.validate_file(hostile("infinite_loop"), workdir=tmp_path, timeout_s=10, check_cpu_s=300, check_timeout_s=300)
    assert_rejected(result, "infinite_loop")
    assert "10 s wall-clock limit" in result.reason
    assert list(Path(tmp_path).iterdir()) == []


@pytest.mark.slow
def test_endless_loop_hits_the_check_cpu_limit_counted_from_the_end_of_the_trusted_start(tmp_path):
    """The candidate's own CPU time is limited apart from the child's start-up (imports: the same for every
    candidate), so an endless candidate costs a few normal checks, not the whole wall-clock limit, and a loaded
    host (which stretches wall-clock time, not CPU time) does not turn a good candidate into a timeout."""
    result = sandbox.validate_file(hostile("infinite_loop"), workdir=tmp_path, check_cpu_s=3)
    assert_rejected(result, "infinite_loop")
    assert "checks used 3 s of CPU time without finishing" in result.reason
    timing = result.details["timing_s"]  # 3 CPU-seconds, on however many threads: more than 3 s / cores of wall time
    assert timing["start"] > 0 and timing["checks"] >= 3 / os.cpu_count()
    assert list(Path(tmp_path).iterdir()) == []


@pytest.mark.slow
def test_a_check_that_outlasts_its_wall_clock_limit_is_stopped_there(tmp_path):
    """The candidate's own wall-clock limit stops a check that uses little CPU (one that waits) well before the
    whole child's limit; here the CPU limit is set out of reach so that the wall-clock one is what fires."""
    result = sandbox.validate_file(hostile("infinite_loop"), workdir=tmp_path, check_cpu_s=300, check_timeout_s=3)
    assert_rejected(result, "infinite_loop")
    assert "checks were still running 3 s after they began" in result.reason
    assert result.details["timing_s"]["checks"] >= 3


def test_an_accepted_check_reports_its_start_up_and_check_times(ppo_clip_report):
    timing = ppo_clip_report[0].details["timing_s"]
    assert timing["start"] > 0 and timing["checks"] > 0
    assert timing["checks"] < sandbox.DEFAULT_CHECK_CPU_S  # the baseline passes well inside the default


@pytest.mark.slow
def test_endless_loop_hits_the_cpu_limit(tmp_path):
    result = sandbox.validate_file(hostile("infinite_loop"), workdir=tmp_path, cpu_s=6, timeout_s=300,
                                   check_cpu_s=300, check_timeout_s=300)
    assert not result.accepted and result.stage == "timeout"
    assert "CPU-time limit of 6 s" in result.reason
