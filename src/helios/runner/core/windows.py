"""Windows on disk: the scratch layout and the `Window` record every step reads.

Scratch layout (docs/runner.md, "Scratch directory")::

    scratch/partitions/index.json                      partition ids of the last `partition`
    scratch/partitions/<pid>/partition.json            request features + window names (last)
    scratch/partitions/<pid>/windows/<w>/window.json   crs, bounds, pixel size, size, times
    scratch/partitions/<pid>/windows/<w>/layers/<layer>.tif + <layer>.json, .complete.json
    scratch/partitions/<pid>/windows/<w>/outputs/<name>.tif | <name>.geojson
    scratch/partitions/<pid>/results/                  process_partition outputs + manifest
    scratch/results/                                   process_dataset outputs + manifest
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from affine import Affine

from helios.runner.core.fsutil import read_json
from helios.runner.core.geometry import Projection, WindowSpec, parse_time, reproject_geometry

WINDOW_JSON = "window.json"
PARTITION_JSON = "partition.json"
COMPLETE_MARKER = ".complete.json"
INDEX_JSON = "index.json"
MANIFEST_JSON = "manifest.json"


def partitions_dir(scratch: Path) -> Path:
    """`scratch/partitions`."""
    return Path(scratch) / "partitions"


def partition_dir(scratch: Path, partition_id: str) -> Path:
    """`scratch/partitions/<partition_id>`."""
    return partitions_dir(scratch) / partition_id


def partition_results_dir(scratch: Path, partition_id: str) -> Path:
    """Where process_partition writes: `scratch/partitions/<pid>/results`."""
    return partition_dir(scratch, partition_id) / "results"


def dataset_results_dir(scratch: Path) -> Path:
    """Where process_dataset writes: `scratch/results`."""
    return Path(scratch) / "results"


@dataclass(frozen=True)
class Window:
    """A window as stored in scratch (see module docstring)."""

    name: str
    partition_id: str
    crs: str
    bounds: tuple[float, float, float, float]
    """(minx, miny, maxx, maxy) in CRS units."""
    resolution: float
    """CRS units per pixel along x; pixels are square unless `y_resolution` says otherwise."""
    width: int
    height: int
    time_range: tuple[datetime, datetime]
    path: Path
    pixel_bounds: tuple[int, int, int, int] = (0, 0, 0, 0)
    y_resolution: float | None = None
    properties: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def transform(self) -> Affine:
        """Affine transform of the window grid (north up)."""
        yres = abs(self.y_resolution) if self.y_resolution else self.resolution
        return Affine(self.resolution, 0.0, self.bounds[0], 0.0, -yres, self.bounds[3])

    @property
    def layers_dir(self) -> Path:
        """Materialized input layers."""
        return self.path / "layers"

    @property
    def outputs_dir(self) -> Path:
        """Model outputs written by inference."""
        return self.path / "outputs"

    def output_paths(self) -> list[Path]:
        """Existing output files (.tif and .geojson), sorted."""
        if not self.outputs_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.outputs_dir.iterdir()
            if p.suffix in (".tif", ".geojson") and not p.name.startswith(".")
        )

    def is_built(self, fingerprint: str) -> bool:
        """Whether every input layer was materialized for this dataset config."""
        marker = self.layers_dir / COMPLETE_MARKER
        return marker.exists() and read_json(marker).get("fingerprint") == fingerprint

    def to_json(self) -> dict[str, Any]:
        """The window.json content."""
        return {
            "name": self.name,
            "partition_id": self.partition_id,
            "crs": self.crs,
            "bounds": list(self.bounds),
            "pixel_bounds": list(self.pixel_bounds),
            "resolution": self.resolution,
            "y_resolution": self.y_resolution,
            "width": self.width,
            "height": self.height,
            "time_range": [t.isoformat() for t in self.time_range],
            "properties": self.properties,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> Window:
        """Inverse of `to_json`."""
        return cls(
            name=data["name"],
            partition_id=data["partition_id"],
            crs=data["crs"],
            bounds=tuple(data["bounds"]),
            resolution=float(data["resolution"]),
            width=int(data["width"]),
            height=int(data["height"]),
            time_range=(parse_time(data["time_range"][0]), parse_time(data["time_range"][1])),
            path=path,
            pixel_bounds=tuple(data.get("pixel_bounds", (0, 0, 0, 0))),
            y_resolution=data.get("y_resolution"),
            properties=dict(data.get("properties") or {}),
        )

    @classmethod
    def from_spec(cls, spec: WindowSpec, partition_id: str, path: Path) -> Window:
        """The window a partitioner's `WindowSpec` describes."""
        p = spec.projection
        return cls(
            name=spec.name,
            partition_id=partition_id,
            crs=p.crs,
            bounds=spec.crs_bounds(),
            resolution=p.x_resolution,
            width=spec.width,
            height=spec.height,
            time_range=(spec.start_time, spec.end_time),
            path=path,
            pixel_bounds=spec.pixel_bounds,
            y_resolution=p.y_resolution,
            properties=dict(spec.properties),
        )

    def projection(self) -> Projection:
        """The window's projection."""
        return Projection(self.crs, self.resolution, self.y_resolution or -self.resolution)

    def wgs84_bounds(self) -> tuple[float, float, float, float]:
        """Bounding box of the window in lon/lat."""
        from shapely.geometry import box

        return reproject_geometry(box(*self.bounds), self.crs, "EPSG:4326").bounds


def load_window(path: Path) -> Window:
    """Read a window directory's window.json."""
    return Window.from_json(read_json(path / WINDOW_JSON), path)


def list_windows(scratch: Path, partition_id: str) -> list[Window]:
    """The windows of a partition, in the order the partitioner made them."""
    pdir = partition_dir(scratch, partition_id)
    pjson = pdir / PARTITION_JSON
    wdir = pdir / "windows"
    if pjson.exists():
        names = read_json(pjson).get("windows", [])
    else:
        names = sorted(p.name for p in wdir.iterdir()) if wdir.is_dir() else []
    return [load_window(wdir / n) for n in names if (wdir / n / WINDOW_JSON).exists()]


def list_partitions(scratch: Path) -> list[str]:
    """Partition ids written by the last `partition` run."""
    index = partitions_dir(Path(scratch)) / INDEX_JSON
    if not index.exists():
        raise FileNotFoundError(f"{index} not found: run `helios run partition` first")
    return list(read_json(index)["partitions"])
