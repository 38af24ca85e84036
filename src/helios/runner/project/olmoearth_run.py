"""olmoearth_run.yaml, read as the upstream runner reads it, into Helios's typed strategies.

Top-level keys (shared/FORMATS.md §4): `partition_strategies`, `postprocessing_strategies`,
`inference_results_config` and `window_prep` (parsed by `helios.runner.finetune.config`).
Upstream class paths (`olmoearth_run.runner.tools.…`, `olmoearth_run.tools.…`,
`rslearn.…`) resolve to the Helios classes of the same name listed here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser

from helios.runner.core.classpath import StrategyError, resolve_strategy
from helios.runner.core.geometry import Projection
from helios.runner.partition.partitioners import BUILTIN_PARTITIONERS, Partitioner
from helios.runner.postprocess.postprocessors import (
    BUILTIN_POSTPROCESSORS,
    STAGES,
    LinearValueTransform,
    Postprocessor,
    Postprocessors,
    ValueTransform,
    supports,
)
from helios.runner.predict.results import InferenceResultsConfig
from helios.runner.project.unified_config import is_unified, to_run_config

RUN_YAML = "olmoearth_run.yaml"
TOP_LEVEL_KEYS = (
    "partition_strategies",
    "postprocessing_strategies",
    "inference_results_config",
    "window_prep",
)
PARTITION_ROLES = ("partition_request_geometry", "prepare_window_geometries")
PARTITION_BUILTINS: tuple[type, ...] = (*BUILTIN_PARTITIONERS, Projection)
"""Classes partitioner configs may name by upstream path or bare name."""
POSTPROCESS_BUILTINS: tuple[type, ...] = (
    *BUILTIN_POSTPROCESSORS,
    LinearValueTransform,
    ValueTransform,
)
"""Classes postprocessor configs may name by upstream path or bare name."""


def _esrun_to_olmoearth_run(value: Any) -> Any:
    """Class paths of the older `esrun` package name -> `olmoearth_run` (same classes)."""
    if isinstance(value, dict):
        out = {k: _esrun_to_olmoearth_run(v) for k, v in value.items()}
        path = out.get("class_path")
        if isinstance(path, str) and path.startswith("esrun."):
            out["class_path"] = "olmoearth_run." + path[len("esrun.") :]
        return out
    if isinstance(value, list):
        return [_esrun_to_olmoearth_run(v) for v in value]
    return value


def read_run_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    """The olmoearth_run.yaml mapping (a unified config is translated, esrun paths mapped).

    Problems (bad YAML, unknown keys) go to `problems`.
    """
    name = path.name
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        problems.append(f"{name}: not valid YAML: {err}")
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{name}: expected a mapping at the top level")
        return {}
    if is_unified(raw):
        return to_run_config(raw, problems)
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        problems.append(f"{name}: unknown top-level keys {unknown}; known: {TOP_LEVEL_KEYS}")
    return dict(_esrun_to_olmoearth_run(raw))


def _section(raw: dict[str, Any], key: str, roles: tuple[str, ...], problems: list[str]) -> dict:
    section = raw.get(key)
    if section is None:
        return {}  # absent: the steps that need it report it (window-prep-only projects)
    if not isinstance(section, dict):
        problems.append(f"{RUN_YAML}: {key}: expected a mapping with {', '.join(roles)}")
        return {}
    unknown = sorted(set(section) - set(roles))
    if unknown:
        problems.append(f"{RUN_YAML}: {key}: unknown keys {unknown}; known: {list(roles)}")
    for role in roles:
        if section.get(role) is None:
            problems.append(f"{RUN_YAML}: {key}.{role}: missing")
    return section


def parse_partitioners(
    raw: dict[str, Any], problems: list[str]
) -> tuple[Partitioner | None, Partitioner | None]:
    """The request and window partitioners of `partition_strategies` (None where invalid)."""
    section = _section(raw, "partition_strategies", PARTITION_ROLES, problems)
    built: list[Partitioner | None] = []
    for role in PARTITION_ROLES:
        where = f"{RUN_YAML}: partition_strategies.{role}"
        obj = None
        if section.get(role) is not None:
            try:
                obj = resolve_strategy(section[role], Partitioner, where, PARTITION_BUILTINS)
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


def parse_postprocessors(raw: dict[str, Any], problems: list[str]) -> Postprocessors | None:
    """The three `postprocessing_strategies` (None unless all three are valid)."""
    section = _section(raw, "postprocessing_strategies", STAGES, problems)
    built: dict[str, Postprocessor] = {}
    for stage in STAGES:
        where = f"{RUN_YAML}: postprocessing_strategies.{stage}"
        if section.get(stage) is None:
            continue
        try:
            obj = resolve_strategy(section[stage], Postprocessor, where, POSTPROCESS_BUILTINS)
        except StrategyError as err:
            problems.append(str(err))
            continue
        if not supports(obj, stage):
            problems.append(f"{where}: {type(obj).__name__} does not implement {stage}")
        built[stage] = obj
    return Postprocessors(**built) if len(built) == len(STAGES) else None


def parse_results_config(raw: Any, problems: list[str]) -> InferenceResultsConfig | None:
    """`inference_results_config`, checked against its dataclass by jsonargparse."""
    if raw is None:
        return None
    if isinstance(raw, dict) and isinstance(raw.get("data_type"), str):
        raw = {**raw, "data_type": raw["data_type"].upper()}  # upstream upper-cases it too
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
