"""Secret values never appear in specs, logs or output: only Beaker secret names do."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from helios.cli import main
from helios.launch import LaunchConfig, LaunchError, read_git_state
from helios.launch.beaker import dry_run, single_task
from helios.launch.secrets import RedactSecrets, leaked_names, redact, sensitive_name
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


# -- the adversarial probe: password-like names, values anywhere, URL credentials ---------

PROBE_VALUES = {
    "MY_DB_PASS": "db-pass-31337",
    "APP_PWD": "app-pwd-424242",
    "API_AUTH": "api-auth-98765",
    "SERVICE_CREDS": "service-creds-1234",
    "BACKUP_PASSPHRASE": "correct horse battery staple",
}


@pytest.fixture
def probe_env(secret_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in PROBE_VALUES.items():
        monkeypatch.setenv(name, value)
    return secret_env


def assert_no_probe_values(*texts: str) -> None:
    for text in texts:
        for value in [*PROBE_VALUES.values(), *SECRET_VALUES.values()]:
            assert value not in text


@pytest.mark.parametrize(
    "name",
    ["DB_PASS", "DB_PASSWD", "APP_PWD", "API_AUTH", "SERVICE_CREDS", "MYSQL_PW", "dbPassword"],
)
def test_password_like_env_names_are_refused(
    probe_env: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["launch", "beaker", "--name", "s", "--dry-run"]
    assert main([*argv, "--env", f"{name}=plain-literal-77", *TRAIN]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"--secret {name}=" in captured.err
    assert "plain-literal-77" not in captured.err


def test_env_from_a_password_variable_is_refused_and_never_printed(
    probe_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The probe: `--env DB_PASS=$MY_DB_PASS` printed the password in the spec."""
    spec_file = tmp_path / "spec.yaml"
    argv = ["launch", "beaker", "--name", "s", "--dry-run", "--spec-out", str(spec_file)]
    with caplog.at_level(logging.DEBUG):
        assert main([*argv, "--env", f"DB_PASS={PROBE_VALUES['MY_DB_PASS']}", *TRAIN]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not spec_file.exists()
    assert_no_probe_values(captured.err, caplog.text)


@pytest.mark.parametrize("name", sorted(PROBE_VALUES))
def test_values_of_password_like_variables_are_refused_under_any_name(
    probe_env: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["launch", "beaker", "--name", "s", "--dry-run"]
    assert main([*argv, "--env", f"DB_URL=db://{PROBE_VALUES[name]}/x", *TRAIN]) == 2
    captured = capsys.readouterr()
    assert name in captured.err and captured.out == ""
    assert_no_probe_values(captured.err)


def test_a_value_folded_by_yaml_is_still_found(probe_env: Path) -> None:
    """A long description is folded across lines in the YAML; the spec is checked by field."""
    description = "a run " * 14 + PROBE_VALUES["BACKUP_PASSPHRASE"]
    config = LaunchConfig(name="api", user="erin", description=description)
    with pytest.raises(LaunchError, match="BACKUP_PASSPHRASE") as err:
        dry_run(config, single_task(config, ["helios", "fit"]), read_git_state(probe_env))
    assert_no_probe_values(str(err.value))


def test_a_password_in_a_setting_is_redacted_from_errors_and_logs(
    probe_env: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Settings are echoed in refusals and warnings; a credential typed there is blanked."""
    secret = PROBE_VALUES["APP_PWD"]
    argv = ["launch", "beaker", "--name", "s", "--dry-run"]
    with caplog.at_level(logging.DEBUG):
        assert main([*argv, "--shared-memory", secret, *TRAIN]) == 2
        assert main([*argv, "--run-root", f"/data/{secret}", *TRAIN]) == 2
    captured = capsys.readouterr()
    assert "<redacted APP_PWD>" in captured.err
    assert_no_probe_values(captured.out, captured.err, caplog.text)


@pytest.mark.parametrize(
    "name", ["PWD", "OLDPWD", "GIT_AUTHOR_NAME", "KEYBOARD_LAYOUT", "COMPASS_DIR", "PATH"]
)
def test_ordinary_names_are_not_credentials(name: str) -> None:
    assert not sensitive_name(name)
    environ = {name: "/some/ordinary/value"}
    assert leaked_names(["cd /some/ordinary/value"], environ) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@data.example.com/x.tif",
        "https://ghp_abcdef@github.com/o/r.git",
        "https://store.example.com/x.tif?sv=2022&sig=abcdef123",
        "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Credential=def",
        "https://api.example.com/v1?token=abcdef",
    ],
)
def test_a_url_with_credentials_in_the_command_is_refused(
    probe_env: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["launch", "beaker", "--name", "s", "--dry-run", *TRAIN]
    assert main([*argv, f"--data.init_args.source={url}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "credentials in a URL" in captured.err
    for part in ("hunter2", "ghp_abcdef", "abcdef123", "sig=", "Signature=abc", "token=abcdef"):
        assert part not in captured.err


def test_a_url_without_credentials_is_kept(
    probe_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "https://data.example.com/x.tif?version=2"
    argv = ["launch", "beaker", "--name", "s", "--dry-run", *TRAIN]
    assert main([*argv, f"--data.init_args.source={url}"]) == 0
    assert url in capsys.readouterr().out


def test_remote_query_string_and_userinfo_never_reach_the_spec(
    probe_env: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    remote = "https://user:tok-abc-123@github.com/o/helios.git?token=query-tok-456#frag"
    git(probe_env, "remote", "set-url", "origin", remote)
    git(probe_env, "update-ref", "refs/remotes/origin/main", "HEAD")
    with caplog.at_level(logging.DEBUG):
        assert main(["launch", "beaker", "--name", "s", "--dry-run", *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "value: https://github.com/o/helios.git\n" in out
    for part in ("tok-abc-123", "query-tok-456", "token=", "frag"):
        assert part not in out + caplog.text


def test_redact_blanks_values_and_strips_urls() -> None:
    environ = {"DB_PASS": "hunter2-long", "HOME": "/home/me"}
    text = "pw hunter2-long at https://u:p@h.example/x?token=t#f in /home/me"
    assert redact(text, environ) == "pw <redacted DB_PASS> at https://h.example/x in /home/me"
    record = logging.LogRecord("helios.launch", logging.WARNING, "f", 1, "see %s", (text,), None)
    RedactSecrets().filter(record)
    assert "p@" not in record.getMessage() and "token" not in record.getMessage()
