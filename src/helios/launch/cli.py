"""`helios launch beaker ...`: run a training, eval, sweep or runner command on Beaker.

The flags become a `LaunchRequest` (`request_from_args`, or `parse_launch_flags` for a list of
flags without the command), which `helios.launch.submit.submit` carries out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helios.launch.config import Mount
from helios.launch.submit import LaunchRequest

_OVERRIDES = (
    "clusters", "workspace", "budget", "priority", "beaker_image", "docker_image", "gpus",
    "nodes", "shared_memory", "mounts", "retries", "preemptible", "min_runtime", "user",
    "description", "run_root", "task_name", "torchrun",
)  # fmt: skip
"""`LaunchConfig` fields that flags of the same name (dashes for underscores) override."""

EPILOG = """\
examples:
  helios launch beaker --name mim-tiny --cluster ai2/jupiter --gpus 1 --dry-run \\
      -- helios fit --config configs/latent_mim.yaml
  helios launch beaker --name mim-base --cluster ai2/jupiter --gpus 8 --nodes 2 \\
      -- helios fit --config configs/latent_mim.yaml --trainer.num_nodes 2

Settings not given here come from the environment (HELIOS_BEAKER_WORKSPACE, ...), then from
~/.config/helios/beaker.yaml (or $HELIOS_BEAKER_CONFIG). See docs/launching.md.
"""


def _mount(text: str) -> Mount:
    try:
        return Mount.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        # The text may hold a credential typed by mistake, so it is not echoed.
        raise argparse.ArgumentTypeError("expected NAME=VALUE")
    return name, value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


BEAKER_HELP = "run a command on Beaker at the current (clean, pushed) commit"
BEAKER_DESCRIPTION = (
    "Launch COMMAND as a Beaker experiment. The job checks out the current commit, installs "
    "it, sets HELIOS_RUN_DIR=<run_root>/<name> and runs COMMAND (under torchrun for "
    "multi-node jobs). --dry-run prints the spec instead."
)


def add_launch_commands(groups: Any) -> None:
    """Register `helios launch` and its subcommands."""
    launch = groups.add_parser("launch", help="launch training, evals, sweeps or the runner")
    sub = launch.add_subparsers(dest="launcher", metavar="LAUNCHER", required=True)
    p = sub.add_parser(
        "beaker",
        help=BEAKER_HELP,
        description=BEAKER_DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_beaker_arguments(p)
    p.set_defaults(func=_cmd_beaker)


def beaker_parser() -> argparse.ArgumentParser:
    """The parser of `helios launch beaker` on its own (no `helios` command tree)."""
    parser = argparse.ArgumentParser(
        prog="helios launch beaker",
        description=BEAKER_DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_beaker_arguments(parser)
    return parser


def add_beaker_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `helios launch beaker`."""
    p.add_argument("--name", required=True, help="experiment name; also names the run folder")
    p.add_argument("--cluster", dest="clusters", action="append", metavar="CLUSTER",
                   help="cluster to run on (repeat for several)")  # fmt: skip
    p.add_argument("--workspace", help="Beaker workspace, org/name")
    p.add_argument("--budget", help="Beaker budget, org/name")
    p.add_argument("--priority", choices=("low", "normal", "high", "urgent", "immediate"))
    p.add_argument("--image", dest="beaker_image", metavar="BEAKER_IMAGE",
                   help="Beaker image to run, user/name")  # fmt: skip
    p.add_argument("--docker-image", help="Docker image to run, registry/repo:tag")
    p.add_argument("--gpus", type=int, help="GPUs per node (0 for CPU only)")
    p.add_argument("--nodes", type=_positive_int, help="nodes; more than one uses torchrun")
    p.add_argument("--shared-memory", metavar="SIZE", help="shared memory per node, e.g. 64GiB")
    p.add_argument("--mount", dest="mounts", action="append", type=_mount,
                   metavar="KIND:SOURCE:PATH",
                   help="mount weka:BUCKET:PATH, host_path:HOSTPATH:PATH or dataset:NAME:PATH "
                   "(repeat; replaces the configured mounts)")  # fmt: skip
    p.add_argument("--retries", type=int, help="times Beaker retries a failed task")
    p.add_argument("--preemptible", action=argparse.BooleanOptionalAction, default=None,
                   help="allow preemption at any time (resumes from the run folder)")  # fmt: skip
    p.add_argument("--min-runtime", metavar="DURATION",
                   help="non-preemptible jobs: guaranteed runtime, e.g. 8h")  # fmt: skip
    p.add_argument("--env", action="append", type=_pair, default=[], metavar="NAME=VALUE",
                   help="plain environment variable for the job (not for credentials)")  # fmt: skip
    p.add_argument("--secret", action="append", type=_pair, default=[], metavar="NAME=SECRET",
                   help="env var NAME gets Beaker secret SECRET ({user} is your user name); "
                   "NAME= drops a default secret")  # fmt: skip
    p.add_argument("--user", help="Beaker user name for {user} in secret names")
    p.add_argument("--description", help="experiment description (default: the command)")
    p.add_argument("--run-root", metavar="PATH", help="folder of run folders, on a mount")
    p.add_argument("--task-name", help="task name (default: main)")
    p.add_argument("--torchrun", action=argparse.BooleanOptionalAction, default=None,
                   help="run under torchrun (default: exactly when --nodes > 1)")  # fmt: skip
    p.add_argument("--config-file", type=Path, default=None,
                   help="launch defaults (default: $HELIOS_BEAKER_CONFIG or "
                   "~/.config/helios/beaker.yaml)")  # fmt: skip
    p.add_argument("--allow-dirty", action="store_true",
                   help="launch although the tree has uncommitted changes (the job runs "
                   "the committed code without them)")  # fmt: skip
    p.add_argument("--allow-unpushed", action="store_true",
                   help="launch although no remote branch has the commit yet")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="print the spec and the command; contact nothing")  # fmt: skip
    p.add_argument("--spec-out", type=Path, default=None,
                   help="with --dry-run: also write the spec to this YAML file, for "
                   "`beaker experiment create`")  # fmt: skip
    p.add_argument("job", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the command the job runs, after `--`")  # fmt: skip


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `LaunchConfig` settings given on the command line (flags left out are absent)."""
    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    if args.env:
        overrides["env"] = dict(args.env)
    if args.secret:
        overrides["secrets"] = {name: value or None for name, value in args.secret}
    return overrides


def request_from_args(args: argparse.Namespace) -> LaunchRequest:
    """The `LaunchRequest` that parsed `helios launch beaker` flags describe."""
    return LaunchRequest(
        name=args.name,
        overrides=overrides_from_args(args),
        config_file=args.config_file,
        allow_dirty=args.allow_dirty,
        allow_unpushed=args.allow_unpushed,
        dry_run=args.dry_run,
        spec_out=args.spec_out,
    )


def parse_launch_flags(flags: Sequence[str]) -> LaunchRequest:
    """A `LaunchRequest` from `helios launch beaker` flags (no `-- COMMAND`), e.g. for sweeps."""
    return request_from_args(beaker_parser().parse_args(list(flags)))


def _cmd_beaker(args: argparse.Namespace) -> int:
    from helios.launch.beaker import LaunchError
    from helios.launch.config import LaunchConfigError
    from helios.launch.git import GitStateError
    from helios.launch.secrets import redact
    from helios.launch.submit import submit

    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    try:
        submit(request_from_args(args), command)
    except (LaunchConfigError, GitStateError, LaunchError) as err:
        # a setting echoed in the message may be a credential typed in the wrong place
        print(f"helios: error: {redact(str(err))}", file=sys.stderr)
        return 2
    return 0
