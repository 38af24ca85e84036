"""The git state a job is launched from: its commit, its remote, and whether it is clean.

A Beaker job clones the repository and checks out one commit, so the launcher refuses to
launch from a tree with uncommitted changes (they would silently not be in the job) or from a
commit that no remote branch contains (the job could not fetch it), unless overridden.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from helios.launch.secrets import redact, strip_url

MAX_LISTED_PATHS = 5
"""How many dirty paths a refusal message lists before summarizing the rest."""


class GitStateError(RuntimeError):
    """The working tree cannot be launched as it is; the message says why and what to do."""


@dataclass(frozen=True)
class GitState:
    """Where the code of a launch comes from."""

    root: Path
    """The top of the working tree."""
    commit: str
    """The full sha of HEAD: the commit the job checks out."""
    remote: str | None
    """The remote the job fetches from (the branch's upstream remote, else `origin`)."""
    remote_url: str | None
    """That remote's URL in https form, with any credentials removed."""
    branch: str | None
    """The checked-out branch, or None on a detached HEAD."""
    dirty_paths: tuple[str, ...]
    """Modified, staged, deleted, or untracked-but-not-ignored paths."""
    remote_branches: tuple[str, ...]
    """Branches of `remote` that contain HEAD, as this clone last saw them (fetch or push)."""

    @property
    def is_dirty(self) -> bool:
        """Whether the tree differs from HEAD."""
        return bool(self.dirty_paths)

    @property
    def is_pushed(self) -> bool:
        """Whether some remote branch contains HEAD, so a job can fetch it."""
        return bool(self.remote_branches)


def _git(root: Path, *args: str) -> str:
    if shutil.which("git") is None:
        raise GitStateError("git is not installed; it records the commit a job runs")
    result = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        # git's messages may quote a remote URL with its credentials
        detail = redact(result.stderr.strip())
        raise GitStateError(f"`git {' '.join(args)}` failed in {root}: {detail}")
    return result.stdout


def https_url(url: str) -> str:
    """A remote URL in the https form a job can clone, never carrying credentials.

    `git@github.com:org/repo.git` and `ssh://git@github.com/org/repo` become
    `https://github.com/org/repo.git`; `https://user:token@host/...?token=X` loses
    `user:token@` and `?token=X` (any query string or fragment goes). Local paths and file://
    URLs are kept as they are.
    """
    url = url.strip()
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(?!//)(.+)", url)
    if scp:
        host, path = scp.groups()
        return strip_url(f"https://{host}/{path.lstrip('/')}")
    ssh = re.fullmatch(r"(?:ssh|git)://(?:[^@/]+@)?([\w.-]+)(?::\d+)?/(.+)", url)
    if ssh:
        host, path = ssh.groups()
        return strip_url(f"https://{host}/{path}")
    if re.match(r"https?://", url):
        return strip_url(url)
    return url


def read_git_state(path: Path | str = ".") -> GitState:
    """Read the state of the git working tree that contains `path`."""
    start = Path(path).resolve()
    if start.is_file():
        start = start.parent
    try:
        top = _git(start, "rev-parse", "--show-toplevel").strip()
    except (GitStateError, OSError) as err:
        raise GitStateError(
            f"{start} is not inside a git repository: launch from a clone of the Helios repo "
            "so the job can check out the same commit"
        ) from err
    root = Path(top)
    commit = _git(root, "rev-parse", "HEAD").strip()
    branch_out = _git(root, "rev-parse", "--abbrev-ref", "HEAD").strip()
    branch = None if branch_out == "HEAD" else branch_out

    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=normal")
    dirty = _parse_porcelain(status)

    remotes = _git(root, "remote").split()
    remote = _pick_remote(root, branch, remotes)
    remote_url = None
    if remote is not None:
        remote_url = https_url(_git(root, "remote", "get-url", remote).strip())

    contains = _git(root, "branch", "-r", "--contains", "HEAD", "--format=%(refname:short)")
    remote_branches = tuple(
        b
        for b in contains.split()
        if remote is not None and b.startswith(f"{remote}/") and not b.endswith("/HEAD")
    )
    return GitState(
        root=root,
        commit=commit,
        remote=remote,
        remote_url=remote_url,
        branch=branch,
        dirty_paths=dirty,
        remote_branches=remote_branches,
    )


def _parse_porcelain(status: str) -> tuple[str, ...]:
    paths: list[str] = []
    entries = status.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, name = entry[:2], entry[3:]
        paths.append(name)
        if "R" in code or "C" in code:
            i += 1  # a rename is followed by its source path
    return tuple(paths)


def _pick_remote(root: Path, branch: str | None, remotes: list[str]) -> str | None:
    if not remotes:
        return None
    if branch is not None:
        result = subprocess.run(
            ["git", "config", "--get", f"branch.{branch}.remote"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        upstream = result.stdout.strip()
        if upstream in remotes:
            return upstream
    return "origin" if "origin" in remotes else remotes[0]


def check_launchable(
    state: GitState, *, allow_dirty: bool = False, allow_unpushed: bool = False
) -> list[str]:
    """Refuse a tree a job cannot reproduce; return warnings for what was overridden.

    Raises `GitStateError` for a dirty tree (unless `allow_dirty`), for a commit no remote
    branch contains (unless `allow_unpushed`), and always when there is no remote at all.
    """
    warnings: list[str] = []
    if state.remote_url is None:
        raise GitStateError(
            f"the repository at {state.root} has no git remote; a Beaker job clones the code "
            "from a remote: add one (`git remote add origin URL`) and push"
        )
    if state.is_dirty:
        listed = ", ".join(state.dirty_paths[:MAX_LISTED_PATHS])
        more = len(state.dirty_paths) - MAX_LISTED_PATHS
        listed += f" and {more} more" if more > 0 else ""
        what = (
            f"the working tree has {len(state.dirty_paths)} uncommitted or untracked "
            f"path(s) ({listed})"
        )
        if not allow_dirty:
            raise GitStateError(
                f"{what}; the job runs commit {state.commit[:12]} without them. Commit (or "
                "stash, or .gitignore) them and push, or pass --allow-dirty to launch the "
                "committed code anyway"
            )
        warnings.append(f"--allow-dirty: {what}, which the job will NOT have")
    if not state.is_pushed:
        what = (
            f"commit {state.commit[:12]} is not on any branch of remote "
            f"'{state.remote}' ({state.remote_url}) as far as this clone knows"
        )
        if not allow_unpushed:
            raise GitStateError(
                f"{what}, so the job could not fetch it. Push it (`git push`), or pass "
                "--allow-unpushed if you will push before the job starts"
            )
        warnings.append(f"--allow-unpushed: {what}; the job fails unless it is pushed first")
    return warnings
