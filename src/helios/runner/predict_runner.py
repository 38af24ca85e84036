"""`PredictRunner`: every prediction step of a project, in order, resumable.

    partition -> build -> inference -> postprocess -> combine

Each step skips finished work, so `run()` can be killed anywhere and re-run with the same
files as the result. Partitions are the unit of parallel work: `run(jobs=N)` predicts and
postprocesses N partitions at a time in a local process pool; beyond one machine, hand
groups of partitions to separate jobs (`helios run predict PROJECT --partition-ids ...`, e.g.
through `helios launch beaker`) sharing one scratch directory, then run
`--steps combine` once (docs/runner.md, "helios run predict").
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from helios.runner.core.windows import list_partitions
from helios.runner.materialize.builder import BuildResult, build_dataset
from helios.runner.partition.step import DEFAULT_MAX_WINDOWS, partition
from helios.runner.postprocess.postprocessors import Postprocessors
from helios.runner.postprocess.steps import combine, postprocess_partition
from helios.runner.predict.inference import InferenceResult, run_inference
from helios.runner.project.load import Project, load_project

logger = logging.getLogger(__name__)
Step = Literal["partition", "build", "inference", "postprocess", "combine"]
STEPS: tuple[Step, ...] = ("partition", "build", "inference", "postprocess", "combine")


@dataclass
class InferenceOptions:
    """How the inference step runs (see `helios.runner.predict.inference.run_inference`)."""

    batch_size: int = 8
    """Crops per batch."""
    device: str = "auto"
    """Lightning accelerator: auto, cpu, gpu, cuda, mps."""
    devices: int = 1
    """Devices per process; more than one runs DDP."""
    crop_size: int | None = None
    """Crop side in 10 m pixels (default: the largest window's, at most 32 patches)."""
    overlap: int | None = None
    """Overlap of neighbouring crops in pixels (default: a quarter of the crop)."""
    probabilities: bool = False
    """Also write class probabilities (segmentation)."""
    num_workers: int = 0
    """DataLoader workers reading window inputs."""
    precision: str = "32-true"
    """Lightning precision, e.g. bf16-mixed on GPUs."""


@dataclass
class PredictReport:
    """What `PredictRunner.run` did: per-step seconds and the results."""

    partition_ids: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    build: BuildResult | None = None
    inference: list[InferenceResult] = field(default_factory=list)
    partition_results: dict[str, list[Path]] = field(default_factory=dict)
    results: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the CLI."""
        lines = [f"{len(self.partition_ids)} partitions"]
        if self.build is not None:
            lines.append(self.build.summary())
        if self.inference:
            done = sum(r.predicted for r in self.inference)
            skipped = sum(r.already_done for r in self.inference)
            lines.append(f"inference: {done} windows predicted, {skipped} already done")
        if self.partition_results:
            n = sum(len(v) for v in self.partition_results.values())
            lines.append(f"postprocess: {n} partition results")
        times = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        lines.append(f"time: {times}")
        lines.extend(str(p) for p in self.results)
        return "\n".join(lines)


class PredictRunner:
    """Run a project's prediction steps against a scratch directory."""

    def __init__(
        self,
        project_path: str | Path,
        scratch_path: str | Path | None = None,
        *,
        inference: InferenceOptions | None = None,
        workers: int = 1,
        min_success_rate: float = 0.9,
        progress: bool = True,
        max_windows: int | None = DEFAULT_MAX_WINDOWS,
    ) -> None:
        """Create the runner.

        Args:
            project_path: The project folder.
            scratch_path: Working directory (default: `<project>/scratch`).
            inference: Inference settings.
            workers: Processes materializing windows (build).
            min_success_rate: Build fails below this fraction of windows built.
            progress: Show progress bars.
            max_windows: Partitioning refuses requests estimated to make more windows
                (None: no limit).

        """
        self.project_path = Path(project_path)
        self.max_windows = max_windows
        self.scratch = Path(scratch_path) if scratch_path else self.project_path / "scratch"
        self.options = inference or InferenceOptions()
        self.workers = workers
        self.min_success_rate = min_success_rate
        self.progress = progress
        self.check_imagery = True
        """Index the imagery when loading the project (needed by partition and build)."""
        self._project: Project | None = None

    @property
    def project(self) -> Project:
        """The project, loaded and checked on first use."""
        if self._project is None:
            self._project = load_project(self.project_path, check_imagery=self.check_imagery)
        return self._project

    def partition_ids(self) -> list[str]:
        """Partition ids of the last `partition` step."""
        return list_partitions(self.scratch)

    def partition(self) -> list[str]:
        """Requests -> partitions -> windows (skips partitions already written)."""
        p = self.project
        p.require("partition")
        assert p.partitioner is not None and p.window_preparer is not None  # required above
        return partition(
            p.requests,
            p.partitioner,
            p.window_preparer,
            self.scratch,
            max_windows=self.max_windows,
            progress=self.progress,
        )

    def build_dataset(self, partition_ids: Sequence[str] | None = None) -> BuildResult:
        """Materialize the windows' inputs."""
        ids = self._ids(partition_ids)
        return build_dataset(
            self.project.dataset_config,
            self.scratch,
            ids,
            workers=self.workers,
            min_success_rate=self.min_success_rate,
            progress=self.progress,
        )

    def run_inference(self, partition_id: str) -> InferenceResult:
        """Predict the partition's windows that have no current outputs."""
        p = self.project
        return run_inference(
            self.scratch,
            partition_id,
            dataset_config=p.dataset_config,
            results_config=p.inference_results_config,
            checkpoint=p.checkpoint_path,
            model_yaml=p.model_config_path,
            **asdict(self.options),  # InferenceOptions mirrors run_inference's keywords
            progress=self.progress,
        )

    def postprocess(self, partition_id: str) -> list[Path]:
        """process_window on each window, then process_partition."""
        return postprocess_partition(self._postprocessors(), self.scratch, partition_id)

    def combine(self, partition_ids: Sequence[str] | None = None) -> list[Path]:
        """process_dataset over the partitions' results into `scratch/results/`."""
        return combine(self._postprocessors(), self.scratch, self._ids(partition_ids))

    def _postprocessors(self) -> Postprocessors:
        self.project.require("postprocess")
        assert self.project.postprocessors is not None  # required above
        return self.project.postprocessors

    def run(
        self,
        steps: Sequence[str] | None = None,
        partition_ids: Sequence[str] | None = None,
        workers: int | None = None,
        jobs: int = 1,
    ) -> PredictReport:
        """Run `steps` (default all, in order) over `partition_ids` (default all).

        Args:
            steps: A subset of STEPS; they always run in STEPS order.
            partition_ids: Only these partitions (build, inference, postprocess, combine).
            workers: Build processes (default: the runner's).
            jobs: Partitions predicted and postprocessed at once, in a process pool.

        """
        wanted = list(steps or STEPS)
        unknown = sorted(set(wanted) - set(STEPS))
        if unknown:
            raise ValueError(f"unknown steps {unknown}; steps are {list(STEPS)}")
        if workers is not None:
            self.workers = workers
        if self._project is None and not {"partition", "build"} & set(wanted):
            self.check_imagery = False  # e.g. `--steps combine` where imagery is not mounted
        report = PredictReport()
        if "partition" in wanted:
            with _timed(report, "partition"):
                all_ids = self.partition()
        else:
            all_ids = self.partition_ids()
        ids = self._ids(partition_ids, all_ids)
        report.partition_ids = ids
        if "build" in wanted:
            with _timed(report, "build"):
                report.build = self.build_dataset(ids)
        per_partition: list[str] = [s for s in ("inference", "postprocess") if s in wanted]
        if per_partition and jobs > 1 and len(ids) > 1:
            self._run_pool(ids, per_partition, jobs, report)
        else:
            for step in per_partition:
                with _timed(report, step):
                    for pid in ids:
                        if step == "inference":
                            report.inference.append(self.run_inference(pid))
                        else:
                            report.partition_results[pid] = self.postprocess(pid)
        if "combine" in wanted:
            with _timed(report, "combine"):
                report.results = self.combine(ids)
        return report

    def _ids(
        self, partition_ids: Sequence[str] | None, known: Sequence[str] | None = None
    ) -> list[str]:
        known = list(known) if known is not None else self.partition_ids()
        if partition_ids is None:
            return known
        missing = [p for p in partition_ids if p not in known]
        if missing:
            raise ValueError(f"unknown partition ids {missing}; known: {known}")
        return list(partition_ids)

    def _run_pool(self, ids: list[str], steps: list[str], jobs: int, report: PredictReport) -> None:
        """Inference and postprocessing of `jobs` partitions at a time (spawned processes)."""
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
        key = "+".join(steps)
        with _timed(report, key), ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = [
                pool.submit(
                    _partition_job,
                    str(self.project_path),
                    str(self.scratch),
                    pid,
                    steps,
                    self.options,
                    threads,
                )
                for pid in ids
            ]
            for pid, fut in zip(ids, futures):
                inference, results = fut.result()
                if inference is not None:
                    report.inference.append(inference)
                if results is not None:
                    report.partition_results[pid] = results


def _partition_job(
    project_path: str,
    scratch: str,
    partition_id: str,
    steps: list[str],
    options: InferenceOptions,
    threads: int,
) -> tuple[InferenceResult | None, list[Path] | None]:
    """One partition's inference and/or postprocessing, in a worker process."""
    import torch

    torch.set_num_threads(threads)
    runner = PredictRunner(project_path, scratch, inference=options, progress=False)
    runner.check_imagery = False
    inference = runner.run_inference(partition_id) if "inference" in steps else None
    results = runner.postprocess(partition_id) if "postprocess" in steps else None
    return inference, results


class _timed:
    """Add the seconds a block takes to `report.seconds[step]`."""

    def __init__(self, report: PredictReport, step: str) -> None:
        self.report, self.step = report, step

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.start
        self.report.seconds[self.step] = self.report.seconds.get(self.step, 0.0) + elapsed
