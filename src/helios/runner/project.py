"""A runner project folder: load it, check all of it, and report every problem at once.

    checkpoint.ckpt  model.yaml  dataset.json  olmoearth_run.yaml  prediction/*.geojson

`load_project` parses olmoearth_run.yaml (shared/FORMATS.md §4; upstream class paths load
unchanged), dataset.json (docs/runner.md) and the prediction requests, builds every
strategy, and checks that each request has imagery. model.yaml and checkpoint.ckpt are only
checked for existence here; the inference step reads them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ArgumentParser

from helios.runner.dataset_config import DatasetConfig, load_dataset_config, time_range
from helios.runner.geometry import RequestFeature, load_requests
from helios.runner.partitioners import Partitioner
from helios.runner.postprocessors import STAGES, Postprocessor, supports
from helios.runner.strategies import StrategyError, resolve_strategy
from helios.runner.window_prep.annotations import ANNOTATIONS_GEOJSON, TASKS_GEOJSON
from helios.runner.window_prep.config import WindowPrep, parse_window_prep

RUN_YAML = "olmoearth_run.yaml"
DATASET_JSON = "dataset.json"
MODEL_YAML = "model.yaml"
CHECKPOINT = "checkpoint.ckpt"
PREDICTION_DIR = "prediction"
TOP_LEVEL_KEYS = (
    "partition_strategies",
    "postprocessing_strategies",
    "inference_results_config",
    "window_prep",
)
PARTITION_ROLES = ("partition_request_geometry", "prepare_window_geometries")


class ProjectError(ValueError):
    """A project that cannot run; `problems` lists everything found wrong."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in project {path}:\n{lines}")


@dataclass
class AllowedValue:
    """One class of a classification output."""

    value: int
    label: str
    color: list[int] | None = None
    """[r, g, b] (0-255)."""


@dataclass
class ClassificationField:
    """A classification band of the results."""

    property_name: str
    allowed_values: list[AllowedValue]
    band_index: int = 1


@dataclass
class RegressionField:
    """A regression band of the results."""

    property_name: str
    band_index: int = 1
    min_value: float | None = None
    max_value: float | None = None
    colormap_name: str | None = None


@dataclass
class InferenceResultsConfig:
    """`inference_results_config` of olmoearth_run.yaml: what the results hold."""

    data_type: Literal["RASTER", "VECTOR"] = "RASTER"
    classification_fields: list[ClassificationField] | None = None
    regression_fields: list[RegressionField] | None = None
    detection_objects: Any = None

    def class_names(self, band_index: int = 1) -> dict[int, str]:
        """Class value -> label of a classification band (empty if none is configured)."""
        for f in self.classification_fields or []:
            if f.band_index == band_index:
                return {v.value: v.label for v in f.allowed_values}
        return {}

    def colormap(self, band_index: int = 1) -> dict[int, tuple[int, int, int, int]]:
        """Class value -> RGBA of a classification band (classes without a colour omitted)."""
        for f in self.classification_fields or []:
            if f.band_index == band_index:
                return {
                    v.value: (v.color[0], v.color[1], v.color[2], 255)
                    for v in f.allowed_values
                    if v.color
                }
        return {}


@dataclass
class Postprocessors:
    """The three postprocessing strategies."""

    process_window: Postprocessor
    process_partition: Postprocessor
    process_dataset: Postprocessor


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
    raw = _read_yaml(path / RUN_YAML, problems) if (path / RUN_YAML).is_file() else {}
    partitioner, preparer = _partitioners(raw, problems)
    postprocessors = _postprocessors(raw, problems)
    results_config = _results_config(raw.get("inference_results_config"), problems)
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


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        problems.append(f"{RUN_YAML}: not valid YAML: {err}")
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{RUN_YAML}: expected a mapping at the top level")
        return {}
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        problems.append(f"{RUN_YAML}: unknown top-level keys {unknown}; known: {TOP_LEVEL_KEYS}")
    return raw


def _section(raw: dict[str, Any], key: str, roles: tuple[str, ...], problems: list[str]) -> dict:
    section = raw.get(key)
    if not isinstance(section, dict):
        problems.append(f"{RUN_YAML}: {key}: missing; it needs {', '.join(roles)}")
        return {}
    unknown = sorted(set(section) - set(roles))
    if unknown:
        problems.append(f"{RUN_YAML}: {key}: unknown keys {unknown}; known: {list(roles)}")
    for role in roles:
        if section.get(role) is None:
            problems.append(f"{RUN_YAML}: {key}.{role}: missing")
    return section


def _partitioners(
    raw: dict[str, Any], problems: list[str]
) -> tuple[Partitioner | None, Partitioner | None]:
    section = _section(raw, "partition_strategies", PARTITION_ROLES, problems)
    built: list[Partitioner | None] = []
    for role in PARTITION_ROLES:
        where = f"{RUN_YAML}: partition_strategies.{role}"
        obj = None
        if section.get(role) is not None:
            try:
                obj = resolve_strategy(section[role], Partitioner, where)
            except StrategyError as err:
                problems.append(str(err))
        if obj is not None and not _implements(obj, role):
            problems.append(f"{where}: {type(obj).__name__} does not implement {role}")
        elif obj is not None:
            problems.extend(f"{where}: {p}" for p in obj.check(role))
        built.append(obj)
    return built[0], built[1]


def _implements(obj: Partitioner, role: str) -> bool:
    if role == "partition_request_geometry" and not type(obj).supports_request_partitioning:
        return False
    return getattr(type(obj), role) is not getattr(Partitioner, role)


def _postprocessors(raw: dict[str, Any], problems: list[str]) -> Postprocessors | None:
    section = _section(raw, "postprocessing_strategies", STAGES, problems)
    built: dict[str, Postprocessor] = {}
    for stage in STAGES:
        where = f"{RUN_YAML}: postprocessing_strategies.{stage}"
        if section.get(stage) is None:
            continue
        try:
            obj = resolve_strategy(section[stage], Postprocessor, where)
        except StrategyError as err:
            problems.append(str(err))
            continue
        if not supports(obj, stage):
            problems.append(f"{where}: {type(obj).__name__} does not implement {stage}")
        built[stage] = obj
    return Postprocessors(**built) if len(built) == len(STAGES) else None


def _results_config(raw: Any, problems: list[str]) -> InferenceResultsConfig | None:
    if raw is None:
        return None
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", type=InferenceResultsConfig)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = parser.instantiate(parser.parse_object({"config": raw}))
    except Exception as err:  # jsonargparse raises several types; all are config errors
        msg = " ".join(str(err).split())
        problems.append(f"{RUN_YAML}: inference_results_config: {msg}")
        return None
    result: InferenceResultsConfig = cfg.config
    return result


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
