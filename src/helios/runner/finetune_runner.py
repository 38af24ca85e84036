"""Fine-tuning a runner project: Studio export -> labeled windows -> imagery -> checkpoint.ckpt.

`FineTuneRunner(project, scratch)` runs three idempotent steps:

1. `prepare_labeled_windows()`: the annotation export becomes labeled windows with splits
   (`scratch/labeled/partitions/<group>/`, see `helios.runner.finetune`);
2. `build_dataset()`: their input imagery is materialized like prediction windows;
3. `fine_tune()`: a LightningCLI run of the project's model.yaml: `model` (a `RunnerModel`:
   the pretrained encoder from `encoder_path` plus a head, frozen then unfrozen), `data`
   (init args of `LabeledWindowDataModule`; scratch and project are filled in) and
   `trainer` (any Lightning Trainer arguments). The run lives in `scratch/finetune/`
   (resolved `config.yaml`, `checkpoints/`, CSV logs, `result.json`); the best checkpoint
   by validation score (else the last) is slimmed to weights + hyperparameters + encoder
   metadata and written atomically to the project's `checkpoint.ckpt`, which the prediction
   runner loads with `RunnerModel.load_for_inference`.

A finished fine-tune records a fingerprint of its resolved config, the labeled windows and
the encoder file; re-running with the same inputs does nothing, a killed run resumes from
`checkpoints/last.ckpt`, and a changed input starts over.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from helios.runner.core.fsutil import atomic_path, read_json, text_hash, write_json
from helios.runner.core.windows import PARTITION_JSON, WINDOW_JSON, partition_dir
from helios.runner.finetune import PreparedWindows, labeled_root, prepare_labeled_windows
from helios.runner.finetune.prepare import SUMMARY_JSON
from helios.runner.materialize.builder import BuildResult, build_dataset
from helios.runner.predict.model import MODEL_CLASS_PATHS
from helios.runner.project.load import CHECKPOINT, MODEL_YAML, Project, load_project

logger = logging.getLogger(__name__)
STEPS = ("prepare", "build", "train")
RUN_DIR = "finetune"
RESULT_JSON = "result.json"
MODEL_CLASS = "helios.runner.predict.model.RunnerModel"
DATA_CLASS = "helios.runner.finetune.labeled_data.LabeledWindowDataModule"
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


class FineTuneRunner:
    """The fine-tuning chain of a project folder (see the module docstring)."""

    def __init__(
        self,
        project_path: str | Path,
        scratch_path: str | Path,
        encoder_path: str | Path | None = None,
    ) -> None:
        """Args: the project folder; the scratch folder; an encoder overriding model.yaml's."""
        self.project_path = Path(project_path)
        self.scratch = Path(scratch_path)
        self.encoder_path = Path(encoder_path) if encoder_path is not None else None
        self._project: Project | None = None

    @property
    def project(self) -> Project:
        """The project, loaded once (a checkpoint and prediction requests are optional)."""
        if self._project is None:
            self._project = load_project(
                self.project_path,
                require_requests=False,
                check_imagery=False,
                require_window_prep=True,
                require_checkpoint=False,
            )
        return self._project

    @property
    def run_dir(self) -> Path:
        """`scratch/finetune`: the training run's folder."""
        return self.scratch / RUN_DIR

    @property
    def group_name(self) -> str:
        """The labeled windows' group (their partition id in `scratch/labeled`)."""
        prep = self.project.window_prep
        return prep.group_name if prep else "default"

    # -- steps ---------------------------------------------------------------------------
    def prepare_labeled_windows(self) -> PreparedWindows:
        """Step 1: the annotation export -> labeled windows with splits (idempotent)."""
        p = self.project
        return prepare_labeled_windows(p.path, p.window_prep, self.scratch)

    def build_dataset(
        self, workers: int = 1, min_success_rate: float = 0.9, progress: bool = True
    ) -> BuildResult:
        """Step 2: materialize the labeled windows' input layers (built windows are skipped)."""
        pdir = partition_dir(labeled_root(self.scratch), self.group_name)
        if not (pdir / PARTITION_JSON).exists():
            raise FineTuneError(f"no labeled windows in {pdir}: run the prepare step first")
        return build_dataset(
            self.project.dataset_config,
            labeled_root(self.scratch),
            [self.group_name],
            workers=workers,
            min_success_rate=min_success_rate,
            progress=progress,
        )

    def model_yaml(self) -> dict[str, Any]:
        """The project's model.yaml: `model`, optional `data`, `trainer`, `seed_everything`."""
        path = self.project_path / MODEL_YAML
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
            raise FineTuneError(f"{path}: needs a `model:` section ({{class_path, init_args}})")
        unknown = sorted(set(raw) - {"model", "data", "trainer", "seed_everything"})
        if unknown:
            raise FineTuneError(f"{path}: unknown top-level keys {unknown}")
        return raw

    def _encoder(self, init_args: dict[str, Any]) -> Path:
        value = self.encoder_path or init_args.get("encoder_path")
        if value is None:
            raise FineTuneError(f"{self.project_path / MODEL_YAML}: model.init_args.encoder_path "
                                "is missing (or pass --encoder)")  # fmt: skip
        path = Path(os.path.expanduser(str(value)))
        if not path.is_absolute() and not path.exists():
            path = self.project_path / path  # relative to the project folder
        if not path.is_file():
            raise FineTuneError(f"encoder {value}: no such file")
        return path.resolve()

    def split_counts(self) -> dict[str, int]:
        """Labeled windows per split, from the prepare step's summary."""
        path = partition_dir(labeled_root(self.scratch), self.group_name) / SUMMARY_JSON
        if not path.exists():
            raise FineTuneError(f"{path} is missing: run the prepare step first")
        by_split = read_json(path).get("by_split", {})
        return {s: int(by_split.get(s, 0)) for s in ("train", "val", "test")}

    def training_config(
        self,
        max_epochs: int | None = None,
        accelerator: str | None = None,
        devices: int | str | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """The LightningCLI config of the run: model.yaml plus the run's fixed parts."""
        raw = self.model_yaml()
        model = dict(raw["model"])
        if model.get("class_path", MODEL_CLASS) in MODEL_CLASS_PATHS:
            model["class_path"] = MODEL_CLASS
        init = dict(model.get("init_args") or {})
        init["encoder_path"] = str(self._encoder(init))
        model["init_args"] = init
        task = init.get("task", "segmentation")
        if task == "embedding":
            raise FineTuneError("the embedding task has no head to fine-tune")
        data = dict(raw.get("data") or {})
        data.setdefault("class_path", DATA_CLASS)
        data["init_args"] = {
            **(data.get("init_args") or {}),
            "scratch": str(self.scratch.resolve()),
            "project": str(self.project_path.resolve()),
        }
        counts = self.split_counts()
        monitor = (
            ("val_miou" if task == "segmentation" else "val_accuracy") if counts["val"] else None
        )
        trainer: dict[str, Any] = {
            "max_epochs": 10,
            "accelerator": "auto",
            "devices": 1,
            "log_every_n_steps": 1,
            **(raw.get("trainer") or {}),
        }
        trainer["default_root_dir"] = str(self.run_dir.resolve())
        trainer["enable_progress_bar"] = progress and trainer.get("enable_progress_bar", True)
        if max_epochs is not None:
            trainer["max_epochs"] = max_epochs
        if accelerator is not None:
            trainer["accelerator"] = accelerator
        if devices is not None:
            trainer["devices"] = devices
        if not counts["val"]:
            trainer["limit_val_batches"] = 0
        trainer.setdefault(
            "logger",
            {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(self.run_dir.resolve()), "name": "logs"},
            },
        )
        checkpoint = {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str((self.run_dir / "checkpoints").resolve()),
                "filename": "best",
                "monitor": monitor,
                "mode": "max",
                "save_last": True,
                "save_top_k": 1,
                "enable_version_counter": False,
            },
        }
        trainer["callbacks"] = [*(trainer.get("callbacks") or []), checkpoint]
        return {
            "seed_everything": raw.get("seed_everything", 0),
            "model": model,
            "data": data,
            "trainer": trainer,
        }

    def fingerprint(self, config: dict[str, Any]) -> str:
        """What a finished fine-tune depends on: config, labeled windows, imagery, encoder."""
        pdir = partition_dir(labeled_root(self.scratch), self.group_name)
        windows = read_json(pdir / PARTITION_JSON).get("windows", [])
        labels = [read_json(pdir / "windows" / w / WINDOW_JSON) for w in windows]
        config = {**config, "trainer": {**config["trainer"], "enable_progress_bar": None}}
        return text_hash(
            config,
            labels,
            self.project.dataset_config.fingerprint(),
            _sha256(Path(config["model"]["init_args"]["encoder_path"])),
        )[:16]

    def fine_tune(
        self,
        max_epochs: int | None = None,
        accelerator: str | None = None,
        devices: int | str | None = None,
        force: bool = False,
        progress: bool = True,
    ) -> FineTuneResult:
        """Step 3: train (or resume, or skip) and write the project's checkpoint.ckpt.

        Args:
            max_epochs: Override model.yaml's `trainer.max_epochs` (default 10).
            accelerator: Override the Lightning accelerator ("cpu", "gpu", "auto").
            devices: Override the number of devices.
            force: Train again even if an identical fine-tune finished.
            progress: Show Lightning's progress bar.

        """
        config = self.training_config(max_epochs, accelerator, devices, progress)
        fingerprint = self.fingerprint(config)
        target = self.project_path / CHECKPOINT
        done = self._finished(fingerprint, target)
        if done is not None and not force:
            return done
        ckpt_dir = self.run_dir / "checkpoints"
        state = self.run_dir / "state.json"
        stale = not state.exists() or read_json(state).get("fingerprint") != fingerprint
        if (stale or force) and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        (self.run_dir / RESULT_JSON).unlink(missing_ok=True)
        write_json(state, {"fingerprint": fingerprint})
        last = ckpt_dir / "last.ckpt"
        resume = str(last) if last.is_file() else None
        if resume:
            logger.info("resuming fine-tuning from %s", last)
        trainer, val, test, source = self._train(config, resume)
        if not trainer.is_global_zero:  # DDP: rank 0 writes the results
            return FineTuneResult(target, source, None, int(trainer.current_epoch), val, test)
        slim_checkpoint(source, target)
        monitor = config["trainer"]["callbacks"][-1]["init_args"]["monitor"]
        result = FineTuneResult(target, source, monitor, int(trainer.current_epoch), val, test)
        record = {**asdict(result), "fingerprint": fingerprint, "sha256": _sha256(target)}
        write_json(self.run_dir / RESULT_JSON, record)
        return result

    def _train(
        self, config: dict[str, Any], resume: str | None
    ) -> tuple[Any, dict[str, Any], dict[str, Any], Path]:
        """Fit, then score the chosen checkpoint on val and test.

        Returns:
            The trainer, the val and test metrics, and the chosen checkpoint: the best by the
            monitored metric, else the last.

        """
        counts = self.split_counts()
        val: dict[str, Any] = {}
        test: dict[str, Any] = {}
        ckpt_dir = Path(config["trainer"]["callbacks"][-1]["init_args"]["dirpath"])
        with warnings.catch_warnings():
            # expected here: RunnerModel moves its (MaskedBatch, labels) pairs itself, and a
            # resumed run finds its own checkpoints
            warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device`")
            warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
            cli = _make_cli(config)
            trainer, model, data = cli.trainer, cli.model, cli.datamodule
            trainer.fit(model, datamodule=data, ckpt_path=resume)
            best = getattr(trainer.checkpoint_callback, "best_model_path", "")
            source = Path(best) if best and Path(best).is_file() else ckpt_dir / "last.ckpt"
            if not source.is_file():
                raise FineTuneError(f"training wrote no checkpoint in {ckpt_dir}")
            if counts["val"]:
                trainer.validate(model, datamodule=data, ckpt_path=str(source), verbose=False)
                val = dict(getattr(model, "results", {}).get("val", {}))
            if counts["test"]:
                trainer.test(model, datamodule=data, ckpt_path=str(source), verbose=False)
                test = dict(getattr(model, "results", {}).get("test", {}))
        return trainer, val, test, source

    def _finished(self, fingerprint: str, target: Path) -> FineTuneResult | None:
        path = self.run_dir / RESULT_JSON
        if not (path.exists() and target.exists()):
            return None
        record = read_json(path)
        if record.get("fingerprint") != fingerprint or record.get("sha256") != _sha256(target):
            return None
        return FineTuneResult(
            checkpoint=target,
            source=Path(record["source"]),
            monitor=record.get("monitor"),
            epochs=int(record.get("epochs", 0)),
            val=dict(record.get("val") or {}),
            test=dict(record.get("test") or {}),
            skipped=True,
        )

    def run(
        self,
        steps: Sequence[str] = STEPS,
        workers: int = 1,
        min_success_rate: float = 0.9,
        max_epochs: int | None = None,
        accelerator: str | None = None,
        devices: int | str | None = None,
        force: bool = False,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Run the given steps in order; returns each step's result by name."""
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise FineTuneError(f"unknown steps {unknown}; known: {list(STEPS)}")
        out: dict[str, Any] = {}
        if "prepare" in steps:
            out["prepare"] = self.prepare_labeled_windows()
        if "build" in steps:
            out["build"] = self.build_dataset(workers, min_success_rate, progress)
        if "train" in steps:
            out["train"] = self.fine_tune(max_epochs, accelerator, devices, force, progress)
        return out


def _make_cli(config: dict[str, Any]) -> Any:
    """Parse and instantiate the run through LightningCLI (typed, validated), without running."""
    from lightning.pytorch.cli import LightningCLI

    from helios.runner.finetune.labeled_data import LabeledWindowDataModule
    from helios.runner.predict.model import RunnerModel

    return LightningCLI(
        model_class=RunnerModel,
        datamodule_class=LabeledWindowDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=config,
        run=False,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
