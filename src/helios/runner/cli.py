"""`helios run ...`: the prediction runner's steps (docs/runner.md).

`add_run_commands` creates the `run` group and returns its sub-parsers object, so further
steps (e.g. `predict`) register with `sub.add_parser(...)` and `add_project_arguments`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = """\
steps, in order (each is resumable; re-running skips finished work):
  helios run validate PROJECT
  helios run partition PROJECT --scratch DIR
  helios run build PROJECT --scratch DIR [--workers N]
  (inference writes windows/<w>/outputs/)
  helios run postprocess PROJECT --scratch DIR
  helios run combine PROJECT --scratch DIR
all of them, with inference (model.yaml + checkpoint.ckpt):
  helios run predict PROJECT [--scratch DIR] [--steps ...] [--jobs N] [--device cpu]
fine-tuning (annotations -> labeled windows -> imagery -> PROJECT/checkpoint.ckpt):
  helios run finetune PROJECT --scratch DIR [--steps prepare,build,train] [--max-epochs N]
"""


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_project_arguments(
    p: argparse.ArgumentParser, scratch: bool = True, partitions: bool = True
) -> None:
    """Add the PROJECT argument, `--scratch` when `scratch`, and `--partition-ids` when both."""
    p.add_argument("project", type=Path, help="project folder (olmoearth_run.yaml, ...)")
    if scratch:
        p.add_argument("--scratch", type=Path, required=True, help="working directory")
    if scratch and partitions:
        p.add_argument(
            "--partition-ids",
            nargs="+",
            default=None,
            metavar="ID",
            help="only these partitions (default: all from the last `partition`)",
        )


def add_run_commands(groups: Any) -> Any:
    """Register `helios run` and its steps; returns the sub-parsers object of the group."""
    from helios.data.cli import default_workers

    run = groups.add_parser(
        "run",
        help="run predictions over a project folder",
        description="The prediction runner: requests -> partitions -> windows -> results.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = run.add_subparsers(dest="command", metavar="STEP", required=True)

    p = sub.add_parser("validate", help="check a project and list every problem")
    add_project_arguments(p, scratch=False)
    p.add_argument("--skip-imagery", action="store_true", help="do not index the imagery")
    p.add_argument(
        "--strict", action="store_true", help="fail (exit 1) when anything a step needs is missing"
    )
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("partition", help="split requests into partitions and windows")
    add_project_arguments(p, partitions=False)  # it makes the partitions: every request
    add_max_windows(p)
    p.set_defaults(func=_cmd_partition)

    p = sub.add_parser("build", help="materialize every window's input layers")
    add_project_arguments(p)
    p.add_argument("--workers", type=_positive_int, default=default_workers())
    p.add_argument(
        "--min-success-rate",
        type=_rate,
        default=0.9,
        help="fail when a smaller fraction of windows builds (default 0.9)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("postprocess", help="postprocess windows and partitions")
    add_project_arguments(p)
    p.set_defaults(func=_cmd_postprocess)

    p = sub.add_parser("combine", help="combine partition results into the final results")
    add_project_arguments(p)
    p.set_defaults(func=_cmd_combine)
    add_finetune_command(sub)
    add_predict_command(sub)
    return sub


def partition_ids(args: argparse.Namespace) -> list[str]:
    """The partitions a command works on: `--partition-ids`, else all."""
    from helios.runner.core.windows import list_partitions

    return list(args.partition_ids) if args.partition_ids else list_partitions(args.scratch)


def _cmd_validate(args: argparse.Namespace) -> int:
    from helios.runner.project.load import load_project

    project = load_project(args.project, check_imagery=not args.skip_imagery, strict=False)
    config = project.dataset_config
    layers = [
        f"{la.name} ({la.modality})" if la.modality else la.name for la in config.input_layers()
    ]
    parts = "none"
    if project.partitioner and project.window_preparer:
        parts = f"{type(project.partitioner).__name__} / {type(project.window_preparer).__name__}"
    print(
        f"ok: {project.path}: {len(project.requests)} requests, input layers "
        f"[{', '.join(layers) or 'none'}], partitioners {parts}"
    )
    if project.missing:
        print(f"missing ({len(project.missing)}): the steps named cannot run until these exist")
        for m in project.missing:
            print(f"  - {m}")
    if args.strict and any(m.fatal for m in project.missing):
        return 1
    return 0


def add_max_windows(p: argparse.ArgumentParser) -> None:
    """`--max-windows N`: refuse requests estimated to make more windows (0: no limit)."""
    from helios.runner.partition.step import DEFAULT_MAX_WINDOWS

    p.add_argument(
        "--max-windows",
        type=int,
        default=DEFAULT_MAX_WINDOWS,
        help=f"refuse requests estimated to make more windows (default {DEFAULT_MAX_WINDOWS:,};"
        " 0: no limit)",
    )


def _runner(args: argparse.Namespace, check_imagery: bool = True) -> Any:
    from helios.runner.predict_runner import PredictRunner

    runner = PredictRunner(
        args.project,
        args.scratch,
        progress=not getattr(args, "no_progress", False),
        max_windows=getattr(args, "max_windows", None) or None,
    )
    runner.check_imagery = check_imagery
    return runner


def _cmd_partition(args: argparse.Namespace) -> int:
    from helios.runner.core.windows import list_windows

    ids = _runner(args).partition()
    n = sum(len(list_windows(args.scratch, pid)) for pid in ids)
    print(f"{len(ids)} partitions, {n} windows in {args.scratch}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from helios.runner.materialize.builder import BuildError

    runner = _runner(args)
    runner.workers, runner.min_success_rate = args.workers, args.min_success_rate
    try:
        result = runner.build_dataset(partition_ids(args))
    except BuildError as err:
        print(f"helios: error: {err}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _cmd_postprocess(args: argparse.Namespace) -> int:
    runner = _runner(args, check_imagery=False)
    n = sum(len(runner.postprocess(pid)) for pid in partition_ids(args))
    print(f"{n} partition results")
    return 0


def _cmd_combine(args: argparse.Namespace) -> int:
    for path in _runner(args, check_imagery=False).combine(partition_ids(args)):
        print(path)
    return 0


def _step_list(allowed: Sequence[str], text: str) -> list[str]:
    """Parse `--steps a,b` against the steps a command knows."""
    steps = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in steps if s not in allowed]
    if bad or not steps:
        raise argparse.ArgumentTypeError(
            f"steps are a comma-separated subset of {','.join(allowed)}"
        )
    return steps


def _finetune_steps(text: str) -> list[str]:
    from helios.runner.finetune_runner import STEPS  # imported late: keeps `helios --help` light

    return _step_list(STEPS, text)


def _predict_steps(text: str) -> list[str]:
    from helios.runner.predict_runner import STEPS

    return _step_list(STEPS, text)


def add_finetune_command(sub: Any) -> None:
    """Register `helios run finetune` (docs/runner.md, "Fine-tuning runner")."""
    from helios.data.cli import default_workers

    p = sub.add_parser(
        "finetune",
        help="fine-tune the project's model on its annotations (writes checkpoint.ckpt)",
        description="Studio export -> labeled windows -> imagery -> LightningCLI fine-tune -> "
        "PROJECT/checkpoint.ckpt. Each step is idempotent.",
    )
    add_project_arguments(p, scratch=False)
    p.add_argument("--scratch", type=Path, required=True, help="working directory")
    p.add_argument(
        "--steps",
        type=_finetune_steps,
        default=["prepare", "build", "train"],
        help="comma-separated steps to run (default prepare,build,train)",
    )
    p.add_argument("--max-epochs", type=_positive_int, default=None, help="override model.yaml")
    p.add_argument("--encoder", type=Path, default=None, help="override model.yaml's encoder_path")
    p.add_argument("--accelerator", default=None, help="cpu, gpu, auto (default: model.yaml's)")
    p.add_argument("--devices", default=None, help="number of devices (default: model.yaml's)")
    p.add_argument("--workers", type=_positive_int, default=default_workers(), help="build workers")
    p.add_argument("--min-success-rate", type=_rate, default=0.9, help="build: see `build`")
    p.add_argument("--force", action="store_true", help="train again even if up to date")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_finetune)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from helios.runner.finetune_runner import FineTuneError, FineTuneRunner
    from helios.runner.materialize.builder import BuildError

    runner = FineTuneRunner(args.project, args.scratch, args.encoder)
    devices = int(args.devices) if args.devices and args.devices.isdigit() else args.devices
    progress = not args.no_progress
    try:
        if "prepare" in args.steps:
            prepared = runner.prepare_labeled_windows()
            print(
                f"prepared {len(prepared.windows)} labeled windows ({prepared.created} new): "
                f"{prepared.by_split}; {len(prepared.problems)} problems"
            )
        if "build" in args.steps:
            print(runner.build_dataset(args.workers, args.min_success_rate, progress).summary())
        if "train" in args.steps:
            result = runner.fine_tune(
                args.max_epochs, args.accelerator, devices, args.force, progress
            )
            print(result.summary())
    except (BuildError, FineTuneError) as err:
        print(f"helios: error: {err}", file=sys.stderr)
        return 1
    return 0


def add_predict_command(sub: Any) -> None:
    """Register `helios run predict` (docs/runner.md, "helios run predict")."""
    from helios.data.cli import default_workers

    p = sub.add_parser(
        "predict",
        help="run every step: partition, build, inference, postprocess, combine",
        description="Predict a project's requests: partition -> build -> inference -> "
        "postprocess -> combine. Every step is idempotent: kill and re-run at any point.",
    )
    p.add_argument("project", type=Path, help="project folder (olmoearth_run.yaml, ...)")
    p.add_argument("--scratch", type=Path, default=None, help="working directory (PROJECT/scratch)")
    p.add_argument(
        "--partition-ids", nargs="+", default=None, metavar="ID", help="only these partitions"
    )
    p.add_argument(
        "--steps",
        type=_predict_steps,
        default=None,
        help="comma-separated subset of partition,build,inference,postprocess,combine (all)",
    )
    p.add_argument(
        "--workers", type=_positive_int, default=default_workers(), help="build processes"
    )
    p.add_argument("--min-success-rate", type=_rate, default=0.9, help="build: see `build`")
    p.add_argument(
        "--jobs", type=_positive_int, default=1, help="partitions predicted at once (processes)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, help="crops per batch")
    p.add_argument("--device", default="auto", help="accelerator: auto, cpu, gpu, mps")
    p.add_argument("--devices", type=_positive_int, default=1, help="devices per job (DDP)")
    p.add_argument("--crop-size", type=_positive_int, default=None, help="crop side (px)")
    p.add_argument("--overlap", type=int, default=None, help="crop overlap (px)")
    p.add_argument("--probabilities", action="store_true", help="also write probabilities")
    p.add_argument("--num-workers", type=int, default=0, help="inference DataLoader workers")
    p.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on GPUs")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_max_windows(p)
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from helios.runner.materialize.builder import BuildError
    from helios.runner.predict_runner import InferenceOptions, PredictRunner

    options = InferenceOptions(
        batch_size=args.batch_size,
        device=args.device,
        devices=args.devices,
        crop_size=args.crop_size,
        overlap=args.overlap,
        probabilities=args.probabilities,
        num_workers=args.num_workers,
        precision=args.precision,
    )
    runner = PredictRunner(
        args.project,
        args.scratch,
        inference=options,
        workers=args.workers,
        min_success_rate=args.min_success_rate,
        progress=not args.no_progress,
        max_windows=args.max_windows or None,
    )
    try:
        report = runner.run(args.steps, args.partition_ids, jobs=args.jobs)
    except BuildError as err:
        print(f"helios: error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
