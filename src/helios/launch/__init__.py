"""Launching Helios jobs on Beaker: a typed `LaunchConfig` rendered as a Beaker experiment spec.

`helios launch beaker --name NAME --cluster CLUSTER -- helios fit --config ...` is the command
line; `LaunchConfig.build_spec / dry_run / launch` the Python API (docs/launching.md).
"""

from helios.launch.beaker import LaunchError, build_experiment_spec, spec_to_yaml
from helios.launch.config import LaunchConfig, LaunchConfigError, Mount, resolve_config
from helios.launch.git import GitState, GitStateError, check_launchable, read_git_state

__all__ = [
    "GitState",
    "GitStateError",
    "LaunchConfig",
    "LaunchConfigError",
    "LaunchError",
    "Mount",
    "build_experiment_spec",
    "check_launchable",
    "read_git_state",
    "resolve_config",
    "spec_to_yaml",
]
