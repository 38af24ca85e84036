"""Spec rendering, round-tripped through beaker-py's own YAML reader."""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml
from beaker import (
    BeakerDataMount,
    BeakerDataSource,
    BeakerExperimentSpec,
    BeakerJobPriority,
    BeakerTaskSpec,
)

from helios.launch import (
    LaunchConfig,
    LaunchError,
    Mount,
    build_experiment_spec,
    build_spec,
    read_git_state,
    spec_to_yaml,
)
from helios.launch.beaker import entrypoint_script, job_command
from helios.launch.git import GitState

COMMAND = ["helios", "fit", "--config", "configs/latent_mim.yaml"]


@pytest.fixture
def git_state(repo: Path) -> GitState:
    return read_git_state(repo)


def round_trip(spec: BeakerExperimentSpec, tmp_path: Path) -> BeakerExperimentSpec:
    """Write our YAML, read it back with beaker-py, and check nothing changed."""
    text = spec_to_yaml(spec)
    assert yaml.safe_load(text) == spec.to_json()
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    parsed = BeakerExperimentSpec.from_file(path)
    assert parsed.to_json() == spec.to_json()
    # beaker-py's own writer gives the same spec back too
    spec.to_file(tmp_path / "spec-beaker.yaml")
    assert BeakerExperimentSpec.from_file(tmp_path / "spec-beaker.yaml").to_json() == (
        spec.to_json()
    )
    return parsed


def env_of(task: BeakerTaskSpec) -> dict[str, tuple[str | None, str | None]]:
    return {e.name: (e.value, e.secret) for e in task.env_vars or []}


def test_single_gpu_spec(git_state: GitState, tmp_path: Path) -> None:
    config = LaunchConfig(
        name="mim-nano",
        clusters=["ai2/jupiter", "ai2/ceres"],
        workspace="ai2/helios",
        budget="ai2/es-budget",
        beaker_image="me/helios",
        user="alice",
        retries=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated beaker-py fields
        spec = build_spec(config, COMMAND, git_state)
    parsed = round_trip(spec, tmp_path)
    assert parsed == spec  # no mounts, so beaker-py parses every field back to its class

    assert spec.budget == "ai2/es-budget" and spec.retry is not None
    assert spec.retry.allowed_task_retries == 2
    assert spec.description == "helios fit --config configs/latent_mim.yaml"
    (task,) = spec.tasks
    assert task.name == "main"
    assert task.image.beaker == "me/helios" and task.image.docker is None
    assert task.constraints is not None and task.constraints.cluster == ["ai2/jupiter", "ai2/ceres"]
    assert task.context.priority == BeakerJobPriority.normal
    assert task.context.min_runtime == 0 and task.context.auto_resume is True
    assert task.resources is not None
    assert task.resources.gpu_count == 1 and task.resources.shared_memory == "64GiB"
    assert task.replicas is None and not task.host_networking and not task.leader_selection
    assert task.result is not None and task.result.path == "/results"

    env = env_of(task)
    assert env["HELIOS_GIT_COMMIT"] == (git_state.commit, None)
    assert env["HELIOS_GIT_REMOTE"] == (git_state.remote_url, None)
    assert env["HELIOS_RUN_DIR"] == ("/results/mim-nano", None)
    assert env["WANDB_API_KEY"] == (None, "alice_WANDB_API_KEY")
    assert env["BEAKER_TOKEN"] == (None, "alice_BEAKER_TOKEN")
    assert env["GITHUB_TOKEN"] == (None, "alice_GITHUB_TOKEN")

    assert task.command is not None and task.command[:2] == ["bash", "-c"]
    script = task.command[2]
    assert 'git checkout --quiet --detach "$HELIOS_GIT_COMMIT"' in script
    assert "pip install --quiet --no-input -e ." in script
    assert script.rstrip().endswith("exec helios fit --config configs/latent_mim.yaml")
    assert "torchrun" not in script


def test_multi_node_spec(git_state: GitState, tmp_path: Path) -> None:
    config = LaunchConfig(
        name="mim-base",
        clusters=["ai2/jupiter"],
        docker_image="ghcr.io/allenai/helios:abc123",
        gpus=8,
        nodes=4,
        shared_memory="256GiB",
        mounts=[Mount("weka", "dfive-default", "/weka/dfive-default")],
        run_root="/weka/dfive-default/helios/runs",
        priority="urgent",
        preemptible=False,
        min_runtime="8h",
        env={"NCCL_DEBUG": "WARN"},
        user="bob",
    )
    spec = build_spec(config, [*COMMAND, "--trainer.num_nodes", "4"], git_state)
    parsed = round_trip(spec, tmp_path)
    (task,) = parsed.tasks
    assert task.replicas == 4 and task.host_networking and task.leader_selection
    assert task.propagate_failure and task.propagate_preemption
    assert task.synchronized_start_timeout == 15 * 60 * 10**9
    assert task.context.priority == BeakerJobPriority.urgent
    assert task.context.min_runtime == 8 * 3600 * 10**9
    assert task.image.docker == "ghcr.io/allenai/helios:abc123"
    assert env_of(task)["HELIOS_RUN_DIR"] == ("/weka/dfive-default/helios/runs/mim-base", None)
    assert env_of(task)["NCCL_DEBUG"] == ("WARN", None)
    # beaker-py's DataMount.from_json keeps the source as a plain mapping
    (mount,) = spec.tasks[0].datasets or []
    assert mount == BeakerDataMount(
        source=BeakerDataSource(weka="dfive-default"), mount_path="/weka/dfive-default"
    )
    assert task.datasets is not None
    assert task.datasets[0].to_json() == mount.to_json()

    assert task.command is not None
    last = task.command[2].rstrip().splitlines()[-1]
    assert last == (
        'exec torchrun --nnodes 4 --nproc-per-node 8 --node-rank "$BEAKER_REPLICA_RANK" '
        '--master-addr "$BEAKER_LEADER_REPLICA_HOSTNAME" --master-port 29400 --no-python '
        "helios fit --config configs/latent_mim.yaml --trainer.num_nodes 4"
    )


def test_sweep_spec_has_one_task_per_setting(git_state: GitState, tmp_path: Path) -> None:
    config = LaunchConfig(
        name="probe-sweep",
        clusters=["ai2/saturn"],
        beaker_image="me/helios",
        run_root="/weka/b/runs",
        user="carol",
        gpus=1,
    )
    commands = {
        f"lr-{lr}": ["helios", "eval", "probe", "--lr", lr] for lr in ("1e-3", "1e-4", "1e-5")
    }
    spec = build_experiment_spec(config, commands, git_state)
    parsed = round_trip(spec, tmp_path)
    assert parsed == spec
    assert [t.name for t in parsed.tasks] == ["lr-1e-3", "lr-1e-4", "lr-1e-5"]
    for task, (name, cmd) in zip(parsed.tasks, commands.items()):
        assert env_of(task)["HELIOS_RUN_DIR"] == (f"/weka/b/runs/probe-sweep/{name}", None)
        assert task.command is not None and task.command[2].rstrip().endswith(
            "exec " + " ".join(cmd)
        )
    assert spec.description == "3 tasks, first: helios eval probe --lr 1e-3"


def test_single_node_sweep_command_runs_as_is(git_state: GitState) -> None:
    config = LaunchConfig(name="sweep-1", gpus=8, user="u")
    cmd = ["helios", "sweep", "configs/sweeps/probe.yaml", "--workers", "8"]
    spec = build_spec(config, cmd, git_state)
    assert spec.tasks[0].command is not None
    assert spec.tasks[0].command[2].rstrip().endswith("exec " + " ".join(cmd))


def test_command_is_shell_quoted() -> None:
    config = LaunchConfig(name="q")
    cmd = ["helios", "run", "predict", "my project", "--where", "a;b $HOME"]
    assert job_command(config, cmd) == "helios run predict 'my project' --where 'a;b $HOME'"
    forced = LaunchConfig(name="q", gpus=4, torchrun=True)
    assert job_command(forced, ["helios", "fit"]) == (
        "torchrun --standalone --nnodes 1 --nproc-per-node 4 --no-python helios fit"
    )
    assert "GITHUB_TOKEN" in entrypoint_script(config, cmd)  # read at run time, not rendered


def test_cpu_job_requests_no_gpus(git_state: GitState) -> None:
    spec = build_spec(LaunchConfig(name="cpu", gpus=0, user="u"), ["helios", "--help"], git_state)
    assert spec.tasks[0].resources is not None and spec.tasks[0].resources.gpu_count is None


def test_empty_command_is_refused(git_state: GitState) -> None:
    with pytest.raises(LaunchError, match="after `--`"):
        build_spec(LaunchConfig(name="x", user="u"), [], git_state)


def test_entrypoint_checks_out_the_commit_and_runs_the_command(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the rendered script with bash: real git against the bare 'remote'; only pip is
    replaced (installing needs the network) by a stub that records its arguments."""
    git_state = read_git_state(repo)
    run_root = tmp_path / "weka" / "runs"
    config = LaunchConfig(name="e2e", user="u", run_root=str(run_root))
    cmd = [
        "bash",
        "-c",
        'git rev-parse HEAD > "$HELIOS_RUN_DIR/commit"; echo "$0 $1" > args',
        "a b",
        "c",
    ]
    spec = build_spec(config, cmd, git_state)
    (task,) = spec.tasks
    env = {e.name: e.value for e in task.env_vars or [] if e.value is not None}
    env["HELIOS_SRC_DIR"] = str(tmp_path / "src")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/pip-args\n')
    stub.chmod(0o755)
    for name, value in {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_never_written_1234")
    assert task.command is not None
    subprocess.run(task.command, check=True, capture_output=True, text=True, env=os.environ)

    assert (run_root / "e2e" / "commit").read_text().strip() == git_state.commit
    assert (tmp_path / "src" / "args").read_text().strip() == "a b c"
    assert (tmp_path / "pip-args").read_text().split() == [
        "-m", "pip", "install", "--quiet", "--no-input", "-e", ".",
    ]  # fmt: skip
    gitconfig = (Path(os.environ["HOME"]) / ".gitconfig").read_text()
    assert "$GITHUB_TOKEN" in gitconfig and "ghp_never_written_1234" not in gitconfig
