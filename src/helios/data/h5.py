"""The H5 training-set layout (shared/FORMATS.md §2): read it unchanged, write it atomically.

A directory such as `h5py_data_w_missing_timesteps_zstd_3_128_x_4/<modalities>/<N>/` holds
`sample_{i}.h5` files, `sample_metadata.csv`, `compression_settings.json` and
`latlon_distribution.npy`. In each sample file a multitemporal modality stores only the
timesteps it has, in order; `missing_timesteps_masks/<modality>` (bool [T], True where present)
places them on the sample's time axis `timestamps` [T, 3] (day, month, year).

Reading validates what it can cheaply: every modality's dtype kind, rank, bands and square
grid, one shared 10 m grid per sample, and (float data only, vectorized) non-finite values,
which are read as MISSING_VALUE and reported once per file (docs/formats.md).
"""

from __future__ import annotations

import csv
import ctypes
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import hdf5plugin
import numpy as np
import zstandard

from helios.data.modalities import MISSING_VALUE, MODALITIES, TILE_SIZE
from helios.data.sample import Sample

logger = logging.getLogger(__name__)

H5_PREFIX = "h5py_data_w_missing_timesteps"
MASK_GROUP = "missing_timesteps_masks"
METADATA_CSV = "sample_metadata.csv"
COMPRESSION_JSON = "compression_settings.json"
LATLON_NPY = "latlon_distribution.npy"
SAMPLE_RE = re.compile(r"^sample_(\d+)\.h5$")
RECIPE_RE = re.compile(rf"^{H5_PREFIX}(?:_.+)?_(\d+)_x_(\d+)$")
"""Recipe directory name; groups: sample side in 10 m pixels, samples per 256 px tile."""

CompressionName = Literal["zstd", "gzip", "lz4", "none"]


class H5FormatError(ValueError):
    """A sample file or dataset directory that does not follow the layout."""


@dataclass(frozen=True)
class Compression:
    """How sample datasets are compressed (one chunk per dataset)."""

    name: CompressionName = "zstd"
    """zstd (hdf5plugin filter 32015), gzip (built into HDF5), lz4 (hdf5plugin) or none."""
    level: int | None = 3
    """Compression level: 1-22 for zstd, 0-9 for gzip; ignored for lz4."""

    def __post_init__(self) -> None:
        if self.name not in ("zstd", "gzip", "lz4", "none"):
            raise ValueError(f"unknown compression {self.name!r}; use zstd, gzip, lz4 or none")
        if self.name == "zstd" and self.level is not None and not 1 <= self.level <= 22:
            raise ValueError(f"zstd level must be 1-22, got {self.level}")
        if self.name == "gzip" and self.level is not None and not 0 <= self.level <= 9:
            raise ValueError(f"gzip level must be 0-9, got {self.level}")

    def h5_kwargs(self, shape: Sequence[int]) -> dict[str, Any]:
        """Keyword arguments for `h5py.Group.create_dataset`."""
        if self.name == "none" or not shape or int(np.prod(shape)) == 0:
            return {}
        kw: dict[str, Any] = {"chunks": tuple(int(s) for s in shape)}
        if self.name == "zstd":
            kw.update(hdf5plugin.Zstd(clevel=self.level if self.level is not None else 3))
        elif self.name == "lz4":
            kw.update(hdf5plugin.LZ4(nbytes=0))
        else:
            kw["compression"] = "gzip"
            if self.level is not None:
                kw["compression_opts"] = self.level
        return kw

    @property
    def suffix(self) -> str:
        """The recipe fragment, e.g. `_zstd_3` (empty when uncompressed)."""
        if self.name == "none":
            return ""
        return f"_{self.name}" + (f"_{self.level}" if self.level is not None else "")

    def to_json(self) -> dict[str, Any]:
        """The `compression_settings.json` payload."""
        return {
            "compression": None if self.name == "none" else self.name,
            "compression_opts": None if self.name == "lz4" else self.level,
            "shuffle": None,
        }

    @classmethod
    def from_json(cls, payload: Any) -> Compression:
        """Parse `compression_settings.json` (either Helios's or the upstream writer's)."""
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        name = str(payload.get("compression") or "none")
        if name not in ("zstd", "gzip", "lz4", "none"):
            raise ValueError(f"unsupported compression {name!r}")
        level = payload.get("compression_opts")
        if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
            raise ValueError(f"compression_opts must be an integer or null, got {level!r}")
        return cls(name=name, level=level)  # type: ignore[arg-type]


def recipe_dirname(compression: Compression, tile_size: int) -> str:
    """Top-level directory name, e.g. `h5py_data_w_missing_timesteps_zstd_3_128_x_4`."""
    if TILE_SIZE % tile_size:
        raise ValueError(f"tile size must divide {TILE_SIZE}, got {tile_size}")
    splits = (TILE_SIZE // tile_size) ** 2
    return f"{H5_PREFIX}{compression.suffix}_{tile_size}_x_{splits}"


def dataset_dirname(modalities: Iterable[str]) -> str:
    """Second-level directory name: modality names sorted and joined by `_`."""
    return "_".join(sorted(modalities))


def sample_filename(index: int) -> str:
    """File name of sample `index`."""
    return f"sample_{index}.h5"


def write_sample(
    path: Path,
    data: dict[str, np.ndarray],
    timestamps: np.ndarray,
    latlon: np.ndarray,
    present: dict[str, np.ndarray],
    compression: Compression,
) -> int:
    """Write one sample atomically (temporary name, then rename); returns its size in bytes.

    `data` holds on-disk arrays: multitemporal modalities carry only their present timesteps,
    and `present[modality]` (bool [T]) says which of `timestamps` those are.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("latlon", data=np.asarray(latlon, dtype=np.float32))
            f.create_dataset("timestamps", data=np.asarray(timestamps, dtype=np.int32))
            for name, arr in data.items():
                f.create_dataset(name, data=arr, **compression.h5_kwargs(arr.shape))
            group = f.create_group(MASK_GROUP)
            for name, mask in present.items():
                group.create_dataset(name, data=np.asarray(mask, dtype=bool))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.stat().st_size


_ZSTD_FILTER = 32015
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_allocator() -> bool:
    """Keep freed sample buffers in the process instead of returning them to the OS (glibc).

    A 256 px sample decodes into ~70 MB of arrays; with glibc's defaults each one is a fresh
    mmap whose pages fault in again on every sample, which costs up to half the decode rate
    (bench/bench_read.py). Raising the mmap and trim thresholds lets the heap reuse those pages.
    Called in every DataLoader worker of `PretrainDataModule`; returns False where not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31)
        return bool(ok)
    except (OSError, AttributeError):
        return False


_DCTX = threading.local()


def _read_dataset(ds: h5py.Dataset) -> np.ndarray:
    """Decode a dataset; single-chunk zstd datasets skip HDF5's filter pipeline.

    Decompressing the chunk bytes with `zstandard` straight into the array is measurably
    faster than h5py's per-filter copies (bench/bench_read.py); the result is the same.
    """
    if ds.chunks is not None and ds.chunks == ds.shape and ds.dtype.kind in "uif":
        plist = ds.id.get_create_plist()
        if plist.get_nfilters() == 1 and plist.get_filter(0)[0] == _ZSTD_FILTER:
            dctx = getattr(_DCTX, "dctx", None)
            if dctx is None:
                dctx = _DCTX.dctx = zstandard.ZstdDecompressor()
            _, chunk = ds.id.read_direct_chunk((0,) * ds.ndim)
            raw = dctx.decompress(chunk, max_output_size=ds.nbytes)
            if len(raw) == ds.nbytes:
                return np.frombuffer(raw, dtype=ds.dtype).reshape(ds.shape)
    return np.asarray(ds[()])


_WARNED: set[tuple[str, str]] = set()


def warn_once(path: Path | str, topic: str, message: str) -> None:
    """Log a warning about a file the first time this process meets (file, topic).

    The read path uses it so that a bad file is named once, not once per epoch.
    """
    key = (str(path), topic)
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning("%s", message)


def dataset_problem(name: str, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """What is wrong with modality `name`'s stored dataset, judged from shape and dtype alone."""
    spec = MODALITIES[name]
    expected = np.dtype(spec.dtype)
    if dtype.kind not in "biuf":
        return f"{name} has dtype {dtype}; expected numbers ({expected})"
    if dtype.kind == "i" and expected.kind in "ub":
        return f"{name} holds signed {dtype} data; {name} is unsigned ({expected})"
    if len(shape) != spec.array_ndim():
        return f"{name} has shape {shape}, expected {spec.array_ndim()} dims"
    if shape[-1] != spec.num_bands:
        return f"{name} has {shape[-1]} bands, expected {spec.num_bands}"
    k = spec.pixels_per_ref_pixel
    if spec.is_spatial and (shape[0] != shape[1] or shape[0] % k or shape[0] == 0):
        grid = "a square grid" + (f" of whole 10 m pixels ({k} x {k} px each)" if k > 1 else "")
        return f"{name} has shape {shape}; expected {grid}"
    return None


def grid_sizes(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Side in 10 m pixels of each spatial modality's array, from its shape."""
    return {
        m: shape[0] // MODALITIES[m].pixels_per_ref_pixel
        for m, shape in shapes.items()
        if MODALITIES[m].is_spatial and shape
    }


def grid_problem(sizes: dict[str, int]) -> str | None:
    """The message when a sample's modalities (`grid_sizes`) cover different grids, else None."""
    if len(set(sizes.values())) <= 1:
        return None
    covers = ", ".join(f"{m} covers {s} px" for m, s in sorted(sizes.items()))
    return f"{covers} (10 m): a sample's modalities must cover one grid"


def _clean_values(path: Path, name: str, arr: np.ndarray) -> tuple[np.ndarray, int]:
    """(array with NaN/Inf as MISSING_VALUE, their count); refuse negatives if unsigned.

    Only float data is scanned (vectorized); integer data passes untouched.
    """
    if arr.dtype.kind != "f":
        return arr, 0
    bad = ~np.isfinite(arr)
    bad_count = int(np.count_nonzero(bad))
    if bad_count:  # a copy, at least float32: float16 cannot hold MISSING_VALUE
        arr = arr.astype(np.promote_types(arr.dtype, np.float32))
        arr[bad] = MISSING_VALUE
    expected = np.dtype(MODALITIES[name].dtype)
    if expected.kind in "ub":
        negative = int(np.count_nonzero((arr < 0) & (arr != MISSING_VALUE)))
        if negative:
            raise H5FormatError(
                f"{path}: {name} holds {negative} negative values; {name} is unsigned ({expected})"
            )
    return arr, bad_count


def _step_mask(path: Path, masks: Any, name: str, stored: int, t: int) -> np.ndarray:
    """Where multitemporal `name`'s `stored` steps sit on the time axis (bool [T])."""
    if masks is not None and name in masks:
        mask = np.zeros(t, dtype=bool)
        given = np.asarray(masks[name][()], dtype=bool)[:t]
        mask[: len(given)] = given
    elif stored == t:
        mask = np.ones(t, dtype=bool)
    else:
        raise H5FormatError(
            f"{path}: {name} has {stored} timesteps but timestamps has {t} "
            f"and there is no {MASK_GROUP}/{name}"
        )
    if stored < int(mask.sum()):
        raise H5FormatError(
            f"{path}: {name} stores {stored} timesteps but its mask marks {int(mask.sum())}"
        )
    return mask


def read_sample(
    path: Path | str,
    modalities: Iterable[str] | None = None,
    *,
    nonfinite: dict[str, int] | None = None,
) -> Sample:
    """Load one `sample_{i}.h5` as a `Sample`.

    Arrays are decoded in their storage dtype; `Sample.data` / `Sample.window` give float32 with
    MISSING_VALUE for absent timesteps and source nodata (e.g. 0 for Sentinel-2). `modalities`
    restricts what is decoded; absent modalities are left out. Errors (`H5FormatError`) name the
    file. NaN and Inf in float data are read as MISSING_VALUE and counted per modality into
    `nonfinite` when given; otherwise a warning names the file, once per process.
    """
    path = Path(path)
    wanted = None if modalities is None else set(modalities)
    arrays: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    try:
        with h5py.File(path, "r") as f:
            if "timestamps" not in f or "latlon" not in f:
                raise H5FormatError(f"{path}: missing 'timestamps' or 'latlon' dataset")
            timestamps = np.asarray(f["timestamps"][()], dtype=np.int32).reshape(-1, 3)
            latlon = np.asarray(f["latlon"][()], dtype=np.float32).reshape(2)
            masks = f.get(MASK_GROUP)
            for name in f:
                if name not in MODALITIES or (wanted is not None and name not in wanted):
                    continue
                ds = f[name]
                problem = dataset_problem(name, ds.shape, ds.dtype)
                if problem is not None:
                    raise H5FormatError(f"{path}: {problem}")
                arrays[name], counts[name] = _clean_values(path, name, _read_dataset(ds))
                spec = MODALITIES[name]
                if spec.is_multitemporal:
                    stored = ds.shape[2 if spec.is_spatial else 0]
                    present[name] = _step_mask(path, masks, name, stored, timestamps.shape[0])
    except (OSError, KeyError, ValueError, zstandard.ZstdError) as err:
        if isinstance(err, H5FormatError):
            raise
        raise H5FormatError(f"{path}: cannot read sample ({err})") from err
    problem = grid_problem(grid_sizes({m: a.shape for m, a in arrays.items()}))
    if problem is not None:
        raise H5FormatError(f"{path}: {problem}")
    counts = {m: n for m, n in counts.items() if n}
    if nonfinite is not None:
        nonfinite.update(counts)
    elif counts:
        what = ", ".join(f"{n} non-finite values (NaN/Inf) in {m}" for m, n in counts.items())
        warn_once(path, "non-finite", f"{path}: {what}, read as missing")
    return Sample(
        arrays=arrays, present=present, timestamps=timestamps, latlon=latlon, source=str(path)
    )


def _read_compression(path: Path) -> Compression:
    """Parse compression_settings.json; errors name the file (and the line, for bad JSON)."""
    try:
        return Compression.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise H5FormatError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (OSError, ValueError) as err:
        raise H5FormatError(f"{path}: {err}") from None


_FLAGS = {"": 0, "0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
"""Presence cells sample_metadata.csv may hold (upstream writes 0/1; pandas may write bools)."""


def _read_presence(path: Path) -> tuple[list[int], dict[str, list[int]]]:
    """Parse sample_metadata.csv: (sample indices, per-modality 0/1 lists); errors name the line."""
    indices: list[int] = []
    first_line: dict[int, int] = {}
    line = 1
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or "sample_index" not in header:
                raise H5FormatError(f"{path}: no 'sample_index' column")
            at = header.index("sample_index")
            mods = [(i, c) for i, c in enumerate(header) if c in MODALITIES]
            presence: dict[str, list[int]] = {c: [] for _, c in mods}
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                where = f"{path}, line {line}"
                if len(row) != len(header):
                    raise H5FormatError(f"{where}: {len(row)} fields, the header has {len(header)}")
                index = int(row[at]) if row[at].strip().isdigit() else -1
                if index < 0:
                    raise H5FormatError(f"{where}: sample_index {row[at]!r} is not an integer")
                if index in first_line:
                    raise H5FormatError(
                        f"{where}: sample_index {index} repeats line {first_line[index]}"
                    )
                first_line[index] = line
                indices.append(index)
                for i, m in mods:
                    flag = _FLAGS.get(row[i].strip().lower())
                    if flag is None:
                        raise H5FormatError(f"{where}: {m} is {row[i]!r}, expected 0 or 1")
                    presence[m].append(flag)
    except (csv.Error, UnicodeDecodeError) as err:
        raise H5FormatError(f"{path}, line {line}: not a readable CSV ({err})") from None
    return indices, presence


@dataclass
class H5Directory:
    """An H5 training-set directory: sample files, presence table and compression settings."""

    root: Path
    indices: list[int]
    presence: dict[str, np.ndarray]
    """Per modality, a 0/1 array aligned with `indices` (from sample_metadata.csv)."""
    compression: Compression | None

    @classmethod
    def open(cls, root: Path | str) -> H5Directory:
        """Open a directory; without a metadata CSV the sample files are listed instead.

        A malformed compression_settings.json or sample_metadata.csv raises H5FormatError
        naming the file and, where there is one, the line.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such H5 dataset directory")
        comp = None
        if (root / COMPRESSION_JSON).exists():
            comp = _read_compression(root / COMPRESSION_JSON)
        presence: dict[str, list[int]] = {}
        if (root / METADATA_CSV).exists():
            indices, presence = _read_presence(root / METADATA_CSV)
        else:
            indices = sorted(int(m[1]) for p in os.listdir(root) if (m := SAMPLE_RE.match(p)))
        if not indices:
            raise H5FormatError(f"{root}: no samples (no {METADATA_CSV} rows, no sample_*.h5)")
        return cls(
            root=root,
            indices=indices,
            presence={m: np.asarray(v, dtype=np.int8) for m, v in presence.items()},
            compression=comp,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def path(self, position: int) -> Path:
        """Path of the `position`-th sample (positions run 0..len-1 over `indices`)."""
        return self.root / sample_filename(self.indices[position])

    def modalities(self) -> list[str]:
        """Modalities marked present in at least one sample."""
        return [m for m, v in self.presence.items() if v.any()]

    def listed(self, position: int) -> list[str]:
        """Modalities that sample_metadata.csv marks present in the `position`-th sample."""
        return [m for m, v in self.presence.items() if v[position]]

    @property
    def tile_size(self) -> int | None:
        """Sample side in 10 m pixels that the recipe directory name (`..._128_x_4`) gives."""
        match = RECIPE_RE.match(self.root.resolve().parent.parent.name)
        return int(match[1]) if match else None


def write_metadata(
    root: Path,
    rows: Sequence[tuple[int, Iterable[str]]],
    modalities: Sequence[str],
    compression: Compression,
    latlons: np.ndarray,
) -> None:
    """Write sample_metadata.csv, compression_settings.json and latlon_distribution.npy atomically.

    `rows` are (sample_index, modalities present) pairs and `latlons` [len(rows), 2] follows the
    same order; both are written sorted by sample index.
    """
    root = Path(root)
    tmp_csv = root / f".{METADATA_CSV}.tmp"
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])
    with tmp_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sample_index", *modalities])
        for index, present in (rows[i] for i in order):
            have = set(present)
            writer.writerow([index, *(int(m in have) for m in modalities)])
    tmp_json = root / f".{COMPRESSION_JSON}.tmp"
    tmp_json.write_text(json.dumps(compression.to_json(), indent=2) + "\n")
    tmp_npy = root / f".{LATLON_NPY}.tmp"
    with tmp_npy.open("wb") as fh:
        np.save(fh, np.asarray(latlons, dtype=np.float32).reshape(-1, 2)[order])
    os.replace(tmp_json, root / COMPRESSION_JSON)
    os.replace(tmp_npy, root / LATLON_NPY)
    os.replace(tmp_csv, root / METADATA_CSV)  # last: its presence marks the directory complete
