"""The `helios` command.

`helios fit | validate | test | predict` go to LightningCLI (`helios.train.cli`); every other
group (`data`, `eval`, `sweep`, `launch`, `run`) lives in its own module and registers its
subcommands on the parser here.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from collections.abc import Sequence

from helios import __version__
from helios.checkpoint import CheckpointError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
"""Subcommands handed to LightningCLI (`helios.train.cli.run_lightning`) as they are."""

UNSAFE_PICKLE = (
    "a checkpoint was refused: it holds pickled code or is no torch checkpoint (only "
    "tensors and plain values load)"
)
"""Said when torch refused a pickle that was not read through `helios.checkpoint`."""


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


def _error(message: object) -> int:
    """Print `helios: error: MESSAGE` (one line) to stderr; the exit status of a refusal."""
    print(f"helios: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `helios` console script; returns the exit status.

    Expected failures (a missing file, a bad value, a checkpoint refused as unsafe or
    unreadable) end with one `helios: error:` line and status 2, not a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            from helios.train.cli import run_lightning

            return run_lightning(argv)
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return int(args.func(args) or 0)
    except CheckpointError as err:
        return _error(err)
    except pickle.UnpicklingError:
        # a torch.load(weights_only=True) outside helios.checkpoint refused a pickle
        return _error(UNSAFE_PICKLE)
    except (FileNotFoundError, ValueError, KeyError) as err:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            raise  # LightningCLI reports its own errors
        return _error(err.args[0] if isinstance(err, KeyError) and err.args else err)


if __name__ == "__main__":
    sys.exit(main())
