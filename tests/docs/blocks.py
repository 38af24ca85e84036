"""Fenced blocks of the docs and their `docs-test` markers (docs/contributing.md).

A marker is an HTML comment on the last non-blank line before a block's opening fence:

    <!-- docs-test: run -->           executed by the default test run, in page order
    <!-- docs-test: slow -->          executed only with `-m slow` (after the page's run blocks)
    <!-- docs-test: skip REASON -->   never executed; its commands are still parsed
    <!-- docs-test: usage -->         a synopsis: every `--flag` must exist on its command
    <!-- docs-test: output -->        the expected output of the block before it (`...` elides)
    <!-- docs-test: file PATH -->     the block's text is written to PATH before the next block

Every bash/sh/shell/console/python block needs one; so does a fence of any other language
whose first line is a command (`$ `, `helios `, `python `, `make `).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

CODE_LANGS = frozenset({"bash", "sh", "shell", "console", "python", "py"})
"""Languages whose blocks must carry a marker."""
KINDS = ("run", "slow", "skip", "usage", "output", "file")
EXECUTED = ("run", "slow")
COMMAND_START = re.compile(r"^(\$ |helios |python |make )")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>[a-z]+)\s*(?P<arg>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")


class MarkerError(ValueError):
    """A malformed or misplaced marker."""


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str
    """The page's path relative to the repository root, e.g. docs/data.md."""
    line: int
    """1-based line of the opening fence."""
    lang: str
    text: str
    kind: str | None
    """The marker's kind (`KINDS`), None without a marker."""
    arg: str = ""
    """The marker's argument: the reason of `skip`, the path of `file`."""

    @property
    def where(self) -> str:
        """`page:line`, for messages."""
        return f"{self.page}:{self.line}"

    @property
    def needs_marker(self) -> bool:
        """Whether the block is a command or snippet that the tests must cover."""
        if self.lang in CODE_LANGS:
            return True
        first = next((ln for ln in self.text.splitlines() if ln.strip()), "")
        return bool(COMMAND_START.match(first.lstrip()))

    @property
    def is_python(self) -> bool:
        """A Python snippet (executed with exec), not shell commands."""
        return self.lang in ("python", "py")


def page_blocks(path: Path, root: Path) -> list[Block]:
    """Every fenced block of a markdown page, with its marker.

    Raises:
        MarkerError: a marker that is unknown, lacks its argument, or is not followed by a
            fence.

    """
    rel = path.relative_to(root).as_posix()
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    pending: tuple[str, str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line.strip())
        fence = FENCE.match(line)
        if marker:
            pending = _checked_marker(marker.group("kind"), marker.group("arg"), rel, i + 1)
        elif fence:
            end = _closing(lines, i, fence.group("fence"))
            indent = len(fence.group("indent"))
            text = "\n".join(ln[indent:] for ln in lines[i + 1 : end])
            kind, arg = (pending[0], pending[1]) if pending else (None, "")
            blocks.append(Block(rel, i + 1, fence.group("lang").lower(), text + "\n", kind, arg))
            pending = None
            i = end
        elif line.strip() and pending:
            raise MarkerError(
                f"{rel}:{pending[2]}: a docs-test marker must come right before a fence"
            )
        i += 1
    if pending:
        raise MarkerError(f"{rel}:{pending[2]}: a docs-test marker at the end of the page")
    _check_outputs(blocks)
    return blocks


def _checked_marker(kind: str, arg: str, page: str, line: int) -> tuple[str, str, int]:
    if kind not in KINDS:
        raise MarkerError(f"{page}:{line}: unknown docs-test kind {kind!r}; known: {KINDS}")
    if kind in ("skip", "file") and not arg:
        what = "a reason" if kind == "skip" else "a path"
        raise MarkerError(f"{page}:{line}: `docs-test: {kind}` needs {what}")
    return kind, arg, line


def _closing(lines: list[str], start: int, fence: str) -> int:
    for j in range(start + 1, len(lines)):
        if (
            lines[j].strip().startswith(fence[0] * len(fence))
            and not lines[j].strip()[len(fence) :].strip()
        ):
            return j
    raise MarkerError(f"line {start + 1}: unclosed fence")


def _check_outputs(blocks: list[Block]) -> None:
    for before, block in zip([None, *blocks], blocks):
        if block.kind == "output" and (before is None or before.kind not in EXECUTED):
            raise MarkerError(f"{block.where}: an output block must follow a run or slow block")


def commands(text: str) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments and blanks dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip() and not current.lstrip().startswith("#"):
            out.append(current.strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out


def split_argv(command: str) -> list[str] | None:
    """argv of a simple command (comments dropped), or None when it needs a shell.

    A command needs a shell when it has pipes, redirections, `&&`, `;`, variables,
    substitutions or globs.
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    if any(t and set(t) <= set("|&;<>()") for t in tokens):
        return None
    if any(c in command.split("#")[0] for c in "$`*?"):
        return None
    return tokens


@dataclass(frozen=True)
class ConsoleStep:
    """One `$ command` of a console block and the output shown under it."""

    command: str
    expected: str


def console_steps(text: str) -> list[ConsoleStep]:
    """The `$ ` commands of a console block (with `\\` continuations) and their outputs."""
    steps: list[ConsoleStep] = []
    command: str | None = None
    output: list[str] = []
    continuing = False
    for line in text.splitlines():
        if continuing and command is not None:
            command += " " + line.strip().rstrip("\\")
            continuing = line.rstrip().endswith("\\")
        elif line.startswith("$ "):
            if command is not None:
                steps.append(ConsoleStep(command, "\n".join(output)))
            command, output = line[2:].rstrip().rstrip("\\").strip(), []
            continuing = line.rstrip().endswith("\\")
        elif command is not None:
            output.append(line)
    if command is not None:
        steps.append(ConsoleStep(command, "\n".join(output)))
    return steps


def command_lines(block: Block) -> list[str]:
    """The commands of a shell or console block."""
    if block.lang == "console":
        return [s.command for s in console_steps(block.text)]
    return commands(block.text)
