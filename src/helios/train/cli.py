"""`helios fit | validate | test | predict`: LightningCLI around `LatentMIM` and the data modules.

Configs compose with repeated `--config` (base + model size + data + trainer deltas). Every run
lives in a run folder, which holds the resolved config, `checkpoints/` and, after fit,
`encoder.pt`. A `fit` whose run folder already holds `checkpoints/last.ckpt` resumes from it by
itself, so a preempted job that is simply restarted continues where it stopped. The run folder
is `$HELIOS_RUN_DIR` when it is set (the Beaker launcher sets it to the job's persistent
folder), over any config file's `trainer.default_root_dir`; else the configs'
`trainer.default_root_dir`, else `runs/default`. A `--trainer.default_root_dir` flag after the
configs still wins.

Every checkpoint a subcommand reads (`--ckpt_path`, or the automatic resume) is vetted by
`helios.checkpoint.check_checkpoint` first and then loaded by Lightning with
`weights_only=True` spelled out, so a checkpoint holding pickled code is refused with one line
(`CheckpointError`) and its code never runs, even with `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import helios.data.masking  # noqa: F401  (short class names resolve for masking strategies)
from helios.checkpoint import CheckpointError, check_checkpoint
from helios.data.datamodule import PretrainDataModule
from helios.resume import ResumeCheckpoint, RNGStateCallback
from helios.train.callbacks import ExportEncoder, ThroughputMonitor
from helios.train.pretrain import LatentMIM

LAST_CHECKPOINT = "last.ckpt"


DEFAULT_RUN_DIR = "runs/default"
"""The run folder when neither `$HELIOS_RUN_DIR` nor a config names one."""


def with_run_dir(args: list[str], environ: Any = None) -> list[str]:
    """`args` with `$HELIOS_RUN_DIR` as `--trainer.default_root_dir` right after the configs.

    Placed after the last `--config` (or after the subcommand), it overrides what the config
    files say while flags that follow them still win.
    """
    run_dir = (os.environ if environ is None else environ).get("HELIOS_RUN_DIR")
    if not run_dir or not args:
        return args
    at = 1
    for i, arg in enumerate(args):
        if arg == "--config":
            at = i + 2
        elif arg.startswith("--config="):
            at = i + 1
    at = min(at, len(args))
    return [*args[:at], "--trainer.default_root_dir", run_dir, *args[at:]]


def find_last_checkpoint(run_dir: Path | str) -> Path | None:
    """`<run_dir>/checkpoints/last.ckpt` if a previous attempt left one."""
    path = Path(run_dir) / "checkpoints" / LAST_CHECKPOINT
    return path if path.is_file() else None


def _resolved_modalities(datamodule: PretrainDataModule) -> list[str]:
    datamodule.setup("fit")
    assert datamodule.modalities is not None
    return list(datamodule.modalities)


class HeliosCLI(LightningCLI):
    """LightningCLI with Helios's run-folder conventions and default callbacks."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the data's modalities into the model; add the checkpoint interval."""
        parser.add_argument(
            "--checkpoint_every",
            type=int,
            default=100,
            help="save <run dir>/checkpoints/last.ckpt every N optimizer steps (resume point)",
        )
        parser.link_arguments(
            "data",
            "model.init_args.modalities",
            compute_fn=_resolved_modalities,
            apply_on="instantiate",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse; load checkpoints weights-only, and vet a given `--ckpt_path` first.

        Lightning reads `--ckpt_path` for its hyperparameters right after parsing, and again
        when the subcommand runs; `weights_only=True` is passed to the subcommand itself.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        cfg = self.config[subcommand]
        cfg["weights_only"] = True
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            check_checkpoint(ckpt_path)

    def before_fit(self) -> None:
        """Point checkpoints at the run folder and resume from its last checkpoint."""
        run_dir = Path(self.trainer.default_root_dir)
        cfg = self.config_init[self.subcommand]
        for cb in self.trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(cb, ResumeCheckpoint):
                cb.dirpath = str(run_dir / "checkpoints")
                cb._every_n_train_steps = int(cfg.get("checkpoint_every") or 100)
        if cfg.get("ckpt_path") is None:
            last = find_last_checkpoint(run_dir)
            if last is not None:
                check_checkpoint(last)
                print(f"helios: resuming from {last}")
                cfg["ckpt_path"] = str(last)


def trainer_defaults() -> dict[str, Any]:
    """Defaults every run gets unless its config says otherwise."""
    return {
        "default_root_dir": DEFAULT_RUN_DIR,
        "use_distributed_sampler": False,  # PlannedBatchSampler shards by rank itself
        "callbacks": [
            ResumeCheckpoint(save_last=True, every_n_train_steps=100, save_top_k=0),
            ThroughputMonitor(),
            RNGStateCallback(),
            ExportEncoder(),
        ],
    }


def run_lightning(args: Sequence[str]) -> int:
    """Run a LightningCLI subcommand; `args` as typed after `helios`, e.g. ["fit", ...].

    Raises:
        CheckpointError: a checkpoint to read is unsafe or unreadable (`helios.cli` prints it).

    """
    args = list(args)
    from_console = args == sys.argv[1:]
    placed = with_run_dir(args)
    HeliosCLI(
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        # From the console script, let Lightning read sys.argv itself (its DDP launcher re-runs
        # it); from Python, pass the arguments explicitly.
        args=None if from_console and placed == args else placed,
        auto_configure_optimizers=False,
    )
    return 0


__all__ = ["CheckpointError", "HeliosCLI", "LatentMIM", "PretrainDataModule", "run_lightning"]
