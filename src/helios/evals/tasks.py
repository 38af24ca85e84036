"""The task table: task names -> benchmark readers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helios.evals.api import EvalDataset, Split

DEMO_TASKS = ("demo-cloud-tiles", "demo-cloud-seg")
GEOBENCH_TASKS = (
    "m-eurosat",
    "m-bigearthnet",
    "m-so2sat",
    "m-brick-kiln",
    "m-forestnet",
    "m-cashew-plant",
    "m-SA-crop-type",
)
OTHER_TASKS = ("mados", "sen1floods11", "pastis", "breizhcrops")
TASKS = DEMO_TASKS + GEOBENCH_TASKS + OTHER_TASKS


def build_task(
    name: str, root: str | Path, split: Split, options: dict[str, Any] | None = None
) -> EvalDataset:
    """Open split `split` of task `name` from the benchmark folder `root`."""
    options = dict(options or {})
    if name in DEMO_TASKS:
        from helios.evals.datasets.demo import DemoCloudDataset

        return DemoCloudDataset(root, name, split)  # type: ignore[arg-type]
    if name in GEOBENCH_TASKS:
        from helios.evals.datasets.geobench import GeoBenchDataset

        return GeoBenchDataset(root, name, split, **options)  # type: ignore[arg-type]
    if name == "mados":
        from helios.evals.datasets.mados import MADOS

        return MADOS(root, split, **options)
    if name == "sen1floods11":
        from helios.evals.datasets.sen1floods11 import Sen1Floods11

        return Sen1Floods11(root, split, **options)
    if name == "pastis":
        from helios.evals.datasets.pastis import PASTIS

        return PASTIS(root, split, **options)
    if name == "breizhcrops":
        from helios.evals.datasets.breizhcrops import BreizhCrops

        return BreizhCrops(root, split, **options)
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
