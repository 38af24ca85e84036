"""The launcher's Python API: what `helios launch beaker` does, callable with plain values.

`LaunchRequest` holds what the flags of `helios launch beaker` say (the `LaunchConfig`
overrides, the config file, the git checks to relax, dry run or not); `submit` resolves the
config (file, environment, overrides), checks the repository and prints or launches the job.
The CLI and `helios sweep --beaker` both go through `submit`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from beaker import BeakerExperimentSpec

from helios.launch.beaker import LaunchError, dry_run, launch, single_task
from helios.launch.config import resolve_config
from helios.launch.git import check_launchable, read_git_state
from helios.launch.secrets import RedactSecrets

logger = logging.getLogger(__name__)
logger.addFilter(RedactSecrets())

Commands = Sequence[str] | Mapping[str, Sequence[str]]
"""One command (a one-task job), or task name -> command (one task each, e.g. a sweep)."""


@dataclass(frozen=True)
class LaunchRequest:
    """One launch, as `helios launch beaker` flags describe it."""

    name: str
    """Experiment name; also names the run folder."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """`LaunchConfig` settings given for this run (the highest precedence layer)."""
    config_file: Path | None = None
    """The user config file (default: $HELIOS_BEAKER_CONFIG or ~/.config/helios/beaker.yaml)."""
    allow_dirty: bool = False
    """Launch although the tree has uncommitted changes."""
    allow_unpushed: bool = False
    """Launch although no remote branch has the commit yet."""
    dry_run: bool = False
    """Print the spec and the commands; contact nothing."""
    spec_out: Path | None = None
    """With `dry_run`: also write the spec to this YAML file."""


def submit(
    request: LaunchRequest,
    commands: Commands,
    repo: Path | None = None,
    environ: Mapping[str, str] | None = None,
    out: IO[str] | None = None,
) -> BeakerExperimentSpec | str:
    """Print (dry run) or launch `commands` at the current commit of `repo` (default: cwd).

    Returns the spec of a dry run, or the URL of the launched experiment.

    Raises:
        LaunchConfigError, GitStateError, LaunchError: with a message saying what to fix.

    """
    if not commands:
        raise LaunchError("give the command to run after `--`, e.g. -- helios fit ...")
    if request.spec_out is not None and not request.dry_run:
        raise LaunchError("--spec-out goes with --dry-run")
    config = resolve_config(
        request.name, request.overrides, environ=environ, config_path=request.config_file
    )
    git = read_git_state(repo or Path.cwd())
    for warning in check_launchable(
        git, allow_dirty=request.allow_dirty, allow_unpushed=request.allow_unpushed
    ):
        logger.warning(warning)
    tasks = (
        {name: list(cmd) for name, cmd in commands.items()}
        if isinstance(commands, Mapping)
        else single_task(config, commands)
    )
    stream = out or sys.stdout
    if not request.dry_run:
        return launch(config, tasks, git, stream)
    spec = dry_run(config, tasks, git, stream)
    if request.spec_out is not None:
        spec.to_file(request.spec_out)
        logger.info("wrote the spec to %s", request.spec_out)
    return spec
