"""PASTIS / PASTIS-R: crop-type semantic segmentation from monthly Sentinel-2 (and -1) series.

On-disk format (Zenodo records 5012942 and 5735646, read unchanged)::

    <root>/metadata.geojson          one feature per patch: ID_PATCH, Fold (1..5), TILE,
                                     dates-S2 / dates-S1A / dates-S1D ({"0": 20180924, ...})
    <root>/DATA_S2/S2_<id>.npy       int16 [T, 10, 128, 128]: B2 B3 B4 B5 B6 B7 B8 B8A B11 B12,
                                     THEIA L2A surface reflectance x 10000
    <root>/DATA_S1A/S1A_<id>.npy     [T, 3, 128, 128]: VV, VH, VV/VH in dB (PASTIS-R only;
    <root>/DATA_S1D/S1D_<id>.npy     ascending and descending orbits)
    <root>/ANNOTATIONS/TARGET_<id>.npy  [3, 128, 128]; channel 0 is the semantic class:
                                     0 background, 1..18 crops, 19 void
    <root>/NORM_S2_patch.json        published per-fold stats {"Fold_k": {"mean", "std"}}
    <root>/NORM_S1A_patch.json ...   (PASTIS-R)

Patch geometries are in Lambert-93 (EPSG:2154). Helios reads each series as MONTHLY composites
(`monthly_composite`): the per-pixel median (or mean) of the acquisitions in each calendar month
of a 12-month window that starts in September 2018 (the acquisitions run from September 2018
into autumn 2019; later ones fall outside the window and are dropped). Months without an
acquisition are absent timesteps. S2 maps to `sentinel2_l2a` (B01 and B09 missing), S1 VV/VH to
`sentinel1` (the ratio channel is dropped). The void class 19 becomes the ignore index -1.
Splits follow the five official folds: train 1-3, val 4, test 5 (configurable).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pyproj import CRS, Transformer

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import BandStats, NormStats, RunningStats
from helios.data.sample import Sample
from helios.evals.api import EvalDataset, EvalSample, Split, TaskSpec
from helios.evals.datasets.temporal import (
    Aggregation,
    month_steps,
    month_timestamps,
    monthly_composite,
)

PastisModality = Literal["sentinel2_l2a", "sentinel1"]
S1Orbit = Literal["S1A", "S1D"]

S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
"""Helios names of the 10 channels of `DATA_S2` arrays, in file order."""
S1_BANDS = ("vv", "vh")
"""Helios names of the first two channels of `DATA_S1A`/`DATA_S1D` (the third is VV/VH)."""
CLASS_NAMES = (
    "background",
    "meadow",
    "soft_winter_wheat",
    "corn",
    "winter_barley",
    "winter_rapeseed",
    "spring_barley",
    "sunflower",
    "grapevine",
    "beet",
    "winter_triticale",
    "winter_durum_wheat",
    "fruits_vegetables_flowers",
    "potatoes",
    "leguminous_fodder",
    "soybeans",
    "orchard",
    "mixed_cereal",
    "sorghum",
)
VOID_CLASS = 19
IGNORE_INDEX = -1
PIXEL_SIZE_M = 10.0

_STATS_CACHE: dict[tuple[Any, ...], NormStats] = {}


def _to_band_order(arr: np.ndarray, bands: Sequence[str], modality: str) -> np.ndarray:
    """Place bands-last `arr` into `modality`'s band order; absent bands are MISSING_VALUE."""
    spec = get_modality(modality)
    out = np.full((*arr.shape[:-1], spec.num_bands), MISSING_VALUE, dtype=np.float32)
    for i, band in enumerate(bands):
        out[..., spec.band_index(band)] = arr[..., i]
    return out


def _parse_dates(value: Any, where: str) -> list[int]:
    """A `dates-*` property ({"0": 20180924, ...}, or that dict as a JSON string) -> YYYYMMDD."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: dates are not valid JSON ({err})") from err
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a {{index: YYYYMMDD}} object, got {value!r}")
    try:
        return [int(value[k]) for k in sorted(value, key=int)]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad date entry ({err})") from err


@dataclass(frozen=True)
class _Patch:
    patch_id: str
    fold: int
    dates: dict[str, list[int]]
    """Per source ("S2", "S1A", "S1D"): YYYYMMDD of each acquisition, in array order."""
    bounds: tuple[float, float, float, float] | None
    """(minx, miny, maxx, maxy) in the metadata CRS."""


class PASTIS(EvalDataset):
    """PASTIS(-R) semantic segmentation with monthly composites (see module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: Split = "train",
        modalities: tuple[PastisModality, ...] = ("sentinel2_l2a",),
        s1_orbits: tuple[S1Orbit, ...] = ("S1A",),
        first_month: tuple[int, int] = (2018, 9),
        num_months: int = 12,
        aggregation: Aggregation = "median",
        tile_size: int | None = None,
        train_folds: tuple[int, ...] = (1, 2, 3),
        val_folds: tuple[int, ...] = (4,),
        test_folds: tuple[int, ...] = (5,),
        stats_samples: int = 200,
    ) -> None:
        """Index one split.

        Args:
            root: the PASTIS or PASTIS-R folder (holding metadata.geojson).
            split: "train", "val" or "test", mapped to folds by the `*_folds` arguments.
            modalities: any of "sentinel2_l2a" and "sentinel1" (S1 needs PASTIS-R).
            s1_orbits: S1 sources composited together: "S1A" (ascending), "S1D" (descending).
            first_month: (year, month) of the first monthly composite.
            num_months: number of monthly composites (Helios series hold up to 12).
            aggregation: per-pixel "median" (robust to clouds) or "mean" within each month.
            tile_size: split each 128 px patch into square tiles of this side (must divide the
                patch side); None keeps whole patches.
            train_folds: folds of the train split.
            val_folds: folds of the val split.
            test_folds: folds of the test split.
            stats_samples: train samples used by `stats()` when no published stats exist.

        """
        self.root = Path(root)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, not {split!r}")
        if not modalities or any(m not in ("sentinel2_l2a", "sentinel1") for m in modalities):
            raise ValueError(f"modalities must be sentinel2_l2a and/or sentinel1, not {modalities}")
        if "sentinel1" in modalities and (
            not s1_orbits or any(o not in ("S1A", "S1D") for o in s1_orbits)
        ):
            raise ValueError(f"s1_orbits must be S1A and/or S1D, not {s1_orbits}")
        if num_months < 1 or not 1 <= first_month[1] <= 12:
            raise ValueError(f"bad month window: first_month {first_month}, {num_months} months")
        self.split: Split = split
        self.modalities = tuple(dict.fromkeys(modalities))
        self.s1_orbits = tuple(dict.fromkeys(s1_orbits))
        self.first_month = (int(first_month[0]), int(first_month[1]))
        self.num_months = num_months
        self.aggregation: Aggregation = aggregation
        self.tile_size = tile_size
        self.folds = {"train": train_folds, "val": val_folds, "test": test_folds}
        self.stats_samples = stats_samples
        self.task = TaskSpec(
            name="pastis",
            kind="segmentation",
            num_classes=len(CLASS_NAMES),
            class_names=CLASS_NAMES,
            modalities=self.modalities,
            ignore_index=IGNORE_INDEX,
        )
        patches, self._to_wgs84 = self._read_metadata()
        want = set(self.folds[split])
        self.patches = [p for p in patches if p.fold in want]
        self._timestamps = month_timestamps(self.first_month, num_months)
        self._tiles_per_side = 1  # set from the first target when tiling
        if tile_size is not None:
            if not self.patches:
                raise ValueError(f"{self.root}: no patch in folds {sorted(want)}")
            side = self._load(self._path("target", self.patches[0].patch_id)).shape[-1]
            if tile_size <= 0 or side % tile_size:
                raise ValueError(f"tile_size {tile_size} must divide the patch side {side}")
            self._tiles_per_side = side // tile_size

    # ----------------------------------------------------------------------------- indexing

    def _read_metadata(self) -> tuple[list[_Patch], Transformer]:
        path = self.root / "metadata.geojson"
        if not self.root.is_dir():
            raise FileNotFoundError(f"PASTIS folder not found: {self.root}")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (PASTIS metadata with folds and dates)")
        try:
            payload = json.loads(path.read_text())
            features = payload["features"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a GeoJSON FeatureCollection ({err!r})") from err
        sources = ["S2"] * ("sentinel2_l2a" in self.modalities)
        sources += list(self.s1_orbits) if "sentinel1" in self.modalities else []
        patches = []
        for i, feat in enumerate(features):
            props = feat.get("properties") or {}
            where = f"{path}: feature {i}"
            try:
                pid, fold = str(int(props["ID_PATCH"])), int(props["Fold"])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: needs integer ID_PATCH and Fold ({err!r})") from err
            dates = {}
            for s in sources:
                if f"dates-{s}" not in props:
                    raise ValueError(f"{where} (patch {pid}): no dates-{s} property")
                dates[s] = _parse_dates(props[f"dates-{s}"], f"{where} (patch {pid}) dates-{s}")
            patches.append(_Patch(pid, fold, dates, _bounds(feat.get("geometry"))))
        patches.sort(key=lambda p: int(p.patch_id))  # the official loader's order
        return patches, Transformer.from_crs(_crs(payload, patches), "EPSG:4326", always_xy=True)

    def _path(self, kind: str, patch_id: str) -> Path:
        if kind == "target":
            return self.root / "ANNOTATIONS" / f"TARGET_{patch_id}.npy"
        return self.root / f"DATA_{kind}" / f"{kind}_{patch_id}.npy"

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing")
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read .npy ({err})") from err

    def __len__(self) -> int:
        """Number of (patch, tile) samples in the split."""
        return len(self.patches) * self._tiles_per_side**2

    # ----------------------------------------------------------------------------- reading

    def __getitem__(self, index: int) -> EvalSample:
        """Monthly composites of one patch (or tile) and its semantic labels."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        per_patch = self._tiles_per_side**2
        patch = self.patches[index // per_patch]
        target_path = self._path("target", patch.patch_id)
        target = self._load(target_path)
        if target.ndim != 3:
            raise ValueError(f"{target_path}: expected [3, H, W], got shape {target.shape}")
        side = target.shape[-1] if self.tile_size is None else self.tile_size
        ty, tx = divmod(index % per_patch, self._tiles_per_side)
        ys, xs = slice(ty * side, (ty + 1) * side), slice(tx * side, (tx + 1) * side)
        label = np.asarray(target[0, ys, xs], dtype=np.int64)
        label[label == VOID_CLASS] = IGNORE_INDEX
        arrays: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for modality in self.modalities:
            sources = ["S2"] if modality == "sentinel2_l2a" else list(self.s1_orbits)
            obs, steps = [], []
            for s in sources:
                path = self._path(s, patch.patch_id)
                data = self._load(path)
                channels = len(S2_BANDS) if s == "S2" else 3
                if data.ndim != 4 or data.shape[1] != channels:
                    raise ValueError(f"{path}: expected [T, {channels}, H, W], got {data.shape}")
                if data.shape[0] != len(patch.dates[s]):
                    raise ValueError(
                        f"{path}: {data.shape[0]} acquisitions but metadata.geojson lists "
                        f"{len(patch.dates[s])} dates-{s}"
                    )
                keep = len(S2_BANDS) if s == "S2" else len(S1_BANDS)
                cube = np.array(data[:, :keep, ys, xs], dtype=np.float32)  # a writable copy
                invalid = cube == MISSING_VALUE
                if modality == "sentinel2_l2a":
                    invalid |= cube == 0  # the modality's nodata
                cube[invalid] = np.nan
                obs.append(cube)
                steps.append(month_steps(patch.dates[s], self.first_month))
            comp, present[modality] = monthly_composite(
                np.concatenate(obs), np.concatenate(steps), self.num_months, self.aggregation
            )
            bands = S2_BANDS if modality == "sentinel2_l2a" else S1_BANDS
            arrays[modality] = _to_band_order(comp.transpose(2, 3, 0, 1), bands, modality)
        sample = Sample(
            arrays=arrays,
            present=present,
            timestamps=self._timestamps.copy(),
            latlon=self._latlon(patch, ty * side, tx * side, side),
            source=str(target_path),
        )
        return EvalSample(sample=sample, label=label)

    def _latlon(self, patch: _Patch, row: int, col: int, side: int) -> np.ndarray:
        if patch.bounds is None:
            return np.full(2, MISSING_VALUE, dtype=np.float32)
        minx, _, _, maxy = patch.bounds
        x = minx + (col + side / 2) * PIXEL_SIZE_M
        y = maxy - (row + side / 2) * PIXEL_SIZE_M
        lon, lat = self._to_wgs84.transform(x, y)
        return np.array([lat, lon], dtype=np.float32)

    # ----------------------------------------------------------------------------- stats

    def stats(self) -> NormStats:
        """The benchmark's stats, cached per process.

        Published per-fold stats of the train folds (NORM_*_patch.json), averaged as the official
        loader does; where a file is missing, stats of the train split's monthly composites.
        """
        key = (str(self.root.resolve()), self.modalities, self.s1_orbits, self.first_month,
               self.num_months, self.aggregation, self.folds["train"],
               self.stats_samples)  # fmt: skip
        if key in _STATS_CACHE:
            return _STATS_CACHE[key]
        out = NormStats(bands={}, meta={"source": "pastis"})
        todo = []
        for modality in self.modalities:
            published = self._published(modality)
            if published is None:
                todo.append(modality)
            else:
                out.bands[modality] = published
        if todo:
            out.bands.update(self._computed(tuple(todo)).bands)
        _STATS_CACHE[key] = out
        return out

    def _published(self, modality: str) -> dict[str, BandStats] | None:
        sources = ["S2"] if modality == "sentinel2_l2a" else list(self.s1_orbits)
        bands = S2_BANDS if modality == "sentinel2_l2a" else S1_BANDS
        means, stds = [], []
        for s in sources:
            path = self.root / f"NORM_{s}_patch.json"
            if not path.is_file():
                return None
            try:
                payload = json.loads(path.read_text())
                for fold in self.folds["train"]:
                    means.append(np.asarray(payload[f"Fold_{fold}"]["mean"], dtype=np.float64))
                    stds.append(np.asarray(payload[f"Fold_{fold}"]["std"], dtype=np.float64))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: expected {{Fold_k: {{mean, std}}}} ({err!r})") from err
        mean, std = np.mean(means, axis=0), np.mean(stds, axis=0)
        if mean.shape[0] < len(bands) or std.shape[0] < len(bands):
            raise ValueError(f"NORM_{sources[0]}_patch.json: expected {len(bands)}+ values")
        return {b: BandStats(float(mean[i]), float(std[i])) for i, b in enumerate(bands)}

    def _computed(self, modalities: tuple[PastisModality, ...]) -> NormStats:
        train = PASTIS(
            self.root, "train", modalities, self.s1_orbits or ("S1A",), self.first_month,
            self.num_months, self.aggregation, None, self.folds["train"], (), (),
        )  # fmt: skip
        n = len(train)
        if n == 0:
            raise ValueError(f"{self.root}: the train folds {self.folds['train']} are empty")
        acc: dict[str, RunningStats] = {}
        for m in modalities:
            acc[m] = RunningStats(get_modality(m).num_bands)
        count = min(n, max(1, self.stats_samples))
        for i in np.arange(count) * n // count:
            sample = train[int(i)].sample
            for m in modalities:
                acc[m].update(sample.arrays[m])
        return NormStats.from_running(acc, sampled_n=count, total_n=n)


def _bounds(geometry: Any) -> tuple[float, float, float, float] | None:
    """Bounding box of a GeoJSON geometry's coordinates, or None without any."""
    coords: list[tuple[float, float]] = []

    def walk(value: Any) -> None:
        if isinstance(value, list | tuple) and value:
            if all(isinstance(v, int | float) for v in value[:2]) and len(value) >= 2:
                coords.append((float(value[0]), float(value[1])))
            else:
                for child in value:
                    walk(child)

    walk((geometry or {}).get("coordinates"))
    if not coords:
        return None
    xs, ys = zip(*coords)
    return min(xs), min(ys), max(xs), max(ys)


def _crs(payload: Mapping[str, Any], patches: list[_Patch]) -> CRS:
    """The metadata CRS.

    Its `crs` member, else EPSG:2154 (PASTIS's Lambert-93) for projected coordinates and
    EPSG:4326 (the GeoJSON default) for coordinates that look like degrees.
    """
    member = payload.get("crs")
    if isinstance(member, Mapping):
        name = (member.get("properties") or {}).get("name")
        if name:
            return CRS.from_user_input(name)
    in_degrees = all(
        p.bounds is None or (abs(p.bounds[0]) <= 180 and abs(p.bounds[3]) <= 90) for p in patches
    )
    return CRS.from_epsg(4326 if in_degrees else 2154)
