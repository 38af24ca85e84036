"""dataset.json: rslearn's dataset config, read as rslearn reads it (docs/runner.md).

`{"layers": {name: layer}}`; a layer with a `data_source` is an input and is materialized
for every window; layers without one (labels, model outputs) are accepted and not read. The
schema is rslearn's (0.0.27, the version olmoearth-runner pins, and 0.1): the dataclasses
below are that schema, checked by jsonargparse, so an unknown key or a wrong type is an
error naming the layer. Data sources take rslearn's two forms: `{class_path, init_args}`, or
the legacy `{name, <flat keys>}` whose flat keys become init args. Helios adds two optional
layer keys: `modality` (the Helios modality a layer feeds; otherwise inferred, see
`helios.runner.materialize.modalities`) and `required` (a window without imagery for it fails
to build; default true for layers that feed a Helios modality).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser

from helios.runner.core.fsutil import read_json, text_hash
from helios.runner.core.windows import UnsafeNameError, check_name
from helios.runner.materialize.modalities import infer_modality
from helios.runner.materialize.sources.base import DataSource
from helios.runner.materialize.sources.registry import resolve_source

DType = Literal["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32"]
SpaceMode = Literal["MOSAIC", "PER_PERIOD_MOSAIC", "CONTAINS", "INTERSECTS", "SINGLE_COMPOSITE"]
Resampling = Literal["nearest", "bilinear", "cubic", "cubic_spline"]
DEFAULT_PERIOD = timedelta(days=30)
"""Period of PER_PERIOD_MOSAIC when `period_duration` is not given (rslearn's default)."""
_UNIT = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(
    r"(\d+(?:\.\d+)?)\s*(weeks?|w|days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)"
)


def parse_duration(text: str) -> timedelta:
    """Parse a duration as rslearn does ("30d", "-180d", "2w", "12h", "30 days", "-7d 12h").

    rslearn (pytimeparse) silently turns what it cannot parse into "no offset"; Helios says so.

    Raises:
        ValueError: naming the text, for anything else ("1y", "P30D", "1 month", "30").

    """
    s = str(text).strip().lower()
    sign = -1 if s.startswith("-") else 1
    body = s.lstrip("+-").strip()
    parts = list(_PART.finditer(body))
    if not parts or _PART.sub("", body).strip(" ,") != "":
        raise ValueError(
            f"bad duration {text!r}: use e.g. '30d', '-180d', '12h', '2w' or '30 days' "
            "(years, months and ISO 8601 durations are not understood by rslearn either)"
        )
    seconds = sum(float(m.group(1)) * _UNIT[m.group(2)[0]] for m in parts)
    return timedelta(seconds=sign * seconds)


@dataclass
class QuerySchema:
    """`query_config` of a data source: how items are matched to a window (rslearn)."""

    space_mode: SpaceMode = "MOSAIC"
    """MOSAIC: groups that together cover the window; CONTAINS / INTERSECTS: one item per
    group; PER_PERIOD_MOSAIC: one mosaic per period; SINGLE_COMPOSITE: one group of all."""
    time_mode: Literal["WITHIN", "NEAREST", "BEFORE", "AFTER"] = "WITHIN"
    max_matches: int = 1
    """Item groups (timesteps) to keep at most."""
    min_matches: int = 0
    """Fewer groups than this: the window gets none (rslearn rejects it)."""
    period_duration: str | None = None
    """Split the time range into periods of this length, ending at the range's end."""
    mosaic_compositing_overlaps: int = 1
    per_period_mosaic_reverse_time_order: bool = True
    """Newest period first (rslearn's default), else oldest first."""


@dataclass
class SourceSchema:
    """A layer's `data_source` (after the legacy `name` form is converted)."""

    source_class: str
    """`class_path` (renamed while parsing: jsonargparse reserves that key)."""
    source_args: dict[str, Any] = field(default_factory=dict)
    """`init_args`."""
    query_config: QuerySchema = field(default_factory=QuerySchema)
    time_offset: str | None = None
    duration: str | None = None
    ingest: bool = True
    """rslearn: download whole items first. Helios always reads only the window's pixels."""


@dataclass
class BandSetSchema:
    """One band set of a raster layer: bands stored together at one resolution."""

    dtype: DType
    bands: list[str] | None = None
    num_bands: int | None = None
    format: dict[str, Any] | None = None
    zoom_offset: int = 0
    """Resolution relative to the window: -1 is half (20 m for 10 m windows)."""
    remap: dict[str, Any] | None = None
    class_names: list[list[str]] | None = None
    nodata_vals: list[float] | None = None
    """rslearn 0.0.27: per-band nodata (all equal); 0 when absent."""
    nodata_value: float | None = None
    """rslearn 0.1: the band set's nodata."""
    spatial_size: list[int] | None = None


@dataclass
class LayerSchema:
    """One layer of dataset.json (rslearn's keys, plus Helios's `modality` and `required`)."""

    type: Literal["raster", "vector"]
    data_source: dict[str, Any] | None = None
    """Checked against `SourceSchema` on its own (so its problems are listed with the rest)."""
    alias: str | None = None
    band_sets: list[dict[str, Any]] = field(default_factory=list)
    """Each checked against `BandSetSchema` on its own."""
    resampling_method: Resampling = "bilinear"
    compositing_method: str | dict[str, Any] = "FIRST_VALID"
    vector_format: dict[str, Any] | None = None
    class_property_name: str | None = None
    class_names: list[str] | None = None
    modality: str | None = None
    required: bool | None = None


@dataclass(frozen=True)
class QueryConfig:
    """How items are matched to a window (parsed `query_config`)."""

    space_mode: SpaceMode = "MOSAIC"
    max_matches: int = 1
    min_matches: int = 0
    period_duration: timedelta | None = None
    time_mode: str = "WITHIN"
    mosaic_compositing_overlaps: int = 1
    per_period_mosaic_reverse_time_order: bool = True

    @property
    def period(self) -> timedelta | None:
        """The period that splits the range (None: no split).

        As rslearn 0.1: any space mode with a `period_duration`; PER_PERIOD_MOSAIC without
        one uses 30 days.
        """
        if self.period_duration is not None:
            return self.period_duration
        return DEFAULT_PERIOD if self.space_mode == "PER_PERIOD_MOSAIC" else None


@dataclass(frozen=True)
class BandSet:
    """Bands stored in one GeoTIFF: `layers/<layer>[.n]/<dirname>/geotiff.tif`."""

    bands: tuple[str, ...]
    dtype: str
    zoom_offset: int = 0
    nodata: float = 0.0

    @property
    def dirname(self) -> str:
        """Rslearn's folder name: bands joined by `_` (a sha256 when that is ambiguous)."""
        import hashlib
        import json

        if any("_" in b for b in self.bands):
            return hashlib.sha256(json.dumps(list(self.bands)).encode()).hexdigest()
        joined = "_".join(self.bands)
        return hashlib.sha256(joined.encode()).hexdigest() if len(joined) > 64 else joined


@dataclass(frozen=True)
class SourceConfig:
    """A layer's data source plus its time and query settings."""

    source: DataSource
    query: QueryConfig
    class_path: str
    """The class path as configured (e.g. `rslearn.data_sources.planetary_computer.Sentinel2`)."""
    time_offset: timedelta = timedelta(0)
    """Shift of the window's time range before matching items (e.g. "-180d")."""
    duration: timedelta | None = None
    """Length of the matched time range from its (shifted) start; default: the window's."""

    @property
    def sort_by(self) -> str | None:
        """Item property ranking items (e.g. "eo:cloud_cover"), the source's `sort_by`."""
        value = getattr(self.source, "sort_by", None)
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class LayerConfig:
    """One layer of dataset.json."""

    name: str
    type: Literal["raster", "vector"] = "raster"
    band_sets: tuple[BandSet, ...] = ()
    alias: str | None = None
    resampling: str = "bilinear"
    compositing: str = "FIRST_VALID"
    modality: str | None = None
    """The Helios modality the layer feeds (None: not a Helios model input)."""
    required: bool = True
    """A window without any imagery for a required layer fails to build."""
    data_source: SourceConfig | None = None

    @property
    def is_input(self) -> bool:
        """Whether the layer is materialized from a data source."""
        return self.data_source is not None and self.type == "raster"

    @property
    def bands(self) -> tuple[str, ...]:
        """Every band of the layer, band set by band set."""
        return tuple(b for bs in self.band_sets for b in bs.bands)

    @property
    def spec(self) -> Any:
        """The Helios `ModalitySpec` of the layer."""
        from helios.data.modalities import get_modality

        if self.modality is None:
            raise ValueError(f"layer {self.name!r} feeds no Helios modality")
        return get_modality(self.modality)


@dataclass
class DatasetConfig:
    """Parsed dataset.json."""

    layers: dict[str, LayerConfig]
    path: Path
    raw: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Input layers whose data source Helios cannot read, with why (build will fail them)."""

    @property
    def base_dir(self) -> Path:
        """Relative source paths resolve against this directory."""
        return self.path.parent

    def input_layers(self) -> list[LayerConfig]:
        """Layers materialized for every window, in file order."""
        return [layer for layer in self.layers.values() if layer.is_input]

    def model_layers(self) -> list[LayerConfig]:
        """Input layers that feed a Helios modality."""
        return [layer for layer in self.input_layers() if layer.modality is not None]

    def fingerprint(self) -> str:
        """A hash of the input layer definitions: a change invalidates built windows."""
        return text_hash({k: v for k, v in self.raw.get("layers", {}).items()})[:16]

    def layer_fingerprint(self, layer: LayerConfig) -> str:
        """Hash of one layer's definition: a change rebuilds the layer."""
        return text_hash(self.raw["layers"][layer.name])[:16]


def time_range(start: Any, end: Any, source: SourceConfig) -> tuple[Any, Any]:
    """The time range items are matched in for a window's [start, end) (rslearn's rule)."""
    s, e = start + source.time_offset, end + source.time_offset
    if source.duration is not None:
        e = s + source.duration
    return s, e


_OLD_KEYS = {
    "resampling": "resampling_method (rslearn's key)",
    "bands": "band_sets: [{bands: [...], dtype: ...}]",
    "resolution": "band_sets[].zoom_offset (relative to the window's resolution)",
    "nodata": "band_sets[].nodata_value",
    "sort_by": "data_source.init_args.sort_by",
    "scenes_per_mosaic": "query_config.mosaic_compositing_overlaps / compositing_method",
    "compositing": "compositing_method (a layer key)",
}
"""Keys of Helios's earlier dataset.json dialect -> their rslearn spelling (for messages)."""
_SOURCE_FIELDS = {"class_path", "init_args", "query_config", "time_offset", "duration", "ingest"}


def legacy_source(spec: dict[str, Any]) -> dict[str, Any]:
    """Rslearn's legacy `{name, <flat keys>}` data source as `{class_path, init_args, ...}`."""
    if "name" not in spec:
        return dict(spec)
    out: dict[str, Any] = {
        "class_path": spec["name"],
        "init_args": dict(spec.get("init_args") or {}),
    }
    for key, value in spec.items():
        if key == "name":
            continue
        if key in _SOURCE_FIELDS and key != "init_args":
            out[key] = value
        elif key not in _SOURCE_FIELDS:
            out["init_args"][key] = value
    return out


def _schema(cls: type, value: Any, where: str, problems: list[str]) -> Any:
    """`value` checked and built as dataclass `cls` by jsonargparse; None (and a problem)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--x", type=cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return parser.instantiate(parser.parse_object({"x": value})).x
        except Exception as err:  # jsonargparse raises several types; all are config errors
            msg = " ".join(str(err).split()).replace('Parser key "x.', 'key "')
            msg = msg.replace('Parser key "x"', "value").replace(
                "Group 'x' does not accept", "unknown key:"
            )
            msg = msg.replace("source_class", "class_path").replace("source_args", "init_args")
            hints = [f"'{k}' is now {v}" for k, v in _OLD_KEYS.items() if f"'{k}'" in msg]
            problems.append(f"{where}: {msg}" + (f" ({'; '.join(hints)})" if hints else ""))
            return None


def _source_schema(spec: Any, where: str, problems: list[str]) -> SourceSchema | None:
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected {{class_path, init_args, ...}} or {{name, ...}}")
        return None
    ds = legacy_source(spec)
    renamed = {"class_path": "source_class", "init_args": "source_args"}
    result: SourceSchema | None = _schema(
        SourceSchema, {renamed.get(k, k): v for k, v in ds.items()}, where, problems
    )
    return result


def _band_sets(schema: LayerSchema, where: str, problems: list[str]) -> tuple[BandSet, ...]:
    out = []
    for i, raw in enumerate(schema.band_sets):
        bs: BandSetSchema | None = _schema(BandSetSchema, raw, f"{where}.band_sets[{i}]", problems)
        if bs is None:
            continue
        if (bs.bands is None) == (bs.num_bands is None):
            problems.append(f"{where}.band_sets[{i}]: give exactly one of bands and num_bands")
            continue
        bands = (
            tuple(bs.bands)
            if bs.bands is not None
            else tuple(f"B{k}" for k in range(bs.num_bands or 0))
        )
        nodata = bs.nodata_value if bs.nodata_value is not None else (bs.nodata_vals or [0.0])[0]
        out.append(BandSet(bands, bs.dtype, bs.zoom_offset, float(nodata)))
    if schema.type == "raster" and not out:
        problems.append(f"{where}: band sets must be specified and non-empty for raster layers")
    return tuple(out)


def _query(q: QuerySchema, where: str, problems: list[str]) -> QueryConfig:
    period = None
    if q.period_duration is not None:
        try:
            period = parse_duration(q.period_duration)
        except ValueError as err:
            problems.append(f"{where}.query_config.period_duration: {err}")
    if period is not None and period <= timedelta(0):
        problems.append(f"{where}.query_config.period_duration: must be positive")
    if q.max_matches < 1 or q.min_matches < 0 or q.mosaic_compositing_overlaps < 1:
        problems.append(
            f"{where}.query_config: max_matches and mosaic_compositing_overlaps must be "
            ">= 1, min_matches >= 0"
        )
    return QueryConfig(
        q.space_mode,
        q.max_matches,
        q.min_matches,
        period,
        q.time_mode,
        q.mosaic_compositing_overlaps,
        q.per_period_mosaic_reverse_time_order,
    )


def _source(
    name: str, schema: LayerSchema, config: DatasetConfig, problems: list[str]
) -> SourceConfig | None:
    where = f"dataset.json: layers.{name}.data_source"
    n0 = len(problems)
    ds = _source_schema(schema.data_source, where, problems)
    if ds is None:
        return None
    query = _query(ds.query_config, where, problems)
    offset, duration = timedelta(0), None
    for key in ("time_offset", "duration"):
        text = getattr(ds, key)
        if text is None:
            continue
        try:
            value = parse_duration(text)
        except ValueError as err:
            problems.append(f"{where}.{key}: {err}")
            continue
        if key == "time_offset":
            offset = value
        elif value <= timedelta(0):
            problems.append(f"{where}.duration: must be positive")
        else:
            duration = value
    source, unavailable = resolve_source(ds.source_class, dict(ds.source_args), where, problems)
    if unavailable:
        config.unavailable[name] = unavailable
    if source is None or len(problems) > n0:
        return None
    return SourceConfig(source, query, ds.source_class, offset, duration)


def _parse_layer(
    name: str, spec: Any, config: DatasetConfig, problems: list[str]
) -> LayerConfig | None:
    where = f"dataset.json: layers.{name}"
    try:
        check_name(name, where)
    except UnsafeNameError as err:
        problems.append(str(err))
        return None
    n0 = len(problems)
    schema: LayerSchema | None = _schema(LayerSchema, spec, where, problems)
    if schema is None:  # still list the problems of its band sets and data source
        if isinstance(spec, dict):
            rest = LayerSchema(type="raster", band_sets=list(spec.get("band_sets") or []))
            _band_sets(rest, where, problems)
            if isinstance(spec.get("data_source"), dict):
                _source(name, LayerSchema("raster", spec["data_source"]), config, problems)
        return None
    band_sets = _band_sets(schema, where, problems)
    for bs in band_sets:
        for b in bs.bands:
            try:
                check_name(b, f"{where}: band")
            except UnsafeNameError as err:
                problems.append(str(err))
    source = _source(name, schema, config, problems) if schema.data_source else None
    modality, why = (
        (None, "")
        if source is None
        else infer_modality(name, schema.alias, schema.modality, source.source)
    )
    if why:
        problems.append(f"{where}: {why}")
    if len(problems) > n0:
        return None
    required = schema.required if schema.required is not None else modality is not None
    return LayerConfig(
        name=name,
        type=schema.type,
        band_sets=band_sets,
        alias=schema.alias,
        resampling=schema.resampling_method,
        compositing=schema.compositing_method
        if isinstance(schema.compositing_method, str)
        else "FIRST_VALID",
        modality=modality,
        required=required,
        data_source=source,
    )


def load_dataset_config(path: Path) -> tuple[DatasetConfig | None, list[str]]:
    """Read and check dataset.json; returns the config (None if unusable) and every problem.

    Input layers whose data source Helios cannot read are not problems: they are listed in
    `DatasetConfig.unavailable` (the build step reports them per window).
    """
    try:
        raw = read_json(path)
    except (OSError, ValueError) as err:
        return None, [f"{Path(path).name}: cannot read: {err}"]
    if not isinstance(raw, dict) or not isinstance(raw.get("layers"), dict):
        return None, [f"{Path(path).name}: expected an object with a 'layers' mapping"]
    unknown = sorted(set(raw) - {"layers", "tile_store", "storage", "window_data_storage"})
    problems: list[str] = []
    if unknown:
        problems.append(f"{Path(path).name}: unknown top-level keys {unknown}")
    config = DatasetConfig({}, Path(path), raw)
    for name, spec in raw["layers"].items():
        layer = _parse_layer(name, spec, config, problems)
        if layer is not None:
            config.layers[name] = layer
    if not config.input_layers() and not problems and not config.unavailable:
        problems.append(
            f"{Path(path).name}: no layer has a data_source, so there is nothing to read"
        )
    return config, problems
