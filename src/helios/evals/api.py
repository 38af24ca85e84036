"""What every downstream benchmark offers: a task description and labelled `Sample`s.

A benchmark reader maps its bands onto Helios modalities by name. Each item is an `EvalSample`
(`helios.data.sample.LabeledSample`): a `Sample` whose arrays are float32 raw values (not
normalized) in the H5 layout ([H, W, T, C], [H, W, C] or [T, C], bands in registry order), with
`MISSING_VALUE` for every band the benchmark lacks (never zeros), and a label. Normalization is
applied later by the protocol, from the checkpoint's stats or from `EvalDataset.stats()` (the
benchmark's own).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from torch.utils.data import Dataset

from helios.data.normalize import NormStats
from helios.data.sample import LabeledSample

TaskKind = Literal["classification", "multilabel", "segmentation"]
Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class TaskSpec:
    """A downstream task."""

    name: str
    """Benchmark name, e.g. "m-eurosat"."""
    kind: TaskKind
    """classification (one label), multilabel (multi-hot) or segmentation (per pixel)."""
    num_classes: int
    class_names: tuple[str, ...]
    modalities: tuple[str, ...]
    """Helios modalities the benchmark provides."""
    ignore_index: int = -1
    """Segmentation label value that is not scored."""


EvalSample = LabeledSample
"""A benchmark item: `sample.arrays` are float32 raw values (see module docstring); `label` as
in `LabeledSample`."""


class EvalDataset(Dataset[LabeledSample], ABC):
    """A benchmark split, read from the benchmark's own on-disk format."""

    task: TaskSpec
    split: Split

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> LabeledSample: ...

    @abstractmethod
    def stats(self) -> NormStats:
        """The benchmark's own band statistics (published, or computed on its train split)."""
