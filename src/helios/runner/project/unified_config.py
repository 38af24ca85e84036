"""olmoearth-runner's unified project config (`config_version: 0.8.x`) -> olmoearth_run.yaml.

Newer projects write one file with `data`, `model`, `prediction_requests`, ... instead of
the strategy sections (the `landslide` folder does). Helios reads the parts the runner's
steps use and turns them into the olmoearth_run.yaml sections the rest of the loader reads:

- `prediction_requests.partitioners.request_to_partitions` / `partition_to_windows`
  (`{name: grid, grid_size, overlap_size, clip, projection}`) -> `partition_strategies`;
- `prediction_requests.postprocessors.window` / `partition` / `request` (`{name: noop |
  combine_geotiff | combine_geojson}`) -> `postprocessing_strategies`;
- `data.output` (`{data_type, fields: {name: {field_type, allowed_values, ...}}}`) ->
  `inference_results_config`.

The model, temporality and preprocessing sections describe an rslearn training setup and are
kept in `raw_config` but not interpreted.
"""

from __future__ import annotations

from typing import Any

PARTITIONERS = {
    "grid": "GridPartitioner",
    "noop": "NoopPartitioner",
    "fixed_window": "FixedWindowPartitioner",
    "reprojection": "ReprojectionPartitioner",
    "chunk": "ChunkPartitioner",
}
POSTPROCESSORS = {
    "noop": "NoopRaster",
    "noop_raster": "NoopRaster",
    "noop_vector": "NoopVector",
    "combine_geotiff": "CombineGeotiff",
    "combine_geojson": "CombineGeojson",
}
WHERE = "olmoearth_run.yaml (unified config)"


def is_unified(raw: dict[str, Any]) -> bool:
    """Whether a parsed olmoearth_run.yaml is a unified config."""
    return "config_version" in raw


def _partitioner(spec: Any, where: str, problems: list[str]) -> dict[str, Any] | None:
    if not isinstance(spec, dict) or spec.get("name") not in PARTITIONERS:
        problems.append(f"{where}: expected {{name: one of {sorted(PARTITIONERS)}, ...}}")
        return None
    args = {k: v for k, v in spec.items() if k not in ("name", "projection")}
    projection = spec.get("projection")
    if isinstance(projection, dict) and projection.get("method") == "use_utm":
        args["use_utm"] = True
    elif projection is not None:
        problems.append(f"{where}.projection: only null or {{method: use_utm}} is understood")
    if not args.get("overlap_size"):
        args.pop("overlap_size", None)
    return {"class_path": PARTITIONERS[spec["name"]], "init_args": args}


def _postprocessor(spec: Any, where: str, problems: list[str]) -> dict[str, Any] | None:
    if not isinstance(spec, dict) or spec.get("name") not in POSTPROCESSORS:
        problems.append(f"{where}: expected {{name: one of {sorted(POSTPROCESSORS)}}}")
        return None
    args = {k: v for k, v in spec.items() if k != "name"}
    return {"class_path": POSTPROCESSORS[spec["name"]], "init_args": args}


def _results(output: Any, problems: list[str]) -> dict[str, Any] | None:
    if output is None:
        return None
    if not isinstance(output, dict):
        problems.append(f"{WHERE}: data.output: expected a mapping")
        return None
    fields = output.get("fields") or {}
    classification, regression = [], []
    for band, (name, field) in enumerate(fields.items(), start=1):
        kind = field.get("field_type")
        if kind in ("segmentation", "classification"):
            classification.append(
                {
                    "property_name": name,
                    "band_index": band,
                    "allowed_values": field.get("allowed_values") or [],
                }
            )
        elif kind == "regression":
            regression.append({"property_name": name, "band_index": band})
        else:
            problems.append(f"{WHERE}: data.output.fields.{name}.field_type: unknown {kind!r}")
    out: dict[str, Any] = {"data_type": str(output.get("data_type", "raster")).upper()}
    if classification:
        out["classification_fields"] = classification
    if regression:
        out["regression_fields"] = regression
    return out


def to_run_config(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The olmoearth_run.yaml sections a unified config describes."""
    out: dict[str, Any] = {}
    requests = raw.get("prediction_requests") or {}
    parts = requests.get("partitioners") or {}
    if parts:
        where = f"{WHERE}: prediction_requests.partitioners"
        req = _partitioner(
            parts.get("request_to_partitions"), f"{where}.request_to_partitions", problems
        )
        win = _partitioner(
            parts.get("partition_to_windows"), f"{where}.partition_to_windows", problems
        )
        out["partition_strategies"] = {
            "partition_request_geometry": req,
            "prepare_window_geometries": win,
        }
    posts = requests.get("postprocessors") or {}
    if posts:
        where = f"{WHERE}: prediction_requests.postprocessors"
        stages = {
            "process_window": "window",
            "process_partition": "partition",
            "process_dataset": "request",
        }
        out["postprocessing_strategies"] = {
            stage: _postprocessor(posts.get(key), f"{where}.{key}", problems)
            for stage, key in stages.items()
        }
    results = _results((raw.get("data") or {}).get("output"), problems)
    if results is not None:
        out["inference_results_config"] = results
    return out
