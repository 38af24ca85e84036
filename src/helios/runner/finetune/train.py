"""Fine-tuning's training step: a project's model.yaml through LightningCLI -> checkpoint.ckpt.

model.yaml is a LightningCLI config: `model` (a `RunnerModel`: the pretrained encoder from
`encoder_path` plus a head, frozen then unfrozen), `data` (init args of
`LabeledWindowDataModule`; scratch, project, group and split property are filled in) and
`trainer` (any Lightning Trainer arguments). `FineTuneCLI` parses it with the run's fixed
parts: trainer defaults (overridable in model.yaml), and a `checkpoint` callback group that is
always there (best by the validation score, else the last). The run lives in
`scratch/finetune/` (resolved `config.yaml`, `checkpoints/`, CSV logs, `result.json`); the
chosen checkpoint is slimmed to weights + hyperparameters + encoder metadata and written
atomically to the project's `checkpoint.ckpt`.

A finished fine-tune records a fingerprint of its resolved config, the labeled windows, the
imagery config and the encoder file; re-running with the same inputs does nothing, a killed
run resumes from `checkpoints/last.ckpt`, and a changed input starts over. Every checkpoint
is loaded with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from helios.resume import ResumeCheckpoint, RNGStateCallback
from helios.runner.core.fsutil import atomic_path, read_json, text_hash, write_json
from helios.runner.finetune.labeled_data import LabeledWindowDataModule
from helios.runner.predict.model import MODEL_CLASS_PATHS, RunnerModel

logger = logging.getLogger(__name__)
RESULT_JSON = "result.json"
MODEL_CLASS = MODEL_CLASS_PATHS[0]
DATA_CLASS = "helios.runner.finetune.labeled_data.LabeledWindowDataModule"
YAML_KEYS = ("model", "data", "trainer", "seed_everything")
KEPT_KEYS = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "hyper_parameters",
    "hparams_name",
    "helios_encoder",
)
"""Checkpoint entries copied into the project's checkpoint.ckpt (no optimizer state)."""


class FineTuneError(RuntimeError):
    """The project cannot be fine-tuned as configured."""


@dataclass
class FineTuneResult:
    """What `fine_tune` produced (also in `scratch/finetune/result.json`)."""

    checkpoint: Path
    """The project's checkpoint.ckpt."""
    source: Path
    """The training checkpoint it was made from."""
    monitor: str | None
    """The validation metric that chose the checkpoint (None: the last one)."""
    epochs: int
    val: dict[str, Any] = field(default_factory=dict)
    """Validation metrics of the chosen checkpoint."""
    test: dict[str, Any] = field(default_factory=dict)
    """Test metrics of the chosen checkpoint (empty without test windows)."""
    skipped: bool = False
    """True when an identical fine-tune had already finished."""

    def summary(self) -> str:
        """A few lines for the CLI."""
        head = "already fine-tuned" if self.skipped else f"fine-tuned {self.epochs} epochs"
        lines = [f"{head}: {self.checkpoint} (from {self.source.name})"]
        for name, scores in (("val", self.val), ("test", self.test)):
            flat = {k: v for k, v in scores.items() if isinstance(v, float)}
            if flat:
                lines.append(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in flat.items()))
        return "\n".join(lines)


@dataclass(frozen=True)
class TrainingJob:
    """Everything the training step reads, spelled out (FineTuneRunner fills it in)."""

    model_yaml: Path
    """The project's model.yaml."""
    encoder: Path
    """The pretrained encoder file (resolved)."""
    scratch: Path
    """The fine-tuning scratch folder (labeled windows in `scratch/labeled`)."""
    project: Path
    """The project folder (read by the data module: dataset.json)."""
    group_name: str
    split_property: str
    split_counts: dict[str, int]
    """Labeled windows per split (train / val / test)."""
    inputs_fingerprint: str
    """Hash of the labeled windows and the imagery config they were built with."""
    target: Path
    """Where the slim checkpoint goes (the project's checkpoint.ckpt)."""

    @property
    def run_dir(self) -> Path:
        """`scratch/finetune`."""
        return self.scratch / "finetune"


class FineTuneCLI(LightningCLI):
    """LightningCLI with the callbacks every fine-tune has.

    `checkpoint` keeps the best epoch (`best.ckpt`); `resume_checkpoint` writes `last.ckpt`
    after every epoch (Lightning's `save_last` only follows the best checkpoint, so a kill
    would resume from the best epoch, not the latest); `rng_state` saves the random streams
    in both, so a resumed run continues exactly.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the always-present callbacks."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ResumeCheckpoint, "resume_checkpoint")
        parser.add_lightning_class_args(RNGStateCallback, "rng_state")


def read_model_yaml(path: Path) -> dict[str, Any]:
    """model.yaml as a mapping with a `model:` section (checked, not yet resolved)."""
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise FineTuneError(f"{path}: needs a `model:` section ({{class_path, init_args}})")
    unknown = sorted(set(raw) - set(YAML_KEYS))
    if unknown:
        raise FineTuneError(f"{path}: unknown top-level keys {unknown}; known: {list(YAML_KEYS)}")
    return raw


def cli_config(
    job: TrainingJob, overrides: dict[str, Any] | None = None, progress: bool = True
) -> dict[str, Any]:
    """The LightningCLI config of a run: model.yaml plus the job's paths and `overrides`.

    `overrides` are Trainer arguments that win over model.yaml (e.g. max_epochs).
    """
    raw = read_model_yaml(job.model_yaml)
    model = dict(raw["model"])
    if model.get("class_path", MODEL_CLASS) in MODEL_CLASS_PATHS:
        model["class_path"] = MODEL_CLASS
    model["init_args"] = {**(model.get("init_args") or {}), "encoder_path": str(job.encoder)}
    if model["init_args"].get("task", "segmentation") == "embedding":
        raise FineTuneError("the embedding task has no head to fine-tune")
    data = dict(raw.get("data") or {})
    data["class_path"] = data.get("class_path", DATA_CLASS)
    data["init_args"] = {
        "group_name": job.group_name,
        "split_property": job.split_property,
        **(data.get("init_args") or {}),
        "scratch": str(job.scratch.resolve()),
        "project": str(job.project.resolve()),
    }
    trainer = {**(raw.get("trainer") or {}), **(overrides or {})}
    trainer["default_root_dir"] = str(job.run_dir.resolve())
    trainer["enable_progress_bar"] = progress and trainer.get("enable_progress_bar", True)
    if not job.split_counts.get("val"):
        trainer["limit_val_batches"] = 0
    task = model["init_args"].get("task", "segmentation")
    monitor = (
        ("val_miou" if task == "segmentation" else "val_accuracy")
        if job.split_counts.get("val")
        else None
    )
    ckpt_dir = str((job.run_dir / "checkpoints").resolve())
    checkpoint = {
        "dirpath": ckpt_dir,
        "filename": "best",
        "monitor": monitor,
        "mode": "max",
        "save_last": False,
        "save_top_k": 1,
        "enable_version_counter": False,
    }
    resume = {  # the latest epoch, every epoch
        "dirpath": ckpt_dir,
        "filename": "last",
        "monitor": None,
        "save_top_k": 1,
        "every_n_epochs": 1,
        "enable_version_counter": False,
    }
    return {
        "seed_everything": raw.get("seed_everything", 0),
        "model": model,
        "data": data,
        "trainer": trainer,
        "checkpoint": checkpoint,
        "resume_checkpoint": resume,
    }


def _trainer_defaults(run_dir: Path) -> dict[str, Any]:
    from jsonargparse import lazy_instance
    from lightning.pytorch.loggers import CSVLogger

    return {
        "max_epochs": 10,
        "accelerator": "auto",
        "devices": 1,
        "log_every_n_steps": 1,
        "logger": lazy_instance(CSVLogger, save_dir=str(run_dir.resolve()), name="logs"),
    }


def make_cli(config: dict[str, Any], run_dir: Path) -> FineTuneCLI:
    """Parse and instantiate a run through LightningCLI (typed, validated), without running."""
    return FineTuneCLI(
        model_class=RunnerModel,
        datamodule_class=LabeledWindowDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=_trainer_defaults(run_dir),
        args=config,
        run=False,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(job: TrainingJob, config: dict[str, Any]) -> str:
    """What a finished fine-tune depends on: config, labeled windows, imagery, encoder."""
    config = {**config, "trainer": {**config["trainer"], "enable_progress_bar": None}}
    return text_hash(config, job.inputs_fingerprint, sha256(job.encoder))[:16]


def slim_checkpoint(source: Path, target: Path) -> Path:
    """Write `source` without optimizer and loop state to `target`, atomically."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    slim = {k: ckpt[k] for k in KEPT_KEYS if k in ckpt}
    # LightningCLI records `_class_path` (and the like) among the hyperparameters; the
    # model's own arguments are what a checkpoint should carry
    hparams = slim.get("hyper_parameters") or {}
    slim["hyper_parameters"] = {k: v for k, v in hparams.items() if not k.startswith("_")}
    with atomic_path(target) as tmp:
        torch.save(slim, tmp)
    return target


def fine_tune(
    job: TrainingJob,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
) -> FineTuneResult:
    """Train (or resume, or skip) and write the slim checkpoint to `job.target`.

    Args:
        job: The inputs.
        overrides: Trainer arguments overriding model.yaml's (max_epochs, accelerator, ...).
        force: Train again even if an identical fine-tune finished.
        progress: Show Lightning's progress bar.

    """
    config = cli_config(job, overrides, progress)
    fp = fingerprint(job, config)
    done = _finished(job, fp)
    if done is not None and not force:
        return done
    ckpt_dir = job.run_dir / "checkpoints"
    state = job.run_dir / "state.json"
    stale = not state.exists() or read_json(state).get("fingerprint") != fp
    if (stale or force) and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    (job.run_dir / RESULT_JSON).unlink(missing_ok=True)
    write_json(state, {"fingerprint": fp})
    last = ckpt_dir / "last.ckpt"
    resume = last if last.is_file() else None
    if resume:
        logger.info("resuming fine-tuning from %s", last)
    trainer, val, test, source = _train(job, config, resume)
    monitor = config["checkpoint"]["monitor"]
    result = FineTuneResult(job.target, source, monitor, int(trainer.current_epoch), val, test)
    if not trainer.is_global_zero:  # DDP: rank 0 writes the results
        return result
    slim_checkpoint(source, job.target)
    record = {**asdict(result), "fingerprint": fp, "sha256": sha256(job.target)}
    write_json(job.run_dir / RESULT_JSON, record)
    return result


def _train(
    job: TrainingJob, config: dict[str, Any], resume: Path | None
) -> tuple[Any, dict[str, Any], dict[str, Any], Path]:
    """Fit, then score the chosen checkpoint (best by the monitored metric, else the last)."""
    val: dict[str, Any] = {}
    test: dict[str, Any] = {}
    ckpt_dir = Path(config["checkpoint"]["dirpath"])
    with warnings.catch_warnings():
        # expected here: RunnerModel moves its (MaskedBatch, labels) pairs itself, and a
        # resumed run finds its own checkpoints
        warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device`")
        warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
        cli = make_cli(config, job.run_dir)
        trainer, model, data = cli.trainer, cli.model, cli.datamodule
        trainer.fit(model, datamodule=data, ckpt_path=resume, weights_only=True)
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        source = Path(best) if best and Path(best).is_file() else ckpt_dir / "last.ckpt"
        if not source.is_file():
            raise FineTuneError(f"training wrote no checkpoint in {ckpt_dir}")
        for split, scores in (("val", val), ("test", test)):
            if not job.split_counts.get(split):
                continue
            run = trainer.validate if split == "val" else trainer.test
            run(model, datamodule=data, ckpt_path=str(source), verbose=False, weights_only=True)
            scores.update(getattr(model, "results", {}).get(split, {}))
    return trainer, val, test, source


def _finished(job: TrainingJob, fp: str) -> FineTuneResult | None:
    path = job.run_dir / RESULT_JSON
    if not (path.exists() and job.target.exists()):
        return None
    record = read_json(path)
    if record.get("fingerprint") != fp or record.get("sha256") != sha256(job.target):
        return None
    return FineTuneResult(
        checkpoint=job.target,
        source=Path(record["source"]),
        monitor=record.get("monitor"),
        epochs=int(record.get("epochs", 0)),
        val=dict(record.get("val") or {}),
        test=dict(record.get("test") or {}),
        skipped=True,
    )


def resolve_encoder(value: str | os.PathLike[str] | None, project: Path, model_yaml: Path) -> Path:
    """The encoder file a fine-tune starts from: given, or model.yaml's, relative to the project."""
    if value is None:
        raise FineTuneError(
            f"{model_yaml}: model.init_args.encoder_path is missing (or pass --encoder)"
        )
    path = Path(os.path.expanduser(str(value)))
    if not path.is_absolute() and not path.exists():
        path = project / path
    if not path.is_file():
        raise FineTuneError(f"encoder {value}: no such file")
    return path.resolve()
