"""Streaming per-band statistics of an H5 training set (`helios data stats`).

`RunningStats` accumulates count, mean, M2, min and max per band with Welford/Chan merges
(numerically stable, mergeable across processes); `compute_stats` makes one parallel pass
over an H5 directory and returns `NormStats` (per modality and band: mean, std, var, count,
min, max), stored as JSON in the layout of olmoearth_pretrain's `computed.json`. Missing
values and non-finite numbers are never counted (docs/normalization.md).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from helios.data.h5 import METADATA_CSV, H5Directory, read_sample
from helios.data.modalities import MISSING_VALUE, MODALITIES, get_modality

logger = logging.getLogger(__name__)

VAR_DEFINITION = "population variance (M2 / count)"
"""Stored under the top-level key `var_definition`: upstream files hold M2 under `var`."""

_BLOCK_ELEMENTS = 1 << 22  # bounds the float64 temporaries of one `RunningStats.update` step


@dataclass(eq=False)
class RunningStats:
    """Streaming per-band count, mean, M2, min and max (float64) of one modality.

    Batches are folded in with the two-pass batch mean and Chan's parallel update, which
    stays accurate for large offsets with small spread. MISSING_VALUE, NaN and Inf are skipped.
    """

    num_bands: int
    count: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    min: np.ndarray = field(init=False)
    max: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.count = np.zeros(self.num_bands, dtype=np.int64)
        self.mean, self.m2 = np.zeros(self.num_bands), np.zeros(self.num_bands)
        self.min, self.max = np.full(self.num_bands, np.inf), np.full(self.num_bands, -np.inf)

    @property
    def var(self) -> np.ndarray:
        """Population variance per band (NaN where count is 0)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.m2 / self.count, np.nan)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per band (NaN where count is 0)."""
        return np.sqrt(self.var)

    def update(self, x: np.ndarray, nodata: float | None = None) -> RunningStats:
        """Fold in an array with bands on the last axis (any leading shape); returns self.

        Entries equal to MISSING_VALUE, NaN, +-Inf or `nodata` (if given) are skipped.
        """
        x = np.asarray(x)
        if x.shape[-1] != self.num_bands:
            raise ValueError(f"expected {self.num_bands} bands on the last axis, got {x.shape}")
        flat = x.reshape(-1, self.num_bands)
        rows = max(1, _BLOCK_ELEMENTS // self.num_bands)
        for start in range(0, flat.shape[0], rows):
            self._update_block(flat[start : start + rows], nodata)
        return self

    def _update_block(self, block: np.ndarray, nodata: float | None) -> None:
        # One contiguous row per band: fast compress, pairwise sums and dot products.
        batch = RunningStats(self.num_bands)
        for i, col in enumerate(np.ascontiguousarray(block.T)):
            keep = col != MISSING_VALUE
            if col.dtype.kind == "f":
                keep &= np.isfinite(col)
            if nodata is not None:
                keep &= col != nodata
            v = col[keep]
            if v.size:
                mean = v.sum(dtype=np.float64) / v.size
                d = v - mean
                batch.count[i], batch.mean[i] = v.size, mean
                batch.m2[i] = np.einsum("i,i->", d, d)  # not np.dot: no BLAS threads in workers
                batch.min[i], batch.max[i] = v.min(), v.max()
        self.merge(batch)

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold in another accumulator over the same bands (Chan et al.); returns self."""
        if other.num_bands != self.num_bands:
            raise ValueError(f"cannot merge {other.num_bands} bands into {self.num_bands}")
        na, nb = self.count.astype(np.float64), other.count.astype(np.float64)
        n = na + nb
        delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n > 0, nb / n, 0.0)
            cross = np.where(n > 0, delta * delta * na * nb / n, 0.0)
        self.mean = self.mean + delta * frac
        self.m2 = self.m2 + other.m2 + cross
        self.count = self.count + other.count
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        return self

    def band_stats(self) -> list[BandStats | None]:
        """Per band, its `BandStats`, or None where no valid value was seen."""
        cols = zip(*(a.tolist() for a in (self.count, self.mean, self.std, self.min, self.max)))
        return [BandStats(m, s, n, lo, hi) if n > 0 else None for n, m, s, lo, hi in cols]


@dataclass(frozen=True)
class BandStats:
    """Statistics of one band; `min`/`max` are optional (needed only by MIN_MAX_INT)."""

    mean: float
    std: float
    count: int = 0
    min: float | None = None
    max: float | None = None

    @property
    def var(self) -> float:
        """Population variance, std squared."""
        return self.std * self.std

    def to_json(self) -> dict[str, float | int]:
        """Return the JSON object: mean, std, var, count and, where known, min and max."""
        out = {"mean": self.mean, "std": self.std, "var": self.var, "count": self.count}
        if self.min is not None and self.max is not None:
            out.update(min=self.min, max=self.max)
        return out


@dataclass
class NormStats:
    """Per modality and band statistics, e.g. the pretraining stats or an eval dataset's own."""

    bands: dict[str, dict[str, BandStats]]
    """modality -> band -> stats; absent modalities or bands fall back to fixed ranges."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Scalar provenance written at the top level (total_n, sampled_n, failed_n, tile_path)."""

    def get(self, modality: str, band: str) -> BandStats | None:
        """Stats of one band, or None."""
        return self.bands.get(modality, {}).get(band)

    @classmethod
    def from_running(cls, running: Mapping[str, RunningStats], **meta: Any) -> NormStats:
        """Collect accumulators (keyed by modality, bands in `band_order`)."""
        bands: dict[str, dict[str, BandStats]] = {}
        for name, acc in running.items():
            order = get_modality(name).band_order
            per_band = {b: s for b, s in zip(order, acc.band_stats()) if s is not None}
            if per_band:
                bands[name] = per_band
        return cls(bands=bands, meta=dict(meta))

    @classmethod
    def from_vectors(
        cls,
        modality: str,
        mean: Sequence[float] | np.ndarray,
        std: Sequence[float] | np.ndarray,
        min: Sequence[float] | np.ndarray | None = None,
        max: Sequence[float] | np.ndarray | None = None,
    ) -> NormStats:
        """Stats of one modality from per-band vectors in `band_order` (e.g. published ones)."""
        order = get_modality(modality).band_order
        cols = [mean, std] + ([min, max] if min is not None and max is not None else [])
        if any(len(c) != len(order) for c in cols):
            raise ValueError(f"{modality}: need {len(order)} values per vector ({list(order)})")
        rows = ([float(v) for v in row] for row in zip(*cols))
        return cls(
            bands={modality: {b: BandStats(r[0], r[1], 0, *r[2:]) for b, r in zip(order, rows)}}
        )

    def to_json(self) -> dict[str, Any]:
        """Return {modality: {band: {mean, std, var, count[, min, max]}}} plus the meta keys."""
        out: dict[str, Any] = {"var_definition": VAR_DEFINITION, **self.meta}
        for name, per_band in self.bands.items():
            out[name] = {b: s.to_json() for b, s in per_band.items()}
        return out

    @classmethod
    def from_json(
        cls, payload: Mapping[str, Any], *, source: str = "<stats>", strict: bool = True
    ) -> NormStats:
        """Parse a payload (ours or upstream's computed.json); errors name `source`.

        Only mean, std, count, min and max are read: upstream's `var` holds M2, not the
        variance. With `strict=False` unknown modalities and bands are skipped with a warning.
        """
        if not isinstance(payload, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(payload).__name__}")
        out = cls(bands={})
        skipped: list[str] = []

        def unknown(what: str, msg: str) -> None:
            if strict:
                raise ValueError(f"{source}: {msg} (load with strict=False to skip it)")
            skipped.append(what)

        for name, entry in payload.items():
            if not isinstance(entry, Mapping):
                if name != "var_definition":
                    out.meta[name] = entry
            elif name not in MODALITIES:
                unknown(name, f"unknown modality {name!r}; known: {sorted(MODALITIES)}")
            else:
                order = MODALITIES[name].band_order
                out.bands[name] = {}
                for band, values in entry.items():
                    if band in order:
                        out.bands[name][band] = _parse_band(values, f"{source}: {name}/{band}")
                    else:
                        unknown(f"{name}/{band}", f"{name} has no band {band!r}; bands: {order}")
        if skipped:
            logger.warning("%s: skipped unknown modalities/bands %s", source, skipped)
        return out

    def save(self, path: Path | str) -> None:
        """Write the JSON atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path | str, *, strict: bool = True) -> NormStats:
        """Read a stats JSON file; errors name the file."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        return cls.from_json(payload, source=str(path), strict=strict)


def _parse_band(values: Any, where: str) -> BandStats:
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected an object with mean and std, got {values!r}")
    opt = lambda v: None if v is None else float(v)  # noqa: E731
    try:
        lo, hi, n = opt(values.get("min")), opt(values.get("max")), int(values.get("count", 0))
        return BandStats(float(values["mean"]), float(values["std"]), n, lo, hi)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad band stats {dict(values)!r} ({err!r})") from err


_LISTED_PROBLEMS = 100
"""At most this many per-file problem lines are kept in the stats JSON (`problems`)."""


@dataclass
class _ChunkStats:
    """What one chunk of sample files added: stats, and per-file problems ("file: what")."""

    acc: dict[str, RunningStats] = field(default_factory=dict)
    read: int = 0
    failed: list[str] = field(default_factory=list)
    """Files skipped (unreadable or invalid), one line each."""
    problems: list[str] = field(default_factory=list)
    """Files read around a problem (NaN/Inf, a listed modality absent), one line each."""
    nonfinite: int = 0


def _stats_chunk(task: tuple[list[str], list[list[str]], list[str] | None]) -> _ChunkStats:
    """Accumulate stats over some sample files, each with the modalities the CSV lists."""
    paths, listed, modalities = task
    out = _ChunkStats()
    for path, expected in zip(paths, listed):
        name = Path(path).name
        nonfinite: dict[str, int] = {}
        try:
            sample = read_sample(path, modalities, nonfinite=nonfinite)
        except Exception as err:  # any unreadable or invalid file is reported, not fatal
            out.failed.append(f"{name}: skipped: {str(err).removeprefix(f'{path}: ')}")
            continue
        out.read += 1
        out.nonfinite += sum(nonfinite.values())
        issues = [
            f"{m}: {k} non-finite values (NaN/Inf) counted as missing" for m, k in nonfinite.items()
        ]
        issues += [
            f"{m}: listed in {METADATA_CSV}, absent from the file"
            for m in expected
            if m not in sample.arrays
        ]
        if issues:
            out.problems.append(f"{name}: {'; '.join(issues)}")
        for mod, arr in sample.arrays.items():  # storage dtype, present timesteps only
            spec = get_modality(mod)
            if spec.is_multitemporal:
                n = int(sample.present[mod].sum())
                arr = arr[:, :, :n] if spec.is_spatial else arr[:n]
            out.acc.setdefault(mod, RunningStats(spec.num_bands)).update(arr, spec.nodata)
    return out


def _log_problems(root: Path, total: _ChunkStats) -> None:
    """One warning for skipped files and one for files read around a problem."""
    for lines, what in (
        (total.failed, "skipped %d unreadable or invalid sample(s)"),
        (total.problems, "read around problems in %d sample(s)"),
    ):
        if lines:
            more = f" and {len(lines) - 20} more" if len(lines) > 20 else ""
            logger.warning(f"%s: {what}: %s%s", root, len(lines), "; ".join(lines[:20]), more)


def compute_stats(
    h5_dir: Path | str,
    *,
    modalities: Sequence[str] | None = None,
    max_samples: int | None = None,
    workers: int = 1,
    progress: bool = True,
    chunk_size: int = 16,
) -> NormStats:
    """Per-band stats of an H5 directory in one pass, over `workers` processes.

    `max_samples` takes an evenly spaced subset. Samples are split into contiguous chunks of
    `chunk_size` and merged in order, so the result does not depend on `workers`. Unreadable
    or invalid files are skipped and NaN/Inf values count as missing; both, and modalities the
    metadata CSV lists but a file lacks, are logged and listed under `problems` (each file
    once). A ValueError is raised only if no file could be read.
    """
    directory = H5Directory.open(h5_dir)
    mods = None if modalities is None else [get_modality(m).name for m in modalities]
    n = len(directory)
    m = n if max_samples is None else min(n, max_samples)
    positions = [int(p) for p in (np.arange(m, dtype=np.int64) * n) // m]
    paths = [str(directory.path(p)) for p in positions]
    listed = [[x for x in directory.listed(p) if mods is None or x in mods] for p in positions]
    size = max(1, chunk_size)
    tasks = [(paths[i : i + size], listed[i : i + size], mods) for i in range(0, m, size)]
    total = _ChunkStats()
    # Fork (where available) before the progress bar starts its monitor thread.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ctx.Pool(min(workers, len(tasks))) if workers > 1 and len(tasks) > 1 else None
    try:
        results = pool.imap(_stats_chunk, tasks) if pool is not None else map(_stats_chunk, tasks)
        with tqdm(total=len(paths), unit="sample", desc="stats", disable=not progress) as bar:
            for (chunk, _, _), part in zip(tasks, results):
                for name, rs in part.acc.items():
                    total.acc.setdefault(name, RunningStats(rs.num_bands)).merge(rs)
                total.read += part.read
                total.nonfinite += part.nonfinite
                total.failed += part.failed
                total.problems += part.problems
                bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.terminate()
    _log_problems(directory.root, total)
    if total.read == 0:
        raise ValueError(
            f"{directory.root}: no sample could be read ({'; '.join(total.failed[:5])})"
        )
    return NormStats.from_running(
        total.acc, tile_path=str(directory.root), total_n=n, sampled_n=total.read,
        failed_n=len(total.failed), nonfinite_n=total.nonfinite,
        problems=(total.failed + total.problems)[:_LISTED_PROBLEMS],
    )  # fmt: skip
