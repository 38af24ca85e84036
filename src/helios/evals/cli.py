"""`helios eval run`: one evaluation from a YAML recipe and/or flags; `helios eval tasks`.

The recipe is read by jsonargparse against `EvalConfig`. `model`, `task` and `protocol` take
either their short form or `{class_path, init_args}` of a subclass of `EncoderLoader`,
`EvalDataset` (with a `split` argument) or `EvalProtocol`; the class path form is checked
against the class's signature while parsing, the short form right after.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from helios.data.normalize import NormMethod
from helios.evals.components import ComponentError, from_namespace
from helios.evals.models import MODEL_KINDS, EncoderLoader, ModelSpec
from helios.evals.protocols import PROTOCOLS, EvalProtocol
from helios.evals.run import EvalConfig, resolve, run_eval
from helios.evals.tasks import TASKS, TaskConfig, TaskFactory

_COMPONENTS = {"model": ModelSpec, "task": TaskConfig, "protocol": str}
_NORM_METHODS: Any = Literal[tuple(m.value for m in NormMethod)]
"""The enum's values (olmoearth's strings), which configs write, as the flag's choices."""


def eval_parser() -> ArgumentParser:
    """The parser of `helios eval run` (every EvalConfig field is a flag)."""
    parser = ArgumentParser(prog="helios eval run", description="Run one evaluation.")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML EvalConfig")
    parser.add_class_arguments(EvalConfig, None, skip={*_COMPONENTS, "norm_method"})
    parser.add_argument(
        "--norm_method",
        type=_NORM_METHODS,
        default=EvalConfig.norm_method.value,
        help="normalization method with dataset stats (FORMATS §3)",
    )
    parser.add_argument(
        "--model",
        type=ModelSpec | EncoderLoader | None,
        default=None,
        help=f"{{kind, path, name, seed, options}} with kind one of {', '.join(MODEL_KINDS)}, "
        "or {class_path, init_args} of an EncoderLoader",
    )
    parser.add_argument(
        "--task",
        type=TaskConfig | TaskFactory | None,
        default=None,
        help="{name, root, options} (`helios eval tasks`), or {class_path, init_args} of an "
        "EvalDataset subclass (init args without split)",
    )
    parser.add_argument(
        "--protocol",
        type=str | EvalProtocol,
        default="knn",
        help=f"{', '.join(PROTOCOLS)}, or an EvalProtocol by import path or class_path",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _component(value: Any, short: type) -> Any:
    """A parsed model, task or protocol as EvalConfig holds it (None: the default)."""
    if value is None:
        return short()  # a dataclass default would make jsonargparse drop a class_path
    value = from_namespace(value)
    if isinstance(value, Namespace):
        return short(**value.as_dict())
    return value


def parse_eval_config(argv: Sequence[str]) -> tuple[EvalConfig, bool]:
    """Parse `helios eval run` arguments into an EvalConfig (its parts checked)."""
    parser = eval_parser()
    cfg = parser.parse_args(list(argv))
    components = {k: _component(cfg[k], short) for k, short in _COMPONENTS.items()}
    names = [f.name for f in dataclasses.fields(EvalConfig) if f.name not in _COMPONENTS]
    config = EvalConfig(**components, **{k: cfg[k] for k in names})  # norm_method: a value
    try:
        resolve(config)
    except ComponentError as err:
        parser.error(str(err))
    return config, bool(cfg.no_progress)


def add_eval_commands(groups: Any) -> None:
    """Register `helios eval`."""
    p = groups.add_parser(
        "eval",
        help="evaluate an encoder on a benchmark (kNN, linear probe, fine-tune)",
        description="`helios eval run --config eval.yaml [--protocol knn ...]`; "
        "see `helios eval run --help` for every option.",
    )
    p.add_argument("action", choices=("run", "tasks"), help="run an evaluation, or list tasks")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of `helios eval run`")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.action == "tasks":
        print("\n".join(TASKS))
        return 0
    config, no_progress = parse_eval_config(args.rest)
    result = run_eval(config, progress=not no_progress)
    summary = {k: result[k] for k in ("model", "task", "primary_metric", "seconds")}
    summary["val"] = {k: v for k, v in result["val"].items() if not isinstance(v, list)}
    summary["test"] = {k: v for k, v in result["test"].items() if not isinstance(v, list)}
    print(json.dumps(summary, indent=2))
    return 0
