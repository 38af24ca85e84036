"""Data splitters: assign each labeled window to train, val or test (`window_prep.data_splitter`).

Both built-ins assign by hashing (SHA-256) a key with the seed to a number in [0, 1) and
cutting it at the cumulative proportions, so a window's split depends only on the window
(and the seed), never on which other windows exist or their order: re-running with more
annotations never moves an existing window to another split.

- `RandomDataSplitter` hashes the window name (its projection, pixels and time range).
- `SpatialDataSplitter` hashes the grid cell holding the window's centre, so every window of
  a cell shares a split and nearby windows do not leak across splits.

Write your own by subclassing `DataSplitter` and implementing `choose_split(window)`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

from helios.runner.finetune.preparers import LabeledWindow

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def hash_unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts (SHA-256 of their text)."""
    text = "\x1f".join(str(p) for p in parts)
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) / 2**256


class DataSplitter:
    """Base class of data splitters."""

    def choose_split(self, window: LabeledWindow) -> Split:
        """The split of one labeled window."""
        raise NotImplementedError


class _ProportionSplitter(DataSplitter):
    def __init__(self, train_prop: float, val_prop: float, test_prop: float, seed: int) -> None:
        props = {"train_prop": train_prop, "val_prop": val_prop, "test_prop": test_prop}
        negative = [k for k, v in props.items() if v < 0 or v > 1]
        if negative:
            raise ValueError(f"{', '.join(negative)} must be between 0 and 1, got {props}")
        total = train_prop + val_prop + test_prop
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train_prop + val_prop + test_prop must sum to 1, got {train_prop} + "
                f"{val_prop} + {test_prop} = {total:g}"
            )
        self.train_prop = train_prop
        self.val_prop = val_prop
        self.test_prop = test_prop
        self.seed = seed

    def split_for(self, u: float) -> Split:
        """The split of a number in [0, 1) under the proportions."""
        if u < self.train_prop:
            return "train"
        if u < self.train_prop + self.val_prop or self.test_prop == 0:
            return "val"  # (test_prop == 0 guards against rounding in the sum)
        return "test"


class RandomDataSplitter(_ProportionSplitter):
    """Each window independently at random (seeded), in the given proportions."""

    def __init__(
        self, train_prop: float, val_prop: float, test_prop: float, seed: int = 42
    ) -> None:
        """Create the splitter.

        Args:
            train_prop: Expected fraction of windows in train.
            val_prop: Expected fraction in val.
            test_prop: Expected fraction in test; the three must sum to 1.
            seed: Seed; the same seed gives every window the same split.

        """
        super().__init__(train_prop, val_prop, test_prop, seed)

    def choose_split(self, window: LabeledWindow) -> Split:
        """The split of the window's name hashed with the seed."""
        return self.split_for(hash_unit("random", self.seed, window.name))


class SpatialDataSplitter(_ProportionSplitter):
    """Whole grid cells at random (seeded): nearby windows share a split."""

    def __init__(
        self,
        train_prop: float,
        val_prop: float,
        test_prop: float,
        grid_size: float,
        grid_units: Literal["pixels", "metres"] = "pixels",
        seed: int = 0,
    ) -> None:
        """Create the splitter.

        Args:
            train_prop: Expected fraction of grid cells in train.
            val_prop: Expected fraction in val.
            test_prop: Expected fraction in test; the three must sum to 1.
            grid_size: Side of the square cells on each window's UTM grid, in
                `grid_units` (upstream gives pixels: 1000 px = 10 km at 10 m).
            grid_units: "pixels" (of the window grid) or "metres".
            seed: Seed of the cell assignment.

        """
        super().__init__(train_prop, val_prop, test_prop, seed)
        if grid_size <= 0:
            raise ValueError(f"grid_size must be > 0, got {grid_size}")
        self.grid_size = grid_size
        self.grid_units = grid_units

    def cell(self, window: LabeledWindow) -> tuple[str, int, int]:
        """(CRS, column, row) of the grid cell holding the window's centre."""
        proj = window.spec.projection
        c0, r0, c1, r1 = window.spec.pixel_bounds
        pixels = self.grid_units == "pixels"
        side = self.grid_size * proj.x_resolution if pixels else self.grid_size  # metres
        cx = (c0 + c1) / 2 * proj.x_resolution
        cy = (r0 + r1) / 2 * proj.y_resolution
        return proj.crs, math.floor(cx / side), math.floor(cy / side)

    def choose_split(self, window: LabeledWindow) -> Split:
        """The split of the window's grid cell hashed with the seed."""
        return self.split_for(hash_unit("spatial", self.seed, *self.cell(window)))


BUILTIN_SPLITTERS: tuple[type[DataSplitter], ...] = (RandomDataSplitter, SpatialDataSplitter)
