"""H5 directory -> `Sample`: `H5SampleDataset`.

Turning samples into batches (plans, tokenizing, collation) is `helios.data.batching`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from helios.data.h5 import METADATA_CSV, H5Directory, read_sample, warn_once
from helios.data.modalities import get_modality
from helios.data.sample import Sample


class H5SampleDataset(Dataset[Sample]):
    """Map-style dataset over an H5 training-set directory.

    Only `modalities` are decoded; samples holding none of them (per sample_metadata.csv) are
    left out. A modality the CSV lists but the file lacks is missing from the sample, with a
    warning naming the file once (as for NaN/Inf values, which `read_sample` reads as missing).
    """

    def __init__(self, h5_dir: Path | str, modalities: Sequence[str] | None = None) -> None:
        self.directory = H5Directory.open(h5_dir)
        found = self.directory.modalities() or None
        self.modalities = list(modalities) if modalities else list(found or [])
        for name in self.modalities:
            get_modality(name)
        keep = np.ones(len(self.directory), dtype=bool)
        if self.directory.presence and self.modalities:
            cols = [
                self.directory.presence[m] for m in self.modalities if m in self.directory.presence
            ]
            keep = np.any(np.stack(cols), axis=0) if cols else np.zeros_like(keep)
        self.positions = np.flatnonzero(keep)
        if len(self.positions) == 0:
            raise ValueError(f"{h5_dir}: no sample holds any of the modalities {self.modalities}")

    def __len__(self) -> int:
        return len(self.positions)

    def path(self, index: int) -> Path:
        """File of the `index`-th sample."""
        return self.directory.path(int(self.positions[index]))

    def subset(self, indices: np.ndarray) -> H5SampleDataset:
        """A view over some of this dataset's samples (no files are re-read)."""
        view = copy.copy(self)
        view.positions = self.positions[indices]
        return view

    def sample_index(self, index: int) -> int:
        """The H5 sample number (the `i` of `sample_{i}.h5`) of the `index`-th sample."""
        return self.directory.indices[int(self.positions[index])]

    def __getitem__(self, index: int) -> Sample:
        path = self.path(index)
        sample = read_sample(path, self.modalities or None)
        position = int(self.positions[index])
        for name in self.modalities:
            listed = self.directory.presence.get(name)
            if listed is not None and listed[position] and name not in sample.arrays:
                warn_once(path, "absent", f"{path}: {METADATA_CSV} lists {name}, the file lacks it")
        return sample
