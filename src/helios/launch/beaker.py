"""Render a `LaunchConfig` as a Beaker experiment spec, print it, or submit it.

Specs are built from beaker-py's own classes and submitted with beaker-py's client. Every
function takes the commands as a mapping task name -> command (`single_task` makes the mapping
of a one-task job); `build_spec` is the one-task shorthand.

The job's command is a small bash script: fetch the repository at the launched commit, install
it on top of the image (`pip install -e .`), make the run folder, and exec the user's command,
under torchrun for multi-node jobs (rendezvous on the Beaker leader replica). A single-node
multi-GPU job runs the command as it is: Lightning's own launcher starts one process per GPU,
and sweeps and the runner manage their own worker processes.
"""

from __future__ import annotations

import getpass
import logging
import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from beaker import (
    BeakerConstraints,
    BeakerDataMount,
    BeakerEnvVar,
    BeakerExperimentSpec,
    BeakerImageSource,
    BeakerJobPriority,
    BeakerResultSpec,
    BeakerRetrySpec,
    BeakerTaskContext,
    BeakerTaskResources,
    BeakerTaskSpec,
)
from beaker.common import to_nanoseconds

from helios.launch.config import RESULT_PATH, LaunchConfig, Mount
from helios.launch.secrets import (
    USER_PLACEHOLDER,
    RedactSecrets,
    leaked_names,
    redact,
    strip_url,
    url_credentials,
)

if TYPE_CHECKING:
    from helios.launch.git import GitState

logger = logging.getLogger(__name__)
logger.addFilter(RedactSecrets())

CHECKOUT_DIR = "/tmp/helios-src"
"""Where the job clones the repository."""
TORCHRUN_PORT = 29400
"""The rendezvous port on the leader replica."""
SYNCHRONIZED_START_TIMEOUT = "15m"
"""How long the replicas of a multi-node job wait for each other to be scheduled."""


class LaunchError(RuntimeError):
    """A launch was refused or failed; the message says why and what to do."""


def job_command(config: LaunchConfig, command: Sequence[str]) -> str:
    """The shell line the job execs: `command`, under torchrun when the config asks for it."""
    cmd = shlex.join(command)
    if not config.uses_torchrun:
        return cmd
    if config.nodes == 1:
        return f"torchrun --standalone --nnodes 1 --nproc-per-node {config.gpus} --no-python {cmd}"
    return (
        f"torchrun --nnodes {config.nodes} --nproc-per-node {config.gpus}"
        ' --node-rank "$BEAKER_REPLICA_RANK" --master-addr "$BEAKER_LEADER_REPLICA_HOSTNAME"'
        f" --master-port {TORCHRUN_PORT} --no-python {cmd}"
    )


def entrypoint_script(config: LaunchConfig, command: Sequence[str]) -> str:
    """The bash script run as the task's command.

    The repository URL, commit, checkout folder and run folder come from the task's env vars
    (HELIOS_GIT_REMOTE, HELIOS_GIT_COMMIT, HELIOS_SRC_DIR, HELIOS_RUN_DIR). GITHUB_TOKEN, when
    the job has it, reaches git through a credential helper that reads the variable at run
    time, so the token is in no URL, command line or log.
    """
    return "\n".join(
        [
            "set -euo pipefail",
            'echo "[helios] commit $HELIOS_GIT_COMMIT of $HELIOS_GIT_REMOTE,'
            ' run folder $HELIOS_RUN_DIR"',
            'if [ -n "${GITHUB_TOKEN:-}" ]; then',
            "  git config --global credential.helper"
            " '!f() { echo username=x-access-token; echo \"password=$GITHUB_TOKEN\"; }; f'",
            "fi",
            'rm -rf "$HELIOS_SRC_DIR" && mkdir -p "$HELIOS_SRC_DIR" && cd "$HELIOS_SRC_DIR"',
            'git init --quiet && git remote add origin "$HELIOS_GIT_REMOTE"',
            'git fetch --quiet --depth 1 origin "$HELIOS_GIT_COMMIT" || git fetch --quiet origin',
            'git checkout --quiet --detach "$HELIOS_GIT_COMMIT"',
            "python -m pip install --quiet --no-input -e .",
            'mkdir -p "$HELIOS_RUN_DIR"',
            f"exec {job_command(config, command)}",
            "",
        ]
    )


def _nanoseconds(duration: str | None) -> int | None:
    return None if duration is None else to_nanoseconds(duration)


def _mount(mount: Mount) -> BeakerDataMount:
    if mount.kind == "weka":
        return BeakerDataMount.new(mount.mount_path, weka=mount.source)
    if mount.kind == "host_path":
        return BeakerDataMount.new(mount.mount_path, host_path=mount.source)
    return BeakerDataMount.new(mount.mount_path, beaker=mount.source)


def _task(
    config: LaunchConfig, task: str, command: list[str], run_dir: str, git: GitState
) -> BeakerTaskSpec:
    env_vars = [
        BeakerEnvVar(name="HELIOS_EXPERIMENT", value=config.name),
        BeakerEnvVar(name="HELIOS_GIT_REMOTE", value=git.remote_url),
        BeakerEnvVar(name="HELIOS_GIT_COMMIT", value=git.commit),
        BeakerEnvVar(name="HELIOS_SRC_DIR", value=CHECKOUT_DIR),
        BeakerEnvVar(name="HELIOS_RUN_DIR", value=run_dir),
    ]
    env_vars += [BeakerEnvVar(name=k, value=v) for k, v in sorted(config.env.items())]
    env_vars += [BeakerEnvVar(name=k, secret=v) for k, v in sorted(config.secret_names().items())]
    multi_node = config.nodes > 1
    return BeakerTaskSpec(
        name=task,
        image=BeakerImageSource(beaker=config.beaker_image, docker=config.docker_image),
        context=BeakerTaskContext(
            priority=BeakerJobPriority[config.priority],
            # minRuntime 0 lets Beaker preempt at any time; autoResume restarts a preempted
            # job, which continues from the latest checkpoint in its run folder.
            min_runtime=0 if config.preemptible else _nanoseconds(config.min_runtime),
            auto_resume=True,
        ),
        constraints=BeakerConstraints(cluster=list(config.clusters)) if config.clusters else None,
        command=["bash", "-c", entrypoint_script(config, command)],
        env_vars=env_vars,
        datasets=[_mount(m) for m in config.mounts] or None,
        resources=BeakerTaskResources(
            gpu_count=config.gpus or None, shared_memory=config.shared_memory
        ),
        result=BeakerResultSpec(path=RESULT_PATH),
        host_networking=multi_node,
        replicas=config.nodes if multi_node else None,
        leader_selection=multi_node,  # beaker-py defaults this to False, not None
        propagate_failure=True if multi_node else None,
        propagate_preemption=True if multi_node else None,
        synchronized_start_timeout=_nanoseconds(SYNCHRONIZED_START_TIMEOUT if multi_node else None),
    )


def build_experiment_spec(
    config: LaunchConfig, commands: Mapping[str, Sequence[str]], git: GitState
) -> BeakerExperimentSpec:
    """The experiment spec: one task per named command, all at `git`'s commit.

    A single task's run folder is `config.run_dir()`; with several tasks (a sweep), each task
    gets `config.run_dir(task)`. Refuses commands or env values that contain the value of a
    credential variable of this process.
    """
    if not commands:
        raise LaunchError("nothing to launch: give a command after `--`")
    empty = [name for name, cmd in commands.items() if not cmd]
    if empty:
        raise LaunchError(f"empty command for task(s) {', '.join(empty)}: give one after `--`")
    if git.remote_url is None:
        raise LaunchError("the repository has no remote the job could clone from")
    _refuse_credentials(
        [*(a for cmd in commands.values() for a in cmd), *config.env.values()],
        config.description,
    )
    single = len(commands) == 1
    tasks = [
        _task(config, name, list(cmd), config.run_dir(None if single else name), git)
        for name, cmd in commands.items()
    ]
    first = shlex.join(next(iter(commands.values())))
    description = config.description or (
        first if single else f"{len(commands)} tasks, first: {first}"
    )
    return BeakerExperimentSpec(
        description=description[:1000],
        tasks=tasks,
        budget=config.budget,
        retry=BeakerRetrySpec(allowed_task_retries=config.retries) if config.retries else None,
    )


def _refuse_credentials(values: Sequence[str], description: str | None) -> None:
    """Refuse values holding a credential: this process's secret values, or URL credentials."""
    texts = [*values, description or ""]
    leaks = leaked_names(texts)
    if leaks:
        raise LaunchError(
            f"the command, env or description contains the value of {', '.join(leaks)}; "
            "credentials go into jobs only as Beaker secrets (--secret NAME=SECRET_NAME), "
            "never as values"
        )
    in_urls = [found for text in texts for found in url_credentials(text)]
    if in_urls:
        raise LaunchError(
            f"the command, env or description carries credentials in a URL "
            f"({'; '.join(in_urls)}); pass them to the job as a Beaker secret "
            "(--secret NAME=SECRET_NAME) and let the command read the variable"
        )


def single_task(config: LaunchConfig, command: Sequence[str]) -> dict[str, list[str]]:
    """The commands mapping of a one-task job: `{config.task_name: command}`."""
    return {config.task_name: list(command)}


def build_spec(config: LaunchConfig, command: Sequence[str], git: GitState) -> BeakerExperimentSpec:
    """The spec of a one-task job running `command` at `git`'s commit."""
    return build_experiment_spec(config, single_task(config, command), git)


class _SpecDumper(yaml.SafeDumper):
    """PyYAML's SafeDumper (what beaker-py's `to_file` uses), with scripts as `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_SpecDumper.add_representer(str, _represent_str)


def spec_to_yaml(spec: BeakerExperimentSpec) -> str:
    """The spec as YAML, in beaker-py's `to_json()` form.

    Readable by `BeakerExperimentSpec.from_file` and `beaker experiment create`.
    """
    return yaml.dump(spec.to_json(), Dumper=_SpecDumper, sort_keys=True)


def _strings(value: Any) -> list[str]:
    """Every string in a JSON-like value (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _guard(text: str, spec: BeakerExperimentSpec | None = None) -> None:
    """Refuse output, or a spec, that holds a credential value.

    The spec is checked field by field too, since YAML may fold or escape a long value.
    """
    leaks = leaked_names([text, *(_strings(spec.to_json()) if spec is not None else [])])
    if leaks:
        raise LaunchError(
            f"refusing to print or submit a spec containing the value of {', '.join(leaks)}"
        )


def dry_run(
    config: LaunchConfig,
    commands: Mapping[str, Sequence[str]],
    git: GitState,
    out: IO[str] | None = None,
) -> BeakerExperimentSpec:
    """Print the spec (valid YAML, comments included) and the job's command; no network."""
    if config.user is None and any(USER_PLACEHOLDER in s for s in config.secrets.values()):
        user = getpass.getuser()
        logger.warning(
            "no Beaker user configured (BEAKER_USER, `user:` in the config file, --user); "
            "the secret names below use the local login %r, a real launch asks Beaker",
            user,
        )
        config = replace(config, user=user)
    for problem in missing_settings(config):
        logger.warning("a real launch would refuse: %s", problem)
    _warn_run_root(config)
    spec = build_experiment_spec(config, commands, git)
    text = spec_to_yaml(spec)
    lines = [
        f"# Beaker experiment {config.name!r} in workspace {config.workspace or '(not set)'}",
        "# dry run: nothing was sent to Beaker",
        text.rstrip("\n"),
        f"# each job checks out {git.commit} of {git.remote_url}",
    ]
    for name, cmd in commands.items():
        run_dir = config.run_dir(None if len(commands) == 1 else name)
        lines.append(f"# task {name} runs, with HELIOS_RUN_DIR={run_dir}:")
        lines.append(f"#   {job_command(config, cmd)}")
    output = "\n".join(lines) + "\n"
    _guard(output, spec)
    (out or sys.stdout).write(output)
    return spec


def missing_settings(config: LaunchConfig) -> list[str]:
    """What a real launch needs that `config` lacks (and what a restart would lose)."""
    problems = []
    if not config.workspace:
        problems.append("no workspace (--workspace, HELIOS_BEAKER_WORKSPACE, `workspace:`)")
    if not config.budget:
        problems.append("no budget (--budget, HELIOS_BEAKER_BUDGET, `budget:`)")
    if not config.clusters:
        problems.append("no cluster (--cluster, HELIOS_BEAKER_CLUSTERS, `clusters:`)")
    if not (config.beaker_image or config.docker_image):
        problems.append("no image (--image / --docker-image, HELIOS_BEAKER_IMAGE, `beaker_image:`)")
    return problems


def _warn_run_root(config: LaunchConfig) -> None:
    if config.run_root is None:
        logger.warning(
            "run_root is not set: the run folder is in the job's result dataset, which a "
            "preempted or retried job does not see, so it would start over; set run_root to a "
            "folder on a persistent mount (e.g. /weka/<bucket>/helios/runs)"
        )
    elif not any(
        f"{config.run_root}/".startswith(f"{m.mount_path.rstrip('/')}/") for m in config.mounts
    ):
        logger.warning("run_root %s is not under any mount of this job", config.run_root)


def _unreachable(address: str) -> str | None:
    """Why a TCP connection to `address` (a URL or host:port) fails, or None if it works."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=10):
            return None
    except OSError as err:
        return type(err).__name__


def launch(
    config: LaunchConfig,
    commands: Mapping[str, Sequence[str]],
    git: GitState,
    out: IO[str] | None = None,
) -> str:
    """Create the experiment with beaker-py's client; print and return its URL."""
    problems = missing_settings(config)
    if problems:
        raise LaunchError("cannot launch: " + "; ".join(problems))
    _warn_run_root(config)
    import grpc
    import requests
    from beaker import Beaker
    from beaker.exceptions import (
        BeakerConfigurationError,
        BeakerError,
        BeakerExperimentConflict,
        BeakerSecretNotFound,
    )

    try:
        client = Beaker.from_env(check_for_upgrades=False, default_workspace=config.workspace)
    except BeakerConfigurationError as err:
        raise LaunchError(
            f"no Beaker credentials ({err}): run `beaker account login`, or set BEAKER_TOKEN "
            "(see docs/launching.md)"
        ) from None
    address = client.config.agent_address
    with client:
        # beaker-py retries an unreachable server forever, so check the network first.
        for endpoint in (client.config.rpc_address, address):
            problem = _unreachable(endpoint)
            if problem:
                raise LaunchError(
                    f"cannot reach Beaker at {strip_url(endpoint)} ({problem}): check your "
                    "network or VPN, or BEAKER_ADDR and the beaker config file"
                )
        try:
            if config.user is None:
                config = replace(config, user=client.user_name)
            spec = build_experiment_spec(config, commands, git)
            _guard(spec_to_yaml(spec), spec)
            workspace = client.workspace.get(config.workspace)
            missing = []
            for secret in sorted(set(config.secret_names().values())):
                try:
                    client.secret.get(secret, workspace=workspace)
                except BeakerSecretNotFound:
                    missing.append(secret)
            if missing:
                raise LaunchError(
                    f"secret(s) {', '.join(missing)} not found in workspace {config.workspace}: "
                    "create each with `beaker secret write NAME VALUE --workspace "
                    f"{config.workspace}`, or drop one with --secret ENV="
                )
            workload = client.experiment.create(spec=spec, name=config.name, workspace=workspace)
            url = client.workload.url(workload)
        except BeakerExperimentConflict:
            raise LaunchError(
                f"an experiment named {config.name!r} already exists in {config.workspace}: "
                "choose another --name"
            ) from None
        except BeakerError as err:
            raise LaunchError(
                f"Beaker refused the launch: {type(err).__name__}: {redact(str(err))}"
            ) from None
        except (requests.RequestException, grpc.RpcError) as err:
            raise LaunchError(
                f"could not reach Beaker at {strip_url(address)}: {type(err).__name__}"
            ) from None
    (out or sys.stdout).write(f"launched {config.name}: {url}\n")
    return url
