"""dataset.json: which imagery each window needs and where to find it (docs/runner.md).

The file keeps the shape of rslearn dataset configs: `{"layers": {name: layer}}`. A layer with
a `data_source` is an input and is materialized for every window; layers without one (model
outputs, labels) are accepted and ignored by the prediction runner.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

from helios.data.modalities import MODALITIES, ModalitySpec, get_modality, resolution_m
from helios.runner.core.classpath import StrategyError, resolve_strategy
from helios.runner.core.fsutil import read_json, text_hash
from helios.runner.materialize.sources import BUILTIN_SOURCES, DataSource

Compositing = Literal["FIRST_VALID", "MEAN", "MEDIAN"]
Resampling = Literal["nearest", "bilinear", "cubic", "average", "mode", "max", "min", "med"]
_DURATION = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(d|day|days|h|hour|hours|w|week|weeks)\s*$")
_LAYER_KEYS = {
    "type", "modality", "band_sets", "bands", "resolution", "resampling", "nodata",
    "required", "data_source", "format", "alias",
}  # fmt: skip
_SOURCE_KEYS = {"class_path", "init_args", "query_config", "time_offset", "duration", "sort_by"}
_QUERY_KEYS = {"max_matches", "period_duration", "scenes_per_mosaic", "compositing", "space_mode"}


def parse_duration(text: str | int | float) -> timedelta:
    """Parse "366d", "-180d", "12h", "2w" (a bare number is days)."""
    if isinstance(text, int | float):
        return timedelta(days=float(text))
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"bad duration {text!r}: use e.g. '30d', '-180d', '12h' or '2w'")
    value, unit = float(m.group(1)), m.group(2)[0]
    return {"d": timedelta(days=value), "h": timedelta(hours=value), "w": timedelta(weeks=value)}[
        unit
    ]


@dataclass(frozen=True)
class QueryConfig:
    """How scenes are picked and combined for each window."""

    max_matches: int | None = None
    """Timesteps: number of periods to keep (default all), or without periods the number of
    distinct acquisition dates to mosaic separately (default 1: one mosaic of the range)."""
    period_duration: str | None = None
    """Split the time range into periods ("monthly", or a duration such as "30d"), one
    mosaic per period; a period without imagery is a missing timestep."""
    scenes_per_mosaic: int = 4
    """At most this many scenes (best first by `sort_by`, then time) go into one mosaic."""
    compositing: Compositing = "FIRST_VALID"
    """How overlapping scenes combine: the first valid value, or the mean or median."""


@dataclass(frozen=True)
class SourceConfig:
    """A layer's data source plus its time and query settings."""

    source: DataSource
    query: QueryConfig
    time_offset: timedelta = timedelta(0)
    """Shift of the window's time range before matching scenes (e.g. "-180d")."""
    duration: timedelta | None = None
    """Length of the matched time range from its (shifted) start; default: the window's."""
    sort_by: str | None = None
    """Scene property ranking scenes, ascending (e.g. "eo:cloud_cover")."""


@dataclass(frozen=True)
class LayerConfig:
    """One layer of dataset.json."""

    name: str
    type: Literal["raster", "vector"] = "raster"
    modality: str | None = None
    bands: tuple[str, ...] = ()
    resolution: float | None = None
    """Metres per pixel of the materialized layer; default: the modality's grid."""
    resampling: Resampling = "nearest"
    nodata: float | None = None
    """Source nodata where the files declare none (default: the modality's)."""
    required: bool = True
    """A window without any imagery for a required layer fails to build."""
    data_source: SourceConfig | None = None

    @property
    def is_input(self) -> bool:
        """Whether the layer is materialized from a data source."""
        return self.data_source is not None

    @property
    def spec(self) -> ModalitySpec:
        """The layer's modality."""
        if self.modality is None:
            raise ValueError(f"layer {self.name!r} has no modality")
        return get_modality(self.modality)

    @property
    def pixel_size(self) -> float:
        """Metres per pixel of the materialized layer."""
        return self.resolution or resolution_m(self.spec.grid_factor)

    @property
    def source_nodata(self) -> float | None:
        """Nodata value of source files that declare none."""
        return self.nodata if self.nodata is not None else self.spec.nodata


@dataclass
class DatasetConfig:
    """Parsed dataset.json."""

    layers: dict[str, LayerConfig]
    path: Path
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """Relative source paths resolve against this directory."""
        return self.path.parent

    def input_layers(self) -> list[LayerConfig]:
        """Layers materialized for every window, in file order."""
        return [layer for layer in self.layers.values() if layer.is_input]

    def fingerprint(self) -> str:
        """A hash of the input layer definitions: a change invalidates built windows."""
        return text_hash({k: v for k, v in self.raw.get("layers", {}).items()})[:16]


def time_range(start: datetime, end: datetime, source: SourceConfig) -> tuple[datetime, datetime]:
    """The time range scenes are matched in for a window's [start, end)."""
    s = start + source.time_offset
    e = s + source.duration if source.duration is not None else end + source.time_offset
    return s, e


def periods(start: datetime, end: datetime, query: QueryConfig) -> list[tuple[datetime, datetime]]:
    """Split [start, end) into the query's periods (one period when it names none)."""
    if query.period_duration is None:
        return [(start, end)]
    out: list[tuple[datetime, datetime]] = []
    if query.period_duration == "monthly":
        cur = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        while cur < end:
            days = calendar.monthrange(cur.year, cur.month)[1]
            nxt = cur + timedelta(days=days)
            out.append((max(cur, start), min(nxt, end)))
            cur = nxt
    else:
        step = parse_duration(query.period_duration)
        cur = start
        while cur < end:
            out.append((cur, min(cur + step, end)))
            cur += step
    return out[: query.max_matches] if query.max_matches else out


def load_dataset_config(path: Path) -> tuple[DatasetConfig | None, list[str]]:
    """Read and check dataset.json; returns the config (None if unusable) and every problem."""
    try:
        raw = read_json(path)
    except (OSError, ValueError) as err:
        return None, [f"dataset.json: cannot read: {err}"]
    if not isinstance(raw, dict) or not isinstance(raw.get("layers"), dict):
        return None, ["dataset.json: expected an object with a 'layers' mapping"]
    problems: list[str] = []
    layers = {}
    for name, spec in raw["layers"].items():
        where = f"dataset.json: layers.{name}"
        layer = _parse_layer(name, spec, where, problems)
        if layer is not None:
            layers[name] = layer
    inputs = [la for la in layers.values() if la.is_input]
    if not inputs and not problems:
        problems.append("dataset.json: no layer has a data_source, so there is nothing to read")
    seen: dict[str, str] = {}
    for layer in inputs:
        if layer.modality in seen:
            problems.append(
                f"dataset.json: layers {seen[layer.modality]!r} and {layer.name!r} both give "
                f"modality {layer.modality!r}; one layer per modality"
            )
        seen[str(layer.modality)] = layer.name
    return DatasetConfig(layers, path, raw), problems


def _parse_layer(name: str, spec: Any, where: str, problems: list[str]) -> LayerConfig | None:
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected an object")
        return None
    n0 = len(problems)
    unknown = sorted(set(spec) - _LAYER_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}; known: {sorted(_LAYER_KEYS)}")
    kind = spec.get("type", "raster")
    if kind not in ("raster", "vector"):
        problems.append(f"{where}.type: must be 'raster' or 'vector', got {kind!r}")
    if spec.get("data_source") is None:
        return LayerConfig(name=name, type="vector" if kind == "vector" else "raster")
    if kind != "raster":
        problems.append(f"{where}: only raster layers can have a data_source")
    modality = spec.get("modality", name if name in MODALITIES else None)
    if modality is None:
        problems.append(f"{where}: set 'modality' to one of {sorted(MODALITIES)}")
        return None
    if modality not in MODALITIES:
        problems.append(f"{where}.modality: unknown {modality!r}; known: {sorted(MODALITIES)}")
        return None
    mspec = get_modality(modality)
    if not mspec.is_spatial:
        problems.append(f"{where}: {modality} is not a spatial modality; it cannot be read")
    bands = _bands(spec, mspec, where, problems)
    resampling = spec.get("resampling", "nearest")
    if resampling not in get_args(Resampling):
        problems.append(f"{where}.resampling: {resampling!r} not in {list(get_args(Resampling))}")
    resolution = spec.get("resolution")
    if resolution is not None and (not isinstance(resolution, int | float) or resolution <= 0):
        problems.append(f"{where}.resolution: must be a positive number of metres")
    source = _parse_source(spec["data_source"], f"{where}.data_source", problems)
    if len(problems) > n0 or source is None:
        return None
    return LayerConfig(
        name=name,
        modality=modality,
        bands=bands,
        resolution=float(resolution) if resolution else None,
        resampling=resampling,
        nodata=spec.get("nodata"),
        required=bool(spec.get("required", True)),
        data_source=source,
    )


def _bands(spec: dict, mspec: ModalitySpec, where: str, problems: list[str]) -> tuple[str, ...]:
    if "bands" in spec:
        bands = list(spec["bands"])
    elif "band_sets" in spec:
        bands = [b for bs in spec["band_sets"] for b in bs.get("bands", [])]
    else:
        return mspec.band_order
    unknown = [b for b in bands if b not in mspec.band_order]
    if unknown:
        problems.append(
            f"{where}: bands {unknown} are not {mspec.name} bands {list(mspec.band_order)}"
        )
    if not bands:
        problems.append(f"{where}: no bands listed")
    return tuple(bands)


def _parse_source(spec: Any, where: str, problems: list[str]) -> SourceConfig | None:
    if not isinstance(spec, dict) or "class_path" not in spec:
        problems.append(
            f"{where}: expected {{class_path, init_args, ...}} naming a Helios data source "
            "(LocalFiles or StacItems)"
        )
        return None
    unknown = sorted(set(spec) - _SOURCE_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}; known: {sorted(_SOURCE_KEYS)}")
    n0 = len(problems)
    try:
        source = resolve_strategy(
            {"class_path": spec["class_path"], "init_args": spec.get("init_args")},
            DataSource,
            where,
            BUILTIN_SOURCES,
        )
    except StrategyError as err:
        problems.append(str(err))
        source = None
    query = _parse_query(spec.get("query_config") or {}, f"{where}.query_config", problems)
    offset, duration = timedelta(0), None
    try:
        if spec.get("time_offset") is not None:
            offset = parse_duration(spec["time_offset"])
        if spec.get("duration") is not None:
            duration = parse_duration(spec["duration"])
            if duration <= timedelta(0):
                problems.append(f"{where}.duration: must be positive")
    except ValueError as err:
        problems.append(f"{where}: {err}")
    if len(problems) > n0 or source is None or query is None:
        return None
    return SourceConfig(source, query, offset, duration, spec.get("sort_by"))


def _parse_query(spec: Any, where: str, problems: list[str]) -> QueryConfig | None:
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected an object")
        return None
    unknown = sorted(set(spec) - _QUERY_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}; known: {sorted(_QUERY_KEYS)}")
    n0 = len(problems)
    if spec.get("space_mode", "MOSAIC") != "MOSAIC":
        problems.append(f"{where}.space_mode: only 'MOSAIC' is supported")
    max_matches = spec.get("max_matches")
    if max_matches is not None and (not isinstance(max_matches, int) or max_matches < 1):
        problems.append(f"{where}.max_matches: must be a positive integer")
    period = spec.get("period_duration")
    if period is not None and period != "monthly":
        try:
            if parse_duration(period) <= timedelta(0):
                problems.append(f"{where}.period_duration: must be positive")
        except ValueError as err:
            problems.append(f"{where}.period_duration: {err} or 'monthly'")
    per_mosaic = spec.get("scenes_per_mosaic", 4)
    if not isinstance(per_mosaic, int) or per_mosaic < 1:
        problems.append(f"{where}.scenes_per_mosaic: must be a positive integer")
    compositing = spec.get("compositing", "FIRST_VALID")
    if compositing not in get_args(Compositing):
        problems.append(f"{where}.compositing: {compositing!r} not in {get_args(Compositing)}")
    if len(problems) > n0:
        return None
    return QueryConfig(max_matches, period, per_mosaic, compositing)
