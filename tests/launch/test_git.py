from __future__ import annotations

from pathlib import Path

import pytest

from helios.launch.git import (
    GitStateError,
    check_launchable,
    https_url,
    read_git_state,
)
from tests.launch.conftest import commit_file, git


def test_clean_pushed_repo_is_launchable(repo: Path) -> None:
    state = read_git_state(repo / "README.md")  # any path inside the tree
    assert state.root == repo.resolve()
    assert state.commit == git(repo, "rev-parse", "HEAD").strip()
    assert len(state.commit) == 40
    assert state.branch == "main"
    assert state.remote == "origin"
    assert state.remote_url == str(repo.parent / "remote.git")
    assert state.remote_branches == ("origin/main",)
    assert not state.is_dirty and state.is_pushed
    assert check_launchable(state) == []


@pytest.mark.parametrize(
    "change",
    ["modified", "staged", "untracked", "deleted"],
)
def test_dirty_tree_is_refused_with_the_paths(repo: Path, change: str) -> None:
    if change == "modified":
        (repo / "README.md").write_text("edited\n")
    elif change == "staged":
        (repo / "new.py").write_text("x = 1\n")
        git(repo, "add", "new.py")
    elif change == "untracked":
        (repo / "notes.txt").write_text("todo\n")
    else:
        (repo / "README.md").unlink()
    state = read_git_state(repo)
    assert state.is_dirty
    with pytest.raises(GitStateError) as err:
        check_launchable(state)
    message = str(err.value)
    assert state.dirty_paths[0] in message
    assert "--allow-dirty" in message
    assert state.commit[:12] in message


def test_dirty_override_warns(repo: Path) -> None:
    (repo / "notes.txt").write_text("todo\n")
    warnings = check_launchable(read_git_state(repo), allow_dirty=True)
    assert len(warnings) == 1 and "notes.txt" in warnings[0] and "NOT" in warnings[0]


def test_ignored_files_do_not_make_the_tree_dirty(repo: Path) -> None:
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"0" * 10)
    (repo / "train.log").write_text("loss 1.0\n")
    assert read_git_state(repo).dirty_paths == ()


def test_many_dirty_paths_are_summarized(repo: Path) -> None:
    for i in range(8):
        (repo / f"f{i}.txt").write_text("x")
    with pytest.raises(GitStateError, match="and 3 more"):
        check_launchable(read_git_state(repo))


def test_unpushed_commit_is_refused_unless_overridden(repo: Path) -> None:
    sha = commit_file(repo, "model.py", "print(1)\n", "local only")
    state = read_git_state(repo)
    assert state.commit == sha and not state.is_pushed
    with pytest.raises(GitStateError, match="not on any branch of remote 'origin'") as err:
        check_launchable(state)
    assert "git push" in str(err.value) and "--allow-unpushed" in str(err.value)
    warnings = check_launchable(state, allow_unpushed=True)
    assert len(warnings) == 1 and sha[:12] in warnings[0]

    git(repo, "push", "-q", "origin", "main")
    assert check_launchable(read_git_state(repo)) == []


def test_commit_pushed_to_another_branch_counts(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    commit_file(repo, "feature.py", "x = 2\n")
    git(repo, "push", "-q", "origin", "feature")
    git(repo, "checkout", "-q", "--detach", "HEAD")
    state = read_git_state(repo)
    assert state.branch is None
    assert state.remote_branches == ("origin/feature",)


def test_repo_without_remote_is_refused(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    git(local, "init", "-q")
    commit_file(local, "a.txt", "a")
    state = read_git_state(local)
    assert state.remote is None and state.remote_url is None
    with pytest.raises(GitStateError, match="no git remote"):
        check_launchable(state, allow_dirty=True, allow_unpushed=True)


def test_outside_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitStateError, match="not inside a git repository"):
        read_git_state(plain)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("git@github.com:allenai/helios.git", "https://github.com/allenai/helios.git"),
        ("ssh://git@github.com/allenai/helios.git", "https://github.com/allenai/helios.git"),
        ("ssh://git@github.com:22/allenai/helios", "https://github.com/allenai/helios"),
        ("https://github.com/allenai/helios.git", "https://github.com/allenai/helios.git"),
        (
            "https://x-access-token:ghp_abcdef123456@github.com/allenai/helios.git",
            "https://github.com/allenai/helios.git",
        ),
        (
            "https://user:tok@github.com/org/repo.git?token=X",
            "https://github.com/org/repo.git",
        ),
        ("https://github.com/org/repo.git#main", "https://github.com/org/repo.git"),
        ("git@github.com:org/repo.git?token=X", "https://github.com/org/repo.git"),
        ("ssh://git@github.com/org/repo.git?key=abc", "https://github.com/org/repo.git"),
        ("/srv/git/helios.git", "/srv/git/helios.git"),
        ("file:///srv/git/helios.git", "file:///srv/git/helios.git"),
    ],
)
def test_https_url(url: str, expected: str) -> None:
    assert https_url(url) == expected


def test_remote_credentials_are_not_recorded(repo: Path) -> None:
    git(repo, "remote", "set-url", "origin", "https://me:ghp_supersecret99@github.com/o/r.git")
    assert read_git_state(repo).remote_url == "https://github.com/o/r.git"
