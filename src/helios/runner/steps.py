"""The runner's steps around inference: partition, postprocess and combine.

(The build step is dataset_builder.py.) Each step is idempotent: it skips what is complete
and can be killed and re-run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from helios.runner.fsutil import read_json, write_json
from helios.runner.windows import (
    PARTITION_JSON,
    WINDOW_JSON,
    Window,
    dataset_results_dir,
    list_windows,
    partition_dir,
    partition_results_dir,
    partitions_dir,
)

if TYPE_CHECKING:
    from helios.runner.project import Project

logger = logging.getLogger(__name__)
INDEX_JSON = "index.json"
MANIFEST_JSON = "manifest.json"
MAX_WINDOW_SIDE = 8192
"""Windows larger than this (pixels per side) are refused: use a grid partitioner."""


def partition(project: Project, scratch: Path) -> list[str]:
    """Split the requests into partitions and windows under `scratch/partitions/`.

    Window names hash geometry and time, so re-runs create nothing twice, and a window
    made by two partitions (e.g. on a shared edge) is kept only in the first. A partition is
    complete once its partition.json exists; complete partitions are not recomputed.

    Returns:
        The partition ids, in order (also written to `scratch/partitions/index.json`).

    """
    scratch = Path(scratch)
    parts = project.partitioner.partition_request_geometry(project.requests)
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
        for spec in project.window_preparer.prepare_window_geometries(part):
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


def list_partitions(scratch: Path) -> list[str]:
    """Partition ids written by the last `partition` run."""
    index = partitions_dir(Path(scratch)) / INDEX_JSON
    if not index.exists():
        raise FileNotFoundError(f"{index} not found: run `helios run partition` first")
    return list(read_json(index)["partitions"])


def _relative(paths: Sequence[Path], scratch: Path) -> list[str]:
    out = []
    for p in paths:
        try:
            out.append(str(Path(p).resolve().relative_to(scratch.resolve())))
        except ValueError:
            out.append(str(p))
    return out


def postprocess_partition(project: Project, scratch: Path, partition_id: str) -> list[Path]:
    """Run process_window on every window with outputs, then process_partition.

    Windows without outputs (failed builds, or not yet predicted) are skipped and listed in
    `scratch/partitions/<pid>/results/manifest.json` with the results.
    """
    scratch = Path(scratch)
    pp = project.postprocessors
    window_results: list[Path] = []
    missing = []
    for window in list_windows(scratch, partition_id):
        outputs = window.output_paths()
        if not outputs:
            missing.append(window.name)
            continue
        window_results.extend(pp.process_window.process_window(window, outputs))
    if missing:
        logger.warning("%s: %d windows have no outputs", partition_id, len(missing))
    out_dir = partition_results_dir(scratch, partition_id)
    results = pp.process_partition.process_partition(window_results, out_dir)
    write_json(
        out_dir / MANIFEST_JSON,
        {"results": _relative(results, scratch), "windows_without_outputs": missing},
    )
    return results


def combine(
    project: Project, scratch: Path, partition_ids: Sequence[str] | None = None
) -> list[Path]:
    """Run process_dataset over the partitions' results into `scratch/results/`.

    Partitions not yet postprocessed are postprocessed first.
    """
    scratch = Path(scratch)
    ids = list(partition_ids) if partition_ids is not None else list_partitions(scratch)
    inputs: list[Path] = []
    for pid in ids:
        manifest = partition_results_dir(scratch, pid) / MANIFEST_JSON
        if not manifest.exists():
            postprocess_partition(project, scratch, pid)
        for rel in read_json(manifest)["results"]:
            p = Path(rel)
            inputs.append(p if p.is_absolute() else scratch / p)
    out_dir = dataset_results_dir(scratch)
    results = project.postprocessors.process_dataset.process_dataset(inputs, out_dir)
    write_json(out_dir / MANIFEST_JSON, {"partitions": ids, "results": _relative(results, scratch)})
    return results
