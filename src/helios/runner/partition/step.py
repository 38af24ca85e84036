"""The partition step: requests -> partitions -> windows under `scratch/partitions/`.

Idempotent: a partition whose partition.json exists is not recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from helios.runner.core.fsutil import read_json, write_json
from helios.runner.core.geometry import MAX_WINDOW_SIDE, RequestFeature
from helios.runner.core.windows import (
    INDEX_JSON,
    PARTITION_JSON,
    WINDOW_JSON,
    Window,
    partition_dir,
    partitions_dir,
)
from helios.runner.partition.partitioners import Partitioner

logger = logging.getLogger(__name__)


def partition(
    requests: Sequence[RequestFeature],
    partitioner: Partitioner,
    window_preparer: Partitioner,
    scratch: Path,
) -> list[str]:
    """Split the requests into partitions and windows under `scratch/partitions/`.

    `partitioner` makes the partitions (`partition_request_geometry`), `window_preparer`
    the windows of each (`prepare_window_geometries`).

    Window names hash geometry and time, so re-runs create nothing twice, and a window
    made by two partitions (e.g. on a shared edge) is kept only in the first. A partition is
    complete once its partition.json exists; complete partitions are not recomputed.

    Returns:
        The partition ids, in order (also written to `scratch/partitions/index.json`).

    """
    scratch = Path(scratch)
    parts = partitioner.partition_request_geometry(list(requests))
    ids: list[str] = []
    seen: set[str] = set()
    made = 0
    for part in parts:
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
        for spec in window_preparer.prepare_window_geometries(part):
            if max(spec.width, spec.height) > MAX_WINDOW_SIDE:
                raise ValueError(
                    f"window of {spec.width} x {spec.height} pixels from "
                    f"{spec.properties or 'a request'} exceeds {MAX_WINDOW_SIDE} pixels per "
                    "side; use GridPartitioner for prepare_window_geometries"
                )
            if spec.name in seen:
                continue
            seen.add(spec.name)
            window = Window.from_spec(spec, pid, pdir / "windows" / spec.name)
            write_json(window.path / WINDOW_JSON, window.to_json())
            names.append(spec.name)
            made += 1
        features = [f.to_geojson() for f in part.features]
        write_json(
            pjson,
            {
                "id": pid,
                "features": {"type": "FeatureCollection", "features": features},
                "extra": part.extra,
                "windows": names,
            },
        )
    write_json(partitions_dir(scratch) / INDEX_JSON, {"partitions": ids})
    logger.info("%d partitions, %d new windows", len(ids), made)
    return ids
