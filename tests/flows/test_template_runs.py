"""Every registered template runs end to end as a user runs it; one template survives a kill and resumes exactly.

For each template: ``scientist run --template T --profile smoke`` (small seeds and budget) against one real
``scientist server`` of the test session (the ``prefect_api`` fixture) ends in a compiled PDF and a review,
offline, after growing each idea's research tree (tune, improve, ablate) whose final candidate and tuned baselines
the paper's experiments replicate. For ``lpo`` (KILLED) the run is first started on its own temporary Prefect server, as ``make run`` does,
and killed (its own process only, SIGKILL: everything it started, the temporary server included, must then end by
itself) as soon as its first experiment unit is on disk; the re-run with the same run id resumes without computing
a finished unit again. Resume, the lifeline and the cache policy are generic code (units are keyed by the
template's kernel fingerprint, tasks by ``tasks.runtime.caching.code_key``), so one template's kill checks them; every
template's own text and kernel keys are checked cheaply in tests/kernels/test_template_contract.py. Then, on
lpo's finished run: editing a paper text template and re-running the run id changes the paper and computes no
experiment unit; for every template, a change of the kernel configuration gives every unit a new key, so those
units would be computed again while the unchanged ones are found on disk.

lpo's resumed run (SERVER_LOST) reports to a ``scientist server`` of its own, killed once the resumed run has
finished two units: reporting to the UI is best effort (``tasks.runtime.artifacts.SERVER``), so the units after the
loss finish at the pace of those before it, as the run's own records show (each unit's finish time in the ledger,
less its compute time in its ``.json``: the time the driver spent around it), and the run ends with its papers or
with the one line that says the server was lost. The server is then started again on the same port and the same
run id re-run: it ends in papers, and the ledger shows no unit computed twice (the re-run is the run the other tests
read, and lpo's paper-text edit re-runs against that restarted server).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pymupdf
import pytest
from sizes import smoke_size

from jaxlib_kernels.stats import MIN_SEEDS
from jaxlib_kernels.templates import TEMPLATES, Profile, make
from jaxlib_kernels.tree import profile_of
from tasks import writeup

sys.path.insert(0, str(Path(__file__).parents[1] / "infra"))
from clusters import PrefectServer, kill_tree  # the infra tests' real Prefect server

ROOT = Path(__file__).resolve().parents[2]
SCIENTIST = [sys.executable, "-m", "flows.cli"]
# the templates whose first run is killed and resumed, and whose finished run is re-run after a paper-text edit
# (a whole run each: the suite's time; the mechanisms are generic, see the module docstring)
KILLED = ("lpo",)
EDIT_CHECKED = ("lpo",)
PAGE_CHECKED = ("lpo",)  # the default template's paper: printed text sizes and page fill (the layout is generic)
SERVER_LOST = ("lpo",)  # the resumed run loses its Prefect server after two units (best-effort reporting is generic)
MARKER = "This sentence was added to the paper text after the run had finished."


def _ledger(run_dir: Path) -> list[dict]:
    path = run_dir / "units" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _args(template: str, runs: Path, run_id: str) -> list[str]:
    seeds, budget = smoke_size(make(template))  # small enough for CI, large enough for a real comparison
    return [*SCIENTIST, "run", "--template", template, "--profile", "smoke", "--run-id", run_id, "--runs-dir", str(runs),
            "--seeds", str(seeds), "--budget", str(budget)]


def _env(api: str) -> dict:
    return {**os.environ, "PREFECT_API_URL": api}


def _run(template: str, runs: Path, run_id: str, api: str) -> subprocess.CompletedProcess:
    return subprocess.run(_args(template, runs, run_id), check=False, cwd=ROOT, capture_output=True, text=True,
                          env=_env(api))


def _of_run(run_dir: Path) -> list[psutil.Process]:
    """Processes whose environment names the run's folder (its Prefect database lives there): the run's own."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and any(str(run_dir) in v for v in p.environ().values()):
                out.append(p)
        except psutil.Error:
            pass
    return out


LEFT_BEHIND: dict[str, list[str]] = {}  # template -> processes of the killed run still alive after it died


def _kill_only_the_run(proc: subprocess.Popen, run_dir: Path) -> list[str]:
    """SIGKILL the run's own process only, as ``kill -9 PID`` does; the processes it started must end by
    themselves (tasks/runtime/lifeline.py). Returns those still alive a minute later (then killed, for the next tests)."""
    family = psutil.Process(proc.pid).children(recursive=True) + _of_run(run_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while (alive := [p for p in {*family, *_of_run(run_dir)} if p.is_running()
                     and p.status() != psutil.STATUS_ZOMBIE]) and time.time() < deadline:
        time.sleep(0.5)
    names = []
    for p in alive:
        try:
            names.append(" ".join(p.cmdline())[:200])
            p.kill()
        except psutil.Error:
            pass
    return names


LOST: dict[str, dict] = {}  # template -> its resumed run that lost its Prefect server (SERVER_LOST)
HANG_GUARD_S = 1800  # only against a hang: the run that lost its server is killed after this, the test then fails


def _lose_the_server(name: str, runs: Path, run_dir: Path, server: PrefectServer) -> dict:
    """Run ``name`` (resuming ``run_dir``) against ``server`` and kill the server once the run has finished two
    units of its own; what the run did until it ended. The server is then started again on the same port."""
    done = len(_ledger(run_dir))  # the units of the killed run
    log = runs / "server-lost.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(_args(name, runs, "smoke"), cwd=ROOT, env=_env(server.api), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while len(_ledger(run_dir)) < done + 2:
            assert proc.poll() is None, log.read_text()[-4000:]
            time.sleep(0.2)
        server.stop()
        lost_at = time.time()
        rc = proc.wait(HANG_GUARD_S)
    finally:
        kill_tree(proc)
    lost = {"rc": rc, "log": log.read_text(errors="replace"), "lost_at": lost_at, "api": server.api,
            "units": _ledger(run_dir)[done:], "run": json.loads((run_dir / "run.json").read_text())}
    server.restart()
    lost["healthy"] = server.healthy()
    return lost


@pytest.fixture(scope="module", params=list(TEMPLATES))
def finished(request, tmp_path_factory, prefect_api):
    """One smoke run per template (for KILLED: killed after its first unit, then resumed; for SERVER_LOST: the
    resumed run loses its Prefect server, which is started again for the re-run); shared by this module."""
    name = request.param
    runs = tmp_path_factory.mktemp(f"runs-{name}")
    run_dir = runs / "smoke"
    first, finished_files, api, server = [], {}, prefect_api, None
    try:
        if name in KILLED:
            with open(runs / "first.log", "w") as log:
                proc = subprocess.Popen(_args(name, runs, "smoke"), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # its own temporary server (PREFECT_API_URL is unset)
                while not _ledger(run_dir):  # kill as soon as the first experiment unit is on disk
                    assert proc.poll() is None, (runs / "first.log").read_text()[-3000:]
                    time.sleep(0.2)
                LEFT_BEHIND[name] = _kill_only_the_run(proc, run_dir)
            first = _ledger(run_dir)
            finished_files = {p.name: p.read_bytes() for e in first for p in (run_dir / "units").glob(f"{e['key']}.*")}
        if name in SERVER_LOST:
            server = PrefectServer(tmp_path_factory.mktemp(f"prefect-{name}"))
            LOST[name] = _lose_the_server(name, runs, run_dir, server)
            api = server.api
        out = _run(name, runs, "smoke", api)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        yield name, runs, run_dir, out, first, finished_files, api
    finally:
        if server is not None:
            server.stop()


def _killed_only(name: str) -> None:
    if name not in KILLED:
        pytest.skip(f"{name}: kill and resume are checked on {', '.join(KILLED)} (generic code)")


@pytest.mark.slow
def test_every_unit_is_computed_once_and_a_killed_run_resumes_without_computing_a_finished_unit_again(finished):
    name, _, run_dir, _, first, finished_files, _ = finished
    prof = make(name).profile("smoke")
    ideas = json.loads((run_dir / "ideas.json").read_text())
    from flows import pipeline

    run_baselines = pipeline.with_nearest_baselines(make(name), prof, ideas).baselines  # + the nearest known one
    total = (len(run_baselines) + prof.num_ideas) * len(prof.settings)
    keys = [e["key"] for e in _ledger(run_dir)]
    assert len(keys) == total and len(set(keys)) == total  # every unit once: none of the finished ones twice
    assert ideas[0]["novelty"]["decision"] == "novel" and ideas[0]["validation"]["accepted"]
    assert (run_dir / "summary.md").exists() and (run_dir.parent / "archive.sqlite").exists()
    assert (run_dir / "lineage.png").exists() and "lineage.png" in (run_dir / "summary.md").read_text()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["resumed"] is (name in KILLED)
    if name in KILLED:
        assert 1 <= len(first) < total
        assert _ledger(run_dir)[: len(first)] == first
        # the units finished before the kill are the same files, untouched by the resumed run
        assert {n: (run_dir / "units" / n).read_bytes() for n in finished_files} == finished_files


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_no_process_behind(finished):
    """Its temporary Prefect server, local Ray and gate children end with it (the resume then found none)."""
    name = finished[0]
    _killed_only(name)
    assert LEFT_BEHIND[name] == []


def _driver_seconds(run_dir: Path, entries: list[dict], previous: float) -> list[float]:
    """For each unit in ``entries`` (ledger order): the wall time since the previous unit finished, less the
    unit's own compute time (``seconds`` in its .json): what the run's driver spent around it."""
    out = []
    for e in entries:
        compute = json.loads((run_dir / "units" / f"{e['key']}.json").read_text())["seconds"]
        out.append(e["time"] - previous - compute)
        previous = e["time"]
    return out


@pytest.mark.slow
def test_a_run_outlives_its_prefect_server_and_resumes_when_it_is_back(finished):
    from flows.cli import SERVER_LOST as LOST_EXIT
    from tasks.runtime.artifacts import REPORT_TIMEOUT_S

    name, _, run_dir, out, *_ = finished
    if name not in SERVER_LOST:
        pytest.skip(f"{name}: the server loss is checked on {', '.join(SERVER_LOST)} (generic code)")
    lost = LOST[name]
    text = lost["log"]
    units = [e for e in lost["units"] if e["status"] == "ok"]
    before = [e for e in units if e["time"] <= lost["lost_at"]]
    after = [e for e in units if e["time"] > lost["lost_at"]]
    assert len(before) >= 2, text[-4000:]
    if lost["rc"] == LOST_EXIT:  # stopped: with the one line
        lines = [x for x in text.splitlines() if "was lost during run" in x]
        assert len(lines) == 1 and "--run-id smoke" in lines[0] and str(run_dir) in lines[0], text[-4000:]
    else:
        assert lost["rc"] == 0, text[-4000:]
    if after:  # units finished after the loss: at the pace of those before it
        first = _driver_seconds(run_dir, before, before[0]["time"])[1:]
        then = _driver_seconds(run_dir, after, before[-1]["time"])
        # a crawl is a minute of retries per unit; at most one report waits its timeout before the loss is seen
        assert max(then) <= 2 * max(*first, 1.0) + 2 * REPORT_TIMEOUT_S, (first, then)
    assert lost["run"]["prefect_server_lost"]["url"] == lost["api"]

    assert lost["healthy"]  # started again; the re-run of the same id on it:
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["resumed"] is True and run["papers"]
    assert all(Path(p["pdf"]).exists() for p in run["papers"])
    keys = [e["key"] for e in _ledger(run_dir) if e["status"] == "ok"]
    assert len(keys) == len(set(keys))  # no finished unit computed again


@pytest.mark.slow
def test_a_smoke_run_ends_in_a_pdf_and_a_review(finished):
    name, _, run_dir, out, *_ = finished
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["template"] == name and run["backend"] == "offline"
    assert run["papers"], "no paper"
    for paper in run["papers"]:
        assert paper["pdf"] in out.stdout
        idea_dir = run_dir / "ideas" / paper["idea"]
        review = json.loads((idea_dir / "review.json").read_text())
        assert review["Decision"] == ("Accept" if review["Overall"] >= 6 else "Reject")
        with pymupdf.open(paper["pdf"]) as doc:
            assert doc.page_count >= 4
            text = " ".join(page.get_text() for page in doc)
        final_info = json.loads((idea_dir / "final_info.json").read_text())
        for setting in final_info.values():
            assert setting["maximize"] is make(name).metric.maximize
            for mean in setting["means"].values():
                assert f"{mean:.3f}" in text.replace("\u2212", "-")
    ideas = json.loads((run_dir / "ideas.json").read_text())
    assert all(i["kind"] == make(name).plugin.kind for i in ideas)
    # no warning raised in our own code (Python prints its file), nor Ray's about the warm-up thread (filtered)
    printed = out.stdout + out.stderr
    ours = [line for line in printed.splitlines() if "Warning" in line
            and any(f"{ROOT}/{part}/" in line for part in ("flows", "tasks", "jaxlib_kernels"))]
    assert not ours and "SIGTERM handler is not set" not in printed, ours


@pytest.mark.slow
def test_the_paper_prints_figure_and_table_text_at_6_pt_or_more_and_leaves_no_page_half_empty(finished):
    """Measured from the PDF with pymupdf: every text span (tables, formulas) and every figure's text as printed
    (its vector twin's smallest font x placement width / drawn width); the blank rows of each page's text block."""
    from tasks import figcheck

    name, _, run_dir, *_ = finished
    if name not in PAGE_CHECKED:
        pytest.skip(f"{name}: the page layout is checked on {', '.join(PAGE_CHECKED)} (generic code)")
    for paper in json.loads((run_dir / "run.json").read_text())["papers"]:
        pdf = Path(paper["pdf"])
        assert min(size for _, size, _ in figcheck.text_sizes(pdf)) >= 6.0
        placed = figcheck.placed_figures(pdf, pdf.parent / "figures")
        assert len(placed) >= 3 and all(f["printed_pt"] >= 6.0 for f in placed), placed
        blank = [1 - fill for fill in figcheck.page_fill(pdf)]
        assert max(blank[:-1]) <= 0.35, blank
        record = json.loads((pdf.parent / "checks.json").read_text())
        assert record["rounds"] and not [f for f in record["final"] if f["check"] in ("text_size", "page_fill")]


def test_a_smoke_paper_names_only_what_ran_and_claims_only_what_its_seeds_allow(finished):
    """Every setting, baseline and environment the PDF names ran; no internal words (the template's list); no
    significance claimed with fewer seeds than MIN_SEEDS, and it says why; every interval inside the metric's range."""
    name, _, run_dir, *_ = finished
    template = make(name)
    ideas = {i["Name"]: i for i in json.loads((run_dir / "ideas.json").read_text())}
    for paper in json.loads((run_dir / "run.json").read_text())["papers"]:
        idea_dir = run_dir / "ideas" / paper["idea"]
        final_info = json.loads((idea_dir / "final_info.json").read_text())
        with pymupdf.open(paper["pdf"]) as doc:
            text = " ".join(" ".join(page.get_text().split()) for page in doc).replace("\u2212", "-")
        ran = writeup.ran_names(final_info, ideas[paper["idea"]])
        envs = {info["env"] for info in final_info.values()}
        for setting in template.settings.values():
            if setting.name not in final_info:
                assert not re.search(rf"(?<![\w-]){re.escape(setting.name)}(?![\w-])", text), setting.name
                assert setting.env in envs or setting.env not in text, setting.env
        tex = (idea_dir / "paper" / "paper.tex").read_text()
        described = set(re.findall(r"\\label\{eq:([^}]+)\}", tex)) & {writeup._label_key(b) for b in template.baselines}
        assert described <= {writeup._label_key(b) for b in ran}, described  # only the baselines that ran
        assert writeup.unrun_mentions(text, name, ran) == []
        assert writeup.internal_words(text, name) == []
        comps = [info["comparison"] for info in final_info.values() if "comparison" in info]
        few = [c for c in comps if not c["seeds_enough"]]
        assert all(not c["significant"] and not c["better"] and not c["worse"] for c in few)
        if few:
            assert f"fewer than the {MIN_SEEDS} a significance claim requires" in text
            assert "significantly better" not in text and "significantly worse" not in text
        low, high = template.metric.bounds or (None, None)
        low, high = -math.inf if low is None else low, math.inf if high is None else high
        for info in final_info.values():
            assert all(low <= lo <= hi <= high for lo, hi in info["ci95"].values())
            if "comparison" in info:
                lo, hi = info["comparison"]["ci95"]
                assert low - high <= lo <= hi <= high - low
        for lo, hi in re.findall(r"\[(-?\d+\.\d{3}), (-?\d+\.\d{3})\]", text):  # every interval printed
            assert low - high <= float(lo) <= float(hi) <= high - low


def test_every_idea_grows_a_tree_in_every_stage_and_its_paper_reports_the_replication(finished):
    """tree.json per implemented idea with nodes in implement, tune, improve and ablate; every baseline tuned with the
    candidate's number of evaluations; the paper's units are the replication: the tree's final candidate with its
    tuned hyperparameters and every baseline's tuned source and hyperparameters, on the run's seeds (never the tree's
    search seeds), every setting; final_info.json says so; summary.md links each tree view."""
    from flows import pipeline
    from tasks.experiments import load_unit

    name, _, run_dir, *_ = finished
    template = make(name)
    prof = profile_of(json.loads((run_dir / "run.json").read_text())["profile"])  # as the run recorded it
    ideas = json.loads((run_dir / "ideas.json").read_text())
    tuning = pipeline.load_baseline_tuning(run_dir)
    run_baselines = pipeline.with_nearest_baselines(template, prof, ideas).baselines
    assert set(tuning) == set(run_baselines)
    implemented = [i for i in ideas if (i.get("validation") or {}).get("accepted")]
    assert implemented
    summary_md = (run_dir / "summary.md").read_text()
    for idea in implemented:
        tree_dir = run_dir / "ideas" / idea["Name"] / "tree"
        tree = json.loads((tree_dir / "tree.json").read_text())
        assert {"implement", "tune", "improve", "ablate"} <= {n["stage"] for n in tree["nodes"]}, tree["nodes"]
        assert idea["tree"]["final"]["candidate"] == tree["final"]["candidate"]
        [cand_tuning] = [t for t in tree["tuning"].values() if t["role"] == "candidate"]
        assert {t["evaluations"] for t in tuning.values()} == {cand_tuning["evaluations"]}  # equal budgets
        assert not set(tree["search"]["seeds"]) & set(range(prof.seeds))
        for view in ("tree.png", "tree.html"):
            assert (tree_dir / view).exists() and f"ideas/{idea['Name']}/tree/{view}" in summary_md
        # the units the paper's results came from: the final candidate's and the tuned baselines', all on disk
        specs = pipeline.candidate_specs(template, prof, idea) + pipeline.baseline_specs(
            template, pipeline.with_nearest_baselines(template, prof, ideas), tuning)
        assert all(load_unit(run_dir / "units", s) is not None for s in specs)
        assert {s["source"] for s in specs if s["role"] == "candidate"} == {tree["final"]["candidate"]}
        assert all(s.get("hparams", {}) == (tree["final"]["hparams"] if s["role"] == "candidate"
                                            else tuning[s["method"]]["hparams"]) for s in specs)
        final_info = json.loads((run_dir / "ideas" / idea["Name"] / "final_info.json").read_text())
        assert set(final_info) == set(prof.settings)
        for entry in final_info.values():
            assert entry["replication"] is True and entry["n"][idea["Name"]] == prof.seeds
            ran_with = entry.get("tuned", {})
            assert ran_with.get(idea["Name"], {}).get("hparams", {}) == tree["final"]["hparams"]
            assert all(ran_with.get(b, {}).get("hparams", {}) == tuning[b]["hparams"]
                       for b in entry["means"] if b in tuning)


def _paper_text_file(template) -> Path:
    """A paper text only this template's papers use (its limitations override), else the generic conclusion."""
    own = template.text_dir / "paper" / "limitations.tex.j2"
    return own if own.exists() else ROOT / "prompts" / "paper" / "conclusion.tex.j2"


@pytest.mark.slow
def test_editing_the_paper_text_rewrites_the_paper_and_computes_no_unit(finished):
    name, runs, run_dir, *_, api = finished
    if name not in EDIT_CHECKED:
        pytest.skip(f"{name}: the text-edit re-run is checked on {', '.join(EDIT_CHECKED)} (the cache policy is generic)")
    units_before = _ledger(run_dir)
    ideas_before = json.loads((run_dir / "ideas.json").read_text())
    text_file = _paper_text_file(make(name))
    original = text_file.read_bytes()
    try:
        text_file.write_bytes(original + f"\n{MARKER}\n".encode())
        out = _run(name, runs, "smoke", api)
    finally:
        text_file.write_bytes(original)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert _ledger(run_dir) == units_before, "an experiment unit was computed again"
    ideas = json.loads((run_dir / "ideas.json").read_text())
    assert [i.get("source") for i in ideas] == [i.get("source") for i in ideas_before]
    for paper in json.loads((run_dir / "run.json").read_text())["papers"]:
        with pymupdf.open(paper["pdf"]) as doc:
            assert MARKER[:40] in " ".join(" ".join(page.get_text().split()) for page in doc)


def test_a_kernel_configuration_change_gives_new_unit_keys(finished):
    from flows import pipeline
    from tasks.experiments import load_unit

    name, _, run_dir, *_ = finished
    template = make(name)
    prof = Profile(**json.loads((run_dir / "run.json").read_text())["profile"])
    specs = pipeline.baseline_specs(template, prof, pipeline.load_baseline_tuning(run_dir))  # as the run tuned them
    assert all(load_unit(run_dir / "units", s) is not None for s in specs), "the unchanged units are reused"
    def changed_config(setting, budget):  # the same fields under another class name: another repr, another key
        config = template.kernel_config(setting, budget)
        return type(f"Changed{type(config).__name__}", (type(config),), {})(**{
            f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    changed = dataclasses.replace(template, kernel_config=changed_config)
    moved = pipeline.baseline_specs(changed, prof, pipeline.load_baseline_tuning(run_dir))
    assert all(a["key"] != b["key"] for a, b in zip(specs, moved, strict=True))
    assert all(load_unit(run_dir / "units", s) is None for s in moved), "changed units must be computed again"
