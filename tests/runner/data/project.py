"""Seeded generator of small runner projects: real file formats, synthetic pixels.

`make_project(root)` writes a complete project folder (checkpoint.ckpt, model.yaml,
dataset.json, olmoearth_run.yaml, prediction/*.geojson) plus synthetic Sentinel-2 L2A
scenes (uint16 GeoTIFFs in EPSG:32618 at 10 m, one file per band) found through a
directory index (`imagery/`) and a STAC item collection (`stac_items.json`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml
from affine import Affine
from pyproj import Transformer

CRS = "EPSG:32618"
ORIGIN = (440000.0, 4175000.0)
"""Top-left corner (x, y) of the synthetic imagery in EPSG:32618 (Virginia Eastern Shore)."""
SIZE = 256
BANDS = ("B02", "B03", "B04", "B08")
SCENES = (
    # id, date, column offset (px), cloud cover
    ("S2A_20240110_T18SVH", "2024-01-10T15:50:00+00:00", 0, 30.0),
    ("S2B_20240115_T18SVH", "2024-01-15T15:50:00+00:00", 0, 5.0),
    ("S2A_20240209_T18SVH", "2024-02-09T15:50:00+00:00", 64, 10.0),
)
UPSTREAM = "olmoearth_run.runner.tools"


def to_lonlat(x: float, y: float, crs: str = CRS) -> tuple[float, float]:
    """Projected point -> (lon, lat)."""
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return float(lon), float(lat)


def box_lonlat(x0: float, y0: float, x1: float, y1: float, crs: str = CRS) -> list:
    """GeoJSON polygon ring (lon/lat) of a projected box."""
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [[list(to_lonlat(x, y, crs)) for x, y in corners]]


def request(
    coords: list,
    start: str = "2024-01-01T00:00:00+00:00",
    end: str = "2024-03-01T00:00:00+00:00",
    geom_type: str = "Polygon",
    **props: Any,
) -> dict:
    """A prediction request feature."""
    return {
        "type": "Feature",
        "geometry": {"type": geom_type, "coordinates": coords},
        "properties": {"oe_start_time": start, "oe_end_time": end, **props},
    }


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = CRS,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
) -> Path:
    """Write a [C, H, W] (or [H, W]) array as a GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
    return path


def scene_pixels(seed: int, band: int, size: int = SIZE) -> np.ndarray:
    """Smooth, seeded uint16 reflectance-like values with a few zero (nodata) pixels."""
    rng = np.random.default_rng(seed * 100 + band)
    yy, xx = np.mgrid[0:size, 0:size]
    field = 1000 + 300 * band + 2 * xx + 3 * yy + rng.integers(0, 50, (size, size))
    field[:2, :2] = 0
    return field.astype(np.uint16)


def write_imagery(root: Path, seed: int = 0) -> list[dict[str, Any]]:
    """Write the synthetic scenes under `root/imagery`; returns their STAC items."""
    items = []
    for n, (sid, when, col, cloud) in enumerate(SCENES):
        transform = Affine(10.0, 0.0, ORIGIN[0] + col * 10.0, 0.0, -10.0, ORIGIN[1])
        assets = {}
        for b, band in enumerate(BANDS):
            path = write_geotiff(
                root / "imagery" / sid / f"{sid}_{band}.tif",
                scene_pixels(seed + n, b),
                transform=transform,
            )
            assets[band] = {"href": str(path.relative_to(root)), "eo:bands": [{"name": band}]}
        x0, y1 = transform.c, transform.f
        x1, y0 = x0 + SIZE * 10.0, y1 - SIZE * 10.0
        ring = box_lonlat(x0, y0, x1, y1)
        lons, lats = [p[0] for p in ring[0]], [p[1] for p in ring[0]]
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": sid,
                "bbox": [min(lons), min(lats), max(lons), max(lats)],
                "geometry": {"type": "Polygon", "coordinates": ring},
                "properties": {"datetime": when, "proj:epsg": 32618, "eo:cloud_cover": cloud},
                "assets": assets,
            }
        )
        (root / "imagery" / sid / "scene.json").write_text(
            json.dumps({"datetime": when, "properties": {"eo:cloud_cover": cloud}})
        )
    (root / "stac_items.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": items}, indent=1)
    )
    return items


def default_run_config(window_grid: int = 32, overlap: int = 4) -> dict[str, Any]:
    """An olmoearth_run.yaml as the upstream runner writes it."""
    return {
        "partition_strategies": {
            "partition_request_geometry": {
                "class_path": f"{UPSTREAM}.partitioners.noop_partitioner.NoopPartitioner"
            },
            "prepare_window_geometries": {
                "class_path": f"{UPSTREAM}.partitioners.grid_partitioner.GridPartitioner",
                "init_args": {
                    "grid_size": window_grid,
                    "overlap_size": overlap,
                    "output_projection": {
                        "class_path": "rslearn.utils.geometry.Projection",
                        "init_args": {"crs": "EPSG:3857", "x_resolution": 10, "y_resolution": -10},
                    },
                    "use_utm": True,
                },
            },
        },
        "postprocessing_strategies": {
            "process_window": {"class_path": f"{UPSTREAM}.postprocessors.noop_raster.NoopRaster"},
            "process_partition": {
                "class_path": f"{UPSTREAM}.postprocessors.combine_geotiff.CombineGeotiff"
            },
            "process_dataset": {
                "class_path": "olmoearth_run.tools.postprocessors.combine_geotiff.CombineGeotiff"
            },
        },
        "inference_results_config": {
            "data_type": "RASTER",
            "classification_fields": [
                {
                    "property_name": "land_cover",
                    "band_index": 1,
                    "allowed_values": [
                        {"value": 1, "label": "water", "color": [31, 120, 180]},
                        {"value": 2, "label": "trees", "color": [51, 160, 44]},
                    ],
                }
            ],
        },
    }


def default_dataset(source: str = "local", period: str | None = "30d") -> dict[str, Any]:
    """dataset.json (rslearn's schema) with one Sentinel-2 L2A input layer and an output layer.

    With `period`, one mosaic per period (PER_PERIOD_MOSAIC, up to 12); without, one mosaic.
    """
    if source == "local":
        ds: dict[str, Any] = {"class_path": "LocalFiles", "init_args": {"src_dir": "imagery"}}
    else:
        ds = {"class_path": "StacItems", "init_args": {"path": "stac_items.json"}}
    ds["init_args"]["sort_by"] = "eo:cloud_cover"
    if period:
        ds["query_config"] = {
            "space_mode": "PER_PERIOD_MOSAIC",
            "period_duration": period,
            "max_matches": 12,
        }
    return {
        "layers": {
            "sentinel2": {
                "type": "raster",
                "modality": "sentinel2_l2a",
                "band_sets": [{"bands": list(BANDS), "dtype": "uint16"}],
                "resampling_method": "nearest",
                "data_source": ds,
            },
            "output": {"type": "raster", "band_sets": [{"bands": ["output"], "dtype": "uint8"}]},
        }
    }


def default_requests() -> list[dict[str, Any]]:
    """One 640 x 640 m request inside the imagery."""
    x0, y1 = ORIGIN[0] + 700.0, ORIGIN[1] - 700.0
    return [request(box_lonlat(x0, y1 - 640.0, x0 + 640.0, y1), name="field")]


def make_project(
    root: Path,
    *,
    seed: int = 0,
    run_config: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
    requests: list[dict[str, Any]] | None = None,
    imagery: bool = True,
) -> Path:
    """Write a complete project folder under `root` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    if imagery:
        write_imagery(root, seed)
    (root / "checkpoint.ckpt").write_bytes(np.random.default_rng(seed).bytes(64))
    (root / "model.yaml").write_text("model:\n  class_path: helios.nn.encoder.Encoder\n")
    (root / "olmoearth_run.yaml").write_text(yaml.safe_dump(run_config or default_run_config()))
    (root / "dataset.json").write_text(json.dumps(dataset or default_dataset(), indent=2))
    pdir = root / "prediction"
    pdir.mkdir(exist_ok=True)
    collection = {"type": "FeatureCollection", "features": requests or default_requests()}
    (pdir / "requests.geojson").write_text(json.dumps(collection))
    return root
