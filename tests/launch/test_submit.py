"""The launcher's Python API: `submit(LaunchRequest, commands)`, as the CLI and sweeps use it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from beaker import BeakerExperimentSpec

from helios.launch import LaunchError, LaunchRequest, submit
from helios.launch.cli import parse_launch_flags

FULL = {"clusters": ["ai2/jupiter"], "workspace": "ai2/helios", "budget": "ai2/es"}


def test_submit_dry_run_of_one_command(repo: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    request = LaunchRequest("api", {**FULL, "user": "ann"}, dry_run=True, spec_out=tmp_path / "s")
    spec = submit(request, ["helios", "fit"], repo=repo, environ={}, out=out)
    assert isinstance(spec, BeakerExperimentSpec) and [t.name for t in spec.tasks] == ["main"]
    assert "# task main runs" in out.getvalue()
    assert BeakerExperimentSpec.from_file(tmp_path / "s") == spec


def test_submit_one_task_per_named_command(repo: Path) -> None:
    request = LaunchRequest("sweep-x", {"user": "ann", "task_name": "ignored"}, dry_run=True)
    commands = {"a": ["helios", "eval", "run"], "b": ["helios", "eval", "run", "--seed", "1"]}
    spec = submit(request, commands, repo=repo, environ={}, out=io.StringIO())
    assert isinstance(spec, BeakerExperimentSpec)
    assert [t.name for t in spec.tasks] == ["a", "b"]


def test_submit_refuses_before_resolving(repo: Path) -> None:
    with pytest.raises(LaunchError, match="after `--`"):
        submit(LaunchRequest("x", dry_run=True), [], repo=repo)
    with pytest.raises(LaunchError, match="--spec-out goes with --dry-run"):
        submit(LaunchRequest("x", spec_out=Path("s.yaml")), ["true"], repo=repo)


def test_parse_launch_flags_needs_no_helios_cli() -> None:
    flags = ["--name", "n", "--cluster", "ai2/a", "--gpus", "0", "--secret", "GITHUB_TOKEN="]
    request = parse_launch_flags([*flags, "--dry-run"])
    assert request == LaunchRequest(
        "n", {"clusters": ["ai2/a"], "gpus": 0, "secrets": {"GITHUB_TOKEN": None}}, dry_run=True
    )
