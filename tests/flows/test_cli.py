"""The command line as a researcher uses it: errors, the validation gate, and a killed run resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pymupdf
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCIENTIST = [sys.executable, "-m", "flows.cli"]
FORM = ["Summary", "Strengths", "Weaknesses", "Originality", "Quality", "Clarity", "Significance", "Questions",
        "Limitations", "Ethical Concerns", "Soundness", "Presentation", "Contribution", "Overall", "Confidence",
        "Decision"]


def scientist(*args, **kw):
    return subprocess.run([*SCIENTIST, *args], cwd=ROOT, capture_output=True, text=True, **kw)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--template", "lpp"], "did you mean 'lpo'"),
        (["run", "--profile", "smoek"], "did you mean 'smoke'"),
        (["run", "--seeds", "0"], "--seeds must be at least 1"),
        (["run", "--ideas", "two"], "--ideas must be a whole number"),
        (["run", "--run-id", "../escape"], "run id"),
        (["run", "--runs-dir", "/proc/version/runs"], "cannot write the runs folder"),
        (["validate", "x.py", "--template", "nope"], "unknown template"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    out = scientist(*args)
    assert out.returncode == 2, out
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_validate_accepts_a_good_drift_and_rejects_a_hostile_one(tmp_path):
    from jaxlib_kernels.templates.lpo import baseline_source

    good = tmp_path / "good.py"
    good.write_text(baseline_source("dpo"))
    out = scientist("validate", str(good))
    assert out.returncode == 0 and out.stdout.startswith("accepted"), out
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef drift(ratio, advantage, progress):\n    return ratio * 0\n")
    out = scientist("validate", str(bad))
    assert out.returncode == 1 and "rejected" in out.stdout and "'os'" in out.stdout, out
    out = scientist("validate", str(tmp_path / "missing.py"))
    assert out.returncode == 1 and "rejected" in out.stdout


def _ledger(run_dir: Path) -> list[dict]:
    path = run_dir / "units" / "ledger.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _kill_tree(proc: subprocess.Popen) -> None:
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


@pytest.mark.slow
def test_smoke_run_killed_during_experiments_resumes_and_writes_a_paper(tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "killed"
    args = [*SCIENTIST, "run", "--profile", "smoke", "--seeds", "2", "--budget", "8192", "--run-id", "killed",
            "--runs-dir", str(runs)]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    while not _ledger(run_dir):  # kill as soon as the first experiment unit is on disk
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.5)
    _kill_tree(proc)
    first = _ledger(run_dir)
    assert 1 <= len(first) < 8
    finished = {p.name: p.read_bytes() for e in first for p in (run_dir / "units").glob(f"{e['key']}.*")}

    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ledger = _ledger(run_dir)
    keys = [e["key"] for e in ledger]
    # 3 baselines + 1 candidate on 2 settings; no finished unit was computed twice
    assert len(keys) == 8 and len(set(keys)) == 8
    assert ledger[: len(first)] == first
    # the units finished before the kill are the same files, untouched by the resumed run
    assert {name: (run_dir / "units" / name).read_bytes() for name in finished} == finished

    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["resumed"] is True
    [paper] = run["papers"]
    assert paper["pdf"] in out.stdout and paper["decision"] in out.stdout
    idea_dir = run_dir / "ideas" / paper["idea"]
    review = json.loads((idea_dir / "review.json").read_text())
    assert set(FORM) <= set(review) and review["Decision"] == ("Accept" if review["Overall"] >= 6 else "Reject")

    doc = pymupdf.open(paper["pdf"])
    assert doc.page_count >= 4
    assert sum(len(page.get_images()) for page in doc) >= 2
    text = " ".join(page.get_text() for page in doc)
    final_info = json.loads((idea_dir / "final_info.json").read_text())
    for setting in final_info.values():
        for mean in setting["means"].values():
            assert f"{mean:.3f}" in text
    assert "??" not in text
    ideas = json.loads((run_dir / "ideas.json").read_text())
    assert ideas[0]["novelty"]["decision"] == "novel" and ideas[0]["validation"]["accepted"]
    assert (run_dir / "summary.md").exists() and (runs / "archive.sqlite").exists()


def test_templates_lists_every_registered_template_with_what_it_declares(capsys):
    from flows import cli
    from jaxlib_kernels.templates import TEMPLATES

    assert {"lpo", "hades"} <= set(TEMPLATES)
    assert cli.main(["templates"]) == 0
    text = capsys.readouterr().out
    blocks = {block.split(":", 1)[0]: block for block in text.strip().split("\n\n")}
    assert list(blocks) == list(TEMPLATES)
    for name, template in TEMPLATES.items():
        block = blocks[name]
        assert template.plugin.signature in block and f"[{template.plugin.kind}]" in block
        assert f"{template.metric.name}, {template.metric.direction}" in block
        assert f"in {template.budget_unit}" in block
        for setting_name, setting in template.settings.items():
            assert f"{setting_name} ({'held out' if setting.held_out else 'training'})" in block
        for profile_name in template.profiles:
            assert f"profile    {profile_name}:" in block
    assert "drift(ratio, advantage, progress) -> " in blocks["lpo"] and "maximised" in blocks["lpo"]
    assert "[parametric]" in blocks["hades"]

    assert cli.main(["templates", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described == [template.describe() for template in TEMPLATES.values()]
    by_name = {d["name"]: d for d in described}
    assert by_name["lpo"]["plugin"] == TEMPLATES["lpo"].plugin.signature
    assert by_name["lpo"]["kind"] == "source" and by_name["hades"]["kind"] == "parametric"
    for name, template in TEMPLATES.items():
        assert by_name[name]["direction"] == template.metric.direction
