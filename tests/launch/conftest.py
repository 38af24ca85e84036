"""Fixtures for launch tests: real temporary git repositories and a clean launch environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Helios Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Helios Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its stdout (raises on failure)."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    return result.stdout


def commit_file(repo: Path, name: str, text: str, message: str = "change") -> str:
    """Write a file, commit it, and return the new HEAD sha."""
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture(autouse=True)
def launch_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user config, no Beaker settings or credentials from the machine running the tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("HELIOS_BEAKER", "BEAKER_", "GIT_")):
            monkeypatch.delenv(name)
    # beaker-py reads $BEAKER_CONFIG when set; a missing file means "no config file".
    monkeypatch.setenv("BEAKER_CONFIG", str(tmp_path / "no-beaker-config.yml"))
    return home


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A clone with one commit pushed to a bare 'remote' repository in tmp_path."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(remote), str(work))
    git(work, "symbolic-ref", "HEAD", "refs/heads/main")
    (work / ".gitignore").write_text("ignored/\n*.log\n")
    git(work, "add", ".gitignore")
    commit_file(work, "README.md", "helios\n", "init")
    git(work, "push", "-q", "origin", "main")
    return work
