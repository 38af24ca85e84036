"""The postprocessing steps: process_window + process_partition per partition, then combine.

Each step is idempotent: postprocessors skip outputs whose inputs did not change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from helios.runner.core.fsutil import read_json, write_json
from helios.runner.core.windows import (
    MANIFEST_JSON,
    dataset_results_dir,
    list_partitions,
    list_windows,
    partition_results_dir,
)
from helios.runner.postprocess.postprocessors import Postprocessors

logger = logging.getLogger(__name__)


def _relative(paths: Sequence[Path], scratch: Path) -> list[str]:
    out = []
    for p in paths:
        try:
            out.append(str(Path(p).resolve().relative_to(scratch.resolve())))
        except ValueError:
            out.append(str(p))
    return out


def postprocess_partition(
    postprocessors: Postprocessors, scratch: Path, partition_id: str
) -> list[Path]:
    """Run process_window on every window with outputs, then process_partition.

    Windows without outputs (failed builds, or not yet predicted) are skipped and listed in
    `scratch/partitions/<pid>/results/manifest.json` with the results.
    """
    scratch = Path(scratch)
    pp = postprocessors
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
    postprocessors: Postprocessors, scratch: Path, partition_ids: Sequence[str] | None = None
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
            postprocess_partition(postprocessors, scratch, pid)
        for rel in read_json(manifest)["results"]:
            p = Path(rel)
            inputs.append(p if p.is_absolute() else scratch / p)
    out_dir = dataset_results_dir(scratch)
    results = postprocessors.process_dataset.process_dataset(inputs, out_dir)
    write_json(out_dir / MANIFEST_JSON, {"partitions": ids, "results": _relative(results, scratch)})
    return results
