"""Checking commands that are not run: `helios`'s own parsers, `make -n`, scripts that exist.

A block that cannot run here (Beaker, Docker, a GPU, a long job) still has every command
checked, so a renamed flag or a removed script fails the docs tests:

- `helios ...` goes through `helios.cli.build_parser()`; `helios eval run` also through
  `eval_parser()`; `helios launch beaker ... -- CMD` checks CMD the same way; `helios sweep
  FILE` loads FILE when it exists; `helios fit|validate|test|predict` runs LightningCLI with
  `--print_config` when its `--config` files exist (which checks every key);
- `make TARGET` must be a target (`make -n`); `python path/to/script.py` must exist;
- a synopsis (`usage` block): every `--flag` must be an option of its command;
- a skipped Python block is compiled and its imports executed.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import subprocess
from pathlib import Path

from tests.docs.blocks import Block, command_lines, commands
from tests.docs.execute import ENV_ASSIGNMENT, _in_dir, captured, run_helios

ELIDED = "..."
LIGHTNING = ("fit", "validate", "test", "predict")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w.-]*")


def segments(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at pipes, `&&`, `;`), comments dropped."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return [command.split()]
    out: list[list[str]] = [[]]
    for token in tokens:
        if token and set(token) <= set("|&;()"):
            out.append([])
        elif token and set(token) <= set("<>"):
            out[-1].append("\0redirect")
        else:
            out[-1].append(token)
    return [_without_redirects(s) for s in out if s]


def _without_redirects(argv: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for token in argv:
        if token == "\0redirect":
            skip = True
        elif skip:
            skip = False
        else:
            kept.append(token)
    return kept


def check_block(block: Block, work: Path) -> list[str]:
    """Problems with the commands of a block that is not run (empty: all fine)."""
    if block.is_python:
        return _check_python(block, work)
    if block.kind == "usage":
        return [p for c in _synopses(block.text) for p in check_usage(c)]
    problems = []
    for command in command_lines(block):
        for argv in segments(command):
            problems += [f"{block.where}: `{command}`: {p}" for p in check_argv(argv, work)]
    return problems


def check_argv(argv: list[str], work: Path) -> list[str]:
    """Problems with one simple command (only helios, make and python scripts are checked)."""
    while argv and ENV_ASSIGNMENT.match(argv[0]):
        argv = argv[1:]
    if not argv:
        return []
    if argv[0] == "helios":
        return check_helios(argv[1:], work)
    if argv[0] == "make":
        targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        proc = subprocess.run(
            ["make", "-n", "-C", str(work), *targets], capture_output=True, text=True, check=False
        )
        return [] if proc.returncode == 0 else [f"make -n: {proc.stderr.strip()[-500:]}"]
    if argv[0] == "python" and len(argv) > 1 and argv[1].endswith(".py"):
        return [] if (work / argv[1]).is_file() else [f"no such script {argv[1]}"]
    return []


def _parse_error(argv: list[str], parse: object) -> list[str]:
    """The parser's complaint about `argv` (its last line), if it has one."""
    with captured() as buf:
        try:
            parse(argv)  # type: ignore[operator]
        except SystemExit as exc:
            if exc.code:
                return [buf.getvalue().strip().splitlines()[-1] if buf.getvalue() else str(exc)]
    return []


def check_helios(argv: list[str], work: Path) -> list[str]:
    """Problems with `helios argv` (its parsers, not its work)."""
    if ELIDED in argv:
        return check_usage(["helios", *argv[: argv.index(ELIDED)]])
    if argv and argv[0] in LIGHTNING:
        return _check_lightning(argv, work)
    from helios.cli import build_parser

    problems = _parse_error(argv, build_parser().parse_args)
    problems = problems or check_usage(["helios", *argv])  # argparse takes abbreviations
    if problems:
        return problems
    with _in_dir(work):
        if argv[:2] == ["eval", "run"]:
            return _check_eval(argv[2:], work)
        if argv[:2] == ["launch", "beaker"] and "--" in argv:
            return check_argv(argv[argv.index("--") + 1 :], work)
        if argv[:1] == ["sweep"] and len(argv) > 1 and (work / argv[1]).is_file():
            from helios.sweep.grid import Sweep

            try:
                Sweep.load(argv[1])
            except (ValueError, FileNotFoundError) as err:
                return [str(err)]
    return []


def _check_eval(rest: list[str], work: Path) -> list[str]:
    from helios.evals.cli import eval_parser, parse_eval_config

    kept: list[str] = []
    complete = True
    it = iter(rest)
    for token in it:
        if token == "--config":
            path = next(it, "")
            if (work / path).is_file():
                kept += [token, path]
            else:
                complete = False
        else:
            kept.append(token)
    parse = (lambda a: parse_eval_config(a)) if complete else eval_parser().parse_args
    return _parse_error(kept, parse)


def _check_lightning(argv: list[str], work: Path) -> list[str]:
    configs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    if not all((work / c).is_file() for c in configs):
        return []  # a config made elsewhere; only the flag names could be checked
    with _in_dir(work), captured() as buf:
        code = run_helios([*argv, "--print_config"])
    return [] if code == 0 else [f"LightningCLI: {buf.getvalue().strip()[-800:]}"]


def _subcommand(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The deepest `helios` sub-parser that `words` name, and the words left."""
    from helios.cli import build_parser

    parser = build_parser()
    while words:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or words[0] not in sub.choices:
            break
        parser, words = sub.choices[words[0]], words[1:]
    return parser, words


def check_usage(argv: list[str]) -> list[str]:
    """Problems with a synopsis: a subcommand or `--flag` that `helios` does not have."""
    words = [w for w in argv[1:] if not w.startswith("-")]
    if words and words[0] in LIGHTNING:
        return []
    if "--" in argv:
        inner = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
        if inner[:1] == ["helios"]:
            return check_usage(argv) + check_usage(inner)
    parser, _ = _subcommand([w for w in argv[1:] if not w.startswith("-")][:3])
    known = {s for a in parser._actions for s in a.option_strings}
    if parser.prog.endswith("eval"):
        from helios.evals.cli import eval_parser

        known |= {s for a in eval_parser()._actions for s in a.option_strings}
    flags = {
        f.split("=")[0]
        for f in (t.strip("[](),|") for t in argv)
        if FLAG.fullmatch(f.split("=")[0])
    }
    unknown = sorted(flags - known)
    return [f"{parser.prog} has no option {', '.join(unknown)}"] if unknown else []


def _synopses(text: str) -> list[list[str]]:
    """Each `helios ...` synopsis line with its indented continuation lines, as words."""
    out: list[str] = []
    for line in text.splitlines():
        code = line.split("#")[0].rstrip().rstrip("\\")
        if code.lstrip().startswith("helios "):
            out.append(code.strip())
        elif out and line[:1].isspace() and code.strip():
            out[-1] += " " + code.strip()
    return [o.split() for o in out]


def _check_python(block: Block, work: Path) -> list[str]:
    try:
        tree = ast.parse(block.text, block.where)
    except SyntaxError as err:
        return [f"{block.where}: syntax error: {err}"]
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    code = compile(ast.Module(body=imports, type_ignores=[]), block.where, "exec")
    with _in_dir(work):
        try:
            exec(code, {})
        except ImportError as err:
            return [f"{block.where}: {err}"]
    return []


__all__ = ["check_argv", "check_block", "check_helios", "check_usage", "commands"]
