"""Fine-tuning a runner project: Studio export -> labeled windows -> imagery -> checkpoint.ckpt.

`FineTuneRunner(project, scratch)` runs three idempotent steps:

1. `prepare_labeled_windows()`: the annotation export becomes labeled windows with splits
   (`scratch/labeled/partitions/<group>/`, see `helios.runner.finetune.prepare`);
2. `build_dataset()`: their input imagery is materialized like prediction windows;
3. `fine_tune()`: a LightningCLI run of the project's model.yaml
   (`helios.runner.finetune.train`), whose chosen checkpoint becomes the project's
   checkpoint.ckpt, which the prediction runner loads with `RunnerModel.load_for_inference`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helios.runner.core.fsutil import read_json, text_hash
from helios.runner.core.windows import PARTITION_JSON, list_windows, partition_dir
from helios.runner.finetune import PreparedWindows, labeled_root, prepare_labeled_windows
from helios.runner.finetune.prepare import SUMMARY_JSON
from helios.runner.finetune.train import (
    FineTuneError,
    FineTuneResult,
    TrainingJob,
    fine_tune,
    read_model_yaml,
    resolve_encoder,
)
from helios.runner.materialize.builder import BuildResult, build_dataset
from helios.runner.project.load import CHECKPOINT, MODEL_YAML, Project, load_project

logger = logging.getLogger(__name__)
STEPS = ("prepare", "build", "train")

__all__ = ["STEPS", "FineTuneError", "FineTuneResult", "FineTuneRunner"]


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
        return self.scratch / "finetune"

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

    def split_counts(self) -> dict[str, int]:
        """Labeled windows per split, from the prepare step's summary."""
        path = partition_dir(labeled_root(self.scratch), self.group_name) / SUMMARY_JSON
        if not path.exists():
            raise FineTuneError(f"{path} is missing: run the prepare step first")
        by_split = read_json(path).get("by_split", {})
        return {s: int(by_split.get(s, 0)) for s in ("train", "val", "test")}

    def training_job(self) -> TrainingJob:
        """What the training step reads: model.yaml, encoder, windows, splits, target."""
        counts = self.split_counts()  # fails first when nothing was prepared
        model_yaml = self.project_path / MODEL_YAML
        init_args = read_model_yaml(model_yaml)["model"].get("init_args") or {}
        encoder = resolve_encoder(
            self.encoder_path or init_args.get("encoder_path"), self.project_path, model_yaml
        )
        windows = list_windows(labeled_root(self.scratch), self.group_name)
        labels = [w.to_metadata() for w in windows]
        prep = self.project.window_prep
        return TrainingJob(
            model_yaml=model_yaml,
            encoder=encoder,
            scratch=self.scratch,
            project=self.project_path,
            group_name=self.group_name,
            split_property=prep.split_property if prep else "split",
            split_counts=counts,
            inputs_fingerprint=text_hash(labels, self.project.dataset_config.fingerprint()),
            target=self.project_path / CHECKPOINT,
        )

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
        given = {"max_epochs": max_epochs, "accelerator": accelerator, "devices": devices}
        overrides = {k: v for k, v in given.items() if v is not None}
        return fine_tune(self.training_job(), overrides, force, progress)

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
