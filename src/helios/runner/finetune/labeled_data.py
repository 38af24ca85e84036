"""Labeled windows as training batches: `LabeledWindowDataModule` (fine-tuning).

The windows `prepare_labeled_windows` made and `build_dataset` materialized
(`scratch/labeled/partitions/<group>/windows/<w>/`) are read per split with
`load_window_inputs` (the model inputs) and `load_labeled_window` (the label), cut into
square crops of `crop_size` 10 m pixels as `LabeledSample`s, then normalized and tokenized for
the model into an unmasked `MaskedBatch` paired with their labels
(`helios.data.batching.LabeledCollate`, `fit="pad"`):

- segmentation (raster labels): int64 [B, crop, crop], the label's nodata and pixels off the
  window set to `ignore_index`;
- classification (vector labels): int64 [B].

Training crops are taken at random (with random flips); validation and test crops are
centred on the window (`eval_crop="center"`), or cover the whole window (`"full"`, padded to
a multiple of the patch size with missing pixels, which are never scored). Windows smaller
than the crop are padded the same way. The model's modalities, normalizer and patch size come
from the LightningModule being trained (any module with `modalities`, `normalizer` and
`patch_size` attributes, such as `RunnerModel`) unless `set_model_inputs` gave them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from helios.data.batching import LabeledCollate, cut_square
from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import Normalizer
from helios.data.sample import LabeledSample, Sample
from helios.runner.core.geometry import reproject_geometry
from helios.runner.core.windows import Window
from helios.runner.finetune import list_labeled_windows, load_labeled_window
from helios.runner.finetune.config import WindowPrep, parse_window_prep
from helios.runner.materialize.dataset_config import DatasetConfig, load_dataset_config
from helios.runner.materialize.inputs import load_window_inputs
from helios.runner.materialize.window import is_built

logger = logging.getLogger(__name__)
Split = Literal["train", "val", "test"]
REF_RESOLUTION = 10.0
"""Metres per reference pixel: crops and segmentation labels are on this grid."""


def _resize_nearest(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of [h, w, ...] (pixel repeat for whole-number factors)."""
    h, w = arr.shape[:2]
    if (h, w) == (height, width):
        return arr
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(int)
    return arr[rows[:, None], cols[None, :]]


def window_latlon(window: Window) -> np.ndarray:
    """float32 [2]: (lat, lon) of the window centre."""
    from shapely.geometry import Point

    x0, y0, x1, y1 = window.bounds
    p = reproject_geometry(Point((x0 + x1) / 2, (y0 + y1) / 2), window.crs, "EPSG:4326")
    return np.array([p.y, p.x], dtype=np.float32)


class LabeledWindowDataset(Dataset[LabeledSample]):
    """One split of the labeled windows, as `LabeledSample`s cropped to a square."""

    def __init__(
        self,
        windows: Sequence[Window],
        dataset_config: DatasetConfig,
        crop: Literal["random", "center", "full"],
        crop_size: int,
        ignore_index: int = 255,
        flip: bool = False,
        repeats: int = 1,
        multiple_of: int = 1,
    ) -> None:
        """Items for `windows`.

        Args:
            windows: Built labeled windows.
            dataset_config: The project's dataset.json (which layers are inputs).
            crop: Random squares (training), centred squares, or the whole window.
            crop_size: Side of the square in 10 m pixels (random and center).
            ignore_index: Label of unlabeled pixels (the label's nodata, padding).
            flip: Random horizontal and vertical flips (training).
            repeats: Each window appears this many times per epoch (random crops).
            multiple_of: "full" crops are padded to a multiple of this (the patch size).

        """
        self.windows = list(windows)
        self.dataset_config = dataset_config
        self.crop, self.crop_size = crop, crop_size
        self.ignore_index, self.flip = ignore_index, flip
        self.repeats, self.multiple_of = max(1, repeats), max(1, multiple_of)

    def __len__(self) -> int:
        return len(self.windows) * self.repeats

    def _label(self, window: Window, height: int, width: int) -> np.ndarray:
        label, nodata = load_labeled_window(window)
        if not isinstance(label, np.ndarray):
            return np.asarray(int(label), dtype=np.int64)
        out = label.astype(np.int64)
        if nodata is not None:
            out[label_nodata_mask(label, nodata)] = self.ignore_index
        return _resize_nearest(out, height, width)

    def __getitem__(self, index: int) -> LabeledSample:
        window = self.windows[index % len(self.windows)]
        arrays, timestamps = load_window_inputs(window, self.dataset_config)
        res = abs(window.y_resolution or window.resolution)
        height = max(1, round(window.height * res / REF_RESOLUTION))
        width = max(1, round(window.width * window.resolution / REF_RESOLUTION))
        label = self._label(window, height, width)
        if self.crop == "full":
            m = self.multiple_of
            size = -(-max(height, width) // m) * m
            y0 = x0 = 0
        else:
            size = self.crop_size
            if self.crop == "random":
                y0 = int(torch.randint(0, max(0, height - size) + 1, ()).item())
                x0 = int(torch.randint(0, max(0, width - size) + 1, ()).item())
            else:
                y0, x0 = (height - size) // 2, (width - size) // 2
        flips = torch.rand(2) < 0.5 if self.flip else torch.zeros(2, dtype=torch.bool)
        out: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for name, arr in arrays.items():
            spec = get_modality(name)
            k = spec.pixels_per_ref_pixel
            a = cut_square(arr, y0 * k, x0 * k, size * k, MISSING_VALUE)
            out[name] = _flip(a, flips)
            if spec.is_multitemporal:
                present[name] = np.ones(a.shape[2], dtype=bool)
        if label.ndim == 2:
            label = _flip(cut_square(label, y0, x0, size, self.ignore_index), flips)
        sample = Sample(out, present, timestamps, window_latlon(window), str(window.path))
        return LabeledSample(sample, np.ascontiguousarray(label))


def label_nodata_mask(label: np.ndarray, nodata: float) -> np.ndarray:
    """Where a raster label holds its nodata value."""
    return np.isnan(label) if isinstance(nodata, float) and np.isnan(nodata) else label == nodata


def _flip(arr: np.ndarray, flips: Tensor) -> np.ndarray:
    if bool(flips[0]):
        arr = arr[::-1]
    if bool(flips[1]):
        arr = arr[:, ::-1]
    return arr


class LabeledWindowDataModule(L.LightningDataModule):
    """Train / val / test batches of labeled windows (see the module docstring)."""

    def __init__(
        self,
        scratch: str,
        project: str,
        group_name: str | None = None,
        split_property: str | None = None,
        crop_size: int = 64,
        eval_crop: Literal["center", "full"] = "center",
        batch_size: int = 8,
        num_workers: int = 0,
        train_repeats: int = 1,
        flip: bool = True,
        ignore_index: int = 255,
        max_timesteps: int = 12,
        patch_size: int | None = None,
    ) -> None:
        """Configure the data.

        Args:
            scratch: The fine-tuning scratch folder (labeled windows in `scratch/labeled`).
            project: The project folder: its dataset.json says which layers are inputs, its
                olmoearth_run.yaml `window_prep` the group and split property.
            group_name: Labeled window group (default: window_prep's, else "default").
            split_property: window.json property holding the split (default: window_prep's,
                else "split").
            crop_size: Side of training (and centred evaluation) crops in 10 m pixels; a
                multiple of the patch size.
            eval_crop: Validation/test on centred crops, or on whole windows.
            batch_size: Items per batch.
            num_workers: DataLoader worker processes.
            train_repeats: Random crops per training window per epoch.
            flip: Random flips of training crops.
            ignore_index: Label value of unlabeled pixels (never scored).
            max_timesteps: Timesteps per item at most.
            patch_size: Override the model's patch size.

        """
        super().__init__()
        self.scratch, self.project = Path(scratch), Path(project)
        self._group_name, self._split_property = group_name, split_property
        self.crop_size, self.eval_crop = crop_size, eval_crop
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_repeats, self.flip = train_repeats, flip
        self.ignore_index, self.max_timesteps = ignore_index, max_timesteps
        self.patch_size = patch_size
        self.modalities: list[str] | None = None
        self.normalizer: Normalizer | None = None
        self.datasets: dict[str, LabeledWindowDataset] = {}
        self.skipped: list[str] = []
        """Windows left out because they were not built."""
        self._config: DatasetConfig | None = None
        self._prep: WindowPrep | None = None

    def set_model_inputs(
        self, modalities: Sequence[str], normalizer: Normalizer, patch_size: int | None = None
    ) -> None:
        """Use these instead of the trained module's modalities, normalizer and patch size."""
        self.modalities, self.normalizer = list(modalities), normalizer
        if patch_size is not None and self.patch_size is None:
            self.patch_size = patch_size

    @property
    def dataset_config(self) -> DatasetConfig:
        """The project's dataset.json, parsed."""
        if self._config is None:
            config, problems = load_dataset_config(self.project / "dataset.json")
            if config is None or problems:
                raise ValueError(f"{self.project / 'dataset.json'}: {'; '.join(problems)}")
            self._config = config
        return self._config

    def _window_prep(self) -> WindowPrep | None:
        if self._prep is None:
            import yaml

            path = self.project / "olmoearth_run.yaml"
            raw = yaml.safe_load(path.read_text()) if path.is_file() else None
            self._prep, _ = parse_window_prep((raw or {}).get("window_prep"))
        return self._prep

    @property
    def group_name(self) -> str:
        """The labeled window group."""
        prep = self._window_prep()
        return self._group_name or (prep.group_name if prep else "default")

    @property
    def split_property(self) -> str:
        """The window.json property holding the split."""
        prep = self._window_prep()
        return self._split_property or (prep.split_property if prep else "split")

    def windows(self, split: Split) -> list[Window]:
        """The built windows of a split."""
        fingerprint = self.dataset_config.fingerprint()
        out = []
        for w in list_labeled_windows(self.scratch, self.group_name, split, self.split_property):
            if is_built(w, fingerprint):
                out.append(w)
            else:
                self.skipped.append(w.name)
        return out

    def _model_inputs(self) -> tuple[list[str], Normalizer, int]:
        if self.normalizer is None or self.modalities is None:
            module: Any = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or not hasattr(module, "normalizer"):
                raise RuntimeError(
                    "LabeledWindowDataModule needs the model's modalities, normalizer and "
                    "patch size: train it with a RunnerModel or call set_model_inputs()"
                )
            self.set_model_inputs(module.modalities, module.normalizer, int(module.patch_size))
        if self.patch_size is None or self.normalizer is None or self.modalities is None:
            raise RuntimeError("no patch size: pass patch_size or use set_model_inputs()")
        return self.modalities, self.normalizer, self.patch_size

    def setup(self, stage: str | None = None) -> None:
        """Find the windows of each split and the model's input settings."""
        _, _, patch = self._model_inputs()
        if self.crop_size % patch:
            raise ValueError(f"crop_size {self.crop_size} is not a multiple of patch size {patch}")
        self.skipped = []
        splits: tuple[Split, ...] = ("train", "val", "test")
        for split in splits:
            train = split == "train"
            crop: Literal["random", "center", "full"] = "random" if train else self.eval_crop
            self.datasets[split] = LabeledWindowDataset(
                self.windows(split),
                self.dataset_config,
                crop,
                self.crop_size,
                self.ignore_index,
                flip=self.flip and train,
                repeats=self.train_repeats if train else 1,
                multiple_of=patch,
            )
        if self.skipped:
            logger.warning("%d labeled windows are not built; left out", len(self.skipped))
        counts = {s: len(d.windows) for s, d in self.datasets.items()}
        if not counts["train"]:
            raise ValueError(
                f"no built training windows in {self.scratch / 'labeled'} (group "
                f"{self.group_name!r}, {counts}): run prepare and build first"
            )

    def collate(self) -> LabeledCollate:
        """The collate function for the model: pads to each batch's largest window."""
        modalities, normalizer, patch = self._model_inputs()
        return LabeledCollate(
            modalities, normalizer, patch, self.max_timesteps, "pad", self.ignore_index
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        if split not in self.datasets:
            self.setup()
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self.collate(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Random crops of the training windows, shuffled."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation windows (centred crops or whole windows)."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test windows (centred crops or whole windows)."""
        return self._loader("test", shuffle=False)
