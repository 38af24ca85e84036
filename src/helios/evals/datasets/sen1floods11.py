"""Sen1Floods11: flood water segmentation on hand-labeled Sentinel-1/2 chips (Bonafilia et al.).

On-disk format (the `gs://sen1floods11/v1.1` bucket, read unchanged)::

    <root>/data/flood_events/HandLabeled/S1Hand/<event>_<id>_S1Hand.tif       float32, 2 bands
    <root>/data/flood_events/HandLabeled/S2Hand/<event>_<id>_S2Hand.tif       int16, 13 bands
    <root>/data/flood_events/HandLabeled/LabelHand/<event>_<id>_LabelHand.tif int16, 1 band
    <root>/splits/flood_handlabeled/flood_{train,valid,test,bolivia}_data.csv

Chips are 512 x 512 px at 10 m in EPSG:4326. S1Hand holds VV and VH backscatter in dB (NaN where
invalid), S2Hand the 13 Sentinel-2 L1C bands B1..B12 with B8A after B8 (TOA reflectance x 10000,
nodata 0); band descriptions name the bands. LabelHand is -1 no data, 0 not water, 1 water. A
split CSV has no header; each row is `<chip>_S1Hand.tif,<chip>_LabelHand.tif`. The bolivia CSV is
the held-out Bolivia event, used here as an alternative test split. A folder holding S1Hand/,
S2Hand/, LabelHand/ and the CSVs directly is also accepted.

Helios maps S1 to `sentinel1` (vv, vh) and S2 to `sentinel2` (L1C, all 13 bands by name); nodata
becomes MISSING_VALUE. Each chip is one timestep dated by its event's acquisition date (from
Sen1Floods11_Metadata.geojson: the S1 date when S1 is read, else the S2 date).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import BandStats, NormStats, RunningStats
from helios.data.sample import Sample
from helios.evals.api import EvalDataset, EvalSample, Split, TaskSpec

FloodModality = Literal["sentinel1", "sentinel2"]
TestSet = Literal["test", "bolivia"]

CLASS_NAMES = ("not_water", "water")
IGNORE_INDEX = -1
LAYERS: dict[str, str] = {"sentinel1": "S1Hand", "sentinel2": "S2Hand"}
DEFAULT_BANDS: dict[str, tuple[str, ...]] = {
    "sentinel1": ("vv", "vh"),
    "sentinel2": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                  "B11", "B12"),
}  # fmt: skip
"""Helios band names of the file bands, in file order, for files without band descriptions."""
SPLIT_FILES: dict[str, str] = {
    "train": "flood_train_data.csv",
    "val": "flood_valid_data.csv",
    "test": "flood_test_data.csv",
    "bolivia": "flood_bolivia_data.csv",
}
DATA_DIRS = ("data/flood_events/HandLabeled", "v1.1/data/flood_events/HandLabeled", ".")
SPLIT_DIRS = ("splits/flood_handlabeled", "v1.1/splits/flood_handlabeled", ".")
EVENT_DATES: dict[str, tuple[str, str]] = {
    "Bolivia": ("2018-02-15", "2018-02-15"),
    "Cambodia": ("2018-08-05", "2018-08-04"),
    "Colombia": ("2018-08-22", "2018-08-23"),
    "Ghana": ("2018-09-18", "2018-09-19"),
    "India": ("2016-08-12", "2016-08-12"),
    "Nigeria": ("2018-09-21", "2018-09-20"),
    "Pakistan": ("2017-06-28", "2017-06-28"),
    "Paraguay": ("2018-10-31", "2018-10-31"),
    "Somalia": ("2018-05-07", "2018-05-05"),
    "Spain": ("2019-09-17", "2019-09-18"),
    "Sri-Lanka": ("2017-05-30", "2017-05-28"),
    "USA": ("2019-05-22", "2019-05-22"),
}
"""(S1 date, S2 date) per event, from Sen1Floods11_Metadata.geojson; chips of the Cambodia event
are named Mekong_<id>."""
EVENT_ALIASES = {"Mekong": "Cambodia"}
S1_PUBLISHED = {"vv": (0.6851 * 51 - 50, 0.0820 * 51), "vh": (0.5235 * 51 - 50, 0.1102 * 51)}
"""S1 (mean, std) in dB: the official notebook normalizes clip(x, -50, 1) mapped to [0, 1] with
mean (0.6851, 0.5235) and std (0.0820, 0.1102); these are those values mapped back to dB."""

_STATS_CACHE: dict[tuple[Any, ...], NormStats] = {}


@dataclass(frozen=True)
class _Chip:
    chip: str
    label_file: str
    date: tuple[int, int, int]
    """(day, month, year) of the sample's single timestep."""


class Sen1Floods11(EvalDataset):
    """Sen1Floods11 hand-labeled flood segmentation (see module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: Split = "train",
        modalities: tuple[FloodModality, ...] = ("sentinel1",),
        test_set: TestSet = "test",
        tile_size: int | None = None,
        drop_unlabeled: bool = False,
        stats_samples: int | None = None,
    ) -> None:
        """Index one split.

        Args:
            root: the bucket's v1.1 folder (or a folder with S1Hand/, S2Hand/, LabelHand/ and
                the split CSVs).
            split: "train", "val" or "test".
            modalities: "sentinel1", "sentinel2" or both.
            test_set: the CSV of the test split: "test" (flood_test_data.csv) or "bolivia"
                (flood_bolivia_data.csv, the held-out event).
            tile_size: split each 512 px chip into square tiles of this side (must divide it);
                None keeps whole chips.
            drop_unlabeled: skip tiles whose labels are all no-data (reads every label first).
            stats_samples: train chips `stats()` uses for the S2 statistics (None: all).

        """
        self.root = Path(root)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, not {split!r}")
        if not modalities or any(m not in LAYERS for m in modalities):
            raise ValueError(f"modalities must be sentinel1 and/or sentinel2, not {modalities}")
        if test_set not in ("test", "bolivia"):
            raise ValueError(f"test_set must be test or bolivia, not {test_set!r}")
        self.split: Split = split
        self.modalities = tuple(dict.fromkeys(modalities))
        self.test_set: TestSet = test_set
        self.tile_size = tile_size
        self.stats_samples = stats_samples
        self.task = TaskSpec(
            name="sen1floods11",
            kind="segmentation",
            num_classes=len(CLASS_NAMES),
            class_names=CLASS_NAMES,
            modalities=self.modalities,
            ignore_index=IGNORE_INDEX,
        )
        self.data_dir = _find(self.root, DATA_DIRS, "LabelHand", "the LabelHand/ folder")
        self.chips = self._read_split()
        self._tiles_per_side = 1
        if tile_size is not None and self.chips:
            with _open(self._label_path(self.chips[0])) as src:
                side = src.height
            if tile_size <= 0 or side % tile_size:
                raise ValueError(f"tile_size {tile_size} must divide the chip side {side}")
            self._tiles_per_side = side // tile_size
        tiles = range(self._tiles_per_side**2)
        self.items = [(c, t) for c in range(len(self.chips)) for t in tiles]
        if drop_unlabeled:
            self.items = [it for it in self.items if (self._label(*it) != IGNORE_INDEX).any()]

    # ----------------------------------------------------------------------------- indexing

    def _read_split(self) -> list[_Chip]:
        name = SPLIT_FILES[self.test_set if self.split == "test" else self.split]
        path = _find(self.root, SPLIT_DIRS, name, f"the split file {name}") / name
        date_index = 0 if "sentinel1" in self.modalities else 1  # (S1 date, S2 date)
        chips = []
        with path.open(newline="") as f:
            for n, row in enumerate(csv.reader(f), start=1):
                if not row or not row[0].strip():
                    continue
                s1_name = row[0].strip()
                if len(row) < 2 or not s1_name.endswith("_S1Hand.tif"):
                    raise ValueError(
                        f"{path}, line {n}: expected <chip>_S1Hand.tif,<chip>_LabelHand.tif, "
                        f"got {','.join(row)!r}"
                    )
                chip = s1_name[: -len("_S1Hand.tif")]
                event = chip.split("_")[0]
                dates = EVENT_DATES.get(EVENT_ALIASES.get(event, event))
                if dates is None:
                    raise ValueError(
                        f"{path}, line {n}: unknown event {event!r} of chip {chip}; known events: "
                        f"{sorted(EVENT_DATES) + sorted(EVENT_ALIASES)}"
                    )
                y, m, d = (int(v) for v in dates[date_index].split("-"))
                chips.append(_Chip(chip, row[1].strip(), (d, m, y)))
        return chips

    def _label_path(self, chip: _Chip) -> Path:
        return self.data_dir / "LabelHand" / chip.label_file

    def _window(self, tile: int, side: int) -> Window:
        if self.tile_size is None:
            return Window(0, 0, side, side)
        ty, tx = divmod(tile, self._tiles_per_side)
        s = self.tile_size
        return Window(tx * s, ty * s, s, s)

    def _label(self, chip_index: int, tile: int) -> np.ndarray:
        path = self._label_path(self.chips[chip_index])
        with _open(path) as src:
            label = _read(src, path, self._window(tile, src.height))[0].astype(np.int64)
        bad = ~np.isin(label, (-1, 0, 1))
        if bad.any():
            raise ValueError(f"{path}: labels must be -1, 0 or 1, found {np.unique(label[bad])}")
        return label

    def __len__(self) -> int:
        """Number of chips (or tiles) in the split."""
        return len(self.items)

    # ----------------------------------------------------------------------------- reading

    def __getitem__(self, index: int) -> EvalSample:
        """One chip (or tile) with one timestep per modality, and its water labels."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        chip_index, tile = self.items[index]
        chip = self.chips[chip_index]
        label_path = self._label_path(chip)
        label = self._label(chip_index, tile)
        arrays: dict[str, np.ndarray] = {}
        for modality in self.modalities:
            path = self.data_dir / LAYERS[modality] / f"{chip.chip}_{LAYERS[modality]}.tif"
            arrays[modality] = self._read_modality(path, modality, tile, label.shape)
        with _open(label_path) as src:
            crs, affine, side = src.crs, src.transform, src.height
        win = self._window(tile, side)
        x, y = affine @ (win.col_off + win.width / 2, win.row_off + win.height / 2)
        lon, lat = warp_transform(crs, "EPSG:4326", [x], [y]) if crs else ([x], [y])
        sample = Sample(
            arrays=arrays,
            present={m: np.ones(1, dtype=bool) for m in arrays},
            timestamps=np.asarray([chip.date], dtype=np.int32),
            latlon=np.array([lat[0], lon[0]], dtype=np.float32),
            source=str(label_path),
        )
        return EvalSample(sample=sample, label=label)

    def _read_modality(
        self, path: Path, modality: str, tile: int, shape: tuple[int, ...]
    ) -> np.ndarray:
        spec = get_modality(modality)
        with _open(path) as src:
            bands = _band_names(src, modality, path)
            data = _read(src, path, self._window(tile, src.height)).astype(np.float32)
            nodata = src.nodata
        if data.shape[1:] != shape:
            raise ValueError(f"{path}: {data.shape[1:]} px, but its label has {shape}")
        invalid = ~np.isfinite(data)
        for value in (nodata, spec.nodata):
            if value is not None and np.isfinite(value):
                invalid |= data == value
        data[invalid] = MISSING_VALUE
        out = np.full((*shape, 1, spec.num_bands), MISSING_VALUE, dtype=np.float32)
        for i, band in enumerate(bands):
            out[:, :, 0, spec.band_index(band)] = data[i]
        return out

    # ----------------------------------------------------------------------------- stats

    def stats(self) -> NormStats:
        """The benchmark's stats, cached per process.

        S1: the official notebook's normalization constants, in dB. S2: computed over the
        train chips (`stats_samples` of them, evenly spaced; None: all); none are published.
        """
        out = NormStats(bands={}, meta={"source": "sen1floods11"})
        if "sentinel1" in self.modalities:
            out.bands["sentinel1"] = {b: BandStats(m, s) for b, (m, s) in S1_PUBLISHED.items()}
        if "sentinel2" in self.modalities:
            key = (str(self.root.resolve()), self.stats_samples)
            if key not in _STATS_CACHE:
                train = Sen1Floods11(self.root, "train", ("sentinel2",))
                n = len(train)
                if n == 0:
                    raise ValueError(f"{self.root}: the train split is empty")
                count = n if self.stats_samples is None else min(n, max(1, self.stats_samples))
                acc = RunningStats(get_modality("sentinel2").num_bands)
                for i in np.arange(count) * n // count:
                    acc.update(train[int(i)].sample.arrays["sentinel2"])
                running = {"sentinel2": acc}
                _STATS_CACHE[key] = NormStats.from_running(running, sampled_n=count, total_n=n)
            out.bands["sentinel2"] = _STATS_CACHE[key].bands["sentinel2"]
        return out


def _find(root: Path, candidates: tuple[str, ...], name: str, what: str) -> Path:
    """The first `root/candidate` that holds `name`; the error lists where it looked."""
    if not root.is_dir():
        raise FileNotFoundError(f"Sen1Floods11 folder not found: {root}")
    for c in candidates:
        if (root / c / name).exists():
            return root / c
    looked = ", ".join(str(root / c / name) for c in candidates)
    raise FileNotFoundError(f"{root}: cannot find {what} (looked for {looked})")


def _open(path: Path) -> Any:
    """Open a GeoTIFF; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        return rasterio.open(path)
    except RasterioError as err:
        raise ValueError(f"{path}: cannot read GeoTIFF ({err})") from err


def _read(src: Any, path: Path, window: Window) -> np.ndarray:
    try:
        return np.asarray(src.read(window=window, boundless=False))
    except RasterioError as err:
        raise ValueError(f"{path}: cannot read GeoTIFF ({err})") from err


def _band_names(src: Any, modality: str, path: Path) -> tuple[str, ...]:
    """Helios band names of a file: from its band descriptions, else the documented order."""
    default = DEFAULT_BANDS[modality]
    if src.count != len(default):
        raise ValueError(f"{path}: {src.count} bands, expected {len(default)} ({list(default)})")
    if not any(src.descriptions):
        return default
    names = []
    order = get_modality(modality).band_order
    for desc in src.descriptions:
        text = (desc or "").strip()
        if modality == "sentinel1":
            name = text.lower()
        else:
            name = f"B{int(text[1:]):02d}" if text[1:].isdigit() else text.upper()
        if name not in order:
            raise ValueError(f"{path}: unknown band {desc!r}; expected {list(default)}")
        names.append(name)
    return tuple(names)
