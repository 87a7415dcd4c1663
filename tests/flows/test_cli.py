"""The command line as a researcher uses it: errors, the validation gate, ``scientist templates``. (A killed run
resumed, for every template: ``tests/flows/test_template_runs.py``.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCIENTIST = [sys.executable, "-m", "flows.cli"]


def scientist(*args, **kw):
    return subprocess.run([*SCIENTIST, *args], check=False, cwd=ROOT, capture_output=True, text=True, **kw)


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
        (["run", "--stages", "implement,tuen"], "--stages: unknown stage 'tuen'"),
        (["run", "--stages", ","], "--stages: no stage named"),
        (["run", "--tree", "tune=4,widht=2"], "--tree: unknown tree budget 'widht'"),
        (["run", "--tree", "tune=four"], "--tree: tree budget tune must be a whole number"),
        (["run", "--tree", "fraction=1.5"], "--tree: tree budget fraction must be in (0, 1]"),
        (["run", "--tree", "seeds=0"], "--tree: tree budget seeds must be at least 1"),
        (["run", "--tree", "tune"], "--tree takes KEY=VALUE pairs"),
        (["run", "--tree", "stages=tune"], "chosen with --stages"),
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
