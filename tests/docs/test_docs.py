"""Every command and snippet of README.md and docs/*.md is run or parsed (docs/contributing.md).

Per page: every code block carries a `docs-test` marker; its `run` blocks (and `file` and
`output` blocks) run in order in a fresh working copy, their shown output checked; `slow`
blocks run too under `-m slow`; `skip`, `usage` and (by default) `slow` blocks have their
commands parsed by helios's own parsers; relative links and the repository paths a page
names exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.docs.blocks import EXECUTED, Block, page_blocks
from tests.docs.execute import Session
from tests.docs.parse import check_block
from tests.docs.workcopy import ROOT, build_demo_once, make_working_copy

PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
PENDING: dict[str, str] = {}
"""Pages whose blocks are not marked yet: the final pass marks them and empties this."""


def _blocks(page: str) -> list[Block]:
    if page in PENDING:
        pytest.skip(f"{page} is not marked yet ({PENDING[page]}); see docs/contributing.md")
    return page_blocks(ROOT / page, ROOT)


@pytest.fixture(scope="session")
def demo_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset, built once for every xdist worker of the session."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return build_demo_once(shared)


def _work(tmp_path: Path, demo: Path, page: str) -> Path:
    return make_working_copy(tmp_path / "work", demo, page)


@pytest.mark.parametrize("page", PAGES)
def test_every_block_has_a_marker(page: str) -> None:
    missing = [b.where for b in _blocks(page) if b.needs_marker and b.kind is None]
    assert not missing, f"blocks without a docs-test marker (docs/contributing.md): {missing}"


def _run_page(page: str, work: Path, kinds: tuple[str, ...]) -> int:
    """Run the page's blocks of `kinds` (plus file and output blocks) in order; how many ran."""
    session = Session(work)
    ran, previous = 0, None
    for block in _blocks(page):
        if block.kind == "output" and previous not in kinds:
            continue  # the output of a block this mode does not run
        if block.kind in kinds or block.kind in ("file", "output"):
            session.run(block)
            ran += block.kind in EXECUTED
        if block.kind in (*EXECUTED, "skip", "usage"):
            previous = block.kind
    return ran


@pytest.mark.parametrize("page", PAGES)
def test_page_runs(page: str, tmp_path: Path, demo_master: Path) -> None:
    if not any(b.kind == "run" for b in _blocks(page)):
        pytest.skip(f"{page} has no run blocks")
    _run_page(page, _work(tmp_path, demo_master, page), ("run",))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_with_slow_blocks(page: str, tmp_path: Path, demo_master: Path) -> None:
    if not any(b.kind == "slow" for b in _blocks(page)):
        pytest.skip(f"{page} has no slow blocks")
    _run_page(page, _work(tmp_path, demo_master, page), ("run", "slow"))


@pytest.mark.parametrize("page", PAGES)
def test_commands_not_run_still_parse(page: str, tmp_path: Path) -> None:
    blocks = [b for b in _blocks(page) if b.kind in ("skip", "usage", "slow")]
    if not blocks:
        pytest.skip(f"{page} has no skip, usage or slow blocks")
    work = make_working_copy(tmp_path / "work", None, page)
    session = Session(work)
    for block in _blocks(page):
        if block.kind == "file":  # configs the commands name
            session.run(block)
    problems = [p for b in blocks for p in check_block(b, work)]
    assert not problems, "\n".join(problems)


LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
PATH = re.compile(r"`(?P<path>(?:src|tests|configs|examples|bench|docs|docker)/[\w./-]+)`")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading slugs of a markdown page."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES)
def test_links_and_named_paths_exist(page: str) -> None:
    _blocks(page)
    text = (ROOT / page).read_text()
    problems = []
    for m in LINK.finditer(text):
        target = m.group("target")
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (ROOT / page).parent / file if file else ROOT / page
        if not dest.exists():
            problems.append(f"link to a missing file: {target}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"link to a missing heading: {target}")
    for m in PATH.finditer(text):
        path = m.group("path").rstrip(".")
        if not (ROOT / path).exists():
            problems.append(f"names a path that does not exist: {path}")
    assert not problems, f"{page}: " + "; ".join(problems)
