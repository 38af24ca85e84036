"""The demo tasks: real Landsat-8 cloud labels (from the scene's BQA band) on the demo dataset.

`helios data demo --out DIR` writes the samples and labels (docs/data.md). Two tasks:

- `demo-cloud-tiles` (classification): per 128 px sample, clear (< 10 % cloud), partly cloudy,
  or cloudy (> 50 %).
- `demo-cloud-seg` (segmentation): per 10 m pixel, clear (land or water) or cloud; fill pixels
  are ignored.

Splits are by tile, so the four quadrants of a 256 px tile never straddle two splits: tiles are
ordered by mean cloud fraction and dealt out train, train, train, val, test in turn, which keeps
every split's class mix close to the whole scene's.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from helios.data.demo import load_demo_labels
from helios.data.h5 import read_sample, sample_filename
from helios.data.normalize import NormStats, RunningStats
from helios.evals.api import EvalDataset, EvalSample, Split, TaskSpec

DemoTask = Literal["demo-cloud-tiles", "demo-cloud-seg"]
SEG_CLASSES = ("clear", "cloud")
IGNORE = -1
_DEAL = ("train", "train", "train", "val", "test")


def demo_splits(tile_ids: list[str], cloud_fraction: np.ndarray) -> np.ndarray:
    """Split name per sample (grouped by tile, stratified by cloudiness)."""
    tiles = sorted(set(tile_ids))
    ids = np.asarray(tile_ids)
    mean_cloud = {t: float(cloud_fraction[ids == t].mean()) for t in tiles}
    order = sorted(tiles, key=lambda t: (mean_cloud[t], t))
    tile_split = {t: _DEAL[i % len(_DEAL)] for i, t in enumerate(order)}
    return np.asarray([tile_split[t] for t in tile_ids])


class DemoCloudDataset(EvalDataset):
    """A split of a demo task, read from a `helios data demo` output folder."""

    def __init__(
        self, root: str | Path, task: DemoTask = "demo-cloud-tiles", split: Split = "train"
    ) -> None:
        """Args: root: the `--out` folder of `helios data demo`; task; split."""
        self.root = Path(root)
        labels = load_demo_labels(self.root)
        self.labels = labels
        splits = demo_splits(labels.tile_ids, labels.cloud_fraction)
        self.rows = np.flatnonzero(splits == split)
        if len(self.rows) == 0:
            raise ValueError(f"{self.root}: demo split {split!r} is empty")
        self.split = split
        self.h5_dir = Path(labels.h5_dir)
        if task == "demo-cloud-tiles":
            self.task = TaskSpec(
                task,
                "classification",
                len(labels.class_names),
                tuple(labels.class_names),
                ("landsat",),
            )
        elif task == "demo-cloud-seg":
            self.task = TaskSpec(task, "segmentation", 2, SEG_CLASSES, ("landsat",), IGNORE)
        else:
            raise ValueError(f"unknown demo task {task!r}; use demo-cloud-tiles or demo-cloud-seg")

    def __len__(self) -> int:
        return len(self.rows)

    def _label(self, row: int) -> np.ndarray:
        if self.task.kind == "classification":
            return np.asarray(self.labels.classes[row], dtype=np.int64)
        mask = self.labels.pixel_masks[row]
        out = np.zeros(mask.shape, dtype=np.int64)  # clear land and water
        out[mask == 2] = 1
        out[mask == 255] = IGNORE
        return out

    def __getitem__(self, index: int) -> EvalSample:
        row = int(self.rows[index])
        index_h5 = int(self.labels.sample_indices[row])
        sample = read_sample(self.h5_dir / sample_filename(index_h5), ["landsat"])
        return EvalSample(sample=sample, label=self._label(row))

    @cached_property
    def _stats(self) -> NormStats:
        """Band statistics of the train split (the benchmark's own stats)."""
        train = DemoCloudDataset(self.root, self.task.name, "train")  # type: ignore[arg-type]
        running = RunningStats(11)
        for i in range(len(train)):
            arr = train[i].sample.data["landsat"]
            running.update(arr.reshape(-1, arr.shape[-1]))
        return NormStats.from_running({"landsat": running})

    def stats(self) -> NormStats:
        """Landsat band statistics computed on the train split."""
        return self._stats
