"""The partition step: requests -> partitions -> windows under `scratch/partitions/`.

Idempotent: a partition whose partition.json exists is not recomputed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import shapely
from tqdm import tqdm

from helios.runner.core.fsutil import read_json, write_json
from helios.runner.core.geometry import (
    MAX_WINDOW_SIDE,
    Projection,
    RequestFeature,
    WindowSpec,
    intersects_in_wgs84,
    pixel_box,
)
from helios.runner.core.windows import (
    INDEX_JSON,
    PARTITION_JSON,
    REQUEST_GEOJSON,
    Window,
    dataset_root,
    partition_dir,
    partitions_dir,
)
from helios.runner.partition.partitioners import Partition, Partitioner

logger = logging.getLogger(__name__)
DEFAULT_MAX_WINDOWS = 200_000
"""`partition` refuses requests estimated to make more windows (`max_windows`)."""
SAMPLED_PARTITIONS = 5
"""Partitions whose windows are made to estimate the rest, for partitioners with no estimate."""


class RequestTooLarge(ValueError):
    """A request that would make more windows than allowed; says how many."""


def estimate_windows(parts: Sequence[Partition], window_preparer: Partitioner) -> int:
    """About how many windows `partition` would make from `parts` (nothing is written)."""
    total, unknown = 0, []
    for part in parts:
        n = window_preparer.estimate_windows(part)
        if n is None:
            unknown.append(part)
        else:
            total += n
    if unknown:
        step = max(1, len(unknown) // SAMPLED_PARTITIONS)
        sample = unknown[::step][:SAMPLED_PARTITIONS]
        made = [len(_in_request(window_preparer.prepare_window_geometries(p), p)) for p in sample]
        total += round(sum(made) / len(sample) * len(unknown))
    return total


def _in_request(specs: list[WindowSpec], part: Partition) -> list[WindowSpec]:
    """The windows that intersect the partition's own request features (tested in WGS84)."""
    area = shapely.union_all([f.area_of_interest for f in part.features])
    keep: dict[int, bool] = {}
    by_projection: dict[Projection, list[int]] = defaultdict(list)
    for i, spec in enumerate(specs):
        by_projection[spec.projection].append(i)
    for proj, idx in by_projection.items():
        boxes = [pixel_box(specs[i].pixel_bounds) for i in idx]
        keep.update(zip(idx, intersects_in_wgs84(boxes, proj, area).tolist(), strict=True))
    return [s for i, s in enumerate(specs) if keep[i]]


def partition(
    requests: Sequence[RequestFeature],
    partitioner: Partitioner,
    window_preparer: Partitioner,
    scratch: Path,
    max_windows: int | None = DEFAULT_MAX_WINDOWS,
    progress: bool = False,
) -> list[str]:
    """Split the requests into partitions (`scratch/partitions/`) and windows (`scratch/dataset`).

    `partitioner` makes the partitions (`partition_request_geometry`), `window_preparer`
    the windows of each (`prepare_window_geometries`).

    Only windows that intersect the partition's own request features are kept (tested in
    WGS84, as upstream, but against the partition's features rather than every request).
    Window names hash geometry and time, so re-runs create nothing twice, and a window
    made by two partitions (e.g. on a shared edge) is kept only in the first. A partition is
    complete once its partition.json exists; complete partitions are not recomputed.

    Before anything is written, the windows are estimated (`estimate_windows`); a request over
    `max_windows` (None: no limit) is refused with the estimate.

    Returns:
        The partition ids, in order (also written to `scratch/partitions/index.json`).

    Raises:
        RequestTooLarge: the estimate exceeds `max_windows`.

    """
    scratch = Path(scratch)
    parts = partitioner.partition_request_geometry(list(requests))
    if max_windows is not None:
        estimate = estimate_windows(parts, window_preparer)
        if estimate > max_windows:
            raise RequestTooLarge(
                f"the request makes {len(parts)} partitions and about {estimate:,} windows, "
                f"more than the limit of {max_windows:,}: split the request, use larger "
                "windows, or raise the limit (--max-windows)"
            )
    ids: list[str] = []
    seen: set[str] = set()
    made = 0
    bar = tqdm(parts, desc="partition", unit="partition", disable=not progress or len(parts) < 20)
    for part in bar:
        pid = part.id
        if pid in ids:
            continue
        ids.append(pid)
        pdir = partition_dir(scratch, pid)
        pjson = pdir / PARTITION_JSON
        if pjson.exists():
            seen.update(read_json(pjson)["windows"])
            continue
        names = []
        for spec in _in_request(window_preparer.prepare_window_geometries(part), part):
            if max(spec.width, spec.height) > MAX_WINDOW_SIDE:
                raise ValueError(
                    f"window of {spec.width} x {spec.height} pixels from "
                    f"{spec.properties or 'a request'} exceeds {MAX_WINDOW_SIDE} pixels per "
                    "side; use GridPartitioner for prepare_window_geometries"
                )
            if spec.name in seen:
                continue
            seen.add(spec.name)
            Window.from_spec(spec, pid, dataset_root(scratch)).save()
            names.append(spec.name)
            made += 1
        features = {
            "type": "FeatureCollection",
            "features": [f.to_geojson() for f in part.features],
        }
        write_json(pdir / REQUEST_GEOJSON, features)
        write_json(pjson, {"id": pid, "extra": part.extra, "windows": names})
    write_json(partitions_dir(scratch) / INDEX_JSON, {"partitions": ids})
    logger.info("%d partitions, %d new windows", len(ids), made)
    return ids
