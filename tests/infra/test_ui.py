"""The researcher's cockpit, in a real browser, on a Prefect server backed by a real PostgreSQL: the Prefect UI of
``scientist server`` on a non-default port and a throw-away PostgreSQL cluster (tests/infra/clusters.py: Debian's
``postgresql`` binaries, 127.0.0.1, a free port), in headless Chromium (Debian's ``chromium`` +
``chromium-driver``, driven by Selenium), deployments from ``prefect.yaml`` on a process worker, and approval of
ideas.

One server, one deployment of ``prefect.yaml`` and one process worker (module fixtures) serve every check (each
costs process starts: one of each for the module, not one per concern). Four smallest lpo runs report to it:

* the cockpit: two runs with ``--approve ideas`` at once. ``browser`` (two ideas) is a run of the ``lpo``
  deployment, picked up by the worker as a run started from the UI or a schedule is, resumed through the UI's form
  with one of its ideas approved and feedback typed in, then runs to a paper (stages implement and replicate: no
  tree search); ``cli`` (``scientist run``) is resumed with ``scientist approve`` (an unknown name: nothing
  approved, so it stops before the experiments). The
  flow run page of ``browser`` is then read as a researcher reads it: its state, its task runs, its artifacts
  (ideas, results, figures, review, PDF link); its task runs, logs and artifacts are also read from the API.
  Screenshots are kept under the test's temporary folder.
* Postgres: a flow run from ``scientist run`` (``direct``) and a deployment run on the worker (``deployed``), both
  with a 2-second approval timeout, so each proposes, checks novelty, pauses (a Paused state with a run-input form
  in Postgres), times out and completes cleanly; both are rows of that database.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from clusters import BIN, FINAL, ROOT, SCIENTIST, SMALLEST, api, kill_tree, prefect

try:  # the Postgres checks run without a browser
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    webdriver = None

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.slow
NO_API = "Can't connect to Server API"
FEEDBACK = "keep the clip range small"
WAIT_S = 120  # a page or a run state appearing; generous for a loaded 2-core machine


def flow_run_of(server, run_id: str) -> dict | None:
    runs = [r for r in api(server, "/flow_runs/filter", {}) if (r.get("parameters") or {}).get("run_id") == run_id]
    return runs[0] if runs else None


@pytest.fixture(scope="module")
def prefect_server(postgres_prefect_server):
    """The module's one server: ``scientist server`` on a throw-away PostgreSQL."""
    return postgres_prefect_server


@pytest.fixture(scope="module")
def worker(prefect_server, tmp_path_factory):
    """Every deployment of prefect.yaml on the server (as ``prefect deploy`` from the repository), and a process
    worker for the module's deployment runs: yields (its process, its log)."""
    server = prefect_server
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    server.env["SCIENTIST_HOME"] = str(ROOT)
    prefect(server, "work-pool", "create", "scientist-process", "--type", "process")
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    names = [d["name"] for d in declared if (ROOT / d["entrypoint"].split(":")[0]).exists()]
    prefect(server, "deploy", *[a for n in names for a in ("--name", n)])
    # the worker asks the server for scheduled runs every 2 s instead of Prefect's 10 (the runs start sooner; a
    # researcher's worker keeps the default)
    proc = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "scientist-process"], cwd=ROOT,
                            env={**server.env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    try:
        yield proc, log
    finally:
        kill_tree(proc)


def start_deployment_run(server, *params: str) -> str:
    """A run of the ``lpo`` deployment with ``params`` (``name=value``); its flow run id."""
    out = prefect(server, "deployment", "run", "ai-scientist/lpo", *[a for p in params for a in ("--param", p)])
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert found, out
    return found.group(1)


def wait_state(server, run_id: str, proc: subprocess.Popen, log: Path, states: set[str]) -> dict:
    while True:
        ended = proc.poll() is not None
        run = flow_run_of(server, run_id)
        if run is not None and run["state_type"] in states:
            return run
        assert not ended, log.read_text()[-4000:]
        time.sleep(1)


def body(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def wait_text(driver, *texts: str) -> str:
    WebDriverWait(driver, WAIT_S).until(lambda d: all(t in body(d) for t in texts))
    return body(driver)


def click(driver, text: str, tag: str = "*") -> None:
    def find(d):  # the innermost shown element whose whole text is ``text``
        shown = [el for el in d.find_elements(By.XPATH, f"//{tag}[normalize-space(.)='{text}']") if el.is_displayed()]
        return shown[-1] if shown else False

    WebDriverWait(driver, WAIT_S).until(find).click()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if webdriver is None or not (CHROMIUM and DRIVER):
        pytest.skip("selenium, chromium + chromium-driver (make install)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.shots = tmp_path_factory.mktemp("screenshots")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def cockpit(prefect_server, worker, browser, tmp_path_factory):
    """The two runs, resumed from the UI form and from the CLI; returns what each left."""
    server = prefect_server
    tmp = tmp_path_factory.mktemp("cockpit")
    runs = tmp / "runs"
    extra = {"cli": []}
    procs, logs = {"browser": worker[0]}, {"browser": worker[1]}
    try:
        # the worker runs the deployment run; its idea is implemented and replicated without a tree search (the
        # tree's stages are the template runs' and test_tree_growth.py's concern, not the cockpit's)
        start_deployment_run(server, "profile=smoke", "seeds=2", "budget=8192", "num_ideas=2", "approve=ideas",
                             'stages=["implement", "replicate"]', "run_id=browser", f"runs_dir={runs}")
        for name, more in extra.items():
            logs[name] = tmp / f"{name}.log"
            procs[name] = subprocess.Popen([*SCIENTIST, "run", *SMALLEST, "--approve", "ideas", "--run-id", name,
                                            "--runs-dir", str(runs), *more], cwd=ROOT, env=server.env,
                                           stdout=open(logs[name], "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                           start_new_session=True)
        # the UI's form: keep one of the two ideas, type feedback, submit
        paused = wait_state(server, "browser", procs["browser"], logs["browser"], {"PAUSED"})
        browser.get(f"http://127.0.0.1:{server.port}/runs/flow-run/{paused['id']}")
        wait_text(browser, "Paused")
        click(browser, "Resume", "button")
        WebDriverWait(browser, WAIT_S).until(lambda d: len(d.find_elements(By.TAG_NAME, "textarea")) >= 2)
        ideas_box, feedback_box = browser.find_elements(By.TAG_NAME, "textarea")[:2]
        proposed = [n for n in ideas_box.get_attribute("value").split(",") if n]
        ideas_box.clear()
        ideas_box.send_keys(proposed[0])
        feedback_box.send_keys(FEEDBACK)
        browser.save_screenshot(str(browser.shots / "resume-form.png"))
        click(browser, "Submit", "button")
        wait_state(server, "browser", procs["browser"], logs["browser"], {"RUNNING"} | FINAL)  # the form reached it
        browser.get("about:blank")  # while the runs go on: a live Prefect page costs headless Chromium half a core

        # the CLI: an unknown name approves nothing
        wait_state(server, "cli", procs["cli"], logs["cli"], {"PAUSED"})
        approve = subprocess.run([*SCIENTIST, "approve", "cli", "--ideas", "no_such_idea", "--feedback", "not now"],
                                 cwd=ROOT, env=server.env, capture_output=True, text=True, check=False)
        for name in extra:
            assert procs[name].wait() in (0, 1), logs[name].read_text()[-4000:]  # 1: the run ended without a paper
        wait_state(server, "browser", procs["browser"], logs["browser"], FINAL)
        return {"runs": runs, "proposed": proposed, "approve": approve, "logs": logs,
                "flow_runs": {name: flow_run_of(server, name) for name in procs}}
    finally:
        browser.save_screenshot(str(browser.shots / "cockpit-last.png"))  # where the browser was, if it failed
        for name in extra:  # the worker is the module's (killed by its fixture)
            if name in procs:
                kill_tree(procs[name])


def run_json(cockpit, name: str) -> dict:
    return json.loads((cockpit["runs"] / name / "run.json").read_text())


def test_scientist_server_says_where_the_ui_and_api_are(prefect_server):
    banner = prefect_server.banner
    assert f"UI:  http://127.0.0.1:{prefect_server.port}" in banner
    assert f"export PREFECT_API_URL=http://127.0.0.1:{prefect_server.port}/api" in banner
    assert prefect_server.healthy()
    with urllib.request.urlopen(f"http://127.0.0.1:{prefect_server.port}/", timeout=30) as reply:
        assert reply.status == 200 and b"<html" in reply.read().lower()  # the UI is served


def test_prefect_yaml_deploys_every_flow_with_its_schedule_and_work_pool(prefect_server, cockpit):
    deployments = {d["name"]: d for d in api(prefect_server, "/deployments/filter", {})}
    declared = [d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]]
    assert set(declared) <= set(deployments) and {"lpo", "lpo-nightly-open-ended"} <= set(declared)
    nightly = deployments["lpo-nightly-open-ended"]
    [schedule] = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] and nightly["work_pool_name"] == "scientist-process"
    assert deployments["lpo"]["parameters"]["template"] == "lpo"


def test_the_deployment_run_on_a_process_worker_records_its_task_runs_logs_and_artifacts(prefect_server, cockpit):
    server, run = prefect_server, cockpit["flow_runs"]["browser"]
    assert run["state_type"] == "COMPLETED", (run["state"], cockpit["logs"]["browser"].read_text()[-4000:])
    assert run["deployment_id"] and run["work_pool_name"] == "scientist-process" and run["parameters"]["seeds"] == 2
    task_runs = api(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
    names_seen = {t["name"].rsplit("-", 1)[0] for t in task_runs}
    assert {"generate_ideas", "run_experiments", "aggregate_results"} <= names_seen, names_seen
    assert all(t["state_type"] == "COMPLETED" for t in task_runs), [(t["name"], t["state_type"]) for t in task_runs]
    logs = api(server, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200})
    assert any("unit ppo_clip" in entry["message"] for entry in logs)  # per-unit lines of run_experiments
    assert run_json(cockpit, "browser")["prefect_api_url"] == server.api


def test_the_ui_reaches_its_api_on_a_non_default_port(prefect_server, browser, cockpit):
    assert prefect_server.port != 4200
    browser.get(f"http://127.0.0.1:{prefect_server.port}/runs")
    text = wait_text(browser, "ai-scientist", cockpit["flow_runs"]["browser"]["name"])
    assert NO_API not in text


def test_a_run_resumed_from_the_ui_form_runs_only_the_approved_idea_with_the_feedback(cockpit):
    chosen, dropped = cockpit["proposed"][0], cockpit["proposed"][1]
    run = run_json(cockpit, "browser")
    assert run["status"] == "completed", cockpit["logs"]["browser"].read_text()[-3000:]
    assert run["approval"] == {"status": "resumed", "approved": [chosen], "feedback": FEEDBACK, "ignored": []}
    ideas = {i["Name"]: i for i in json.loads((cockpit["runs"] / "browser" / "ideas.json").read_text())}
    assert ideas[chosen]["status"] == "reviewed" and ideas[chosen]["researcher_feedback"] == FEEDBACK
    assert ideas[dropped]["status"] == "not approved" and "source" not in ideas[dropped]
    methods = {json.loads(x)["method"] for x in (cockpit["runs"] / "browser" / "units" / "ledger.jsonl").read_text()
               .splitlines() if x.strip()}
    assert chosen in methods and dropped not in methods  # the approved subset is what ran
    assert [p["idea"] for p in run["papers"]] == [chosen]


def test_scientist_approve_resumes_a_paused_run_from_the_cli(cockpit):
    out = cockpit["approve"]
    assert out.returncode == 0 and "resumed flow run" in out.stdout, out.stderr[-2000:]
    run = run_json(cockpit, "cli")
    assert run["status"] == "stopped: no idea approved"
    assert run["approval"]["approved"] == [] and run["approval"]["ignored"] == ["no_such_idea"]
    assert run["approval"]["feedback"] == "not now"
    assert not (cockpit["runs"] / "cli" / "units" / "ledger.jsonl").exists()  # no experiment started
    assert cockpit["flow_runs"]["cli"]["state_type"] == "COMPLETED"


def test_the_flow_run_page_shows_state_task_runs_and_artifacts(prefect_server, browser, cockpit):
    flow_run = cockpit["flow_runs"]["browser"]
    assert flow_run["state_type"] in FINAL
    base = f"http://127.0.0.1:{prefect_server.port}"
    browser.get(f"{base}/runs/flow-run/{flow_run['id']}")
    text = wait_text(browser, "Completed", flow_run["name"], "Task runs")
    assert NO_API not in text
    browser.save_screenshot(str(browser.shots / "flow-run.png"))
    click(browser, "Task Runs")
    wait_text(browser, "run_experiments", "aggregate_results", "write_paper", "review_paper")
    browser.save_screenshot(str(browser.shots / "task-runs.png"))
    click(browser, "Artifacts")
    wait_text(browser, "results", "ideas", "figures", "run-summary")
    browser.save_screenshot(str(browser.shots / "artifacts.png"))

    chosen, dropped = cockpit["proposed"]
    artifacts = {a["key"]: a for a in sorted(api(prefect_server, "/artifacts/filter", {  # the latest of each key
        "artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}}), key=lambda a: a["created"])}
    review_key = next(k for k in artifacts if k.startswith("review-"))
    paper_key = next(k for k in artifacts if k.startswith("paper-"))
    # what a researcher looks for, rendered in the page: ideas, results, review, PDF link, figures, lineage
    expect = {"ideas": [chosen, dropped, "not approved"], "results": ["candidate_mean", "best_baseline", chosen],
              review_key: ["Review of", "overall"], paper_key: ["paper.pdf"],
              "lineage": ["Lineage of the archive", "derived from a parent"], "figures": ["learning curves"]}
    # and the rest from the API (one page load each costs headless Chromium seconds of a busy 2-core machine)
    assert "Papers" in artifacts["run-summary"]["data"] and "paper.pdf" in artifacts["run-summary"]["data"]
    assert chosen in json.dumps(artifacts["archive"]["data"])
    pdf = run_json(cockpit, "browser")["papers"][0]["pdf"]
    for key, texts in expect.items():  # one page load each: its text, and its images or link on the same page
        browser.get(f"{base}/artifacts/artifact/{artifacts[key]['id']}")
        try:
            wait_text(browser, key, *texts)
        except TimeoutException:
            browser.save_screenshot(str(browser.shots / f"artifact-{key}-failed.png"))
            raise AssertionError(f"artifact {key}: {texts} not all in the page:\n{body(browser)[-2000:]}") from None
        if key in ("figures", "lineage"):
            WebDriverWait(browser, WAIT_S).until(lambda d: any(
                (i.get_attribute("src") or "").startswith("data:image/png") and i.size["width"] > 100
                for i in d.find_elements(By.TAG_NAME, "img")))  # the figures are drawn, not only named
        if key == paper_key:
            WebDriverWait(browser, WAIT_S).until(lambda d: any(
                (a.get_attribute("href") or "") == Path(pdf).resolve().as_uri()
                for a in d.find_elements(By.TAG_NAME, "a")))
        browser.save_screenshot(str(browser.shots / f"artifact-{key}.png"))
    assert artifacts["experiment-progress"]["data"] == 100.0


def test_feedback_reaches_the_llm_code_prompt():
    from jaxlib_kernels.templates import make
    from tasks.runtime.llm import render

    template = make("lpo")
    idea = {"Name": "x", "Title": "T", "Experiment": "E", "researcher_feedback": FEEDBACK}
    prompt = render("code.j2", "lpo", task="", template=template, plugin_name="drift",
                    idea=idea, signature=template.plugin.signature, example="", example_label="")
    assert FEEDBACK in prompt
    assert FEEDBACK not in render("code.j2", "lpo", task="", template=template, plugin_name="drift",
                                  idea={**idea, "researcher_feedback": ""}, signature="", example="", example_label="")


# --------------------------------------------------------------------------- Prefect on PostgreSQL

APPROVAL = ["--approve", "ideas", "--approval-timeout", "2"]


@pytest.fixture(scope="module")
def on_postgres(prefect_server, worker, tmp_path_factory):
    """``direct`` (``scientist run``) and ``deployed`` (a deployment run on the worker) at once, both paused for
    approval until their 2-second timeout (the smallest sizes: the lpo smoke runs' compiled programs)."""
    server = prefect_server
    runs = tmp_path_factory.mktemp("pg-runs") / "runs"
    deployed_id = start_deployment_run(server, "profile=smoke", "seeds=2", "budget=8192", "approve=ideas",
                                       "approval_timeout=2", "run_id=deployed", f"runs_dir={runs}")
    cli = subprocess.run([*SCIENTIST, "run", *SMALLEST, *APPROVAL, "--run-id", "direct", "--runs-dir", str(runs)],
                         cwd=ROOT, env=server.env, capture_output=True, text=True, check=False)
    while (deployed := api(server, f"/flow_runs/{deployed_id}"))["state_type"] not in FINAL:
        assert worker[0].poll() is None, worker[1].read_text()[-4000:]
        time.sleep(2)
    return {"server": server, "runs": runs, "cli": cli, "deployed": deployed, "worker_log": worker[1]}


def test_scientist_server_runs_on_postgres(on_postgres):
    server = on_postgres["server"]
    assert "database: postgresql+asyncpg://prefect@127.0.0.1:" in server.banner and server.healthy()
    out = subprocess.run([*server.postgres.as_user, str(server.postgres.bin / "psql"), "-h", "127.0.0.1", "-p",
                          str(server.postgres.port), "-U", "prefect", "-At", "-c",
                          "SELECT count(*) FROM flow_run", "prefect"], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) >= 2  # both runs are rows of this Postgres


def test_a_flow_run_from_the_cli_is_recorded_in_postgres(on_postgres):
    server, cli = on_postgres["server"], on_postgres["cli"]
    assert cli.returncode == 1 and "stopped: approval timed out" in cli.stdout, cli.stdout[-3000:] + cli.stderr[-3000:]
    [flow_run] = [r for r in api(server, "/flow_runs/filter", {}) if r["parameters"].get("run_id") == "direct"]
    assert flow_run["state_type"] == "COMPLETED" and flow_run["deployment_id"] is None
    tasks = api(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    assert {t["name"].rsplit("-", 1)[0] for t in tasks} >= {"generate_ideas", "check_novelty"}
    states = api(server, f"/flow_run_states/?flow_run_id={flow_run['id']}")
    assert "PAUSED" in {s["type"] for s in states}
    artifacts = {a["key"] for a in api(server, "/artifacts/filter",
                                       {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}})}
    assert {"ideas", "run-summary"} <= artifacts
    run = json.loads((on_postgres["runs"] / "direct" / "run.json").read_text())
    assert run["status"] == "stopped: approval timed out" and run["approval"]["status"] == "timed out"
    ideas = json.loads((on_postgres["runs"] / "direct" / "ideas.json").read_text())
    assert ideas and {i["status"] for i in ideas} == {"novel"}  # proposed, checked, kept; nothing trained
    assert not (on_postgres["runs"] / "direct" / "units" / "ledger.jsonl").exists()


def test_a_deployment_run_on_a_process_worker_is_recorded_in_postgres(on_postgres):
    deployed = on_postgres["deployed"]
    assert deployed["state_type"] == "COMPLETED", on_postgres["worker_log"].read_text()[-4000:]
    assert deployed["work_pool_name"] == "scientist-process" and deployed["deployment_id"]
    run = json.loads((on_postgres["runs"] / "deployed" / "run.json").read_text())
    assert run["status"] == "stopped: approval timed out" and run["prefect_api_url"] == on_postgres["server"].api
