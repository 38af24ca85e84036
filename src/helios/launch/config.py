"""`LaunchConfig`: everything a Beaker launch needs, and where its values come from.

Precedence, lowest to highest (each later layer overrides the earlier ones field by field):

1. the defaults written on `LaunchConfig` below;
2. the user config file, `~/.config/helios/beaker.yaml`, or the file `$HELIOS_BEAKER_CONFIG`
   names (a YAML mapping of `LaunchConfig` field names, everything but `name`);
3. environment variables (`ENV_FIELDS`: `HELIOS_BEAKER_WORKSPACE`, `HELIOS_BEAKER_BUDGET`, ...,
   and `BEAKER_USER`);
4. what is given for this run (the `helios launch beaker` flags).

Lists (`clusters`, `mounts`) are replaced by a later layer; the mappings `env` and `secrets`
are merged key by key, and a secret mapped to an empty name is removed. Setting either
`beaker_image` or `docker_image` in a layer clears both from the layers below it.
"""

from __future__ import annotations

import os
import re
import warnings
from argparse import ArgumentError
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml
from beaker.common import parse_duration
from jsonargparse import ArgumentParser

from helios.launch.secrets import USER_PLACEHOLDER, sensitive_name

Priority = Literal["low", "normal", "high", "urgent", "immediate"]
"""Beaker job priorities (beaker-py's `BeakerJobPriority`), lowest first."""

MountKind = Literal["weka", "host_path", "dataset"]
"""What a mount's `source` names: a Weka bucket, a path on the host, or a Beaker dataset."""

CONFIG_PATH_ENV = "HELIOS_BEAKER_CONFIG"
"""Environment variable naming the user config file (overrides the default path)."""

DEFAULT_CONFIG_PATH = Path("~/.config/helios/beaker.yaml")
"""The user config file read when `HELIOS_BEAKER_CONFIG` is not set."""

DEFAULT_SECRETS: dict[str, str] = {
    "WANDB_API_KEY": "{user}_WANDB_API_KEY",
    "BEAKER_TOKEN": "{user}_BEAKER_TOKEN",
    "GITHUB_TOKEN": "{user}_GITHUB_TOKEN",
}
"""Environment variable in the job -> Beaker secret whose value it gets."""

ENV_FIELDS: dict[str, str] = {
    "HELIOS_BEAKER_WORKSPACE": "workspace",
    "HELIOS_BEAKER_BUDGET": "budget",
    "HELIOS_BEAKER_CLUSTERS": "clusters",
    "HELIOS_BEAKER_PRIORITY": "priority",
    "HELIOS_BEAKER_IMAGE": "beaker_image",
    "HELIOS_BEAKER_DOCKER_IMAGE": "docker_image",
    "HELIOS_BEAKER_RUN_ROOT": "run_root",
    "BEAKER_USER": "user",
}
"""Environment variables that set a field (`HELIOS_BEAKER_CLUSTERS` is comma-separated)."""

RESULT_PATH = "/results"
"""Where Beaker saves the job's result dataset (kept per job, not across retries)."""

_BEAKER_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B?)?", re.IGNORECASE)


class LaunchConfigError(ValueError):
    """A launch setting is missing, malformed or unsafe; the message says which and why."""


@dataclass(frozen=True)
class Mount:
    """Data mounted into the job's container."""

    kind: MountKind
    """What `source` names: `weka` bucket, `host_path` on the node, or Beaker `dataset`."""
    source: str
    """The bucket name, host path, or dataset name (`user/dataset`)."""
    mount_path: str
    """Where it appears inside the container (absolute path)."""

    def __post_init__(self) -> None:
        if self.kind not in get_args(MountKind):
            raise LaunchConfigError(
                f"mount kind must be one of {', '.join(get_args(MountKind))}, got {self.kind!r}"
            )
        if not self.source:
            raise LaunchConfigError(f"mount at {self.mount_path} has an empty source")
        if not self.mount_path.startswith("/"):
            raise LaunchConfigError(f"mount path must be absolute, got {self.mount_path!r}")

    @classmethod
    def parse(cls, text: str) -> Mount:
        """Read `KIND:SOURCE:MOUNT_PATH`, e.g. `weka:oe-training-default:/weka`."""
        parts = text.split(":")
        if len(parts) != 3 or parts[0] not in get_args(MountKind):
            raise LaunchConfigError(
                f"a mount is KIND:SOURCE:MOUNT_PATH with KIND one of "
                f"{', '.join(get_args(MountKind))}, got {text!r}"
            )
        return cls(kind=parts[0], source=parts[1], mount_path=parts[2])  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.source}:{self.mount_path}"


@dataclass(frozen=True)
class LaunchConfig:
    """A Beaker launch: where it runs, on what, with which data and secrets.

    Plain settings only: `helios.launch.beaker` renders a config as beaker-py's
    `BeakerExperimentSpec` (`build_spec`), prints it (`dry_run`) or submits it (`launch`).
    """

    name: str
    """Experiment name; also names the run folder `<run_root>/<name>`."""
    clusters: list[str] = field(default_factory=list)
    """Beaker clusters the job may run on, e.g. `ai2/jupiter`."""
    workspace: str | None = None
    """Beaker workspace (`org/name`) the experiment and the secrets live in."""
    budget: str | None = None
    """Beaker budget (`org/name`) the job is charged to."""
    priority: Priority = "normal"
    """Job priority."""
    beaker_image: str | None = None
    """Beaker image to run (`user/image`); set this or `docker_image`."""
    docker_image: str | None = None
    """Docker image to run (`registry/repo:tag`); set this or `beaker_image`."""
    gpus: int = 1
    """GPUs per node (0 for a CPU job)."""
    nodes: int = 1
    """Nodes (Beaker replicas); more than one runs the command under torchrun."""
    shared_memory: str = "64GiB"
    """Shared memory (/dev/shm) per node, for data-loader workers."""
    mounts: list[Mount] = field(default_factory=list)
    """Data mounted into the container (weka buckets, host paths, Beaker datasets)."""
    retries: int = 0
    """Times Beaker retries a failed task; a retried task resumes from its run folder."""
    preemptible: bool = True
    """True: Beaker may preempt the job at any time (minRuntime 0); False: it first runs for
    `min_runtime`. Either way a preempted job is resumed (autoResume) and continues from the
    latest checkpoint in its run folder."""
    min_runtime: str | None = None
    """For a non-preemptible job, how long it runs before it may be preempted (e.g. `8h`);
    None leaves the cluster's default."""
    env: dict[str, str] = field(default_factory=dict)
    """Plain environment variables for the job; credentials belong in `secrets`."""
    secrets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SECRETS))
    """Environment variable -> Beaker secret name, `{user}` standing for `user`. Only the
    names go into the spec; Beaker injects the values when the job starts."""
    user: str | None = None
    """Beaker user name, for `{user}` in secret names; None asks Beaker at launch time."""
    description: str | None = None
    """Experiment description (defaults to the command)."""
    run_root: str | None = None
    """Folder on a persistent mount holding run folders; None uses the job's result
    dataset, which a restarted job cannot see."""
    task_name: str = "main"
    """Name of the (single) task."""
    torchrun: bool | None = None
    """Wrap the command in torchrun: None does so exactly when `nodes > 1`."""

    def __post_init__(self) -> None:
        if not _BEAKER_NAME.fullmatch(self.name):
            raise LaunchConfigError(
                f"invalid experiment name {self.name!r}: use letters, digits, '.', '_' and "
                "'-', not starting with '-'"
            )
        if not _BEAKER_NAME.fullmatch(self.task_name):
            raise LaunchConfigError(f"invalid task name {self.task_name!r}")
        if self.priority not in get_args(Priority):
            raise LaunchConfigError(
                f"priority must be one of {', '.join(get_args(Priority))}, got {self.priority!r}"
            )
        if self.beaker_image and self.docker_image:
            raise LaunchConfigError("set beaker_image or docker_image, not both")
        if self.gpus < 0 or self.nodes < 1 or self.retries < 0:
            raise LaunchConfigError(
                f"need gpus >= 0, nodes >= 1 and retries >= 0 "
                f"(got gpus={self.gpus}, nodes={self.nodes}, retries={self.retries})"
            )
        if self.nodes > 1 and self.gpus < 1:
            raise LaunchConfigError("a multi-node job needs at least one GPU per node")
        if not _SIZE.fullmatch(self.shared_memory):
            raise LaunchConfigError(
                f"shared_memory must look like 64GiB, got {self.shared_memory!r}"
            )
        if self.min_runtime is not None and self.preemptible:
            raise LaunchConfigError(
                "min_runtime applies to non-preemptible jobs: drop it or set preemptible false"
            )
        if self.min_runtime is not None:
            try:
                parse_duration(self.min_runtime)
            except ValueError:
                raise LaunchConfigError(
                    f"min_runtime must be a duration like 8h or 90m, got {self.min_runtime!r}"
                ) from None
        if self.run_root is not None and not self.run_root.startswith("/"):
            raise LaunchConfigError(f"run_root must be an absolute path, got {self.run_root!r}")
        for name in self.env:
            if not _ENV_NAME.fullmatch(name):
                raise LaunchConfigError(f"invalid environment variable name {name!r}")
            if sensitive_name(name):
                raise LaunchConfigError(
                    f"env {name} looks like a credential, and plain env values are written "
                    f"into the experiment spec for anyone to read. Store it as a Beaker secret "
                    f"(`beaker secret write <name> <value> --workspace WORKSPACE`) and "
                    f"pass --secret {name}=<name> instead"
                )
        for name, secret in self.secrets.items():
            if not _ENV_NAME.fullmatch(name) or not secret:
                raise LaunchConfigError(f"invalid secret mapping {name}={secret!r}")
            if name in self.env:
                raise LaunchConfigError(f"{name} is both an env var and a secret")

    @property
    def uses_torchrun(self) -> bool:
        """Whether the job runs its command under torchrun."""
        return self.nodes > 1 if self.torchrun is None else self.torchrun

    def secret_names(self) -> dict[str, str]:
        """Environment variable -> Beaker secret name, with `{user}` filled in."""
        names: dict[str, str] = {}
        for env_name, template in self.secrets.items():
            if USER_PLACEHOLDER in template:
                if not self.user:
                    raise LaunchConfigError(
                        f"secret {template!r} needs the Beaker user name: set BEAKER_USER, "
                        f"`user:` in the user config file, or --user"
                    )
                template = template.replace(USER_PLACEHOLDER, self.user)
            names[env_name] = template
        return names

    def run_dir(self, task: str | None = None) -> str:
        """The run folder: `<run_root>/<name>`, plus `/<task>` for one task of a sweep."""
        root = self.run_root or RESULT_PATH
        path = f"{root.rstrip('/')}/{self.name}"
        return path if task is None else f"{path}/{task}"


_LAYER_FIELDS = {f.name for f in fields(LaunchConfig)} - {"name"}


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user config file: `$HELIOS_BEAKER_CONFIG`, else `~/.config/helios/beaker.yaml`."""
    environ = os.environ if environ is None else environ
    if environ.get(CONFIG_PATH_ENV):
        return Path(environ[CONFIG_PATH_ENV]).expanduser()
    return DEFAULT_CONFIG_PATH.expanduser()


def read_user_config(path: Path) -> dict[str, Any]:
    """The settings in a user config file, checked against `LaunchConfig`'s field types.

    A mount may be written `KIND:SOURCE:MOUNT_PATH` or as a mapping of `Mount`'s fields.
    """
    with path.open() as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LaunchConfigError(f"{path}: expected a mapping of launch settings")
    if isinstance(data.get("mounts"), list):
        data["mounts"] = [_read_mount(m, path) for m in data["mounts"]]
    return _checked(data, str(path))


def _read_mount(value: Any, path: Path) -> Any:
    """A `KIND:SOURCE:PATH` string as a `Mount`; mappings are left to the type check."""
    if not isinstance(value, str):
        return value
    try:
        return Mount.parse(value)
    except LaunchConfigError as err:
        raise LaunchConfigError(f"{path}: {err}") from None


def env_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given by environment variables (`ENV_FIELDS`)."""
    environ = os.environ if environ is None else environ
    layer: dict[str, Any] = {}
    for var, name in ENV_FIELDS.items():
        value = environ.get(var)
        if value:
            layer[name] = [c for c in value.split(",") if c] if name == "clusters" else value
    return _checked(layer, "environment")


def _layer_type(name: str) -> Any:
    """The type a settings layer may give field `name` (a secret mapped to None is removed)."""
    return dict[str, str | None] if name == "secrets" else get_type_hints(LaunchConfig)[name]


@cache
def _layer_parser() -> ArgumentParser:
    """A jsonargparse parser with one option per `LaunchConfig` field but `name`."""
    parser = ArgumentParser(exit_on_error=False)
    for name in sorted(_LAYER_FIELDS):
        parser.add_argument(f"--{name}", type=_layer_type(name))
    return parser


def _checked(layer: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`layer` with each value checked and converted by jsonargparse against its field's type."""
    parser = _layer_parser()
    checked: dict[str, Any] = {}
    for key, value in layer.items():
        if key not in _LAYER_FIELDS:
            raise LaunchConfigError(
                f"{source}: unknown setting {key!r}; known: {', '.join(sorted(_LAYER_FIELDS))}"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                checked[key] = parser.instantiate(parser.parse_object({key: value}))[key]
        except (ArgumentError, TypeError, ValueError) as err:
            if isinstance(err, LaunchConfigError):
                raise LaunchConfigError(f"{source}: {err}") from None
            # env values are never echoed: one may be a credential put there by mistake
            shown = "a value of another type" if key == "env" else repr(value)
            raise LaunchConfigError(
                f"{source}: {key} must be {_type_name(_layer_type(key))}, got {shown}"
            ) from None
    return checked


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "").replace("helios.launch.config.", "")


def merge_layers(layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Apply settings layers in order (see the module docstring for the rules)."""
    merged: dict[str, Any] = {}
    secrets: dict[str, str | None] = dict(DEFAULT_SECRETS)
    env: dict[str, str] = {}
    for layer in layers:
        if "beaker_image" in layer or "docker_image" in layer:
            merged.pop("beaker_image", None)
            merged.pop("docker_image", None)
        for key, value in layer.items():
            if key == "secrets":
                secrets.update(value)
            elif key == "env":
                env.update(value)
            else:
                merged[key] = value
    merged["secrets"] = {k: v for k, v in secrets.items() if v}
    merged["env"] = env
    return merged


def resolve_config(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> LaunchConfig:
    """Build the `LaunchConfig` for one run.

    Layers, lowest first: the user config file, the environment, and the per-run `overrides`.
    """
    environ = os.environ if environ is None else environ
    path = config_path or user_config_path(environ)
    explicit = config_path is not None or bool(environ.get(CONFIG_PATH_ENV))
    layers: list[dict[str, Any]] = []
    if path.is_file():
        layers.append(read_user_config(path))
    elif explicit:
        raise LaunchConfigError(f"launch config file {path} does not exist")
    layers.append(env_settings(environ))
    layers.append(_checked(overrides or {}, "command line"))
    return LaunchConfig(name=name, **merge_layers(layers))


def with_user(config: LaunchConfig, user: str) -> LaunchConfig:
    """A copy of `config` with the Beaker user name set."""
    return replace(config, user=user)
