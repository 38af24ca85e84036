"""`helios launch beaker` end to end through `helios.cli.main`, with real git and beaker-py."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import beaker
import pytest
from beaker import BeakerExperimentSpec

from helios.cli import main
from tests.launch.conftest import git

FULL = [
    "--cluster", "ai2/jupiter", "--workspace", "ai2/helios", "--budget", "ai2/es",
    "--image", "me/helios", "--user", "alice",
]  # fmt: skip
TRAIN = ["--", "helios", "fit", "--config", "configs/latent_mim.yaml"]


@pytest.fixture
def in_repo(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(repo)
    return repo


@pytest.fixture
def no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything constructs a beaker-py client."""

    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Beaker client was constructed")

    monkeypatch.setattr(beaker.Beaker, "__init__", tripwire)


def test_dry_run_prints_spec_and_command(
    in_repo: Path, no_client: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec_file = tmp_path / "out.yaml"
    argv = ["launch", "beaker", "--name", "mim-tiny", *FULL, "--dry-run"]
    assert main([*argv, "--spec-out", str(spec_file), *TRAIN]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Beaker experiment 'mim-tiny' in workspace ai2/helios")
    assert "#   helios fit --config configs/latent_mim.yaml" in out
    assert "secret: alice_WANDB_API_KEY" in out
    commit = git(in_repo, "rev-parse", "HEAD").strip()
    assert f"value: {commit}" in out

    # the printed output (comments and all) is a spec beaker-py reads back
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    spec = BeakerExperimentSpec.from_file(printed)
    assert spec == BeakerExperimentSpec.from_file(spec_file)
    assert spec.tasks[0].name == "main" and spec.budget == "ai2/es"


def test_dry_run_multi_node(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["launch", "beaker", "--name", "big", *FULL, "--gpus", "8", "--nodes", "2"]
    assert main([*argv, "--dry-run", *TRAIN, "--trainer.num_nodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "replicas: 2" in out and "leaderSelection: true" in out
    assert '--node-rank "$BEAKER_REPLICA_RANK"' in out


def test_dry_run_with_missing_settings_warns(
    in_repo: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert main(["launch", "beaker", "--name", "bare", "--dry-run", *TRAIN]) == 0
    assert "a real launch would refuse: no workspace" in caplog.text
    assert "run_root is not set" in caplog.text
    assert "local login" in caplog.text  # secret names from the login name, with a note
    assert "image: {}" in capsys.readouterr().out


def test_user_config_and_environment_feed_the_cli(
    in_repo: Path,
    launch_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = launch_env / ".config/helios/beaker.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "workspace: ai2/file-ws\nbudget: ai2/file-budget\nbeaker_image: me/helios\n"
        "mounts: [weka:dfive-default:/weka/dfive-default]\n"
        "run_root: /weka/dfive-default/helios/runs\nuser: dana\n"
    )
    monkeypatch.setenv("HELIOS_BEAKER_BUDGET", "ai2/env-budget")
    argv = ["launch", "beaker", "--name", "r1", "--cluster", "ai2/ceres", "--dry-run"]
    assert main([*argv, *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "in workspace ai2/file-ws" in out and "budget: ai2/env-budget" in out
    assert "value: /weka/dfive-default/helios/runs/r1" in out
    assert "secret: dana_GITHUB_TOKEN" in out


def test_dirty_tree_is_refused(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "README.md").write_text("uncommitted edit\n")
    (in_repo / "scratch.py").write_text("x = 1\n")
    argv = ["launch", "beaker", "--name", "dirty", *FULL, "--dry-run", *TRAIN]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "helios: error:" in captured.err and "uncommitted" in captured.err
    assert "README.md" in captured.err and "scratch.py" in captured.err
    assert "--allow-dirty" in captured.err

    assert main([*argv[: -len(TRAIN)], "--allow-dirty", *TRAIN]) == 0


def test_unpushed_commit_is_refused(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "new.py").write_text("x = 1\n")
    git(in_repo, "add", "new.py")
    git(in_repo, "commit", "-q", "-m", "local")
    argv = ["launch", "beaker", "--name", "unpushed", *FULL, "--dry-run"]
    assert main([*argv, *TRAIN]) == 2
    assert "git push" in capsys.readouterr().err
    assert main([*argv, "--allow-unpushed", *TRAIN]) == 0


def test_missing_command(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", "beaker", "--name", "x", "--dry-run", "--"]) == 2
    assert "after `--`" in capsys.readouterr().err


def test_launch_refuses_incomplete_settings_before_contacting_beaker(
    in_repo: Path, no_client: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["launch", "beaker", "--name", "x", "--cluster", "ai2/a", *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "cannot launch: no workspace" in err and "no budget" in err and "no image" in err


def test_launch_without_credentials_fails_clearly(
    in_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the real beaker-py client, with no config file and no BEAKER_TOKEN: nothing is mocked
    assert main(["launch", "beaker", "--name", "x", *FULL, *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "no Beaker credentials" in err and "beaker account login" in err


def test_spec_out_needs_dry_run(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["launch", "beaker", "--name", "x", *FULL, "--spec-out", "s.yaml", *TRAIN]
    assert main(argv) == 2
    assert "--spec-out goes with --dry-run" in capsys.readouterr().err


def test_bad_mount_flag(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["launch", "beaker", "--name", "x", "--mount", "nfs:/a:/b", "--dry-run", *TRAIN])
    assert "KIND:SOURCE:MOUNT_PATH" in capsys.readouterr().err


def test_launch_with_unreachable_beaker_fails_fast(
    in_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a real beaker-py config whose server address has nothing listening
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "beaker-config.yml"
    config.write_text(
        f"user_token: fake-token-0123456789\nagent_address: http://127.0.0.1:{port}\n"
        f"rpc_address: 127.0.0.1:{port}\n"
    )
    monkeypatch.setenv("BEAKER_CONFIG", str(config))
    assert main(["launch", "beaker", "--name", "x", *FULL, *TRAIN]) == 2
    captured = capsys.readouterr()
    assert f"cannot reach Beaker at 127.0.0.1:{port}" in captured.err
    assert "fake-token-0123456789" not in captured.out + captured.err
