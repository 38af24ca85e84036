"""A runner project folder: load it, check all of it, and report every problem at once.

    checkpoint.ckpt  model.yaml  dataset.json  olmoearth_run.yaml  prediction/*.geojson

Folders are read as upstream writes them (shared/FORMATS.md §4, shared/upstream/): the run
config may be `olmoearth_run.yaml`, the older `esrun.yaml`, or a unified config
(`config_version`); the dataset config `dataset.json`, or rslearn's `config.json`; requests
`prediction/*.geojson` or `prediction_request_geometry.geojson` at the root.

Two kinds of findings: *problems* (a config that is wrong: a bad key, an unknown class, an
unreadable file) always fail loading; *missing* pieces (a checkpoint not trained yet, imagery
not mounted, no requests in a fine-tuning-only folder, a section a step needs) are recorded
with the steps that need them, and fail loading only when the caller needs one of those
steps. `helios run validate` prints both and fails only on problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helios.runner.core.geometry import RequestFeature, load_requests
from helios.runner.finetune.annotations import ANNOTATIONS_GEOJSON, TASKS_GEOJSON
from helios.runner.finetune.config import WindowPrep, parse_window_prep
from helios.runner.materialize.dataset_config import DatasetConfig, load_dataset_config, time_range
from helios.runner.materialize.matching import overlaps_time
from helios.runner.materialize.sources import IndexedSource, SourceContext
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
DATASET_CONFIG_NAMES = (DATASET_JSON, "config.json")
"""The dataset config: Helios and olmoearth_run folders use dataset.json, rslearn config.json."""
RUN_CONFIG_NAMES = (RUN_YAML, "esrun.yaml")
"""The run config: olmoearth_run.yaml, or esrun.yaml (olmoearth_run's earlier name)."""
MODEL_YAML = "model.yaml"
CHECKPOINT = "checkpoint.ckpt"
PREDICTION_DIR = "prediction"
ROOT_REQUEST = "prediction_request_geometry.geojson"


class ProjectError(ValueError):
    """A project that cannot run; `problems` lists everything found wrong."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in project {path}:\n{lines}")


@dataclass(frozen=True)
class Missing:
    """Something a project lacks, and the steps that cannot run without it."""

    what: str
    steps: tuple[str, ...]
    fatal: bool = True
    """False for what a step reports per item itself (e.g. a layer whose source is unavailable:
    the build fails those windows with the reason)."""

    def __str__(self) -> str:
        return f"{self.what} (needed by: {', '.join(self.steps)})"


@dataclass
class Project:
    """A loaded, validated runner project."""

    path: Path
    partitioner: Partitioner | None
    """Splits the requests into partitions (`partition_request_geometry`)."""
    window_preparer: Partitioner | None
    """Turns a partition into windows (`prepare_window_geometries`)."""
    postprocessors: Postprocessors | None
    inference_results_config: InferenceResultsConfig | None
    dataset_config: DatasetConfig
    requests: list[RequestFeature]
    window_prep: WindowPrep | None = None
    """The fine-tuning `window_prep` section, parsed (not used for prediction)."""
    raw_config: dict[str, Any] = field(default_factory=dict)
    missing: list[Missing] = field(default_factory=list)
    """What the folder lacks, with the steps that need it (see the module docstring)."""

    @property
    def checkpoint_path(self) -> Path:
        """The model checkpoint."""
        return self.path / CHECKPOINT

    @property
    def model_config_path(self) -> Path:
        """The model config."""
        return self.path / MODEL_YAML

    def require(self, *steps: str) -> None:
        """Fail, listing what is missing, unless every piece `steps` need is there."""
        lacking = [str(m) for m in self.missing if set(m.steps) & set(steps)]
        if lacking:
            raise ProjectError(self.path, lacking)


def request_paths(path: Path) -> list[Path]:
    """The prediction request files of a project, sorted (prediction/ first, else the root's)."""
    pdir = path / PREDICTION_DIR
    found = sorted(pdir.glob("*.geojson")) if pdir.is_dir() else []
    root = path / ROOT_REQUEST
    return found or ([root] if root.is_file() else [])


def _first(path: Path, names: tuple[str, ...]) -> Path | None:
    return next((path / n for n in names if (path / n).is_file()), None)


def _missing_files(
    path: Path, window_prep: WindowPrep | None, raw: dict[str, Any]
) -> list[Missing]:
    out = []
    if not (path / CHECKPOINT).is_file():
        out.append(
            Missing(f"{CHECKPOINT}: not in the folder (fine-tuning writes it)", ("inference",))
        )
    if not (path / MODEL_YAML).is_file():
        out.append(Missing(f"{MODEL_YAML}: not in the folder", ("inference", "finetune")))
    if not request_paths(path):
        out.append(
            Missing(
                f"{PREDICTION_DIR}/*.geojson or {ROOT_REQUEST}: no prediction request",
                ("partition",),
            )
        )
    if raw.get("partition_strategies") is None:
        out.append(Missing(f"{RUN_YAML}: partition_strategies", ("partition",)))
    if raw.get("postprocessing_strategies") is None:
        out.append(Missing(f"{RUN_YAML}: postprocessing_strategies", ("postprocess",)))
    if window_prep is None:
        out.append(Missing(f"{RUN_YAML}: window_prep", ("finetune",)))
    else:
        out.extend(Missing(p, ("finetune",)) for p in window_prep.check())
    for name in (TASKS_GEOJSON, ANNOTATIONS_GEOJSON):
        if not (path / name).is_file():
            out.append(Missing(f"{name}: no annotation export", ("finetune",)))
    return out


def _missing_imagery(
    config: DatasetConfig, requests: list[RequestFeature], check: bool
) -> list[Missing]:
    """Layers whose source Helios cannot read (not fatal) and, if `check`, absent imagery."""
    name = config.path.name
    out = [
        Missing(f"{name}: layers.{layer}: {why}", ("build",), fatal=False)
        for layer, why in config.unavailable.items()
    ]
    if check:
        out.extend(Missing(m, ("build",)) for m in check_request_imagery(config, requests))
    return out


def _needed_steps(requests: bool, imagery: bool, checkpoint: bool, window_prep: bool) -> set[str]:
    needed = set()
    if requests:
        needed |= {"partition", "postprocess"}
    if imagery:
        needed.add("build")
    if checkpoint:
        needed.add("inference")
    if window_prep:
        needed.add("finetune")
    return needed


def load_project(
    path: str | Path,
    *,
    require_requests: bool = True,
    check_imagery: bool = True,
    require_window_prep: bool = False,
    require_checkpoint: bool = True,
    strict: bool = True,
) -> Project:
    """Load and validate a project folder.

    Args:
        path: The project folder.
        require_requests: Prediction will run: requests and the partition and
            postprocessing strategies must be there.
        check_imagery: Check each request overlaps imagery of every required layer whose
            source has an index on disk (never the network); imagery that is not there is
            then a problem.
        require_window_prep: Fine-tuning will run: a complete `window_prep` section, the
            annotation export and model.yaml must be there.
        require_checkpoint: Inference will run: checkpoint.ckpt and model.yaml must be there.
        strict: False records missing pieces in `Project.missing` without failing
            (`helios run validate`).

    Raises:
        ProjectError: listing every problem found (files, config, requests, imagery).

    """
    path = Path(path)
    if not path.is_dir():
        raise ProjectError(path, [f"{path} is not a directory"])
    problems: list[str] = []
    run_path = _first(path, RUN_CONFIG_NAMES)
    raw = read_run_yaml(run_path, problems) if run_path else {}
    if run_path is None:
        problems.append(f"{RUN_YAML}: missing")
    partitioner, preparer = parse_partitioners(raw, problems)
    postprocessors = parse_postprocessors(raw, problems)
    results_config = parse_results_config(raw.get("inference_results_config"), problems)
    window_prep, more = parse_window_prep(raw.get("window_prep"))
    problems.extend(more)
    dataset_config = None
    config_path = _first(path, DATASET_CONFIG_NAMES)
    if config_path is None:
        problems.append(f"{DATASET_JSON}: missing")
    else:
        dataset_config, more = load_dataset_config(config_path)
        problems.extend(more)
    requests, more = load_requests(request_paths(path))
    problems.extend(f"{PREDICTION_DIR}/{p}" for p in more)
    missing = _missing_files(path, window_prep, raw)
    if dataset_config is not None:
        missing.extend(_missing_imagery(dataset_config, requests, check_imagery and not problems))
    if strict:
        needed = _needed_steps(require_requests, check_imagery, require_checkpoint,
                               require_window_prep)  # fmt: skip
        problems.extend(str(m) for m in missing if m.fatal and set(m.steps) & needed)
    if problems:
        raise ProjectError(path, problems)
    assert dataset_config is not None  # for mypy
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
        missing=missing,
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
    """Problems where a request has no imagery of a required layer in space and time.

    Only sources with an index on disk are checked (LocalFiles, StacItems): validation never
    uses the network. Layers whose source Helios cannot read are reported by `load_project`.
    """
    problems: list[str] = []
    for layer in config.input_layers():
        src = layer.data_source
        assert src is not None
        if not isinstance(src.source, IndexedSource):
            continue
        context = SourceContext(config.base_dir, None, layer.bands, layer.name)
        found = src.source.check(context)
        if found:
            problems.extend(f"{DATASET_JSON}: layers.{layer.name}: {p}" for p in found)
            continue
        try:
            items = src.source.index(context)
        except (OSError, ValueError) as err:
            problems.append(f"{DATASET_JSON}: layers.{layer.name}: cannot index imagery: {err}")
            continue
        if not layer.required:
            continue
        static = layer.modality is not None and not layer.spec.is_multitemporal
        for req in requests:
            t0, t1 = time_range(req.start_time, req.end_time, src)
            in_space = [s for s in items if s.footprint.intersects(req.geometry)]
            if any(static or overlaps_time(s, (t0, t1)) for s in in_space):
                continue
            if in_space:
                why = (
                    f"{len(in_space)} of {len(items)} items overlap it, none dated between "
                    f"{t0.date()} and {t1.date()}"
                )
            else:
                bounds = tuple(round(v, 4) for v in req.geometry.bounds)
                why = f"none of {len(items)} indexed items overlaps its geometry {bounds}"
            problems.append(
                f"{PREDICTION_DIR}/{req.source}: no imagery of layer {layer.name!r} "
                f"({src.source.describe()}): {why}"
            )
    return problems
