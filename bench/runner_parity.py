"""Windows Helios's partition step makes vs upstream olmoearth-runner 0.1.14's, per golden case.

Upstream's side is read from tests/runner/golden/partition/<case>.json (recorded from the
real upstream tool by tests/peer/runner_golden.py): the raw windows its window partitioner
returned before the request filter (`direct.partitions[].raw_window_count`), the windows it
wrote, and how many of those are distinct (it writes a cell once per partition that reaches
it). Helios's side is a fresh run of `helios.runner.partition.partition` on the same config
and request. Areas: the request's geodesic area (WGS84 ellipsoid) and the windows' covered
area (union of their footprints, per CRS, in km^2). Prints a markdown table.

Usage: python bench/runner_parity.py [--cases nandi_kenya_3km,nandi_nairobi,...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import shapely
from pyproj import Geod
from shapely.geometry import shape

from helios.runner.core.geometry import load_requests, pixel_to_crs_bounds
from helios.runner.core.windows import list_windows
from helios.runner.partition import partition
from helios.runner.project.olmoearth_run import parse_partitioners, read_run_yaml

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "runner" / "golden"
CASES = (
    "nandi_kenya_3km",
    "nandi_request",
    "nandi_two_features",
    "nandi_overlap",
    "nandi_utm_boundary",
    "nandi_nairobi",
    "geo",
    "solar_farm_oe",
)
Footprint = tuple[str, tuple[float, float, float, float]]


def covered_km2(footprints: list[Footprint]) -> float:
    """Area of the union of window footprints (CRS, CRS bounds), summed over CRSs."""
    by_crs: dict[str, list[Any]] = defaultdict(list)
    for crs, bounds in footprints:
        by_crs[crs].append(shapely.box(*bounds))
    return sum(shapely.union_all(boxes).area for boxes in by_crs.values()) / 1e6


def request_km2(path: Path) -> float:
    """Geodesic area of the request's (multi)polygons."""
    geod = Geod(ellps="WGS84")
    features = json.loads(path.read_text())["features"]
    return sum(abs(geod.geometry_area_perimeter(shape(f["geometry"]))[0]) for f in features) / 1e6


def upstream(rec: dict[str, Any]) -> tuple[int, int, list[Footprint]]:
    """(raw windows, windows written, footprints of the distinct ones) of a golden case.

    Raw windows are counted over the partitions upstream kept (it skips the others).
    """
    from helios.runner.core.geometry import Projection

    common = rec.get("window_common", {})
    raw = sum(p.get("raw_window_count", 0) for p in rec["direct"]["partitions"])
    seen: dict[tuple[Any, ...], Footprint] = {}
    for w in rec["windows"]:
        w = {**common, **w}
        proj = Projection(w["crs"], w["x_resolution"], w["y_resolution"])
        key = (w["crs"], tuple(w["bounds"]), tuple(w.get("time_range") or ()))
        seen[key] = (w["crs"], pixel_to_crs_bounds(tuple(w["bounds"]), proj))
    return raw, len(rec["windows"]), list(seen.values())


def helios(rec: dict[str, Any]) -> list[Footprint]:
    """Footprints of the windows Helios's partition step makes for the case."""
    problems: list[str] = []
    raw = read_run_yaml(GOLDEN / rec["config"], problems)
    request_partitioner, window_partitioner = parse_partitioners(raw, problems)
    requests, more = load_requests([GOLDEN / rec["request"]])
    if problems or more or request_partitioner is None or window_partitioner is None:
        raise SystemExit(f"{rec['case']}: {problems + more}")
    with tempfile.TemporaryDirectory() as tmp:
        ids = partition(requests, request_partitioner, window_partitioner, Path(tmp))
        return [(w.crs, w.bounds) for pid in ids for w in list_windows(Path(tmp), pid)]


def row(case: str) -> str:
    rec = json.loads((GOLDEN / "partition" / f"{case}.json").read_text())
    raw, written, distinct = upstream(rec)
    ours = helios(rec)
    side = distinct[0][1][2] - distinct[0][1][0]
    return (
        f"| {case} | {request_km2(GOLDEN / rec['request']):.2f} | {raw:,} "
        f"({raw * side * side / 1e6:,.1f}) | {written:,} ({len(distinct):,} distinct) | "
        f"{covered_km2(distinct):,.2f} | {len(ours):,} | {covered_km2(ours):,.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    print(
        "| case | request km² | upstream raw windows (km²) | upstream windows | "
        "upstream covered km² | Helios windows | Helios covered km² |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in args.cases.split(","):
        print(row(case))


if __name__ == "__main__":
    main()
