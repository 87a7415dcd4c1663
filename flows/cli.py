"""The ``scientist`` command line: ``run`` (the AI-Scientist flow), ``validate`` (the gate on a hand-written plug-in),
``templates`` (the registered research templates), ``server`` (a local Prefect server with its UI), ``meta`` (ES
meta-training), ``discover`` (the symbolic discovery engine, ``flows/discovery.py``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# a busy 2-core machine needs more than the default 20 s to start the temporary Prefect server
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect 3.9's client prints a first-run telemetry notice on a terminal (over the progress line); the pipeline
# runs offline by design, so its client-side telemetry is off too unless the user sets DO_NOT_TRACK otherwise
os.environ.setdefault("DO_NOT_TRACK", "1")


SERVER_LOST = 4  # the exit status of a run whose Prefect server went away (its results are kept; re-run to resume)


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


def _positive(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {value}")
        return value

    return parse


def _positive_float(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        print(f"scientist: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scientist", description="jax-scientist: automated JAX RL / meta-learning research.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the AI-Scientist flow (offline unless a model is given)")
    run.add_argument("--template", default="lpo", help="research template (default: lpo)")
    run.add_argument("--ideas", type=_positive("--ideas"), default=None, help="number of ideas (default: the profile's)")
    run.add_argument("--seeds", type=_positive("--seeds"), default=None, help="seeds per arm (default: the profile's)")
    run.add_argument("--profile", default="default", help="smoke | default | paper (default: default)")
    run.add_argument("--budget", "--timesteps", dest="budget", type=_positive("--budget"), default=None,
                     help="training budget per unit in the template's unit (lpo: environment steps; hades: ES "
                          "generations; default: the profile's); --timesteps is the old name")
    run.add_argument("--run-id", default=None, help="run id; an existing one is resumed (default: a new id)")
    run.add_argument("--runs-dir", default=os.environ.get("SCIENTIST_RUNS_DIR", "runs"), help="runs folder (default: runs/)")
    run.add_argument("--model", default=os.environ.get("SCIENTIST_MODEL") or None,
                     help="litellm model id (default: $SCIENTIST_MODEL; unset = offline)")
    run.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None,
                     help="Ray cluster to join (default: $RAY_ADDRESS; unset = a local Ray)")
    run.add_argument("--max-cost", type=_positive_float("--max-cost"), default=None,
                     help="LLM budget of the run in USD; the run stops cleanly when it is spent, keeping what it "
                          "finished (default: $SCIENTIST_MAX_COST; unset = no limit)")
    run.add_argument("--no-fallback", dest="fallback", action="store_false",
                     help="with a model: a stage whose model keeps failing fails its idea (ideation: the run) "
                          "instead of falling back to the offline stage for that idea")
    run.add_argument("--unit-timeout", type=_positive("--unit-timeout"),
                     default=None,
                     help="seconds an experiment unit may run before it is stopped and recorded as failed "
                          "(default: $SCIENTIST_UNIT_TIMEOUT; unset = no limit)")

    run.add_argument("--stages", default=None,
                     help="the research tree's stages to run, comma-separated, of implement, tune, improve, ablate, "
                          "replicate (default: all; without tune and replicate the paper's units are the "
                          "untuned ones)")
    run.add_argument("--tree", default=None, metavar="KEY=VALUE,...",
                     help="the research tree's budget over the profile's: fraction, seeds, tune, improve_rounds, "
                          "improve_width, ablate (e.g. tune=4,improve_width=2)")
    run.add_argument("--approve", choices=["ideas"], default=None,
                     help="pause after novelty until a person approves the ideas (Prefect UI form or `scientist "
                          "approve`); needs a Prefect server (PREFECT_API_URL, e.g. `scientist server`)")
    run.add_argument("--approval-timeout", type=_positive("--approval-timeout"), default=3600,
                     help="seconds to wait for the approval before the run stops cleanly (default: 3600)")

    apr = sub.add_parser("approve", help="resume a run paused for approval (scientist run --approve ideas)")
    apr.add_argument("run_id", help="the run id (or the Prefect flow run id) of the paused run")
    apr.add_argument("--ideas", default=None, help="comma-separated idea names to run (default: all proposed)")
    apr.add_argument("--feedback", default="", help="free text for the next stage (with a model: its code prompt)")

    srv = sub.add_parser("server", help="start a local Prefect server (UI + API) and print where it is")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    srv.add_argument("--port", type=_positive("--port"), default=4200, help="port (default: 4200)")

    val = sub.add_parser("validate", help="run the validation gate on a plug-in file")
    val.add_argument("file", help="Python file defining the template's plug-in function")
    val.add_argument("--template", default="lpo")

    tpl = sub.add_parser("templates", help="list the registered research templates and what they declare")
    tpl.add_argument("--json", action="store_true", help="print each template's description as JSON")

    disc = sub.add_parser("discover", help="symbolic discovery: a population of formulas trained in one compiled call")
    disc.add_argument("--template", default="lpo",
                      help="a template whose plug-in is an elementwise formula: lpo (PPO, NAVIX), marl (IPPO/MAPPO, "
                           "JaxMARL) or dpo (preference losses, a tiny LM) (default: lpo)")
    disc.add_argument("--minutes", type=_positive_float("--minutes"), default=10.0, help="search wall time (default: 10)")
    disc.add_argument("--generations", type=_positive("--generations"), default=None, help="at most this many generations")
    disc.add_argument("--population", type=_positive("--population"), default=16, help="members per generation (default: 16)")
    disc.add_argument("--seeds", type=_positive("--seeds"), default=2, help="search seeds per member (default: 2)")
    disc.add_argument("--budget", type=_positive("--budget"), default=None,
                      help="search budget of a member (default: the template's: 16384 env steps for lpo and marl, "
                           "32 gradient steps for dpo)")
    disc.add_argument("--setting", default=None,
                      help="training setting (default: the template's: empty5 for lpo, spread for marl, unigram for "
                           "dpo)")
    disc.add_argument("--fresh-seeds", type=_positive("--fresh-seeds"), default=16, help="admission seeds (default: 16)")
    disc.add_argument("--no-admit", action="store_true", help="search only, no admission")
    disc.add_argument("--no-paper", dest="paper", action="store_false",
                      help="do not write up the confirmed discoveries (default: an AI-Scientist run <run id>-paper "
                           "takes them through experiments, a paper, a review and the archive)")
    disc.add_argument("--paper-profile", default="default",
                      help="the profile of that paper run (default: default)")
    disc.add_argument("--seed", type=int, default=0, help="search seed (default: 0)")
    disc.add_argument("--run-id", default=None, help="run id; an existing one is resumed (default: a new id)")
    disc.add_argument("--runs-dir", default=os.environ.get("SCIENTIST_RUNS_DIR", "runs"), help="runs folder (default: runs/)")
    disc.add_argument("--workers", type=int, default=0,
                      help="Ray actors each generation's population is sharded over (default 0: one compiled call "
                           "in this process; capped at the cluster's GPUs, else CPUs)")
    disc.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None,
                      help="Ray cluster for --workers (default: $RAY_ADDRESS; unset = a local Ray)")
    disc.add_argument("--distill", default=None, metavar="META_RUN_DIR",
                      help="distill the TA-LPO drift learned by a `scientist meta --template lpo` run into a formula "
                           "(fitness: closeness to it), then confirm the formulas on fresh seeds")
    disc.add_argument("--baseline-tuning", type=int, default=None,
                      help="evosax steps on the baselines' own constants before admission (default: as many as the "
                           "search spent on its candidates' constants; 0 = untuned baselines)")
    disc.add_argument("--model", default=os.environ.get("SCIENTIST_MODEL") or None,
                      help="litellm model id: it proposes formulas each generation, beside the mutations, with the "
                           "archive and its fitness in the prompt (default: $SCIENTIST_MODEL; unset = mutations only)")
    disc.add_argument("--llm-proposals", type=_positive("--llm-proposals"), default=4,
                      help="with a model: formulas asked of it per generation (default: 4)")
    disc.add_argument("--max-cost", type=_positive_float("--max-cost"), default=None,
                      help="with a model: LLM budget in USD; when it is spent the search goes on with mutations only")
    disc.add_argument("--no-fallback", dest="fallback", action="store_false",
                      help="with a model: a generation whose model call keeps failing fails the search instead of "
                           "going on with the mutations alone")

    meta = sub.add_parser("meta", help="ES meta-training: TA-LPO drift (lpo) or HaDES datasets (hades)")
    meta.add_argument("--template", default="lpo", help="lpo | hades (default: lpo)")
    meta.add_argument("--strategy", default="OpenES", help="evosax strategy, e.g. OpenES, SNES, CMA_ES (default: OpenES)")
    meta.add_argument("--generations", type=_positive("--generations"), default=20, help="ES generations (default: 20)")
    meta.add_argument("--population", type=_positive("--population"), default=16, help="ES population (default: 16)")
    meta.add_argument("--chunk", type=_positive("--chunk"), default=5,
                      help="generations per checkpointed, cached chunk (default: 5)")
    meta.add_argument("--workers", type=int, default=None,
                      help="Ray evaluators the population is split across (default: the cluster's GPUs, else CPUs; 0 = no Ray)")
    meta.add_argument("--seeds", type=_positive("--seeds"), default=None, help="lpo: evaluation seeds (default: the profile's)")
    meta.add_argument("--timesteps", type=_positive("--timesteps"), default=None,
                      help="lpo: inner PPO horizon in env steps (default: the profile's)")
    meta.add_argument("--env", default=None, help="hades: gymnax or navix id (default: CartPole-v1)")
    meta.add_argument("--dataset-sizes", default=None,
                      help="hades: comma-separated dataset sizes, one search each (default: 4)")
    meta.add_argument("--max-chunks", type=_positive("--max-chunks"), default=None,
                      help="compute at most this many chunks per search now, then stop; re-run the id to continue")
    meta.add_argument("--profile", default="smoke", help="lpo: smoke | default | paper (default: smoke)")
    meta.add_argument("--run-id", default=None, help="run id; an existing one is resumed (default: a new id)")
    meta.add_argument("--runs-dir", default=os.environ.get("SCIENTIST_RUNS_DIR", "runs"), help="runs folder (default: runs/)")
    meta.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None,
                      help="Ray cluster to join (default: $RAY_ADDRESS; unset = a local Ray)")
    return parser


def _check_run_args(args) -> None:
    if args.approve and not os.environ.get("PREFECT_API_URL"):
        raise UsageError("--approve needs a Prefect server to resume from: start `scientist server` and export "
                         "PREFECT_API_URL")
    if args.model is None and args.max_cost is not None:
        raise UsageError("--max-cost needs a model (--model or SCIENTIST_MODEL); the offline backend costs nothing")
    from jaxlib_kernels.registry import UnknownNameError
    from jaxlib_kernels.templates import make
    from tasks.runtime.runfolder import RunFolder, RunFolderError, check_run_id, check_writable

    try:
        template = make(args.template)
        prof = template.profile(args.profile)
    except UnknownNameError as exc:
        raise UsageError(str(exc)) from None
    args.tree = _tree_changes(args.tree)
    for flag, changes in (("--tree", {"changes": args.tree}), ("--stages", {"stages": args.stages})):
        try:
            prof.tree.with_changes(**changes)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    if args.run_id is not None:
        try:
            check_run_id(args.run_id)
        except RunFolderError as exc:
            raise UsageError(str(exc)) from None
    try:
        check_writable(Path(args.runs_dir), "the runs folder")
    except RunFolderError as exc:
        raise UsageError(str(exc)) from None
    del RunFolder


def _tree_changes(text: str | None) -> dict | None:
    """``--tree key=value,...`` as a dict (values stay text: ``TreeBudget.with_changes`` checks them)."""
    if text is None:
        return None
    changes = {}
    for item in (i.strip() for i in text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--tree takes KEY=VALUE pairs separated by commas, got {item!r}")
        changes[key.strip()] = value.strip()
    return changes


def _probe_model(args) -> str | None:
    """With a model: one fast TCP probe of its server; the reason it is unreachable, recorded in run.json."""
    if not args.model:
        return None
    from tasks.runtime.llm import LLMConfig, LLMError, LLMUnreachable, probe
    from tasks.runtime.runfolder import RunFolder, new_run_id

    try:
        config = LLMConfig.from_env(args.model, args.max_cost)
        probe(config)
    except (LLMUnreachable, LLMError, ValueError) as exc:
        run = RunFolder(args.runs_dir, args.run_id or new_run_id(args.template))
        run.create()
        run.update_run_json(run_id=run.run_id, template=args.template, model=args.model, backend="llm",
                            status="failed", error=f"{type(exc).__name__}: {exc}")
        return str(exc)
    return None


def _prepare_run(args) -> None:
    """Name the run, refuse early if another process holds it, and pick the Prefect database of the run.

    With no ``PREFECT_API_URL`` the flow runs on Prefect's temporary local server. Its SQLite database is kept
    per run, in ``runs/<id>/.prefect/prefect.db``: two runs started at once never share (and lock) one SQLite
    file, and a resumed run finds its own history. Point runs at one server (``scientist server``) to see them
    all in the UI.
    """
    from tasks.runtime.runfolder import RunFolder, new_run_id

    if args.run_id is None:
        args.run_id = new_run_id(args.template)
    run = RunFolder(args.runs_dir, args.run_id)
    run.lock()  # the flow takes the lock for good; this only refuses a busy run id before any server starts
    run.unlock()
    if args.unit_timeout:
        os.environ["SCIENTIST_UNIT_TIMEOUT"] = str(args.unit_timeout)
    if not os.environ.get("PREFECT_API_URL") and not any(
            os.environ.get(k) for k in ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")):
        db = run.path / ".prefect" / "prefect.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{db}"
        from tasks.runtime import prefect_db

        args.fresh_db = None if prefect_db.seed(db) or db.exists() else db  # a new database, migrated by its server


def _start_temporary_server_and_keep_its_database(db: Path) -> None:
    """Start Prefect's temporary server now (the flow then finds it running) and keep its database, migrated and
    still empty, as the template of later new databases (tasks/runtime/prefect_db.py)."""
    from prefect.server.api.server import SubprocessASGIServer

    from tasks.runtime import prefect_db

    SubprocessASGIServer().start()  # the singleton ``get_client`` starts on first use; idempotent
    prefect_db.keep_template(db)


def cmd_run(args) -> int:
    _check_run_args(args)
    from tasks.runtime.runfolder import RunFolderError

    try:
        _prepare_run(args)
    except RunFolderError as exc:
        print(f"scientist: error: {exc}", file=sys.stderr)
        return 2
    from tasks.runtime import lifeline

    lifeline.watch()  # a killed run takes its temporary Prefect server, local Ray and gate children with it
    if getattr(args, "fresh_db", None) is not None:
        _start_temporary_server_and_keep_its_database(args.fresh_db)
    unreachable = _probe_model(args)
    if unreachable:
        print(f"scientist: error: {unreachable}", file=sys.stderr)
        return 3
    from flows.scientist import ai_scientist
    from tasks.runtime import session

    try:
        result = ai_scientist(
            template=args.template, num_ideas=args.ideas, seeds=args.seeds, profile=args.profile, model=args.model,
            run_id=args.run_id, runs_dir=args.runs_dir, budget=args.budget, ray_address=args.ray_address,
            max_cost=args.max_cost, fallback=args.fallback, approve=args.approve,
            approval_timeout=args.approval_timeout,
            stages=[x.strip() for x in args.stages.split(",") if x.strip()] if args.stages is not None else None,
            tree=args.tree,
        )
    except RunFolderError as exc:
        print(f"scientist: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from tasks.runtime.llm import LLMError, redact

        if session.server_lost():
            print(session.server_lost_line(), file=sys.stderr)
            return SERVER_LOST
        if not isinstance(exc, LLMError):
            raise
        print(f"scientist: error: {redact(exc)} (run {args.run_id}, recorded in its run.json)", file=sys.stderr)
        return 1
    print(f"\nrun {result['run_id']}: {result['status']} ({result['run_dir']})")
    for paper in result["papers"]:
        print(f"  {paper['idea']}: {paper['pdf'] or 'no PDF'} -> {paper['decision']} (overall {paper['overall']})")
    return 0 if result["papers"] else 1


def cmd_approve(args) -> int:
    """Resume the paused flow run of a run id (or a flow run id) with the approved ideas and the feedback."""
    import uuid

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run
    from prefect.input import keyset_from_paused_state

    if not os.environ.get("PREFECT_API_URL"):
        raise UsageError("set PREFECT_API_URL to the server the run uses (e.g. http://127.0.0.1:4200/api)")
    with get_client(sync_client=True) as client:
        try:
            flow_runs = [client.read_flow_run(uuid.UUID(args.run_id))]
        except ValueError:
            paused = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            flow_runs = [f for f in paused if (f.parameters or {}).get("run_id") == args.run_id]
        flow_runs = [f for f in flow_runs if f.state is not None and f.state.is_paused()]
        if not flow_runs:
            raise UsageError(f"no paused flow run of run {args.run_id} on {os.environ['PREFECT_API_URL']}")
        flow_run = flow_runs[0]
        ideas = args.ideas
        if ideas is None:  # the names the form proposed
            from prefect.input.actions import read_flow_run_input

            keyset = keyset_from_paused_state(flow_run.state)
            initial = read_flow_run_input(keyset["schema"], flow_run_id=flow_run.id)
            ideas = ((initial or {}).get("properties", {}).get("ideas", {}) or {}).get("default", "")
    resume_flow_run(flow_run.id, run_input={"ideas": ideas, "feedback": args.feedback})
    print(f"resumed flow run {flow_run.id} ({flow_run.name}): ideas {ideas or 'none'}"
          + (f", feedback {args.feedback!r}" if args.feedback else ""))
    return 0


def cmd_validate(args) -> int:
    from jaxlib_kernels.registry import UnknownNameError
    from jaxlib_kernels.templates import make
    from tasks.runtime.sandbox import validate_file

    try:
        make(args.template)
    except UnknownNameError as exc:
        raise UsageError(str(exc)) from None
    result = validate_file(args.file, args.template)
    if result.accepted:
        print(f"accepted: {args.file} passes the {args.template} validation gate ({result.duration_s:.1f} s)")
        return 0
    print(f"rejected ({result.stage}): {result.reason}")
    return 1


def cmd_templates(args) -> int:
    """Each registered template: plug-in signature and kind, metric and direction, budget unit, settings, profiles."""
    import json

    from jaxlib_kernels.templates import TEMPLATES

    described = [template.describe() for template in TEMPLATES.values()]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for template, info in zip(TEMPLATES.values(), described, strict=True):
        settings = ", ".join(f"{name} ({role})" for name, role in info["settings"].items())
        print(f"{info['name']}: {info['title']}")
        print(f"  plug-in    {info['plugin']}  [{info['kind']}]")
        print(f"  metric     {info['metric']}, {info['direction']}: {template.metric.description}")
        print(f"  budget     in {info['budget_unit']}")
        print(f"  baselines  {', '.join(info['baselines'])}")
        print(f"  settings   {settings}")
        for name, profile in info["profiles"].items():
            print(f"  profile    {name}: {profile['ideas']} ideas, {profile['seeds']} seeds, budget "
                  f"{profile['budget']} {info['budget_unit']}, settings {', '.join(profile['settings'])}")
        print()
    return 0


def _port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port``. With SO_REUSEADDR, as the server itself binds: the connections a
    stopped server left in TIME_WAIT do not keep its port from being used again at once."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def cmd_server(args) -> int:
    """``prefect server start`` on ``host:port``; prints where the UI and the API are once it answers."""
    import shutil
    import signal
    import subprocess
    import time
    import urllib.request

    from tasks.runtime import lifeline

    if not _port_free(args.host, args.port):
        raise UsageError(f"{args.host}:{args.port} is in use (a server already running?); choose another --port")
    exe = Path(sys.executable).with_name("prefect")
    exe = str(exe) if exe.exists() else shutil.which("prefect")
    if not exe:
        raise UsageError("the prefect command is not installed in this environment")
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # the server does not talk to another server
    base = f"http://{args.host}:{args.port}"
    # the UI (in the browser) asks the API at this address; Prefect's default is built from its own host/port
    # settings (4200), not from ``--port``, so a UI on another port could not reach its API
    env["PREFECT_SERVER_API_HOST"], env["PREFECT_SERVER_API_PORT"] = args.host, str(args.port)
    env.setdefault("PREFECT_SERVER_UI_API_URL", f"{base}/api")
    lifeline.watch()  # a SIGKILLed ``scientist server`` takes its prefect server (and uvicorn) with it
    from tasks.runtime import prefect_db

    url = env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or env.get("PREFECT_API_DATABASE_CONNECTION_URL")
    db_file = prefect_db.sqlite_file(url) if url else Path(env.get("PREFECT_HOME", "~/.prefect")).expanduser() / "prefect.db"
    fresh = db_file is not None and not db_file.exists() and not prefect_db.seed(db_file)
    proc = subprocess.Popen([exe, "server", "start", "--host", args.host, "--port", str(args.port)], env=env)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        if proc.poll() is None:
            if fresh:
                prefect_db.keep_template(db_file)
            db = env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or env.get("PREFECT_API_DATABASE_CONNECTION_URL") \
                or f"SQLite, {Path(env.get('PREFECT_HOME', '~/.prefect')).expanduser() / 'prefect.db'}"
            print(f"Prefect server ready (database: {db})\n"
                  f"  UI:  {base}\n"
                  f"  API: {base}/api\n"
                  f"  point runs and workers at it:  export PREFECT_API_URL={base}/api\n"
                  "Ctrl-C stops it.", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        return 0


_META_OPTIONS = {"seeds": "--seeds", "timesteps": "--timesteps", "env": "--env", "dataset_sizes": "--dataset-sizes"}


def _check_meta_args(args) -> dict:
    from jaxlib_kernels.es import problems
    from jaxlib_kernels.es.meta import resolve_strategy
    from jaxlib_kernels.registry import UnknownNameError
    from jaxlib_kernels.templates import make, meta_templates
    from tasks.runtime.runfolder import RunFolderError, check_run_id

    extra: dict = {}
    try:
        declared = problems.meta_of(args.template)
        args.strategy = resolve_strategy(args.strategy)
        if "profile" in declared.options:
            make(args.template).profile(args.profile)
        for dest, flag in _META_OPTIONS.items():  # the options a template declares (Meta.options), only there
            if getattr(args, dest) is not None and dest not in declared.options:
                serve = [n for n in meta_templates() if dest in make(n).meta.options]
                raise UsageError(f"{flag} applies to --template {' | '.join(serve)}, not {args.template}")
        if args.env is not None:
            from jaxlib_kernels import envs

            envs.ENVS[args.env]
    except UnknownNameError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if args.dataset_sizes is not None:
        try:
            sizes = [int(x) for x in args.dataset_sizes.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--dataset-sizes must be comma-separated whole numbers, got {args.dataset_sizes!r}") from None
        if not sizes or min(sizes) < 1:
            raise UsageError(f"--dataset-sizes must be at least 1 each, got {args.dataset_sizes!r}")
        extra["dataset_sizes"] = sizes
    if args.run_id is not None:
        try:
            check_run_id(args.run_id)
        except RunFolderError as exc:
            raise UsageError(str(exc)) from None
    try:
        Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
        probe = Path(args.runs_dir) / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write the runs folder {args.runs_dir}: {exc.strerror or exc}") from None
    try:
        problems.es_spec(args.template, args.strategy, args.population)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return extra


def cmd_meta(args) -> int:
    extra = _check_meta_args(args)
    from flows.meta_learning import meta_learning
    from tasks.runtime import lifeline, session
    from tasks.runtime.runfolder import RunFolderError

    lifeline.watch()
    try:
        result = meta_learning(
            template=args.template, strategy=args.strategy, generations=args.generations, population=args.population,
            run_id=args.run_id, runs_dir=args.runs_dir, ray_address=args.ray_address, profile=args.profile,
            chunk=args.chunk, workers=args.workers, seeds=args.seeds, timesteps=args.timesteps, env=args.env,
            max_chunks=args.max_chunks, **extra,
        )
    except RunFolderError as exc:
        print(f"scientist: error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        if not session.server_lost():
            raise
        print(session.server_lost_line(), file=sys.stderr)
        return SERVER_LOST
    print(f"\nmeta-run {result['run_id']}: {result['status']} ({result['run_dir']})")
    for name, f in (result.get("fitness") or {}).items():
        print(f"  {name}: population mean return {f['first_mean']:.3f} (generation 1) -> {f['return_mean']:.3f} "
              f"(generation {result['generation'][name]}), best {f['best_return']:.3f}")
        if f.get("centers"):
            print("    search centre on fixed seeds: " + ", ".join(f"gen {g}: {v:.3f}" for g, v in f["centers"]))
    if result.get("paper") is not None or result.get("idea_status"):
        print(f"  paper: {result.get('paper') or 'no PDF'} -> {result.get('decision')} (overall {result.get('overall')})")
    return 0 if result["status"] in ("completed", "paused") else 1


def cmd_discover(args) -> int:
    from jaxlib_kernels.templates import TEMPLATES, discovery_templates, make

    if args.template not in TEMPLATES:
        raise UsageError(f"--template {args.template}: no such template ({', '.join(TEMPLATES)})")
    tpl = make(args.template)
    if tpl.discovery is None:
        raise UsageError(f"--template {args.template}: the discovery engine serves templates whose plug-in is an "
                         f"elementwise formula ({', '.join(discovery_templates())})")
    if tpl.discovery.language.name != "drift" and (args.model or args.distill):
        raise UsageError(f"--template {args.template}: --model (or SCIENTIST_MODEL) and --distill serve drift "
                         f"formulas; {args.template} searches {tpl.discovery.language.name} trees offline")
    if args.paper_profile not in tpl.profiles:
        raise UsageError(f"--paper-profile {args.paper_profile}: not a {args.template} profile "
                         f"({', '.join(tpl.profiles)})")
    if args.setting is not None and args.setting not in tpl.settings:
        raise UsageError(f"--setting {args.setting}: not a {args.template} setting ({', '.join(tpl.settings)})")
    if args.model is None and args.max_cost is not None:
        raise UsageError("--max-cost needs a model (--model or SCIENTIST_MODEL)")
    if args.distill is not None:
        from jaxlib_kernels.es.problems import learned_behaviour

        try:
            learned_behaviour(args.distill)
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"--distill: {exc}") from None
    from flows.discovery import discover
    from tasks.runtime import session

    promote = min(4, args.population)
    tune = min(4, (args.population - 1) // 2 * 2)
    try:
        result = discover(template=args.template, minutes=args.minutes, generations=args.generations,
                          run_id=args.run_id, runs_dir=args.runs_dir, seed=args.seed, setting=args.setting,
                          budget=args.budget, seeds=args.seeds, fresh_seeds=args.fresh_seeds, admit=not args.no_admit,
                          search={"population": args.population, "promote": promote, "tune": tune},
                          model=args.model, llm_proposals=args.llm_proposals, max_cost=args.max_cost,
                          fallback=args.fallback, baseline_tuning=args.baseline_tuning, distill=args.distill,
                          workers=args.workers, ray_address=args.ray_address, paper=args.paper,
                          paper_profile=args.paper_profile)
    except Exception:
        if not session.server_lost():
            raise
        print(session.server_lost_line(), file=sys.stderr)
        return SERVER_LOST
    print(f"\ndiscovery run {result['run_id']}: {result['status']} after {result['generation']} generation(s) "
          f"({result['run_dir']})")
    for row in result["top"]:
        print(f"  {row['formula']}  fitness {row['fitness']:.3f} (long rung {row['fitness_long']})")
    for row in result["admitted"]:
        print(f"  admission: discovery={row['discovery']}, beats {' and '.join(tpl.discovery.baselines)} on "
              f"{row['beats_all_on'] or 'none'}")
    if result.get("paper_run"):
        print(f"  paper run {result['paper_run']['run_id']}: {result['paper_run']['status']} "
              f"({result['paper_run'].get('run_dir')})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "approve":
            return cmd_approve(args)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "meta":
            return cmd_meta(args)
        if args.command == "discover":
            return cmd_discover(args)
        if args.command == "templates":
            return cmd_templates(args)
        if args.command == "server":
            return cmd_server(args)
    except UsageError as exc:
        print(f"scientist: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scientist: interrupted; re-run with the same --run-id to resume", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
