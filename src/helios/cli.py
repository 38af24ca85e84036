"""The `helios` command.

`helios fit | validate | test | predict` go to LightningCLI (`helios.train.cli`); every other
group (`data`, `eval`, `sweep`, `launch`, `run`) lives in its own module and registers its
subcommands on the parser here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from helios import __version__

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
"""Subcommands handed to LightningCLI (`helios.train.cli.run_lightning`) as they are."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command group."""
    from helios.data.cli import add_data_commands
    from helios.evals.cli import add_eval_commands
    from helios.launch.cli import add_launch_commands
    from helios.runner.cli import add_run_commands
    from helios.sweep.cli import add_sweep_commands

    parser = argparse.ArgumentParser(
        prog="helios",
        description="Helios: multimodal Earth-observation foundation models.",
    )
    parser.add_argument("--version", action="version", version=f"helios {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    groups = parser.add_subparsers(
        dest="group",
        metavar="COMMAND",
        required=True,
        description=f"Also: {', '.join(LIGHTNING_COMMANDS)} "
        "(LightningCLI; see `helios fit --help`).",
    )
    add_data_commands(groups)
    add_eval_commands(groups)
    add_sweep_commands(groups)
    add_launch_commands(groups)
    add_run_commands(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `helios` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from helios.train.cli import run_lightning

        return run_lightning(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"helios: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
