"""The ``scientist`` command line: ``run`` (the AI-Scientist flow), ``validate`` (the gate on a hand-written plug-in)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# a busy 2-core machine needs more than the default 20 s to start the temporary Prefect server
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


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
    run.add_argument("--timesteps", type=_positive("--timesteps"), default=None,
                     help="environment steps per training run (default: the profile's)")
    run.add_argument("--run-id", default=None, help="run id; an existing one is resumed (default: a new id)")
    run.add_argument("--runs-dir", default=os.environ.get("SCIENTIST_RUNS_DIR", "runs"), help="runs folder (default: runs/)")
    run.add_argument("--model", default=os.environ.get("SCIENTIST_MODEL") or None,
                     help="litellm model id (default: $SCIENTIST_MODEL; unset = offline)")
    run.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None,
                     help="Ray cluster to join (default: $RAY_ADDRESS; unset = a local Ray)")

    val = sub.add_parser("validate", help="run the validation gate on a plug-in file")
    val.add_argument("file", help="Python file defining the template's plug-in function")
    val.add_argument("--template", default="lpo")
    return parser


def _check_run_args(args) -> None:
    from jaxlib_kernels.registry import UnknownNameError
    from jaxlib_kernels.templates import make
    from tasks.runfolder import RunFolder, RunFolderError, check_run_id

    try:
        template = make(args.template)
        template.profile(args.profile)
    except UnknownNameError as exc:
        raise UsageError(str(exc)) from None
    if args.run_id is not None:
        try:
            check_run_id(args.run_id)
        except RunFolderError as exc:
            raise UsageError(str(exc)) from None
    runs = Path(args.runs_dir)
    try:
        runs.mkdir(parents=True, exist_ok=True)
        probe = runs / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write the runs folder {runs}: {exc.strerror or exc}") from None
    if args.model:
        raise UsageError("the LLM backend is not available in this build; unset --model/SCIENTIST_MODEL for offline")
    del RunFolder


def cmd_run(args) -> int:
    _check_run_args(args)
    from flows.scientist import ai_scientist
    from tasks.runfolder import RunFolderError

    try:
        result = ai_scientist(
            template=args.template, num_ideas=args.ideas, seeds=args.seeds, profile=args.profile, model=args.model,
            run_id=args.run_id, runs_dir=args.runs_dir, timesteps=args.timesteps, ray_address=args.ray_address,
        )
    except RunFolderError as exc:
        print(f"scientist: error: {exc}", file=sys.stderr)
        return 2
    print(f"\nrun {result['run_id']}: {result['status']} ({result['run_dir']})")
    for paper in result["papers"]:
        print(f"  {paper['idea']}: {paper['pdf'] or 'no PDF'} -> {paper['decision']} (overall {paper['overall']})")
    return 0 if result["papers"] else 1


def cmd_validate(args) -> int:
    from jaxlib_kernels.registry import UnknownNameError
    from jaxlib_kernels.templates import make
    from tasks.sandbox import validate_file

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "validate":
            return cmd_validate(args)
    except UsageError as exc:
        print(f"scientist: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scientist: interrupted; re-run with the same --run-id to resume", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
