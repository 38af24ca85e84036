"""Running the docs' blocks in a working copy, and parsing the ones that cannot run.

`helios ...` and `python script.py ...` commands run in this process (cwd = the working
copy), which saves each the seconds of importing torch; other commands, and anything that
needs a shell (pipes, `&&`, variables), run under bash with the venv's bin first on PATH.
Python blocks of one page share a namespace, as a reader's session would.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.docs.blocks import Block, command_lines, commands, console_steps, split_argv

VENV_BIN = Path(sys.executable).parent
ELLIPSIS = "..."
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


class DocsTestError(AssertionError):
    """A block that failed: names the page, the line and the command."""


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """stdout and stderr of this process, interleaved, into one buffer."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield buf


def _line_pattern(line: str) -> str:
    pieces = [
        r"[ \t]+".join(re.escape(w) for w in re.split(r"[ \t]+", p))
        for p in line.strip().split(ELLIPSIS)
    ]
    return r"[ \t]*" + ".*?".join(pieces) + r"[ \t]*\n"


def matches(expected: str, got: str) -> bool:
    """Whether `got` is what a page shows: `...` matches anything within a line, and a line
    of only `...` any number of lines (none included); runs of spaces, indentation and
    trailing blanks do not matter, nor do blank lines at either end."""
    lines = expected.strip("\n").splitlines()
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if ln.strip() == ELLIPSIS else _line_pattern(ln) for ln in lines
    )
    text = "\n".join(ln.rstrip() for ln in got.strip("\n").splitlines()) + "\n"
    return re.fullmatch(pattern, text) is not None


def run_helios(argv: list[str]) -> int:
    """`helios argv` in this process; the exit status (argparse errors included)."""
    from helios.cli import main

    try:
        return main(argv)
    except SystemExit as exc:  # argparse, --help, LightningCLI's --print_config
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def _run_python_script(argv: list[str]) -> int:
    script, *args = argv
    old = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    return 0


def _run_shell(command: str, work: Path) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "80", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    return proc.returncode, proc.stdout + proc.stderr


@contextlib.contextmanager
def _environment(assignments: dict[str, str], work: Path) -> Iterator[None]:
    """`NAME=value` prefixes of a command, for this process (PYTHONPATH also on sys.path)."""
    old_env = {k: os.environ.get(k) for k in assignments}
    old_path = list(sys.path)
    os.environ.update(assignments)
    if "PYTHONPATH" in assignments:
        entries = [str((work / p).resolve()) for p in assignments["PYTHONPATH"].split(os.pathsep)]
        sys.path[:0] = entries
    try:
        yield
    finally:
        sys.path[:] = old_path
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_command(command: str, work: Path) -> tuple[int, str]:
    """Run one shell command line in `work`; (exit status, its output)."""
    argv = split_argv(command)
    env: dict[str, str] = {"COLUMNS": "80"}  # argparse and tables wrap as in the pages
    while argv and ENV_ASSIGNMENT.match(argv[0]):
        name, _, value = argv.pop(0).partition("=")
        env[name] = value
    if argv and argv[0] == "helios":
        with _in_dir(work), _environment(env, work), captured() as buf:
            code = run_helios(argv[1:])
        return code, buf.getvalue()
    if argv and argv[0] == "python" and len(argv) > 1 and argv[1].endswith(".py"):
        with _in_dir(work), _environment(env, work), captured() as buf:
            code = _run_python_script(argv[1:])
        return code, buf.getvalue()
    return _run_shell(command, work)


@dataclass
class Session:
    """One page's run: its working copy and its Python namespace."""

    work: Path
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    last_output: str = ""

    def run(self, block: Block) -> None:
        """Execute a run/slow block, check an output block, write a file block."""
        if block.kind == "file":
            target = self.work / block.arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
        elif block.kind == "output":
            if not matches(block.text, self.last_output):
                raise DocsTestError(
                    f"{block.where}: output differs from the block before it\n"
                    f"--- shown:\n{block.text}\n--- got:\n{self.last_output}"
                )
        elif block.is_python:
            self.last_output = self._python(block)
        elif block.lang == "console":
            self.last_output = self._console(block)
        else:
            self.last_output = self._shell(block)

    def _python(self, block: Block) -> str:
        """Run a Python block; what it prints (stdout: progress bars and logs go elsewhere)."""
        code = compile(block.text, block.where, "exec")
        out, err = io.StringIO(), io.StringIO()
        with _in_dir(self.work), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                exec(code, self.namespace)
            except Exception as exc:
                raise DocsTestError(
                    f"{block.where}: python block raised {type(exc).__name__}: {exc}\n"
                    f"{(out.getvalue() + err.getvalue())[-3000:]}"
                ) from exc
        return out.getvalue()

    def _shell(self, block: Block) -> str:
        out = []
        for command in commands(block.text):
            code, text = run_command(command, self.work)
            out.append(text)
            if code != 0:
                raise DocsTestError(f"{block.where}: `{command}` exited {code}\n{text[-3000:]}")
        return "".join(out)

    def _console(self, block: Block) -> str:
        out = []
        for step in console_steps(block.text):
            code, text = run_command(step.command, self.work)
            out.append(text)
            if code != 0:
                raise DocsTestError(f"{block.where}: `$ {step.command}` exited {code}\n{text}")
            if step.expected.strip() and not matches(step.expected, text):
                raise DocsTestError(
                    f"{block.where}: output of `$ {step.command}` differs\n"
                    f"--- shown:\n{step.expected}\n--- got:\n{text}"
                )
        return "".join(out)


def block_commands(block: Block) -> list[str]:
    """The shell commands a skip or usage block shows (none for Python)."""
    return [] if block.is_python else command_lines(block)
