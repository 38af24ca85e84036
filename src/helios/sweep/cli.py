"""`helios sweep FILE [--dry-run] [--defaults-only] [--jobs N]` and `helios sweep report DIR`."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from helios.evals.models import model_label, model_spec
from helios.sweep.grid import Sweep, SweepRun, write_run_configs
from helios.sweep.report import RESULTS, write_report


def add_sweep_commands(groups: Any) -> None:
    """Register `helios sweep`."""
    p = groups.add_parser(
        "sweep",
        help="expand an eval grid into runs and execute them, or report on a sweep folder",
        description="helios sweep eval.yaml [--dry-run] [--defaults-only] [--jobs N]  |  "
        "helios sweep report SWEEP_DIR",
    )
    p.add_argument("target", help="a sweep YAML, or `report`")
    p.add_argument("directory", nargs="?", help="with `report`: the sweep folder")
    p.add_argument("--dry-run", action="store_true", help="write configs and print commands only")
    p.add_argument("--defaults-only", action="store_true", help="one setting per task and protocol")
    p.add_argument("--jobs", type=int, default=1, help="runs to execute in parallel")
    p.add_argument(
        "--beaker",
        action="store_true",
        help="hand the runs to the Beaker launcher (one task each) instead of running locally",
    )
    p.add_argument("--beaker-args", default="", help="extra `helios launch beaker` flags, quoted")
    p.set_defaults(func=_cmd_sweep)


def _local_command(command: list[str]) -> list[str]:
    """Run `helios` from this interpreter's environment even when it is not on PATH."""
    script = Path(sys.executable).parent / command[0]
    if command[0] == "helios" and script.exists():
        return [str(script), *command[1:]]
    return command


def _run_one(run: SweepRun) -> tuple[str, int]:
    log = run.config_path.parent / "log.txt"
    with log.open("w") as fh:
        proc = subprocess.run(
            _local_command(run.command), stdout=fh, stderr=subprocess.STDOUT, check=False
        )
    return run.run_id, proc.returncode


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.target == "report":
        if not args.directory:
            raise ValueError("usage: helios sweep report SWEEP_DIR")
        return _report(Path(args.directory))
    sweep = Sweep.load(args.target)
    _notice_missing_weights(sweep, Path(args.target))
    runs = sweep.expand(defaults_only=args.defaults_only)
    commands = write_run_configs(runs, sweep)
    done = [r for r in runs if (r.config_path.parent / RESULTS).exists()]
    todo = [r for r in runs if r not in done]
    print(
        f"# sweep {sweep.name}: {len(runs)} runs ({len(done)} finished), configs in {sweep.output}"
    )
    for run in runs:
        mark = "done" if run in done else "todo"
        print(f"{run.shell}  # {mark}")
    print(f"# commands written to {commands}")
    if args.beaker:
        return _to_beaker(todo, sweep, args.beaker_args, dry_run=args.dry_run) if todo else 0
    if args.dry_run or not todo:
        return 0
    failed = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for run_id, code in pool.map(_run_one, todo):
            status = (
                "ok"
                if code == 0
                else f"failed ({code}), see {sweep.output / 'runs' / run_id / 'log.txt'}"
            )
            print(f"{run_id}: {status}", flush=True)
            if code:
                failed.append(run_id)
    try:
        _report(sweep.output)
    except ValueError as err:
        print(f"no report: {err}", file=sys.stderr)
    return 1 if failed else 0


def _report(directory: Path) -> int:
    """Write the report files into `directory`, print the table and name every file written."""
    paths = write_report(directory)
    print(paths["markdown"].read_text())
    print(f"# report of {directory} (rewritten from its results.json files):")
    print("\n".join(f"wrote {p}" for p in paths.values()))
    return 0


def _notice_missing_weights(sweep: Sweep, path: Path) -> None:
    """Say which models were left out, and which models' weights are not on disk, and why.

    Paths in a sweep file are relative to the current directory (where `helios sweep` runs).
    """
    for skipped in sweep.skipped_models:
        print(
            f"# left out {skipped}: it is marked `optional: true` in {path}; put its weights "
            "at that path (relative to this directory) or change its `path:` to include it"
        )
    for model in sweep.models:
        weights = str(model_spec(model).init_args.get("path") or "")
        if weights and not Path(weights).exists():
            print(
                f"# note: {model_label(model)}: {weights} does not exist yet (relative to "
                f"{Path.cwd()}); its runs fail until it does",
                file=sys.stderr,
            )


def _to_beaker(runs: list[SweepRun], sweep: Sweep, extra: str, dry_run: bool = False) -> int:
    """One Beaker experiment, one task per run; configs travel inline (the job has no sweep dir)."""
    from helios.launch import GitStateError, LaunchConfigError, LaunchError, submit
    from helios.launch.cli import parse_launch_flags

    request = parse_launch_flags(["--name", f"sweep-{sweep.name}", *shlex.split(extra)])
    tasks = {
        run.run_id[:100]: ["helios", "eval", "run", "--config", run.inline, "--no-progress"]
        for run in runs
    }
    try:
        submit(dataclasses.replace(request, dry_run=dry_run or request.dry_run), tasks)
    except (LaunchConfigError, GitStateError, LaunchError) as err:
        print(f"helios: error: {err}", file=sys.stderr)
        return 2
    return 0
