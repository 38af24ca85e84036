"""Windows on disk: rslearn's dataset layout, plus the partitions that group windows.

A scratch folder holds partitions (the unit of parallel work) and one rslearn dataset with
every window, so rslearn's own tools open what Helios builds (docs/runner.md, "Scratch
directory")::

    scratch/partitions/index.json                   partition ids of the last `partition`
    scratch/partitions/<pid>/request.geojson        the partition's request features
    scratch/partitions/<pid>/partition.json         its window names (written last)
    scratch/partitions/<pid>/results/               process_partition outputs + manifest
    scratch/dataset/config.json                     the project's dataset.json
    scratch/dataset/windows/<pid>/<w>/metadata.json rslearn window metadata (group = pid)
    scratch/dataset/windows/<pid>/<w>/items.json    matched items per input layer (build)
    scratch/dataset/windows/<pid>/<w>/layers/<layer>[.<n>]/<band set>/geotiff.tif, completed
    scratch/dataset/windows/<pid>/<w>/outputs/<name>.tif | <name>.geojson   (inference)
    scratch/results/                                process_dataset outputs + manifest

metadata.json has rslearn 0.0.27's six keys (`group`, `name`, `projection`, `bounds` in pixel
coordinates of the projection, `time_range`, `options`); rslearn 0.1 reads it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from affine import Affine

from helios.runner.core.fsutil import contained, read_json, write_json
from helios.runner.core.geometry import (
    Projection,
    WindowSpec,
    parse_time,
    pixel_to_crs_bounds,
    reproject_geometry,
)

METADATA_JSON = "metadata.json"
PARTITION_JSON = "partition.json"
REQUEST_GEOJSON = "request.geojson"
INDEX_JSON = "index.json"
MANIFEST_JSON = "manifest.json"
COMPLETED = "completed"
"""rslearn's marker file of a finished layer (item group) folder."""
DATASET_DIR = "dataset"
CONFIG_JSON = "config.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
"""Names that become folder names (groups, windows, layers, band sets, outputs)."""


class UnsafeNameError(ValueError):
    """A name taken from an input that cannot safely become a file or folder name."""


def check_name(value: object, what: str) -> str:
    """`value` if it is a safe folder name (letters, digits, `_ . : -`; no path parts).

    Raises:
        UnsafeNameError: naming `what` and the value.

    """
    if not isinstance(value, str) or not NAME.match(value) or value in (".", ".."):
        raise UnsafeNameError(
            f"{what}: {value!r} cannot become a file name; use letters, digits and '_', '.', "
            "':', '-' (no '/' or '..', at most 200 characters)"
        )
    return value


def partitions_dir(scratch: Path) -> Path:
    """`scratch/partitions`."""
    return Path(scratch) / "partitions"


def partition_dir(scratch: Path, partition_id: str) -> Path:
    """`scratch/partitions/<partition_id>`."""
    return partitions_dir(scratch) / check_name(partition_id, "partition id")


def partition_results_dir(scratch: Path, partition_id: str) -> Path:
    """Where process_partition writes: `scratch/partitions/<pid>/results`."""
    return partition_dir(scratch, partition_id) / "results"


def dataset_results_dir(scratch: Path) -> Path:
    """Where process_dataset writes: `scratch/results`."""
    return Path(scratch) / "results"


def dataset_root(scratch: Path) -> Path:
    """`scratch/dataset`: the rslearn dataset holding every window of a scratch folder."""
    return Path(scratch) / DATASET_DIR


def window_dir(dataset: Path, group: str, name: str) -> Path:
    """`<dataset>/windows/<group>/<name>`, both names checked."""
    path = Path(dataset) / "windows" / check_name(group, "group") / check_name(name, "window")
    return contained(Path(dataset), path)


def layer_dir_name(layer: str, group_index: int = 0) -> str:
    """Rslearn's folder of one item group of a layer: `<layer>`, then `<layer>.1`, ..."""
    return layer if group_index == 0 else f"{layer}.{group_index}"


@dataclass(frozen=True)
class Window:
    """One window: a pixel rectangle of a projection, a time range, and where it is stored."""

    name: str
    group: str
    """The rslearn group: the partition id (prediction) or window_prep's group_name."""
    projection: Projection
    pixel_bounds: tuple[int, int, int, int]
    """(col0, row0, col1, row1) in pixels of the projection (rslearn's `bounds`)."""
    time_range: tuple[datetime, datetime] | None
    path: Path
    properties: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """rslearn's `options`: the request's properties, or a labeled window's split."""

    @property
    def partition_id(self) -> str:
        """The partition (= group) of a prediction window."""
        return self.group

    @property
    def crs(self) -> str:
        """The projection's CRS."""
        return self.projection.crs

    @property
    def resolution(self) -> float:
        """CRS units per pixel along x."""
        return self.projection.x_resolution

    @property
    def y_resolution(self) -> float:
        """CRS units per pixel along y (negative for north-up grids)."""
        return self.projection.y_resolution

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.pixel_bounds[2] - self.pixel_bounds[0]

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.pixel_bounds[3] - self.pixel_bounds[1]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in CRS units."""
        return pixel_to_crs_bounds(self.pixel_bounds, self.projection)

    @property
    def transform(self) -> Affine:
        """Affine transform of the window grid (north up)."""
        x0, _, _, y1 = self.bounds
        return Affine(self.resolution, 0.0, x0, 0.0, -abs(self.y_resolution), y1)

    @property
    def dataset(self) -> Path:
        """The rslearn dataset root the window belongs to."""
        return self.path.parent.parent.parent

    @property
    def layers_dir(self) -> Path:
        """Materialized layers (rslearn layout)."""
        return self.path / "layers"

    @property
    def outputs_dir(self) -> Path:
        """Model outputs written by inference."""
        return self.path / "outputs"

    def layer_dir(self, layer: str, group_index: int = 0) -> Path:
        """`layers/<layer>[.<n>]`."""
        path = self.layers_dir / layer_dir_name(check_name(layer, "layer"), group_index)
        return contained(self.path, path)

    def output_path(self, name: str, suffix: str) -> Path:
        """`outputs/<name><suffix>` (the name checked: it comes from dataset.json)."""
        return contained(self.path, self.outputs_dir / f"{check_name(name, 'output')}{suffix}")

    def output_paths(self) -> list[Path]:
        """Existing output files (.tif and .geojson), sorted."""
        if not self.outputs_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.outputs_dir.iterdir()
            if p.suffix in (".tif", ".geojson") and not p.name.startswith(".")
        )

    def to_metadata(self) -> dict[str, Any]:
        """metadata.json content (rslearn's keys)."""
        p = self.projection
        return {
            "group": self.group,
            "name": self.name,
            "projection": {
                "crs": p.crs,
                "x_resolution": p.x_resolution,
                "y_resolution": p.y_resolution,
            },
            "bounds": list(self.pixel_bounds),
            "time_range": [t.isoformat() for t in self.time_range] if self.time_range else None,
            "options": self.properties,
        }

    @classmethod
    def from_metadata(cls, data: dict[str, Any], path: Path) -> Window:
        """Inverse of `to_metadata`; group and name default to the folder's (rslearn 0.1)."""
        p = data["projection"]
        times = data.get("time_range")
        return cls(
            name=str(data.get("name") or path.name),
            group=str(data.get("group") or path.parent.name),
            projection=Projection(p["crs"], p["x_resolution"], p["y_resolution"]),
            pixel_bounds=tuple(int(v) for v in data["bounds"]),  # type: ignore[arg-type]
            time_range=(parse_time(times[0]), parse_time(times[1])) if times else None,
            path=path,
            properties=dict(data.get("options") or {}),
        )

    @classmethod
    def from_spec(cls, spec: WindowSpec, group: str, dataset: Path) -> Window:
        """The window a partitioner's (or preparer's) `WindowSpec` describes."""
        return cls(
            name=spec.name,
            group=group,
            projection=spec.projection,
            pixel_bounds=spec.pixel_bounds,
            time_range=(spec.start_time, spec.end_time),
            path=window_dir(dataset, group, spec.name),
            properties=dict(spec.properties),
        )

    def save(self) -> None:
        """Write metadata.json (atomically; unchanged content is not rewritten)."""
        write_json(self.path / METADATA_JSON, self.to_metadata())

    def wgs84_bounds(self) -> tuple[float, float, float, float]:
        """Bounding box of the window in lon/lat."""
        from shapely.geometry import box

        return reproject_geometry(box(*self.bounds), self.crs, "EPSG:4326").bounds


def load_window(path: Path) -> Window:
    """Read a window folder's metadata.json."""
    return Window.from_metadata(read_json(path / METADATA_JSON), path)


def list_windows(scratch: Path, partition_id: str) -> list[Window]:
    """The windows of a partition, in the order the partitioner made them."""
    pjson = partition_dir(scratch, partition_id) / PARTITION_JSON
    gdir = dataset_root(scratch) / "windows" / check_name(partition_id, "partition id")
    if pjson.exists():
        names = read_json(pjson).get("windows", [])
    else:
        names = sorted(p.name for p in gdir.iterdir()) if gdir.is_dir() else []
    return [load_window(gdir / n) for n in names if (gdir / n / METADATA_JSON).exists()]


def list_partitions(scratch: Path) -> list[str]:
    """Partition ids written by the last `partition` run."""
    index = partitions_dir(Path(scratch)) / INDEX_JSON
    if not index.exists():
        raise FileNotFoundError(f"{index} not found: run `helios run partition` first")
    return list(read_json(index)["partitions"])
