"""GEO-Bench v1 readers: four S2 and one Landsat classification tasks, two S2 segmentation tasks.

On disk (GEO-Bench's own format, read unchanged; docs/evals.md "GEO-Bench v1"):

    <root>/classification_v1.0/m-eurosat/   (segmentation_v1.0/: m-cashew-plant, m-SA-crop-type)
        <sample name>.hdf5      one file per sample
        default_partition.json  {"train": [names], "valid": [...], "test": [...]}
        0.01x_train_partition.json ... 1.00x_train_partition.json   label-fraction partitions
        band_stats.json         {band name: {mean, std, min, max, median, percentile_*}}
        task_specs.pkl          a pickle of geobench classes: never read here

Each sample file holds one 2-D dataset per band, named after the band ("02 - Blue"), with
"_YYYY-MM-DD" appended when the band carries a date; a segmentation label is the dataset
"label". The root attribute "pickle" is `str(pickle.dumps(...))` of a dict with per-band
metadata and, for classification, the label (an int, or a 0/1 array for multi-label). It is
decoded by `_SafeUnpickler`, which builds only numpy arrays, dates and plain containers and turns
every other class into an inert placeholder; nothing in the file can run code.

Bands are mapped by name onto Helios modalities (`band_map`); bands a benchmark lacks are
MISSING_VALUE. Two stored orders are known to be mislabelled upstream and are corrected by
default (`corrected_bands=False` reads the names as stored, as GEO-Bench's loader does).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from helios.data.modalities import MISSING_VALUE, MODALITIES, get_modality
from helios.data.normalize import BandStats, NormStats
from helios.data.sample import Sample
from helios.evals.api import EvalDataset, EvalSample, Split, TaskKind, TaskSpec
from helios.evals.datasets._safe_pickle import (
    GeoBenchFormatError,
    _Opaque,
    _SafeUnpickler,
    read_pickled_attrs,
)

__all__ = ["GeoBenchDataset", "GeoBenchFormatError", "GeoBenchSpec", "_SafeUnpickler", "band_map"]

logger = logging.getLogger(__name__)

GeoBenchName = Literal[
    "m-eurosat", "m-bigearthnet", "m-so2sat", "m-brick-kiln", "m-forestnet", "m-cashew-plant",
    "m-SA-crop-type",
]  # fmt: skip
GeoBenchPartition = Literal[
    "default", "0.01x_train", "0.02x_train", "0.05x_train", "0.10x_train", "0.20x_train",
    "0.50x_train", "1.00x_train",
]  # fmt: skip
OpticalModality = Literal["sentinel2", "sentinel2_l2a", "landsat"]

PLACEHOLDER_DATE = (1, 6, 2020)
"""(day, month, year) used when a sample stores no date (all but m-forestnet, m-cashew-plant)."""

# GEO-Bench band names (geobench/dataset.py: sentinel2_13_bands, landsat8_9_bands,
# sentinel1_8_bands) -> Helios band names.
S2_BANDS = {
    "01 - Coastal aerosol": "B01", "02 - Blue": "B02", "03 - Green": "B03", "04 - Red": "B04",
    "05 - Vegetation Red Edge": "B05", "06 - Vegetation Red Edge": "B06",
    "07 - Vegetation Red Edge": "B07", "08 - NIR": "B08", "08A - Vegetation Red Edge": "B8A",
    "09 - Water vapour": "B09", "10 - SWIR - Cirrus": "B10", "11 - SWIR": "B11",
    "12 - SWIR": "B12",
}  # fmt: skip
LANDSAT_BANDS = {
    "01 - Coastal aerosol": "B1", "02 - Blue": "B2", "03 - Green": "B3", "04 - Red": "B4",
    "05 - NIR": "B5", "06 - SWIR1": "B6", "07 - SWIR2": "B7", "09 - Cirrus": "B9",
    "10 - Tirs1": "B10",
}  # fmt: skip
# So2Sat's Lee-filtered intensities become Helios vv/vh (converted to dB); the complex
# (real/imaginary) channels have no Helios band and are skipped.
S1_BANDS = {"05 - VH.LEE Filtered": "vh", "06 - VV.LEE Filtered": "vv"}
S1_SKIPPED = (
    "01 - VH.Real", "02 - VH.Imaginary", "03 - VV.Real", "04 - VV.Imaginary",
    "07 - VH.LEE Filtered.Real", "08 - VV.LEE Filtered.Imaginary",
)  # fmt: skip
SKIPPED = ("Cloud Probability",)
"""Bands with no Helios counterpart (the cloud band of m-cashew-plant and m-SA-crop-type)."""

# EuroSAT's files store B8A last (torchgeo#2458, phelber/EuroSAT#7); GEO-Bench named the
# channels in wavelength order instead (geo-bench#28).
EUROSAT_FIX = (
    ("08A - Vegetation Red Edge", "B09"), ("09 - Water vapour", "B10"),
    ("10 - SWIR - Cirrus", "B11"), ("11 - SWIR", "B12"), ("12 - SWIR", "B8A"),
)  # fmt: skip
# The brick-kiln export holds B1 B2 B3 B4 B5 B7 B8A B8 B11 B12 TCI_R TCI_G TCI_B from
# COPERNICUS/S2_SR (mliu356/kiln-scaling, geo-bench#29), stored under the 13 L1C names.
BRICK_KILN_FIX = (
    ("06 - Vegetation Red Edge", "B07"), ("07 - Vegetation Red Edge", "B8A"), ("08 - NIR", "B08"),
    ("08A - Vegetation Red Edge", "B11"), ("09 - Water vapour", "B12"),
    ("10 - SWIR - Cirrus", None), ("11 - SWIR", None), ("12 - SWIR", None),
)  # fmt: skip


@dataclass(frozen=True)
class GeoBenchSpec:
    """What Helios must know about one GEO-Bench task (class names from the converters)."""

    folder: Literal["classification_v1.0", "segmentation_v1.0"]
    kind: TaskKind
    class_names: tuple[str, ...]
    optical: OpticalModality
    """Helios modality of the optical bands (Sentinel-2 L1C, L2A or Landsat 8)."""
    size: int
    """Native pixels per side (the protocol resizes or crops)."""
    resolution_m: float
    optical_scale: float = 1.0
    """Factor onto Helios units (m-so2sat stores S2 reflectance / 10000)."""
    has_sentinel1: bool = False
    fixes: tuple[tuple[str, str | None], ...] = ()
    """Known mislabelled stored names -> the Helios band they really hold (None: no band)."""


_LCZ = (
    "Compact high rise", "Compact mid rise", "Compact low rise", "Open high rise",
    "Open mid rise", "Open low rise", "Lightweight low rise", "Large low rise", "Sparsely built",
    "Heavy industry", "Dense trees", "Scattered trees", "Bush, scrub", "Low plants",
    "Bare rock or paved", "Bare soil or sand", "Water",
)  # fmt: skip
_CLC43 = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports",
    "Mineral extraction sites", "Dump sites", "Construction sites", "Green urban areas",
    "Sport and leisure facilities", "Non-irrigated arable land", "Permanently irrigated land",
    "Rice fields", "Vineyards", "Fruit trees and berry plantations", "Olive groves", "Pastures",
    "Annual crops associated with permanent crops", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland", "Moors and heathland", "Sclerophyllous vegetation",
    "Transitional woodland/shrub", "Beaches, dunes, sands", "Bare rock",
    "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes",
    "Salines", "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons",
    "Estuaries", "Sea and ocean",
)  # fmt: skip

# Sources: geo-bench make_benchmark/dataset_converters/*.py (class lists, bands, sizes) and
# torchgeo's EuroSAT / So2Sat / BigEarthNet(43) class lists, which those converters use.
SPECS: dict[str, GeoBenchSpec] = {
    "m-eurosat": GeoBenchSpec(
        "classification_v1.0", "classification",
        ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
         "PermanentCrop", "Residential", "River", "SeaLake"),
        "sentinel2", 64, 10.0, fixes=EUROSAT_FIX,
    ),
    "m-bigearthnet": GeoBenchSpec(
        "classification_v1.0", "multilabel", _CLC43, "sentinel2_l2a", 120, 10.0
    ),
    "m-so2sat": GeoBenchSpec(
        "classification_v1.0", "classification", _LCZ, "sentinel2", 32, 10.0,
        optical_scale=10000.0, has_sentinel1=True,
    ),
    "m-brick-kiln": GeoBenchSpec(
        "classification_v1.0", "classification", ("not brick kiln", "brick kiln"),
        "sentinel2_l2a", 64, 10.0, fixes=BRICK_KILN_FIX,
    ),
    "m-forestnet": GeoBenchSpec(
        "classification_v1.0", "classification",
        ("Oil palm plantation", "Timber plantation", "Other large-scale plantations",
         "Grassland shrubland", "Small-scale agriculture", "Small-scale mixed plantation",
         "Small-scale oil palm plantation", "Mining", "Fish pond", "Logging",
         "Secondary forest", "Other"),
        "landsat", 332, 15.0,
    ),
    "m-cashew-plant": GeoBenchSpec(
        "segmentation_v1.0", "segmentation",
        ("no data", "well-managed plantation", "poorly-managed plantation", "non-plantation",
         "residential", "background", "uncertain"),
        "sentinel2_l2a", 256, 10.0,
    ),
    "m-SA-crop-type": GeoBenchSpec(
        "segmentation_v1.0", "segmentation",
        ("No Data", "Lucerne/Medics", "Planted pastures (perennial)", "Fallow", "Wine grapes",
         "Weeds", "Small grain grazing", "Wheat", "Canola", "Rooibos"),
        "sentinel2_l2a", 256, 10.0,
    ),
}  # fmt: skip

BandTarget = tuple[str, str] | None
"""(Helios modality, band), or None for a known band that Helios has no slot for."""


def band_map(
    dataset: str,
    corrected_bands: bool = True,
    l1c_as: Literal["sentinel2", "sentinel2_l2a"] = "sentinel2",
) -> dict[str, BandTarget]:
    """Stored GEO-Bench band name -> Helios (modality, band) for one task."""
    spec = SPECS[dataset]
    optical = l1c_as if spec.optical == "sentinel2" else spec.optical
    names = LANDSAT_BANDS if spec.optical == "landsat" else S2_BANDS
    fixes = dict(spec.fixes) if corrected_bands else {}
    order = get_modality(optical).band_order
    out: dict[str, BandTarget] = dict.fromkeys(SKIPPED)
    for stored, band in names.items():
        true_band = fixes.get(stored, band)
        out[stored] = (optical, true_band) if true_band in order else None
    if spec.has_sentinel1:
        out.update({name: ("sentinel1", band) for name, band in S1_BANDS.items()})
        out.update(dict.fromkeys(S1_SKIPPED))
    return out


_DESCRIPTOR = re.compile(r"^(?P<name>.+)_(?P<date>\d{4}-\d{2}-\d{2})$")


def split_descriptor(key: str) -> tuple[str, datetime.date | None]:
    """Split a dataset name such as "04 - Red_2016-01-01" into band name and date."""
    match = _DESCRIPTOR.match(key)
    if match is None:
        return key, None
    return match["name"], datetime.date.fromisoformat(match["date"])


def _latlon(attrs: dict[str, Any] | None, height: int, width: int) -> np.ndarray:
    """Tile centre from a band's geotransform where it is in EPSG:4326, else MISSING_VALUE."""
    missing = np.full(2, MISSING_VALUE, dtype=np.float32)
    order = (attrs or {}).get("bands_order") or []
    meta = attrs.get(order[0]) if attrs and order else None
    if not isinstance(meta, dict) or meta.get("crs") != "EPSG:4326":
        return missing
    t = meta.get("transform")
    args = t.args[:6] if isinstance(t, _Opaque) else ()
    coef = [float(v) for v in args if isinstance(v, (int, float))]
    if len(coef) < 6:
        return missing
    a, c, e, f = coef[0], coef[2], coef[4], coef[5]
    lat, lon = f + e * height / 2, c + a * width / 2
    if abs(lat) > 90 or abs(lon) > 180:
        return missing
    return np.array([lat, lon], dtype=np.float32)


class GeoBenchDataset(EvalDataset):
    """One split of a GEO-Bench v1 task, read from the benchmark's own files."""

    def __init__(
        self,
        root: str | Path,
        dataset: GeoBenchName,
        split: Split = "train",
        partition: GeoBenchPartition | str = "default",
        corrected_bands: bool = True,
        l1c_as: Literal["sentinel2", "sentinel2_l2a"] = "sentinel2",
    ) -> None:
        """Open a split.

        Args:
            root: folder holding `classification_v1.0/` and `segmentation_v1.0/` (the task
                folder itself, or the benchmark folder holding it, also work).
            dataset: the task, e.g. "m-eurosat".
            split: train, val (GEO-Bench's "valid") or test.
            partition: "default" or a label fraction such as "0.01x_train"; reads
                `<partition>_partition.json`.
            corrected_bands: fix the known band mislabelling of m-eurosat and m-brick-kiln.
            l1c_as: modality for Sentinel-2 L1C tasks (m-eurosat, m-so2sat); "sentinel2_l2a"
                feeds them as L2A (dropping B10) for models pretrained on L2A only.

        """
        if dataset not in SPECS:
            raise ValueError(f"unknown GEO-Bench task {dataset!r}; known: {sorted(SPECS)}")
        self.spec = SPECS[dataset]
        self.bands = band_map(dataset, corrected_bands, l1c_as)
        mods = {t[0] for t in self.bands.values() if t is not None}
        self.task = TaskSpec(
            name=dataset,
            kind=self.spec.kind,
            num_classes=len(self.spec.class_names),
            class_names=self.spec.class_names,
            modalities=tuple(m for m in MODALITIES if m in mods),
        )
        self.split = split
        self.partition = partition
        self.dataset_dir = self._find_dir(Path(root), dataset)
        self.sample_names = self._load_partition(partition, split)

    def _find_dir(self, root: Path, dataset: str) -> Path:
        candidates = [root / self.spec.folder / dataset, root / dataset, root]
        for cand in candidates:
            if cand.name == dataset and cand.is_dir():
                return cand
        raise FileNotFoundError(
            f"GEO-Bench task folder not found: {candidates[0]} (root={root}); download "
            f"GEO-Bench v1 so that {self.spec.folder}/{dataset}/ lies under root"
        )

    def _load_partition(self, partition: str, split: Split) -> list[str]:
        path = self.dataset_dir / f"{partition}_partition.json"
        if not path.is_file():
            files = self.dataset_dir.glob("*_partition.json")
            found = sorted(p.name[: -len("_partition.json")] for p in files)
            raise FileNotFoundError(f"{path}: no such partition; available: {found}")
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise GeoBenchFormatError(f"{path}: not valid JSON ({err})") from err
        key = "valid" if split == "val" else split
        if not isinstance(payload, dict) or not isinstance(payload.get(key), list):
            keys = list(payload) if isinstance(payload, dict) else type(payload).__name__
            raise GeoBenchFormatError(f"{path}: no list for split {key!r} (has {keys})")
        names = [str(n) for n in payload[key]]
        if not names:
            raise GeoBenchFormatError(f"{path}: split {key!r} is empty")
        missing = [n for n in names if not (self.dataset_dir / f"{n}.hdf5").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{path}: {len(missing)} sample file(s) missing in {self.dataset_dir}, "
                f"e.g. {missing[0]}.hdf5"
            )
        return names

    def __len__(self) -> int:
        return len(self.sample_names)

    def __getitem__(self, index: int) -> EvalSample:
        path = self.dataset_dir / f"{self.sample_names[index]}.hdf5"
        attrs: dict[str, Any] | None = None
        try:
            with h5py.File(path, "r") as f:
                raw = {key: np.asarray(f[key][()]) for key in f}
                if self.spec.kind != "segmentation":
                    attrs = read_pickled_attrs(f, path)
        except (OSError, KeyError, TypeError) as err:
            raise GeoBenchFormatError(f"{path}: unreadable HDF5 sample ({err})") from err
        labels = {k: v for k, v in raw.items() if k.startswith("label")}
        sample = self._assemble({k: v for k, v in raw.items() if k not in labels}, path, attrs)
        return EvalSample(sample=sample, label=self._label(labels, attrs, sample, path))

    def _assemble(
        self, raw: dict[str, np.ndarray], path: Path, attrs: dict[str, Any] | None
    ) -> Sample:
        entries: list[tuple[str, int, datetime.date, np.ndarray]] = []
        placeholder = datetime.date(PLACEHOLDER_DATE[2], PLACEHOLDER_DATE[1], PLACEHOLDER_DATE[0])
        for key, data in raw.items():
            name, date = split_descriptor(key)
            if name not in self.bands:
                known = sorted(k for k, v in self.bands.items() if v is not None)
                raise GeoBenchFormatError(
                    f"{path}: unknown band {name!r} for {self.task.name}; known: {known}"
                )
            target = self.bands[name]
            if target is None:
                continue
            if data.ndim != 2:
                raise GeoBenchFormatError(f"{path}: band {key!r} has shape {data.shape}")
            modality, band = target
            entries.append(
                (modality, get_modality(modality).band_index(band), date or placeholder, data)
            )
        if not entries:
            raise GeoBenchFormatError(f"{path}: no band of {self.task.modalities}")
        dates = sorted({e[2] for e in entries})
        h = max(e[3].shape[0] for e in entries)
        w = max(e[3].shape[1] for e in entries)
        full = {
            m: np.full((h, w, len(dates), get_modality(m).num_bands), MISSING_VALUE, np.float32)
            for m in self.task.modalities
        }
        present = {m: np.zeros(len(dates), dtype=bool) for m in self.task.modalities}
        for modality, channel, date, data in entries:
            t = dates.index(date)
            full[modality][:, :, t, channel] = self._values(modality, _upsample(data, h, w, path))
            present[modality][t] = True
        return Sample(
            arrays={m: full[m][:, :, present[m]] for m in full},
            present=present,
            timestamps=np.array([(d.day, d.month, d.year) for d in dates], dtype=np.int32),
            latlon=_latlon(attrs, h, w),
            source=str(path),
        )

    def _values(self, modality: str, data: np.ndarray) -> np.ndarray:
        """Raw values in Helios units: S1 intensity to dB, scaled optical; NaN to missing."""
        x = data.astype(np.float64)
        if modality == "sentinel1":
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(x > 0, 10.0 * np.log10(x), np.nan)
        elif self.spec.optical_scale != 1.0:
            x = x * self.spec.optical_scale
        return np.where(np.isfinite(x), x, MISSING_VALUE).astype(np.float32)

    def _label(
        self,
        labels: dict[str, np.ndarray],
        attrs: dict[str, Any] | None,
        sample: Sample,
        path: Path,
    ) -> np.ndarray:
        n = self.task.num_classes
        if self.task.kind == "segmentation":
            if len(labels) != 1:
                raise GeoBenchFormatError(
                    f"{path}: expected one 'label' dataset, got {list(labels)}"
                )
            mask = next(iter(labels.values())).astype(np.int64)
            grid = next(iter(sample.arrays.values())).shape[:2]
            if mask.shape != grid or mask.min() < 0 or mask.max() >= n:
                raise GeoBenchFormatError(
                    f"{path}: label of shape {mask.shape}, values {mask.min()}..{mask.max()}; "
                    f"expected {grid} with values 0..{n - 1}"
                )
            return mask
        if attrs is None or "label" not in attrs:
            raise GeoBenchFormatError(f"{path}: the 'pickle' attribute holds no label")
        value = np.asarray(attrs["label"])
        if self.task.kind == "multilabel":
            if value.shape != (n,) or not np.isin(value, (0, 1)).all():
                raise GeoBenchFormatError(
                    f"{path}: multi-label of shape {value.shape}, need ({n},) 0/1"
                )
            return value.astype(np.float32)
        if value.shape != () or not 0 <= int(value) < n:
            raise GeoBenchFormatError(f"{path}: label {value!r} is not a class index 0..{n - 1}")
        return np.asarray(int(value), dtype=np.int64)

    def stats(self) -> NormStats:
        """Mean, std, min and max per band from `band_stats.json`, in Helios units.

        Sentinel-1 is left out (the file describes linear intensities, not dB), so the
        normalizer uses the fixed S1 range for it; bands the task lacks have no entry.
        """
        path = self.dataset_dir / "band_stats.json"
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{path}: no band statistics file") from err
        except json.JSONDecodeError as err:
            raise GeoBenchFormatError(f"{path}: not valid JSON ({err})") from err
        bands: dict[str, dict[str, BandStats]] = {}
        for name, entry in payload.items():
            if name.startswith("label"):
                continue
            if name not in self.bands:
                logger.warning("%s: skipping unknown band %r", path, name)
                continue
            target = self.bands[name]
            if target is None or target[0] == "sentinel1":
                continue
            k = self.spec.optical_scale
            try:
                stat = BandStats(
                    float(entry["mean"]) * k,
                    float(entry["std"]) * k,
                    0,
                    None if entry.get("min") is None else float(entry["min"]) * k,
                    None if entry.get("max") is None else float(entry["max"]) * k,
                )
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise GeoBenchFormatError(f"{path}: bad stats for {name!r} ({err!r})") from err
            bands.setdefault(target[0], {})[target[1]] = stat
        return NormStats(bands=bands, meta={"source": str(path)})


def _upsample(data: np.ndarray, h: int, w: int, path: Path) -> np.ndarray:
    """Pixel-repeat a coarser band onto the sample grid (integer factors only)."""
    if data.shape == (h, w):
        return data
    fy, fx = h // data.shape[0], w // data.shape[1]
    if fy != fx or (data.shape[0] * fy, data.shape[1] * fx) != (h, w):
        raise GeoBenchFormatError(f"{path}: band of shape {data.shape} does not tile {(h, w)}")
    return np.repeat(np.repeat(data, fy, axis=0), fx, axis=1)
