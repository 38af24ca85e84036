"""A runner project folder: load it, check all of it, and report every problem at once.

    checkpoint.ckpt  model.yaml  dataset.json  olmoearth_run.yaml  prediction/*.geojson

`load_project` parses olmoearth_run.yaml (shared/FORMATS.md §4; upstream class paths load
unchanged), dataset.json (docs/runner.md) and the prediction requests, builds every
strategy, and checks that each request has imagery. model.yaml and checkpoint.ckpt are only
checked for existence here; the inference step reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helios.runner.core.geometry import RequestFeature, load_requests
from helios.runner.finetune.annotations import ANNOTATIONS_GEOJSON, TASKS_GEOJSON
from helios.runner.finetune.config import WindowPrep, parse_window_prep
from helios.runner.materialize.dataset_config import DatasetConfig, load_dataset_config, time_range
from helios.runner.partition.partitioners import Partitioner
from helios.runner.postprocess.postprocessors import Postprocessors
from helios.runner.predict.results import InferenceResultsConfig
from helios.runner.project.olmoearth_run import (
    RUN_YAML,
    parse_partitioners,
    parse_postprocessors,
    parse_results_config,
    read_run_yaml,
)

DATASET_JSON = "dataset.json"
MODEL_YAML = "model.yaml"
CHECKPOINT = "checkpoint.ckpt"
PREDICTION_DIR = "prediction"


class ProjectError(ValueError):
    """A project that cannot run; `problems` lists everything found wrong."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in project {path}:\n{lines}")


@dataclass
class Project:
    """A loaded, validated runner project."""

    path: Path
    partitioner: Partitioner
    """Splits the requests into partitions (`partition_request_geometry`)."""
    window_preparer: Partitioner
    """Turns a partition into windows (`prepare_window_geometries`)."""
    postprocessors: Postprocessors
    inference_results_config: InferenceResultsConfig | None
    dataset_config: DatasetConfig
    requests: list[RequestFeature]
    window_prep: WindowPrep | None = None
    """The fine-tuning `window_prep` section, parsed (not used for prediction)."""
    raw_config: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint_path(self) -> Path:
        """The model checkpoint."""
        return self.path / CHECKPOINT

    @property
    def model_config_path(self) -> Path:
        """The model config."""
        return self.path / MODEL_YAML


def request_paths(path: Path) -> list[Path]:
    """The prediction request files of a project, sorted."""
    pdir = path / PREDICTION_DIR
    return sorted(pdir.glob("*.geojson")) if pdir.is_dir() else []


def load_project(
    path: str | Path,
    *,
    require_requests: bool = True,
    check_imagery: bool = True,
    require_window_prep: bool = False,
    require_checkpoint: bool = True,
) -> Project:
    """Load and validate a project folder.

    Args:
        path: The project folder.
        require_requests: Fail when prediction/ holds no request.
        check_imagery: Index the data sources and check each request overlaps imagery of
            every required layer in its time range.
        require_window_prep: Fail unless labeled windows can be prepared (fine-tuning): a
            complete `window_prep` section and both annotation files.
        require_checkpoint: Fail without checkpoint.ckpt (not before fine-tuning made it).

    Raises:
        ProjectError: listing every problem found (files, config, requests, imagery).

    """
    path = Path(path)
    if not path.is_dir():
        raise ProjectError(path, [f"{path} is not a directory"])
    problems: list[str] = []
    for name in (CHECKPOINT, MODEL_YAML, DATASET_JSON, RUN_YAML):
        if name == CHECKPOINT and not require_checkpoint:
            continue
        if not (path / name).is_file():
            problems.append(f"{name}: missing")
    raw = read_run_yaml(path / RUN_YAML, problems) if (path / RUN_YAML).is_file() else {}
    partitioner, preparer = parse_partitioners(raw, problems)
    postprocessors = parse_postprocessors(raw, problems)
    results_config = parse_results_config(raw.get("inference_results_config"), problems)
    window_prep, more = parse_window_prep(raw.get("window_prep"))
    problems.extend(more)
    if require_window_prep:
        problems.extend(_window_prep_problems(path, window_prep, bool(more)))
    dataset_config = None
    if (path / DATASET_JSON).is_file():
        dataset_config, more = load_dataset_config(path / DATASET_JSON)
        problems.extend(more)
    requests, more = load_requests(request_paths(path))
    problems.extend(f"{PREDICTION_DIR}/{p}" for p in more)
    if require_requests and not requests and not more:
        problems.append(f"{PREDICTION_DIR}/: no request GeoJSON (*.geojson) found")
    if check_imagery and dataset_config is not None and not problems:
        problems.extend(check_request_imagery(dataset_config, requests))
    if problems:
        raise ProjectError(path, problems)
    assert partitioner and preparer and postprocessors and dataset_config  # for mypy
    return Project(
        path=path,
        partitioner=partitioner,
        window_preparer=preparer,
        postprocessors=postprocessors,
        inference_results_config=results_config,
        dataset_config=dataset_config,
        requests=requests,
        window_prep=window_prep,
        raw_config=raw,
    )


def _window_prep_problems(path: Path, prep: WindowPrep | None, invalid: bool) -> list[str]:
    files = (TASKS_GEOJSON, ANNOTATIONS_GEOJSON)
    out = [f"{name}: missing" for name in files if not (path / name).is_file()]
    if prep is not None:
        out.extend(prep.check())
    elif not invalid:
        out.append(f"{RUN_YAML}: window_prep: missing (needed to prepare labeled windows)")
    return out


def check_request_imagery(config: DatasetConfig, requests: list[RequestFeature]) -> list[str]:
    """Problems where a request has no imagery of a required layer in space and time."""
    problems = []
    for layer in config.input_layers():
        src = layer.data_source
        assert src is not None
        try:
            scenes = src.source.scenes(config.base_dir, layer.bands)
        except (OSError, ValueError) as err:
            problems.append(f"{DATASET_JSON}: layers.{layer.name}: cannot index imagery: {err}")
            continue
        if not layer.required:
            continue
        for req in requests:
            t0, t1 = time_range(req.start_time, req.end_time, src)
            in_space = [s for s in scenes if s.intersects(req.geometry.bounds)]
            static = not layer.spec.is_multitemporal  # static layers ignore time
            if any(static or s.in_time(t0, t1) for s in in_space):
                continue
            if in_space:
                why = (
                    f"{len(in_space)} of {len(scenes)} scenes overlap it, none dated between "
                    f"{t0.date()} and {t1.date()}"
                )
            else:
                bounds = tuple(round(v, 4) for v in req.geometry.bounds)
                why = f"none of {len(scenes)} indexed scenes overlaps its geometry {bounds}"
            problems.append(
                f"{PREDICTION_DIR}/{req.source}: no imagery of layer {layer.name!r} "
                f"({src.source.describe()}): {why}"
            )
    return problems
