"""An rslearn model's inputs, read from the rslearn-layout windows Helios builds.

Each raster input of model.yaml (`data.init_args.inputs.<name>`) names layers
(`sentinel2_l2a_mo08`, `sentinel2.1`: layer and item group) and bands. As in rslearn, one
timestep is one completed item group, in the order listed: with `load_all_layers` every listed
layer, otherwise one of them (rslearn picks at random; Helios takes the first completed one),
and with `load_all_item_groups` every group of each layer. A step's bands come from the
layer's band-set GeoTIFFs (`layers/<layer>[.n]/<band set>/geotiff.tif`), sampled (nearest)
onto the window's 10 m grid, raw values as stored (nodata included, as rslearn reads them);
its time range spans its items'. Inputs are [C, T, H, W] float32, then `OlmoEarthNormalize`
as configured, in float32 exactly as rslearn computes it.

Windows are cut into the runner's crops (`helios.runner.predict.crops.plan_window`); the
dataset has the `plans` and `items` the runner's `WindowWriter` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.normalize import load_computed_config
from torch import Tensor
from torch.utils.data import Dataset

from helios.runner.core.windows import COMPLETED, Window
from helios.runner.materialize.dataset_config import DatasetConfig, LayerConfig
from helios.runner.materialize.window import read_items
from helios.runner.predict.crops import RankedCrops, WindowPlan, ref_size
from helios.runner.predict.rslearn_model.config import InputSpec, NormalizeSpec, RslearnConfig
from helios.runner.predict.rslearn_model.encoder import RasterInput, TimeRange

logger = logging.getLogger(__name__)
CropItem = tuple[dict[str, RasterInput], int, np.ndarray]
Batch = tuple[list[dict[str, RasterInput]], Tensor, Tensor]


def sample_geotiff(path: Path, window: Window, shape: tuple[int, int]) -> np.ndarray:
    """A GeoTIFF's bands sampled (nearest) onto `shape` pixels over the window: [C, H, W].

    Pixels outside the file are 0, the nodata value rslearn fills there.
    """
    with rasterio.open(path) as src:
        data = src.read().astype(np.float32)
        t = src.transform
    height, width = shape
    x0, y0, x1, y1 = window.bounds
    xs = x0 + (np.arange(width) + 0.5) * (x1 - x0) / width
    ys = y1 - (np.arange(height) + 0.5) * (y1 - y0) / height
    cols = np.floor((xs - t.c) / t.a).astype(int)
    rows = np.floor((ys - t.f) / t.e).astype(int)
    ok = ((rows >= 0) & (rows < data.shape[1]))[:, None] & ((cols >= 0) & (cols < data.shape[2]))
    rows, cols = np.clip(rows, 0, data.shape[1] - 1), np.clip(cols, 0, data.shape[2] - 1)
    return np.where(ok[None], data[:, rows][:, :, cols], np.float32(0))


def _steps(window: Window, spec: InputSpec, dataset: DatasetConfig) -> list[tuple[str, int]]:
    """The (layer, item group) of each timestep of an input, completed groups only."""
    chosen: list[tuple[str, int]] = []
    for layer, group in spec.layers:
        if layer not in dataset.layers:
            raise ValueError(f"input {spec.name!r} reads layer {layer!r}, not in dataset.json")
        if group is not None:
            groups = [group]
        elif spec.load_all_item_groups:
            groups = list(range(len(read_items(window, layer) or [None])))
        else:
            groups = [0]
        done = [(layer, g) for g in groups if (window.layer_dir(layer, g) / COMPLETED).exists()]
        if done and not spec.load_all_layers:
            return done
        chosen += done
    return chosen


def _time_range(window: Window, layer: str, group: int) -> TimeRange | None:
    groups = read_items(window, layer) or []
    if group >= len(groups):
        return None
    ranges = [it.time_range for it in groups[group].items if it.time_range is not None]
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def read_input(
    window: Window, spec: InputSpec, dataset: DatasetConfig
) -> tuple[np.ndarray, list[TimeRange] | None]:
    """One input of a window: raw [C, T, H, W] float32 on its 10 m grid, and time ranges.

    T is 0 when the window has no completed layer for the input.
    """
    shape = ref_size(window)
    steps = _steps(window, spec, dataset)
    images, ranges = [], []
    for layer, group in steps:
        config = dataset.layers[layer]
        images.append(_read_bands(window, config, group, spec, shape))
        ranges.append(_time_range(window, layer, group))
    if not images:
        return np.zeros((len(spec.bands), 0, *shape), dtype=np.float32), None
    known = [r for r in ranges if r is not None]
    return np.stack(images, axis=1), known if len(known) == len(ranges) else None


def _read_bands(
    window: Window, layer: LayerConfig, group: int, spec: InputSpec, shape: tuple[int, int]
) -> np.ndarray:
    out = np.zeros((len(spec.bands), *shape), dtype=np.float32)
    found: dict[str, tuple[Any, int]] = {}
    for bs in layer.band_sets:
        for i, band in enumerate(bs.bands):
            found.setdefault(band, (bs, i))
    cache: dict[str, np.ndarray] = {}
    for c, band in enumerate(spec.bands):
        if band not in found:
            raise ValueError(
                f"input {spec.name!r}: layer {layer.name!r} has no band {band!r} ({layer.bands})"
            )
        bs, i = found[band]
        if bs.dirname not in cache:
            path = window.layer_dir(layer.name, group) / bs.dirname / "geotiff.tif"
            cache[bs.dirname] = sample_geotiff(path, window, shape)
        out[c] = cache[bs.dirname][i]
    return out


def normalize(name: str, image: np.ndarray, spec: NormalizeSpec) -> np.ndarray:
    """Rslearn's OlmoEarthNormalize of one input [C, T, H, W] (float32, every band once)."""
    bands = spec.band_names[name]
    if image.shape[0] != len(bands):
        raise ValueError(f"{name}: {image.shape[0]} channels but band_names lists {len(bands)}")
    stats = load_computed_config()[name]
    todo = set(range(len(bands)))
    out = image.astype(np.float32, copy=True)
    for band, s in stats.items():
        if band not in bands:
            raise ValueError(f"{name}: OlmoEarthNormalize band_names lacks {band!r}")
        i = bands.index(band)
        lo, hi = (
            s["mean"] - spec.std_multiplier * s["std"],
            s["mean"] + spec.std_multiplier * s["std"],
        )
        out[i] = (out[i] - np.float32(lo)) / np.float32(hi - lo)
        todo.discard(i)
    if todo:
        raise ValueError(f"{name}: bands {sorted(bands[i] for i in todo)} have no OlmoEarth stats")
    return out


class RslearnCropDataset(Dataset[CropItem]):
    """(window, crop) items: normalized inputs, the item number, and which pixels are inside."""

    def __init__(
        self, plans: list[WindowPlan], dataset: DatasetConfig, config: RslearnConfig, crop: int
    ) -> None:
        """Args: window plans; dataset.json; the model's config; crop side in pixels."""
        self.plans, self.dataset, self.config, self.crop = plans, dataset, config, crop
        self.items = [(i, r, c) for i, p in enumerate(plans) for r, c in p.offsets]
        self._cached: tuple[int, dict[str, Any], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _window(self, index: int) -> tuple[dict[str, Any], np.ndarray]:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1], self._cached[2]
        plan = self.plans[index]
        size = (plan.padded_height, plan.padded_width)
        inputs: dict[str, Any] = {}
        inside = np.zeros(size, dtype=bool)
        inside[: plan.height, : plan.width] = True
        for name, spec in self.config.inputs.items():
            image, ranges = read_input(plan.window, spec, self.dataset)
            if image.shape[1] == 0:
                level = logging.WARNING if spec.required else logging.INFO
                logger.log(level, "%s: no completed layer for input %r", plan.window.name, name)
                image = np.zeros((image.shape[0], 1, *image.shape[2:]), dtype=np.float32)
                if spec.required:  # no prediction for the window: its output is nodata
                    inside[:] = False
            padded = np.zeros((*image.shape[:2], *size), dtype=np.float32)
            h, w = min(image.shape[2], size[0]), min(image.shape[3], size[1])
            padded[:, :, :h, :w] = image[:, :, :h, :w]
            inputs[name] = (padded, ranges)
        self._cached = (index, inputs, inside)
        return inputs, inside

    def __getitem__(self, item: int) -> CropItem:
        index, r, c = self.items[item]
        inputs, inside = self._window(index)
        rows, cols = slice(r, r + self.crop), slice(c, c + self.crop)
        out = {}
        for name, (image, ranges) in inputs.items():
            crop = image[:, :, rows, cols]
            norm = self.config.normalize
            if norm is not None and name in norm.band_names:
                crop = normalize(name, crop, norm)
            out[name] = RasterInput(torch.from_numpy(np.ascontiguousarray(crop)), ranges)
        return out, item, inside[rows, cols]


def collate(items: list[CropItem]) -> Batch:
    """Inputs stay a list of per-sample dicts (their T may differ), as in rslearn."""
    inputs = [x for x, _, _ in items]
    ids = torch.tensor([i for _, i, _ in items], dtype=torch.long)
    inside = torch.from_numpy(np.stack([m for _, _, m in items]))
    return inputs, ids, inside


class RslearnCropDataModule(RankedCrops):
    """The crops of some windows for an rslearn model."""

    def __init__(
        self,
        plans: list[WindowPlan],
        dataset: DatasetConfig,
        config: RslearnConfig,
        crop: int,
        batch_size: int = 8,
        num_workers: int = 0,
    ) -> None:
        """Args: window plans, dataset.json, the model's config, crop side, loader settings."""
        super().__init__()
        self.all_plans, self.dataset_config, self.config = plans, dataset, config
        self.crop, self.batch_size, self.num_workers = crop, batch_size, num_workers
        self.collate = collate

    def make_dataset(self, plans: list[WindowPlan]) -> RslearnCropDataset:
        """The crops of these windows."""
        return RslearnCropDataset(plans, self.dataset_config, self.config, self.crop)


__all__ = [
    "RasterInput",
    "RslearnCropDataModule",
    "RslearnCropDataset",
    "collate",
    "normalize",
    "read_input",
]
