"""`helios eval run`: one evaluation from a YAML recipe and/or flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from helios.evals.run import EvalConfig, run_eval


def eval_parser() -> ArgumentParser:
    """The parser of `helios eval run` (every EvalConfig field is a flag)."""
    parser = ArgumentParser(prog="helios eval run", description="Run one evaluation.")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML EvalConfig")
    parser.add_class_arguments(EvalConfig, None)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def parse_eval_config(argv: Sequence[str]) -> tuple[EvalConfig, bool]:
    """Parse `helios eval run` arguments into an EvalConfig."""
    parser = eval_parser()
    cfg = parser.parse_args(list(argv))
    init = parser.instantiate_classes(cfg)
    names = [f.name for f in dataclasses.fields(EvalConfig)]
    return EvalConfig(**{k: init[k] for k in names}), bool(cfg.no_progress)


def add_eval_commands(groups: Any) -> None:
    """Register `helios eval`."""
    p = groups.add_parser(
        "eval",
        help="evaluate an encoder on a benchmark (kNN, linear probe, fine-tune)",
        description="`helios eval run --config eval.yaml [--eval.protocol knn ...]`; "
        "see `helios eval run --help` for every option.",
    )
    p.add_argument("action", choices=("run", "tasks"), help="run an evaluation, or list tasks")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of `helios eval run`")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.action == "tasks":
        from helios.evals.tasks import TASKS

        print("\n".join(TASKS))
        return 0
    config, no_progress = parse_eval_config(args.rest)
    result = run_eval(config, progress=not no_progress)
    summary = {k: result[k] for k in ("model", "task", "primary_metric", "seconds")}
    summary["val"] = {k: v for k, v in result["val"].items() if not isinstance(v, list)}
    summary["test"] = {k: v for k, v in result["test"].items() if not isinstance(v, list)}
    print(json.dumps(summary, indent=2))
    return 0
