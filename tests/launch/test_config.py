from __future__ import annotations

from pathlib import Path

import pytest

from helios.launch.config import (
    DEFAULT_SECRETS,
    LaunchConfig,
    LaunchConfigError,
    Mount,
    resolve_config,
    user_config_path,
)


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_builtin_defaults_without_any_config(launch_env: Path) -> None:
    config = resolve_config("run", environ={})
    assert config == LaunchConfig(name="run")
    assert config.priority == "normal" and config.gpus == 1 and config.nodes == 1
    assert config.preemptible and config.secrets == DEFAULT_SECRETS
    assert user_config_path({}) == launch_env / ".config/helios/beaker.yaml"


def test_precedence_file_then_environment_then_command_line(launch_env: Path) -> None:
    write_config(
        launch_env / ".config/helios/beaker.yaml",
        "workspace: ai2/from-file\nbudget: ai2/file-budget\nclusters: [ai2/file-a, ai2/file-b]\n"
        "priority: low\ngpus: 2\nuser: fileuser\nenv: {A: file, B: file}\n",
    )
    environ = {"HELIOS_BEAKER_WORKSPACE": "ai2/from-env", "HELIOS_BEAKER_CLUSTERS": "ai2/env-c"}

    config = resolve_config("run", environ=environ)
    assert config.workspace == "ai2/from-env"  # env beats file
    assert config.budget == "ai2/file-budget"  # file beats built-in default
    assert config.clusters == ["ai2/env-c"]  # lists are replaced, not merged
    assert config.priority == "low" and config.gpus == 2 and config.user == "fileuser"

    config = resolve_config(
        "run",
        {"workspace": "ai2/from-cli", "priority": "high", "env": {"B": "cli"}},
        environ={**environ, "BEAKER_USER": "envuser"},
    )
    assert config.workspace == "ai2/from-cli"  # command line beats env
    assert config.priority == "high" and config.user == "envuser"
    assert config.env == {"A": "file", "B": "cli"}  # mappings merge key by key


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path / "elsewhere.yaml", "budget: ai2/other\n")
    config = resolve_config("run", environ={"HELIOS_BEAKER_CONFIG": str(path)})
    assert config.budget == "ai2/other"
    with pytest.raises(LaunchConfigError, match="does not exist"):
        resolve_config("run", environ={"HELIOS_BEAKER_CONFIG": str(tmp_path / "missing.yaml")})


def test_an_image_setting_replaces_both_image_fields(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "beaker_image: me/helios\n")
    config = resolve_config("run", {"docker_image": "ghcr.io/x/helios:1"}, {}, path)
    assert config.docker_image == "ghcr.io/x/helios:1" and config.beaker_image is None
    with pytest.raises(LaunchConfigError, match="not both"):
        LaunchConfig(name="run", beaker_image="a/b", docker_image="c:d")


def test_secrets_merge_and_can_be_dropped(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        "user: alice\nsecrets:\n  HF_TOKEN: '{user}_HF_TOKEN'\n  GITHUB_TOKEN: null\n",
    )
    config = resolve_config("run", {"secrets": {"WANDB_API_KEY": "TEAM_WANDB"}}, {}, path)
    assert config.secret_names() == {
        "WANDB_API_KEY": "TEAM_WANDB",
        "BEAKER_TOKEN": "alice_BEAKER_TOKEN",
        "HF_TOKEN": "alice_HF_TOKEN",
    }


def test_secret_names_need_a_user() -> None:
    with pytest.raises(LaunchConfigError, match="BEAKER_USER"):
        LaunchConfig(name="run").secret_names()
    names = LaunchConfig(name="run", user="bob").secret_names()
    assert names["WANDB_API_KEY"] == "bob_WANDB_API_KEY"


def test_mounts_from_file_as_text_or_mapping(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        "mounts:\n  - weka:oe-data:/weka/oe-data\n"
        "  - {kind: dataset, source: ai2/stats, mount_path: /stats}\n",
    )
    config = resolve_config("run", environ={}, config_path=path)
    assert config.mounts == [
        Mount("weka", "oe-data", "/weka/oe-data"),
        Mount("dataset", "ai2/stats", "/stats"),
    ]
    assert str(config.mounts[0]) == "weka:oe-data:/weka/oe-data"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("wrkspace: ai2/x\n", "unknown setting 'wrkspace'"),
        ("name: x\n", "unknown setting 'name'"),
        ("gpus: eight\n", "gpus must be int"),
        ("preemptible: sometimes\n", "preemptible must be bool"),
        ("gpus: 1.5\n", "gpus must be int"),
        ("env: {A: [1]}\n", "env must be dict"),
        ("priority: highest\n", "priority must be"),
        ("clusters: ai2/jupiter\n", "clusters must be list"),
        ("mounts: [weka:/nowhere]\n", "bad.yaml: a mount is KIND:SOURCE:MOUNT_PATH"),
        ("mounts: [{kind: weka, source: b, mount_path: rel}]\n", "bad.yaml: mount path must be"),
        ("mounts: [{kind: nfs, source: b, mount_path: /m}]\n", "mounts must be list"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_user_config_is_reported(tmp_path: Path, text: str, match: str) -> None:
    path = write_config(tmp_path / "bad.yaml", text)
    with pytest.raises(LaunchConfigError, match=match):
        resolve_config("run", environ={}, config_path=path)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"name": "-bad"}, "invalid experiment name"),
        ({"name": "has space"}, "invalid experiment name"),
        ({"nodes": 0}, "nodes >= 1"),
        ({"nodes": 2, "gpus": 0}, "multi-node"),
        ({"shared_memory": "lots"}, "shared_memory"),
        ({"min_runtime": "8h"}, "non-preemptible"),
        ({"preemptible": False, "min_runtime": "soon"}, "duration"),
        ({"run_root": "relative/runs"}, "absolute"),
        ({"env": {"1BAD": "x"}}, "invalid environment variable"),
        ({"env": {"WANDB_API_KEY": "abc"}}, "Beaker secret"),
        ({"env": {"MY_SECRET": "abc"}}, "Beaker secret"),
        ({"env": {"HF_TOKEN": "abc"}}, "--secret HF_TOKEN=<name>"),
    ],
)
def test_invalid_configs(fields: dict, match: str) -> None:
    args = {"name": "run", **fields}
    with pytest.raises(LaunchConfigError, match=match):
        LaunchConfig(**args)


def test_bad_environment_and_flags_name_their_source() -> None:
    with pytest.raises(LaunchConfigError, match="environment: priority must be"):
        resolve_config("run", environ={"HELIOS_BEAKER_PRIORITY": "top"})
    with pytest.raises(LaunchConfigError, match="command line: unknown setting 'gpu'"):
        resolve_config("run", {"gpu": 2}, environ={})


def test_env_values_are_never_echoed(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "env: {TOKENISH: [hunter2hunter2]}\n")
    with pytest.raises(LaunchConfigError, match="env must be") as err:
        resolve_config("run", environ={}, config_path=path)
    assert "hunter2" not in str(err.value)


def test_credential_env_from_any_layer_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "env: {AWS_SECRET_ACCESS_KEY: abcdefgh}\n")
    with pytest.raises(LaunchConfigError) as err:
        resolve_config("run", environ={}, config_path=path)
    assert "abcdefgh" not in str(err.value)


def test_non_preemptible_with_min_runtime() -> None:
    config = LaunchConfig(name="run", preemptible=False, min_runtime="8h")
    assert config.min_runtime == "8h"


def test_run_dir_and_torchrun_default() -> None:
    config = LaunchConfig(name="exp", run_root="/weka/b/runs/")
    assert config.run_dir() == "/weka/b/runs/exp"
    assert config.run_dir("lr-1e-3") == "/weka/b/runs/exp/lr-1e-3"
    assert LaunchConfig(name="exp").run_dir() == "/results/exp"
    assert not LaunchConfig(name="exp", gpus=8).uses_torchrun
    assert LaunchConfig(name="exp", nodes=2).uses_torchrun
    assert LaunchConfig(name="exp", gpus=8, torchrun=True).uses_torchrun
