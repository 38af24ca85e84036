"""A user's own task, baseline and protocol, defined outside the helios package.

`helios eval run` and sweeps pick them by class path, as a project of your own would
(`tests.evals.custom.Blobs`, ...); nothing here is registered anywhere in helios.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from helios.data.normalize import Normalizer, NormStats, RunningStats
from helios.data.sample import LabeledSample, Sample
from helios.evals.api import EvalDataset, Split, TaskSpec
from helios.evals.models import EncoderLoader, LoadedEncoder
from helios.evals.protocols import EvalProtocol, ProtocolInputs
from helios.nn.export import EncoderConfig

_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


class Blobs(EvalDataset):
    """Dark or bright Landsat tiles (classification), seeded per split; no files read."""

    def __init__(self, root: str, split: Split = "train", size: int = 16, count: int = 12) -> None:
        """Args: root: unused (kept to look like a benchmark); split; tile side; tiles."""
        self.root, self.split, self.size, self.count = root, split, size, count
        self.task = TaskSpec("blobs", "classification", 2, ("dark", "bright"), ("landsat",))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> LabeledSample:
        rng = np.random.default_rng([_SPLIT_SEED[self.split], index])
        label = index % 2
        level = 8000.0 + 12000.0 * label
        arr = rng.normal(level, 500.0, (self.size, self.size, 1, 11)).astype(np.float32)
        sample = Sample(
            arrays={"landsat": arr},
            present={"landsat": np.ones(1, dtype=bool)},
            timestamps=np.array([[15, 6, 2020]], dtype=np.int32),
            latlon=np.zeros(2, dtype=np.float32),
            source=f"blobs/{self.split}/{index}",
        )
        return LabeledSample(sample=sample, label=np.asarray(label, dtype=np.int64))

    def stats(self) -> NormStats:
        """Band statistics of the train split."""
        running = RunningStats(11)
        train = Blobs(self.root, "train", self.size, self.count)
        for i in range(len(train)):
            running.update(train[i].sample.data["landsat"].reshape(-1, 11))
        return NormStats.from_running({"landsat": running})


class TinyBaseline(EncoderLoader):
    """A baseline of one's own: a tiny Helios-architecture encoder from a state-dict file."""

    def __init__(self, path: str, width: int = 16, patch_size: int = 4) -> None:
        """Args: path: the state dict; width: embedding width; patch_size: its default."""
        super().__init__(path)
        self.width, self.patch_size = width, patch_size

    def load(self) -> LoadedEncoder:
        """The encoder with the file's weights, plain fixed-range normalization."""
        encoder = EncoderConfig(embed_dim=self.width, depth=1, num_heads=2).build(["landsat"])
        encoder.load_state_dict(torch.load(self.path, weights_only=True))
        return LoadedEncoder(encoder, Normalizer(), self.patch_size)


class Majority(EvalProtocol):
    """A protocol of one's own: predict the train split's most common class."""

    ignores = frozenset({"lr", "epochs", "k", "pooling"})

    def run(self, inputs: ProtocolInputs) -> dict[str, Any]:
        """Accuracy of the majority class on val and test."""
        labels = [int(inputs.train[i].label) for i in range(len(inputs.train))]  # type: ignore[arg-type]
        top = max(set(labels), key=labels.count)
        out = {}
        for name, ds in (("val", inputs.val), ("test", inputs.test)):
            hits = [int(ds[i].label) == top for i in range(len(ds))]  # type: ignore[arg-type]
            out[name] = {"accuracy": float(np.mean(hits))}
        return out
