"""Secret values never appear in specs, logs or output: only Beaker secret names do."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from helios.cli import main
from helios.launch import LaunchConfig, LaunchError, read_git_state
from helios.launch.beaker import dry_run, single_task
from helios.launch.secrets import leaked_names
from tests.launch.conftest import git

SECRET_VALUES = {
    "WANDB_API_KEY": "supersecret123",
    "BEAKER_TOKEN": "beakertoken-xyz987",
    "GITHUB_TOKEN": "ghp_fake0123456789abcdef",
    "HF_TOKEN": "hf_fake_abcdefghijkl",
}
TRAIN = ["--", "helios", "fit", "--config", "configs/latent_mim.yaml"]


@pytest.fixture
def secret_env(repo: Path, launch_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    config = launch_env / ".config/helios/beaker.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "workspace: ai2/helios\nbudget: ai2/es\nclusters: [ai2/jupiter]\n"
        "beaker_image: me/helios\nuser: erin\nsecrets: {HF_TOKEN: '{user}_HF_TOKEN'}\n"
    )
    monkeypatch.chdir(repo)
    return repo


def assert_no_secret_values(*texts: str) -> None:
    for text in texts:
        for value in SECRET_VALUES.values():
            assert value not in text


def test_dry_run_shows_names_never_values(
    secret_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec_file = tmp_path / "spec.yaml"
    with caplog.at_level(logging.DEBUG):
        argv = ["-v", "launch", "beaker", "--name", "s", "--gpus", "8", "--nodes", "2"]
        assert main([*argv, "--dry-run", "--spec-out", str(spec_file), *TRAIN]) == 0
    captured = capsys.readouterr()
    assert_no_secret_values(captured.out, captured.err, caplog.text, spec_file.read_text())
    for name in ("WANDB_API_KEY", "BEAKER_TOKEN", "GITHUB_TOKEN", "HF_TOKEN"):
        assert f"secret: erin_{name}" in captured.out


def test_literal_credential_env_is_refused_without_echo(
    secret_env: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["launch", "beaker", "--name", "s", "--dry-run"]
    assert main([*argv, "--env", "WANDB_API_KEY=literal-value-42", *TRAIN]) == 2
    captured = capsys.readouterr()
    assert "Beaker secret" in captured.err and "--secret WANDB_API_KEY=" in captured.err
    assert captured.out == ""
    assert "literal-value-42" not in captured.err + caplog.text


def test_secret_value_under_an_innocent_name_is_refused(
    secret_env: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["launch", "beaker", "--name", "s", "--dry-run"]
    assert main([*argv, "--env", "LOGGER_OPTS=supersecret123", *TRAIN]) == 2
    captured = capsys.readouterr()
    assert "WANDB_API_KEY" in captured.err and "Beaker secrets" in captured.err
    assert_no_secret_values(captured.out, captured.err, caplog.text)


def test_secret_value_in_the_command_is_refused(
    secret_env: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["launch", "beaker", "--name", "s", "--dry-run", *TRAIN]
    assert main([*argv, "--trainer.logger.init_args.api_key=ghp_fake0123456789abcdef"]) == 2
    captured = capsys.readouterr()
    assert "GITHUB_TOKEN" in captured.err
    assert_no_secret_values(captured.out, captured.err, caplog.text)


def test_token_in_the_remote_url_never_reaches_the_spec(
    secret_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = SECRET_VALUES["GITHUB_TOKEN"]
    git(secret_env, "remote", "set-url", "origin", f"https://x:{token}@github.com/o/helios.git")
    git(secret_env, "update-ref", "refs/remotes/origin/main", "HEAD")
    assert main(["launch", "beaker", "--name", "s", "--dry-run", *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "value: https://github.com/o/helios.git" in out
    assert_no_secret_values(out)


def test_spec_is_guarded_in_the_python_api(
    secret_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = LaunchConfig(name="api", user="erin", description="key supersecret123")
    git = read_git_state(secret_env)
    with pytest.raises(LaunchError, match="WANDB_API_KEY") as err:
        dry_run(config, single_task(config, ["helios", "fit"]), git, sys.stdout)
    assert "supersecret123" not in str(err.value)


def test_leaked_names_ignores_short_and_ordinary_values() -> None:
    environ = {"MY_TOKEN": "abcdef123", "KEYBOARD_LAYOUT_KEY": "us", "PATH": "/usr/bin"}
    assert leaked_names(["x abcdef123 y", "us /usr/bin"], environ) == ["MY_TOKEN"]
