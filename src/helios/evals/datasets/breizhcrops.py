"""BreizhCrops: crop-type classification of Sentinel-2 field-parcel time series (Brittany, 2017).

On-disk format (as the `breizhcrops` package downloads and reads it, read unchanged)::

    <root>/classmapping.csv               columns: (row index), id, classname, code; maps each
                                          RPG crop code (CODE_CULTU) to a class id
    <root>/codes.csv                      RPG code descriptions (';'-separated; not needed)
    <root>/<year>/<level>/<region>.csv    index: id, CODE_CULTU, path, sequencelength, ...
    <root>/<year>/<level>/<region>.h5     one float64 dataset per parcel, keyed by the index's
                                          `path`: [T, C] with one row per acquisition

Regions are the NUTS-3 departments frh01..frh04 (and the small demo region belle-ile); the
published split is train frh01+frh02, val frh03, test frh04. Each parcel is a series of the
parcel's mean reflectance (x 10000) per acquisition. The h5 columns are, for level L1C,
B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12 QA10 QA20 QA60 doa, and for L2A,
doa B2 B3 B4 B5 B6 B7 B8 B8A B11 B12 CLD EDG SAT, where doa is the acquisition time in
nanoseconds since 1970. Parcels whose code is not in classmapping.csv, and empty series, are
skipped, as the package does.

Helios reads a parcel as a 1 x 1 pixel sample: L1C as `sentinel2` (all 13 bands), L2A as
`sentinel2_l2a` (B01 and B09 missing); QA columns are dropped. By default the series is reduced
to 12 monthly composites of the year (median per band; months without acquisitions are absent
steps), which keeps the token count at that of any 12-month Helios sample; `monthly=False`
keeps every acquisition as its own timestep. The files carry no location: `latlon` is
MISSING_VALUE.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import NormStats, RunningStats
from helios.data.sample import Sample
from helios.evals.api import EvalDataset, EvalSample, Split, TaskSpec
from helios.evals.datasets.temporal import Aggregation, month_timestamps, monthly_composite

Level = Literal["L1C", "L2A"]

COLUMNS: dict[str, tuple[str, ...]] = {
    "L1C": (
        "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
        "QA10", "QA20", "QA60", "doa",
    ),
    "L2A": (
        "doa", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12", "CLD", "EDG", "SAT",
    ),
}  # fmt: skip
"""Columns of the per-parcel h5 arrays, per processing level (the package's SELECTED_BANDS)."""
MODALITY: dict[str, str] = {"L1C": "sentinel2", "L2A": "sentinel2_l2a"}

_STATS_CACHE: dict[tuple[Any, ...], NormStats] = {}


def helios_band(column: str) -> str:
    """BreizhCrops band column -> Helios band name (B1 -> B01, B8A stays)."""
    return f"B{int(column[1:]):02d}" if column[1:].isdigit() else column


@dataclass(frozen=True)
class _Parcel:
    region: str
    key: str
    label: int


class BreizhCrops(EvalDataset):
    """BreizhCrops parcel classification (see module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: Split = "train",
        level: Level = "L1C",
        year: int = 2017,
        monthly: bool = True,
        aggregation: Aggregation = "median",
        train_regions: tuple[str, ...] = ("frh01", "frh02"),
        val_regions: tuple[str, ...] = ("frh03",),
        test_regions: tuple[str, ...] = ("frh04",),
        stats_samples: int = 5000,
    ) -> None:
        """Index one split.

        Args:
            root: the BreizhCrops root (holding classmapping.csv and `<year>/<level>/`).
            split: "train", "val" or "test", mapped to regions by the `*_regions` arguments.
            level: "L1C" (top of atmosphere) or "L2A" (surface reflectance).
            year: the acquisition year (2017; the package also knows 2018 for L1C).
            monthly: reduce each series to 12 monthly composites of `year`; False keeps every
                acquisition (a variable number of timesteps).
            aggregation: "median" or "mean" of the acquisitions within a month.
            train_regions: regions of the train split.
            val_regions: regions of the val split.
            test_regions: regions of the test split.
            stats_samples: evenly spaced train parcels `stats()` computes its statistics over.

        """
        self.root = Path(root)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, not {split!r}")
        if level not in COLUMNS:
            raise ValueError(f"level must be L1C or L2A, not {level!r}")
        self.split: Split = split
        self.level: Level = level
        self.year = year
        self.monthly = monthly
        self.aggregation: Aggregation = aggregation
        self.regions = {"train": train_regions, "val": val_regions, "test": test_regions}
        self.stats_samples = stats_samples
        self.modality = MODALITY[level]
        if not self.root.is_dir():
            raise FileNotFoundError(f"BreizhCrops folder not found: {self.root}")
        codes, class_names = self._read_classmapping()
        self.task = TaskSpec(
            name="breizhcrops",
            kind="classification",
            num_classes=len(class_names),
            class_names=class_names,
            modalities=(self.modality,),
        )
        self.parcels: list[_Parcel] = []
        for region in self.regions[split]:
            self.parcels.extend(self._read_index(region, codes))
        self._timestamps = month_timestamps((year, 1), 12)

    # ----------------------------------------------------------------------------- indexing

    def _read_classmapping(self) -> tuple[dict[str, int], tuple[str, ...]]:
        path = self.root / "classmapping.csv"
        rows = _read_csv(path, ("id", "classname", "code"))
        codes: dict[str, int] = {}
        names: dict[int, str] = {}
        for n, row in enumerate(rows, start=2):
            try:
                cid = int(row["id"])
            except ValueError as err:
                raise ValueError(f"{path}, line {n}: id {row['id']!r} is not an integer") from err
            codes[row["code"].strip()] = cid
            names.setdefault(cid, row["classname"].strip())
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{path}: class ids must be 0..K-1, got {sorted(names)}")
        return codes, tuple(names[i] for i in range(len(names)))

    def _region_dir(self) -> Path:
        return self.root / str(self.year) / self.level

    def _read_index(self, region: str, codes: dict[str, int]) -> list[_Parcel]:
        path = self._region_dir() / f"{region}.csv"
        h5 = self._region_dir() / f"{region}.h5"
        if not h5.is_file():
            raise FileNotFoundError(f"{h5}: missing (the {region} time series database)")
        out = []
        for n, row in enumerate(_read_csv(path, ("CODE_CULTU", "path")), start=2):
            code = row["CODE_CULTU"].strip()
            length = row.get("sequencelength") or "1"
            try:
                empty = float(length) <= 0
            except ValueError as err:
                raise ValueError(f"{path}, line {n}: bad sequencelength {length!r}") from err
            if code in codes and not empty:
                out.append(_Parcel(region, row["path"], codes[code]))
        return out

    def __len__(self) -> int:
        """Number of parcels in the split."""
        return len(self.parcels)

    # ----------------------------------------------------------------------------- reading

    def _read_series(self, parcel: _Parcel) -> np.ndarray:
        path = self._region_dir() / f"{parcel.region}.h5"
        try:
            with h5py.File(path, "r") as f:
                ds = f.get(parcel.key)
                if not isinstance(ds, h5py.Dataset):
                    raise ValueError(
                        f"{path}: no dataset {parcel.key!r} (listed in {parcel.region}.csv)"
                    )
                x = np.asarray(ds[()], dtype=np.float64)
        except OSError as err:
            raise ValueError(f"{path}: cannot read {parcel.key!r} ({err})") from err
        columns = COLUMNS[self.level]
        if x.ndim != 2 or x.shape[1] != len(columns):
            raise ValueError(
                f"{path}: {parcel.key} has shape {x.shape}, expected [T, {len(columns)}] "
                f"({self.level} columns {list(columns)})"
            )
        return x

    def __getitem__(self, index: int) -> EvalSample:
        """One parcel as a 1 x 1 pixel series and its class id."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        parcel = self.parcels[index]
        x = self._read_series(parcel)
        columns = COLUMNS[self.level]
        bands = [c for c in columns if c.startswith("B")]
        values = x[:, [columns.index(b) for b in bands]].astype(np.float32)
        dates = _decode_doa(x[:, columns.index("doa")], f"{parcel.region}.h5:{parcel.key}")
        order = np.argsort(dates[:, 2] * 10000 + dates[:, 1] * 100 + dates[:, 0], kind="stable")
        values, dates = values[order], dates[order]
        if self.monthly:
            steps = np.where(dates[:, 2] == self.year, dates[:, 1] - 1, -1)
            values, present = monthly_composite(values, steps, 12, self.aggregation)
            timestamps = self._timestamps.copy()
        else:
            present = np.ones(len(values), dtype=bool)
            timestamps = dates.astype(np.int32)
        spec = get_modality(self.modality)
        arr = np.full((1, 1, len(values), spec.num_bands), MISSING_VALUE, dtype=np.float32)
        for i, band in enumerate(bands):
            arr[0, 0, :, spec.band_index(helios_band(band))] = values[:, i]
        sample = Sample(
            arrays={self.modality: arr},
            present={self.modality: present},
            timestamps=timestamps,
            latlon=np.full(2, MISSING_VALUE, dtype=np.float32),
            source=f"{self._region_dir() / parcel.region}.h5:{parcel.key}",
        )
        return EvalSample(sample=sample, label=np.asarray(parcel.label, dtype=np.int64))

    # ----------------------------------------------------------------------------- stats

    def stats(self) -> NormStats:
        """Band statistics of the train split, cached per process.

        Computed over `stats_samples` evenly spaced train parcels as `__getitem__` returns them
        (BreizhCrops publishes none).
        """
        key = (str(self.root.resolve()), self.level, self.year, self.monthly, self.aggregation,
               self.regions["train"], self.stats_samples)  # fmt: skip
        if key not in _STATS_CACHE:
            train = BreizhCrops(
                self.root, "train", self.level, self.year, self.monthly, self.aggregation,
                self.regions["train"], (), (),
            )  # fmt: skip
            n = len(train)
            if n == 0:
                raise ValueError(f"{self.root}: no train parcels in {self.regions['train']}")
            acc = RunningStats(get_modality(self.modality).num_bands)
            count = min(n, max(1, self.stats_samples))
            for i in np.arange(count) * n // count:
                acc.update(train[int(i)].sample.arrays[self.modality])
            running = {self.modality: acc}
            _STATS_CACHE[key] = NormStats.from_running(running, sampled_n=count, total_n=n)
        return _STATS_CACHE[key]


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a comma-separated file with a header; errors name the file and missing columns."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
        return list(reader)


def _decode_doa(doa: np.ndarray, where: str) -> np.ndarray:
    """Nanoseconds since 1970 -> int [T, 3] (day, month, year); errors name `where`."""
    if not np.isfinite(doa).all():
        raise ValueError(f"{where}: the doa column has non-finite values")
    t = np.round(doa).astype(np.int64).astype("datetime64[ns]")
    days, months = t.astype("datetime64[D]"), t.astype("datetime64[M]")
    year = months.astype(np.int64) // 12 + 1970
    if len(t) and not ((year >= 2000) & (year <= 2100)).all():
        raise ValueError(f"{where}: the doa column does not hold nanoseconds since 1970")
    day = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    return np.stack([day, months.astype(np.int64) % 12 + 1, year], axis=1)
