"""Launching Helios jobs on Beaker: a typed `LaunchConfig` rendered as a Beaker experiment spec.

`helios launch beaker --name NAME --cluster CLUSTER -- helios fit --config ...` is the command
line; `submit(LaunchRequest(...), command)` does the same from Python, and
`build_spec / dry_run / launch` (in `helios.launch.beaker`) work on a `LaunchConfig` directly
(docs/launching.md).
"""

from helios.launch.beaker import LaunchError, build_experiment_spec, build_spec, spec_to_yaml
from helios.launch.config import LaunchConfig, LaunchConfigError, Mount, resolve_config
from helios.launch.git import GitState, GitStateError, check_launchable, read_git_state
from helios.launch.submit import LaunchRequest, submit

__all__ = [
    "GitState",
    "GitStateError",
    "LaunchConfig",
    "LaunchConfigError",
    "LaunchError",
    "LaunchRequest",
    "Mount",
    "build_experiment_spec",
    "build_spec",
    "check_launchable",
    "read_git_state",
    "resolve_config",
    "spec_to_yaml",
    "submit",
]
