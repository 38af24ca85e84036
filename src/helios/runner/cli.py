"""`helios run ...`: the prediction runner's steps (docs/runner.md).

`add_run_commands` creates the `run` group and returns its sub-parsers object, so further
steps (e.g. `predict`) register with `sub.add_parser(...)` and `add_project_arguments`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
steps, in order (each is resumable; re-running skips finished work):
  helios run validate PROJECT
  helios run partition PROJECT --scratch DIR
  helios run build PROJECT --scratch DIR [--workers N]
  (inference writes windows/<w>/outputs/)
  helios run postprocess PROJECT --scratch DIR
  helios run combine PROJECT --scratch DIR
"""


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_project_arguments(p: argparse.ArgumentParser, scratch: bool = True) -> None:
    """Add the PROJECT argument, and `--scratch` / `--partition-ids` when `scratch`."""
    p.add_argument("project", type=Path, help="project folder (olmoearth_run.yaml, ...)")
    if scratch:
        p.add_argument("--scratch", type=Path, required=True, help="working directory")
        p.add_argument(
            "--partition-ids",
            nargs="+",
            default=None,
            metavar="ID",
            help="only these partitions (default: all from the last `partition`)",
        )


def add_run_commands(groups: Any) -> Any:
    """Register `helios run` and its steps; returns the sub-parsers object of the group."""
    from helios.data.cli import default_workers

    run = groups.add_parser(
        "run",
        help="run predictions over a project folder",
        description="The prediction runner: requests -> partitions -> windows -> results.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = run.add_subparsers(dest="command", metavar="STEP", required=True)

    p = sub.add_parser("validate", help="check a project and list every problem")
    add_project_arguments(p, scratch=False)
    p.add_argument("--skip-imagery", action="store_true", help="do not index the imagery")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("partition", help="split requests into partitions and windows")
    add_project_arguments(p)
    p.set_defaults(func=_cmd_partition)

    p = sub.add_parser("build", help="materialize every window's input layers")
    add_project_arguments(p)
    p.add_argument("--workers", type=_positive_int, default=default_workers())
    p.add_argument(
        "--min-success-rate",
        type=_rate,
        default=0.9,
        help="fail when a smaller fraction of windows builds (default 0.9)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("postprocess", help="postprocess windows and partitions")
    add_project_arguments(p)
    p.set_defaults(func=_cmd_postprocess)

    p = sub.add_parser("combine", help="combine partition results into the final results")
    add_project_arguments(p)
    p.set_defaults(func=_cmd_combine)
    return sub


def partition_ids(args: argparse.Namespace) -> list[str]:
    """The partitions a command works on: `--partition-ids`, else all."""
    from helios.runner.steps import list_partitions

    return list(args.partition_ids) if args.partition_ids else list_partitions(args.scratch)


def _cmd_validate(args: argparse.Namespace) -> int:
    from helios.runner.project import load_project

    project = load_project(args.project, check_imagery=not args.skip_imagery)
    layers = [la.name for la in project.dataset_config.input_layers()]
    print(
        f"ok: {project.path}: {len(project.requests)} requests, input layers {layers}, "
        f"partitioner {type(project.partitioner).__name__} / "
        f"{type(project.window_preparer).__name__}"
    )
    return 0


def _cmd_partition(args: argparse.Namespace) -> int:
    from helios.runner.project import load_project
    from helios.runner.steps import partition
    from helios.runner.windows import list_windows

    project = load_project(args.project)
    ids = partition(project, args.scratch)
    n = sum(len(list_windows(args.scratch, pid)) for pid in ids)
    print(f"{len(ids)} partitions, {n} windows in {args.scratch}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from helios.runner.dataset_builder import BuildError, build_dataset
    from helios.runner.project import load_project

    project = load_project(args.project)
    try:
        result = build_dataset(
            project,
            args.scratch,
            partition_ids(args),
            workers=args.workers,
            min_success_rate=args.min_success_rate,
            progress=not args.no_progress,
        )
    except BuildError as err:
        print(f"helios: error: {err}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _cmd_postprocess(args: argparse.Namespace) -> int:
    from helios.runner.project import load_project
    from helios.runner.steps import postprocess_partition

    project = load_project(args.project, check_imagery=False)
    n = 0
    for pid in partition_ids(args):
        n += len(postprocess_partition(project, args.scratch, pid))
    print(f"{n} partition results")
    return 0


def _cmd_combine(args: argparse.Namespace) -> int:
    from helios.runner.project import load_project
    from helios.runner.steps import combine

    project = load_project(args.project, check_imagery=False)
    results = combine(project, args.scratch, partition_ids(args))
    for path in results:
        print(path)
    return 0
