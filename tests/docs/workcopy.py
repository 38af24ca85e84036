"""The working copy a page's blocks run in: the repository's files plus small real fixtures.

Each page gets a fresh temporary folder holding

- copies of `configs/`, `examples/`, `Makefile`, `pyproject.toml` and `README.md` (commands
  may write beside them), and links to `src/`, `tests/`, `bench/`, `docs/` and `docker/`;
- `demo_data/`: the real demo dataset as `helios data demo --out demo_data` builds it, made
  once per test session (shared by xdist workers through a lock) and hard-linked in, so a
  page that rebuilds or adds to it changes nothing for the others;
- whatever `PAGE_SETUP` adds for that page (e.g. a generated runner project).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("configs", "examples", "Makefile", "pyproject.toml", "README.md")
LINKED = ("src", "tests", "bench", "docs", "docker")
DEMO = "demo_data"


def build_demo_once(shared: Path) -> Path:
    """`shared/demo_data`, built on first use (one builder at a time across processes)."""
    from filelock import FileLock

    target = shared / DEMO
    done = shared / f"{DEMO}.complete"
    with FileLock(str(shared / f"{DEMO}.lock")):
        if not done.exists():
            from helios.data.demo import build_demo

            build_demo(target, workers=1, progress=False)
            done.touch()
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_working_copy(work: Path, demo: Path | None, page: str) -> Path:
    """Fill `work` for `page` (see the module docstring); returns it."""
    work.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, work / name)
    for name in LINKED:
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name, target_is_directory=True)
    if demo is not None:
        shutil.copytree(demo, work / DEMO, symlinks=True, copy_function=_link_or_copy)
    setup = PAGE_SETUP.get(page)
    if setup is not None:
        setup(work)
    return work


def _runner_project(work: Path) -> None:
    """`my_project/`: a small runner project (tests/runner/data/project.py)."""
    from tests.runner.data.project import make_project

    make_project(work / "my_project")


PAGE_SETUP: dict[str, Callable[[Path], None]] = {
    "docs/runner.md": _runner_project,
}
"""Extra fixtures per page, beyond the demo dataset."""
