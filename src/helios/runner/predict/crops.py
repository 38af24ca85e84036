"""Windows as overlapping square crops: planning, the data module, and blending back.

A window's 10 m reference grid is padded to whole patches (and at least one crop) and
covered by `crop`-pixel crops every `crop - overlap` pixels, the last flush with the edge.
`CropDataset` yields each crop as an unnormalized `LabeledSample` (normalized and tokenized by
`helios.data.batching.LabeledCollate`); `CropBlender` adds crop outputs back into a window
with feathering weights (helios.runner.core.rasters.taper_weights) times patch validity, so
overlaps blend without seams and patches without data get no weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from helios.data.batching import LabeledCollate
from helios.data.modalities import BASE_FACTOR, MISSING_VALUE, get_modality, resolution_m
from helios.data.sample import LabeledSample, Sample
from helios.runner.core.windows import Window
from helios.runner.materialize.dataset_config import DatasetConfig
from helios.runner.materialize.inputs import load_window_inputs
from helios.runner.predict.model import RunnerModel

REF_RESOLUTION = resolution_m(BASE_FACTOR)
"""Metres per pixel of the reference grid crops are cut on (10 m)."""


@dataclass
class WindowPlan:
    """One window's crops on its 10 m reference grid (padded to whole crops)."""

    window: Window
    height: int
    width: int
    padded_height: int
    padded_width: int
    offsets: list[tuple[int, int]]
    """(row, col) of each crop's top-left pixel."""


def crop_offsets(size: int, crop: int, stride: int) -> list[int]:
    """Start of each crop along one axis: every `stride`, the last flush with the end."""
    if size <= crop:
        return [0]
    return sorted({*range(0, size - crop, stride), size - crop})


def ref_size(window: Window) -> tuple[int, int]:
    """(height, width) of a window in 10 m reference pixels."""
    yres = abs(window.y_resolution or window.resolution)
    height = max(1, round(window.height * yres / REF_RESOLUTION))
    return height, max(1, round(window.width * window.resolution / REF_RESOLUTION))


def plan_window(window: Window, crop: int, overlap: int, patch: int) -> WindowPlan:
    """Crops covering a window; its grid is padded to whole patches and at least one crop."""
    height, width = ref_size(window)
    ph = max(crop, math.ceil(height / patch) * patch)
    pw = max(crop, math.ceil(width / patch) * patch)
    stride = max(patch, crop - overlap)
    rows, cols = crop_offsets(ph, crop, stride), crop_offsets(pw, crop, stride)
    return WindowPlan(window, height, width, ph, pw, [(r, c) for r in rows for c in cols])


class CropDataset(Dataset[LabeledSample]):
    """(window, crop) items as unnormalized `LabeledSample`s labelled with their item number."""

    def __init__(
        self,
        plans: list[WindowPlan],
        dataset_config: DatasetConfig,
        modalities: list[str],
        crop: int,
    ) -> None:
        """Args: window plans; the project's dataset config; the model's modalities; crop."""
        self.plans = plans
        self.dataset_config = dataset_config
        self.modalities = modalities
        self.crop = crop
        self.items = [(i, r, c) for i, p in enumerate(plans) for r, c in p.offsets]
        self._cached: tuple[int, dict[str, np.ndarray], np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _inputs(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """A window's padded inputs (the last window is kept: items come window by window)."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1:]
        plan = self.plans[index]
        inputs, stamps = load_window_inputs(plan.window, self.dataset_config)
        padded = {}
        for name, arr in inputs.items():
            if name not in self.modalities:
                continue
            k = get_modality(name).pixels_per_ref_pixel
            out = np.full(
                (plan.padded_height * k, plan.padded_width * k, *arr.shape[2:]),
                MISSING_VALUE,
                dtype=np.float32,
            )
            h, w = min(arr.shape[0], out.shape[0]), min(arr.shape[1], out.shape[1])
            out[:h, :w] = arr[:h, :w]
            padded[name] = out
        x0, y0, x1, y1 = plan.window.wgs84_bounds()
        latlon = np.array([(y0 + y1) / 2, (x0 + x1) / 2], dtype=np.float32)
        self._cached = (index, padded, stamps, latlon)
        return padded, stamps, latlon

    def __getitem__(self, item: int) -> LabeledSample:
        index, r, c = self.items[item]
        inputs, stamps, latlon = self._inputs(index)
        arrays = {}
        for name, arr in inputs.items():
            k = get_modality(name).pixels_per_ref_pixel
            arrays[name] = arr[r * k : (r + self.crop) * k, c * k : (c + self.crop) * k]
        present = {
            n: np.ones(len(stamps), dtype=bool) for n in arrays if get_modality(n).is_multitemporal
        }
        name = self.plans[index].window.name
        sample = Sample(
            arrays=arrays, present=present, timestamps=stamps, latlon=latlon, source=name
        )
        return LabeledSample(sample, np.array(item, dtype=np.int64))


class RankedCrops(L.LightningDataModule):
    """Base of crop data modules: each rank predicts whole windows (`windows[rank::world]`).

    Subclasses set `all_plans`, `batch_size`, `num_workers` and `collate`, and build their
    dataset in `make_dataset(plans)`.
    """

    all_plans: list[WindowPlan]
    batch_size: int
    num_workers: int
    collate: Any
    dataset: Dataset[Any] | None = None

    def make_dataset(self, plans: list[WindowPlan]) -> Dataset[Any]:
        """The crops of these windows."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Pick this rank's windows."""
        trainer = getattr(self, "_trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self.dataset = self.make_dataset(self.all_plans[rank::world])

    def predict_dataloader(self) -> DataLoader:
        """Crops in window order."""
        if self.dataset is None:
            self.setup()
        assert self.dataset is not None
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collate,
        )


class CropDataModule(RankedCrops):
    """The crops of some windows for a Helios `RunnerModel`."""

    def __init__(
        self,
        plans: list[WindowPlan],
        dataset_config: DatasetConfig,
        model: RunnerModel,
        crop: int,
        batch_size: int = 8,
        num_workers: int = 0,
    ) -> None:
        """Args: window plans, dataset config, the model (modalities, normalizer, patch)."""
        super().__init__()
        self.all_plans = plans
        self.dataset_config = dataset_config
        self.modalities = list(model.modalities)
        # Every crop has the same size, a multiple of the patch size, and all its timesteps.
        self.collate = LabeledCollate(
            self.modalities, model.normalizer, model.patch_size, 10**6, fit="crop"
        )
        self.crop = crop
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dataset = None

    def make_dataset(self, plans: list[WindowPlan]) -> CropDataset:
        """The crops of these windows."""
        return CropDataset(plans, self.dataset_config, self.modalities, self.crop)


class CropBlender:
    """Feathered sum of one window's crop outputs."""

    def __init__(self, plan: WindowPlan, channels: int, scale: int, crops: int) -> None:
        self.scale = scale
        grid = (plan.padded_height // scale, plan.padded_width // scale) if scale else ()
        self.sum = np.zeros((channels, *grid), dtype=np.float64)
        self.weight = np.zeros(grid, dtype=np.float64)
        self.remaining = crops

    def add(self, r: int, c: int, out: np.ndarray, valid: np.ndarray, taper: np.ndarray) -> None:
        """Add one crop: out [K, h, w] (or [K]); valid bool [h_tokens, w_tokens]."""
        self.remaining -= 1
        if not self.scale:  # classification: mean over crops, weighted by valid patches
            wgt = float(valid.mean())
            self.sum += wgt * out
            self.weight += wgt
            return
        rep = out.shape[-1] // valid.shape[-1]
        wgt = taper * np.repeat(np.repeat(valid, rep, axis=0), rep, axis=1)
        r, c = r // self.scale, c // self.scale
        sl = (slice(r, r + out.shape[1]), slice(c, c + out.shape[2]))
        self.sum[(slice(None), *sl)] += out * wgt
        self.weight[sl] += wgt

    def result(self) -> np.ndarray:
        """Weighted mean; NaN where no crop had data."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.sum / self.weight
        return np.where(self.weight > 0, out, np.nan).astype(np.float32)
