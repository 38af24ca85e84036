"""Seeded fake GEO-Bench v1 task folders in the benchmark's exact on-disk format.

Per task: `<name>.hdf5` samples written as `geobench.dataset.write_sample_hdf5` does (one
dataset per band named `band_info.name[_YYYY-MM-DD]`, a segmentation label as dataset "label",
the root attribute "pickle" = `str(pickle.dumps(attr_dict))` with per-band metadata and the
classification label), `default_partition.json`, the label-fraction partitions
`<f>x_train_partition.json`, `band_stats.json` (as `make_benchmark/bandstats.py`) and
`task_specs.pkl`. Band names, stored band order, dtypes and sample names follow the converters
in `make_benchmark/dataset_converters/`; sizes are the real ones.

The pickles must name GEO-Bench's own classes (`geobench.dataset.Sentinel2` ...), so stand-ins
are registered in `sys.modules` under those names while writing and removed afterwards.
One deliberate departure: a label-fraction partition keeps at least one train sample
(upstream takes `int(n * fraction)`, which is 0 for these tiny splits).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import pickle
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

S2_NAMES = (
    "01 - Coastal aerosol", "02 - Blue", "03 - Green", "04 - Red", "05 - Vegetation Red Edge",
    "06 - Vegetation Red Edge", "07 - Vegetation Red Edge", "08 - NIR",
    "08A - Vegetation Red Edge", "09 - Water vapour", "10 - SWIR - Cirrus", "11 - SWIR",
    "12 - SWIR",
)  # fmt: skip
S2_NO_CIRRUS = S2_NAMES[:10] + S2_NAMES[-2:]
S1_NAMES = (
    "01 - VH.Real", "02 - VH.Imaginary", "03 - VV.Real", "04 - VV.Imaginary",
    "05 - VH.LEE Filtered", "06 - VV.LEE Filtered", "07 - VH.LEE Filtered.Real",
    "08 - VV.LEE Filtered.Imaginary",
)  # fmt: skip
FORESTNET_NAMES = ("04 - Red", "03 - Green", "02 - Blue", "05 - NIR", "06 - SWIR1", "07 - SWIR2")
FRACTIONS = (0.01, 0.02, 0.05, 0.10, 0.20, 0.50, 1.00)
STAT_KEYS = ("percentile_0_1", "percentile_1", "percentile_5", "percentile_95")


@dataclass(frozen=True)
class FakeTask:
    """How one task is stored (from its converter)."""

    folder: str
    bands: tuple[str, ...]
    dtype: str
    size: int
    label: str
    """"int", "multi-hot" or "mask"."""
    num_classes: int
    splits: tuple[int, int, int] = (4, 2, 2)
    dated: bool = False
    geo: str = "none"
    """"none", "wgs84" (an Affine in EPSG:4326) or "utm" (an Affine and a CRS object)."""
    sensor: str = "Sentinel2"
    reflectance: bool = False
    """Optical values stored as reflectance / 10000 (So2Sat) rather than digital numbers."""
    label_dtype: str = "int64"


TASKS: dict[str, FakeTask] = {
    "m-eurosat": FakeTask("classification_v1.0", S2_NAMES, "int16", 64, "int", 10),
    "m-bigearthnet": FakeTask(
        "classification_v1.0", S2_NO_CIRRUS, "float32", 120, "multi-hot", 43
    ),
    "m-so2sat": FakeTask(
        "classification_v1.0", S1_NAMES + S2_NAMES[1:9] + S2_NAMES[-2:], "float32", 32, "int", 17,
        reflectance=True,
    ),
    # dtype inferred: the kiln-scaling tiler fills np.zeros (float64) and GEO-Bench keeps it.
    "m-brick-kiln": FakeTask(
        "classification_v1.0", S2_NAMES, "float64", 64, "int", 2, geo="wgs84"
    ),
    "m-forestnet": FakeTask(
        "classification_v1.0", FORESTNET_NAMES, "uint8", 332, "int", 12, dated=True,
        geo="wgs84", sensor="Landsat8",
    ),
    "m-cashew-plant": FakeTask(
        "segmentation_v1.0", S2_NO_CIRRUS + ("Cloud Probability",), "float32", 256, "mask", 7,
        splits=(2, 2, 2), dated=True, geo="utm",
    ),
    "m-SA-crop-type": FakeTask(
        "segmentation_v1.0", S2_NO_CIRRUS + ("Cloud Probability",), "int16", 256, "mask", 10,
        splits=(2, 2, 2), geo="utm", label_dtype="int16",
    ),
}  # fmt: skip


class _Upstream:
    """Plain attribute holder; pickles like GEO-Bench's classes (a __dict__ state)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class _FakeAffine(tuple):
    """Pickles like affine.Affine (a 9-tuple whose __getnewargs__ gives a, b, c, d, e, f)."""

    __slots__ = ()

    def __new__(cls, *coefs: float) -> _FakeAffine:
        return tuple.__new__(cls, (*coefs[:6], 0.0, 0.0, 1.0))

    def __getnewargs__(self) -> tuple[float, ...]:
        return tuple(self[:6])


@contextmanager
def upstream_classes() -> Iterator[dict[str, type]]:
    """Register stand-ins for geobench's classes (and for affine/rasterio where absent)."""
    spec = {
        "geobench.dataset": ["Sentinel1", "Sentinel2", "Landsat8", "CloudProbability",
                             "SegmentationClasses"],
        "geobench.label": ["Classification", "MultiLabelClassification"],
        "geobench.task": ["TaskSpecifications"],
    }  # fmt: skip
    if importlib.util.find_spec("affine") is None:
        spec["affine"] = ["Affine"]
    if importlib.util.find_spec("rasterio") is None:
        spec["rasterio.crs"] = ["CRS"]
    modules = {n: types.ModuleType(n) for m in spec for n in (m.split(".")[0], m)}
    saved = {n: sys.modules[n] for n in modules if n in sys.modules}
    classes: dict[str, type] = {}
    sys.modules.update(modules)
    try:
        for module, class_names in spec.items():
            for name in class_names:
                base = _FakeAffine if name == "Affine" else _Upstream
                cls = type(name, (base,), {"__module__": module, "__qualname__": name})
                setattr(modules[module], name, cls)
                classes[name] = cls
        if "Affine" not in classes:
            classes["Affine"] = _real_affine()
        if "CRS" not in classes:
            classes["CRS"] = _real_crs()
        yield classes
    finally:
        for mod_name in modules:
            if mod_name in saved:
                sys.modules[mod_name] = saved[mod_name]
            else:
                sys.modules.pop(mod_name, None)


def _real_affine() -> type:
    from affine import Affine

    return Affine


def _real_crs() -> type:
    from rasterio.crs import CRS

    return CRS


def _band_infos(task: FakeTask, classes: dict[str, type]) -> list[Any]:
    out = []
    for name in task.bands:
        if name == "Cloud Probability":
            out.append(classes["CloudProbability"](name=name, alt_names=("CLD",),
                                                   spatial_resolution=10))  # fmt: skip
        else:
            sensor = "Sentinel1" if name in S1_NAMES else task.sensor
            out.append(classes[sensor](name=name, alt_names=(), spatial_resolution=10.0,
                                       wavelength=None))  # fmt: skip
    return out


def _pixels(task: FakeTask, name: str, rng: np.random.Generator) -> np.ndarray:
    shape = (task.size, task.size)
    if name in S1_NAMES:
        if "LEE Filtered" in name and "Real" not in name and "Imaginary" not in name:
            x = rng.exponential(0.1, shape)
            x[0, 0] = 0.0  # no backscatter: must become MISSING_VALUE in dB
            return x.astype(np.float32)
        return rng.normal(0.0, 0.3, shape).astype(np.float32)
    if name == "Cloud Probability":
        return rng.integers(0, 101, shape).astype(task.dtype)
    if task.dtype == "uint8":
        return rng.integers(1, 256, shape).astype(np.uint8)
    if task.reflectance:
        return rng.uniform(1e-4, 0.5, shape).astype(np.float32)
    return rng.integers(1, 10001, shape).astype(task.dtype)


def _sample_names(name: str, n: int, rng: np.random.Generator) -> list[str]:
    if name == "m-brick-kiln":
        return [f"examples_{rng.integers(0, 200)}_{i}" for i in range(n)]
    if name == "m-forestnet":
        out = []
        for i in range(n):
            lat, lon = rng.uniform(-5, 5), rng.uniform(95, 140)
            out.append(f"{lat:.6f}_{lon:.6f}_{2014 + i % 4}_0{1 + i % 9}_0{1 + i % 9}")
        return out
    if name == "m-cashew-plant":
        return [f"sample_{i}" for i in range(n)]
    if name == "m-SA-crop-type":
        return [f"ref_south_africa_crops_competition_v1_train_labels_{i:04d}_0" for i in range(n)]
    return [f"id_{i:04d}" for i in range(n)]


def _geo(
    task: FakeTask, sample: str, classes: dict[str, type], rng: np.random.Generator
) -> tuple[Any, Any]:
    """(transform, crs) as the converters store them."""
    if task.geo == "none":
        return None, None
    if task.geo == "utm":
        crs_cls = classes["CRS"]
        is_fake = issubclass(crs_cls, _Upstream)
        crs = crs_cls(wkt="EPSG:32631") if is_fake else crs_cls.from_epsg(32631)  # type: ignore[attr-defined]
        return classes["Affine"](10.0, 0.0, 400000.0, 0.0, -10.0, 1000000.0), crs
    if task.sensor == "Landsat8":  # forestnet: a square around the centre in the name
        lat, lon = (float(v) for v in sample.split("_")[:2])
    else:
        lat, lon = rng.uniform(21, 26), rng.uniform(88, 92)  # Bangladesh
    half = 0.003
    step = 2 * half / task.size
    return classes["Affine"](step, 0.0, lon - half, 0.0, -step, lat + half), "EPSG:4326"


def _write_sample(
    path: Path, task: FakeTask, sample: str, classes: dict[str, type], rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], Any]:
    """Write one sample as write_sample_hdf5 does; returns {band name: data} and the label."""
    date = None
    if task.dated and task.sensor == "Landsat8":
        date = datetime.date(*(int(v) for v in sample.split("_")[2:]))
    elif task.dated:
        date = datetime.date(2019, 11, 5) + datetime.timedelta(days=5 * int(rng.integers(0, 70)))
    transform, crs = _geo(task, sample, classes, rng)
    if task.label == "int":
        label: Any = int(rng.integers(0, task.num_classes))
    elif task.label == "multi-hot":
        label = (rng.random(task.num_classes) < 0.1).astype(np.int64)
        label[int(rng.integers(0, task.num_classes))] = 1
    else:
        shape = (task.size, task.size)
        label = rng.integers(0, task.num_classes, shape).astype(task.label_dtype)
    values: dict[str, np.ndarray] = {}
    attr_dict: dict[str, Any] = {}
    order = []
    items = list(zip(task.bands, _band_infos(task, classes)))
    if task.label == "mask":
        label_info = classes["SegmentationClasses"](
            name="label", spatial_resolution=10, n_classes=task.num_classes, _class_names=None
        )
        items.append(("label", label_info))
    with h5py.File(path, "w") as fp:
        for name, info in items:
            data = label if name == "label" else _pixels(task, name, rng)
            band_date = None if name == "label" else date
            descriptor = name if band_date is None else f"{name}_{band_date:%Y-%m-%d}"
            fp.create_dataset(name=descriptor, data=data)
            meta = {"n_cloud_pixels": 3, "is_composite": False} if task.dated else None
            attr_dict[descriptor] = dict(
                date=band_date, date_id=band_date, spatial_resolution=10.0, band_info=info,
                meta_info=meta, transform=transform, crs=crs,
            )  # fmt: skip
            order.append(descriptor)
            values[name] = data
        if task.label != "mask":
            attr_dict["label"] = label
        attr_dict["bands_order"] = order
        fp.attrs["pickle"] = str(pickle.dumps(attr_dict, protocol=4))
    return values, label


def _stats(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, [0.1, 1, 5, 50, 95, 99, 99.9])
    out = dict(min=values.min(), max=values.max(), mean=values.mean(), std=values.std())
    out.update(median=q[3], percentile_99=q[5], percentile_99_9=q[6])
    out.update(zip(STAT_KEYS, (q[0], q[1], q[2], q[4])))
    return {k: float(v) for k, v in out.items()}


def make_task(root: Path, name: str, seed: int = 0) -> Path:
    """Write one fake task folder under `root/<folder>/<name>/`; returns the folder."""
    task = TASKS[name]
    rng = np.random.default_rng([seed, sorted(TASKS).index(name)])
    out = root / task.folder / name
    out.mkdir(parents=True, exist_ok=True)
    names = _sample_names(name, sum(task.splits), rng)
    cuts = np.cumsum(task.splits)
    partition = {"train": names[: cuts[0]], "valid": names[cuts[0] : cuts[1]]}
    partition["test"] = names[cuts[1] :]
    accumulator: dict[str, list[np.ndarray]] = {}
    with upstream_classes() as classes:
        for sample in names:
            values, label = _write_sample(out / f"{sample}.hdf5", task, sample, classes, rng)
            if sample in partition["train"]:  # bandstats.py: default partition, train split
                for band, data in values.items():
                    accumulator.setdefault(band, []).append(np.ravel(data))
                if "label" not in values:
                    accumulator.setdefault("label", []).append(np.ravel(label))
        if task.label == "mask":
            label_type = classes["SegmentationClasses"](
                name="label", spatial_resolution=10, n_classes=task.num_classes
            )
        else:
            kind = "MultiLabelClassification" if task.label == "multi-hot" else "Classification"
            label_type = classes[kind](n_classes=task.num_classes, _class_names=None)
        specs = classes["TaskSpecifications"](
            dataset_name=name, benchmark_name=task.folder, patch_size=(task.size, task.size),
            n_time_steps=1, bands_info=_band_infos(task, classes), label_type=label_type,
            spatial_resolution=10,
        )  # fmt: skip
        (out / "task_specs.pkl").write_bytes(pickle.dumps(specs, protocol=4))
    stats = {band: _stats(np.concatenate(v)) for band, v in accumulator.items()}
    (out / "band_stats.json").write_text(json.dumps(stats, indent=4, sort_keys=True))
    (out / "default_partition.json").write_text(json.dumps(partition, indent=2))
    for fraction in FRACTIONS:
        size = max(1, int(len(partition["train"]) * fraction))
        train = [str(s) for s in rng.choice(partition["train"], size=size, replace=False)]
        sub = {"train": train, "valid": partition["valid"], "test": partition["test"]}
        (out / f"{fraction:.2f}x_train_partition.json").write_text(json.dumps(sub, indent=2))
    return out


def make_geobench(root: Path, names: Sequence[str] = tuple(TASKS), seed: int = 0) -> Path:
    """Write fake tasks under `root` (classification_v1.0/, segmentation_v1.0/); returns root."""
    for name in names:
        make_task(root, name, seed)
    return root


if __name__ == "__main__":
    print(make_geobench(Path(sys.argv[1] if len(sys.argv) > 1 else "geobench_fake")))
