"""Data splitters: assign each labeled window to train, val or test (`window_prep.data_splitter`).

Both built-ins assign the splits upstream olmoearth-runner 0.1.14 assigns on the same export
and seed (its one-worker order; upstream's multi-worker order is not reproducible):

- `RandomDataSplitter` draws one number per window from Python's `random.Random(seed)`, in
  the order windows are prepared (tasks in sampler order, then each task's windows), and
  cuts it at the cumulative proportions. A window's split thus depends on the windows
  before it; `stable: true` (Helios only) hashes each window's name instead, so adding
  annotations never moves an existing window to another split.
- `SpatialDataSplitter` hashes (SHA-256) the grid cell holding the window's min pixel corner,
  `f"{crs}_{col // grid_size}_{row // grid_size}"` exactly as upstream, so every window of a
  cell shares a split and nearby windows do not leak across splits; it depends only on the
  window.

Write your own by subclassing `DataSplitter` and implementing `choose_split(window)`.
"""

from __future__ import annotations

import hashlib
import random
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

    def reset(self) -> None:
        """Start a new preparation run (stateful splitters restart their sequence)."""

    def choose_split(self, window: LabeledWindow) -> Split:
        """The split of one labeled window."""
        raise NotImplementedError


class _ProportionSplitter(DataSplitter):
    def __init__(
        self, train_prop: float, val_prop: float, test_prop: float, seed: int | None
    ) -> None:
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
        """The split of a number in [0, 1) under the proportions (upstream's cut points)."""
        if u < self.train_prop:
            return "train"
        if u < self.train_prop + self.val_prop or self.test_prop == 0:
            return "val"  # (test_prop == 0 guards against rounding in the sum)
        return "test"


class RandomDataSplitter(_ProportionSplitter):
    """Each window at random in the given proportions: upstream's seeded sequence."""

    def __init__(
        self,
        train_prop: float,
        val_prop: float,
        test_prop: float,
        seed: int | None = 42,
        stable: bool = False,
    ) -> None:
        """Create the splitter.

        Args:
            train_prop: Expected fraction of windows in train.
            val_prop: Expected fraction in val.
            test_prop: Expected fraction in test; the three must sum to 1.
            seed: Seed of `random.Random`; the same seed and windows give the same splits.
                None draws a fresh seed each run (upstream's default; not reproducible).
            stable: Hash each window's name with the seed instead of drawing in sequence,
                so a window's split never depends on the other windows (Helios only; other
                splits than upstream's).

        """
        super().__init__(train_prop, val_prop, test_prop, seed)
        self.stable = stable
        self.reset()

    def reset(self) -> None:
        """Restart the sequence from the seed."""
        self._random = random.Random(self.seed)
        self._drawn: dict[str, Split] = {}

    def choose_split(self, window: LabeledWindow) -> Split:
        """The next draw's split (a window seen before in this run keeps its split)."""
        if self.stable:
            return self.split_for(hash_unit("random", self.seed, window.name))
        if window.name not in self._drawn:
            self._drawn[window.name] = self.split_for(self._random.random())
        return self._drawn[window.name]


class SpatialDataSplitter(_ProportionSplitter):
    """Whole grid cells at random: nearby windows share a split (upstream's hash)."""

    def __init__(
        self,
        train_prop: float,
        val_prop: float,
        test_prop: float,
        grid_size: int | float,
        grid_units: Literal["pixels", "metres"] = "pixels",
        seed: int | None = None,
    ) -> None:
        """Create the splitter.

        Args:
            train_prop: Expected fraction of grid cells in train.
            val_prop: Expected fraction in val.
            test_prop: Expected fraction in test; the three must sum to 1.
            grid_size: Side of the square cells on each window's pixel grid, in
                `grid_units` (1000 px = 10 km at 10 m). As upstream, `10.0` and `10` make
                the same cells but other cell ids, hence other splits.
            grid_units: "pixels" (of the window grid, as upstream) or "metres" (Helios only).
            seed: Salt of the cell hash (Helios only); None hashes as upstream.

        """
        super().__init__(train_prop, val_prop, test_prop, seed)
        if grid_size <= 0:
            raise ValueError(f"grid_size must be > 0, got {grid_size}")
        self.grid_size = grid_size
        self.grid_units = grid_units

    def cell(self, window: LabeledWindow) -> tuple[str, int | float, int | float]:
        """(CRS, column, row) of the grid cell holding the window's min pixel corner."""
        proj = window.spec.projection
        g = self.grid_size
        if self.grid_units == "metres":
            g = g / proj.x_resolution
        c0, r0 = window.spec.pixel_bounds[:2]
        return proj.crs, c0 // g, r0 // g

    def cell_id(self, window: LabeledWindow) -> str:
        """Upstream's cell id, e.g. "EPSG:32636_83_-5" (floats stay floats: "83.0")."""
        crs, col, row = self.cell(window)
        key = f"{crs}_{col}_{row}"
        return key if self.seed is None else f"{self.seed}_{key}"

    def choose_split(self, window: LabeledWindow) -> Split:
        """The split of the SHA-256 of the window's cell id."""
        digest = hashlib.sha256(self.cell_id(window).encode()).hexdigest()
        return self.split_for(int(digest, 16) / 2**256)


BUILTIN_SPLITTERS: tuple[type[DataSplitter], ...] = (RandomDataSplitter, SpatialDataSplitter)
