"""Raw GeoTIFF tiles (docs/data.md, "Raw tile layout") -> the H5 training-set layout.

`convert` reads `<raw_dir>/<tile_id>/<modality>[.b<k>][.t<s>].tif` plus `tile.json`, and writes
`sample_{i}.h5` files (FORMATS §2) into a hidden `.in_progress/` directory that is renamed to
`<num samples>/` once complete. Sample `i` is quadrant `i % splits` of tile `i // splits` in the
sorted tile list, so reruns reproduce the indices (skipped tiles leave gaps). Bad tiles are
skipped and listed in `conversion_report.json`; they never stop a run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp
from tqdm import tqdm

from helios.data.h5 import (
    METADATA_CSV,
    SAMPLE_RE,
    Compression,
    dataset_dirname,
    recipe_dirname,
    sample_filename,
    write_metadata,
    write_sample,
)
from helios.data.modalities import MODALITIES, TILE_SIZE, ModalitySpec, get_modality

TILE_JSON = "tile.json"
IN_PROGRESS = ".in_progress"
REPORT_JSON = "conversion_report.json"
SOURCES_CSV = "sample_sources.csv"
_RUN_JSON = ".run.json"
_JOURNAL = ".journal.jsonl"
FILE_RE = re.compile(r"^(?P<modality>\w+?)(?:\.b(?P<band_set>\d+))?(?:\.t(?P<step>\d+))?\.tif$")
"""Raw raster file name: `<modality>[.b<band set>][.t<step>].tif`."""


class TileError(Exception):
    """Why a tile (or one of its samples) is skipped: a short `kind` plus a detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass(frozen=True)
class _Params:
    out_dir: str
    modalities: tuple[str, ...]
    tile_size: int
    compression: Compression
    min_timesteps: int


@dataclass(frozen=True)
class _Task:
    tile_id: str
    position: int
    directory: str
    files: tuple[tuple[str, str, int | None, int | None], ...]
    """(file name, modality, band set, step) for each raster of a selected modality."""
    signature: str
    existing: frozenset[int]
    """Sample indices already on disk (kept, not rewritten)."""


@dataclass
class ConvertResult:
    """What `convert` did; `summary()` is what the CLI prints."""

    out_dir: Path
    num_samples: int
    num_tiles: int
    """Tile directories found in the raw directory (converted or skipped)."""
    skipped: list[tuple[str, str]]
    """(tile_id, reason) for every skipped tile."""
    report_path: Path
    already_complete: bool = False
    written: int = 0
    """Sample files written by this run (0 when resuming a finished conversion)."""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Describe the run in a few lines (what the CLI prints)."""
        if self.already_complete:
            head = f"already complete: {self.out_dir} ({self.num_samples} samples)"
        elif self.num_samples == 0:
            head = f"nothing converted: all {self.num_tiles} tiles were skipped"
        else:
            done = self.num_tiles - len(self.skipped)
            rate = done / self.seconds if self.seconds > 0 else 0.0
            head = (
                f"converted {done} of {self.num_tiles} tiles into {self.num_samples} samples "
                f"({self.written} written now, {self.seconds:.1f} s, {rate:.1f} tiles/s): "
                f"{self.out_dir}"
            )
        kinds = Counter(reason.split(":")[0] for _, reason in self.skipped)
        skips = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        lines = [head] + ([f"skipped {len(self.skipped)} tiles: {skips}"] if skips else [])
        return "\n".join(
            lines + [f"note: {n}" for n in self.notes] + [f"report: {self.report_path}"]
        )


def _parse_timestamps(tile_dir: Path) -> np.ndarray | None:
    """int32 [T, 3] (day, month, year) from tile.json, or None when there is no tile.json."""
    path = tile_dir / TILE_JSON
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
        stamps = payload["timestamps"]
        if not isinstance(stamps, list) or not all(isinstance(s, str) for s in stamps):
            raise ValueError("'timestamps' must be a list of ISO date strings")
        dates = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    except (ValueError, KeyError, TypeError) as err:
        raise TileError("bad tile.json", f"{path}: {err}") from None
    return np.array([[d.day, d.month, d.year] for d in dates], dtype=np.int32).reshape(-1, 3)


def _cast(data: np.ndarray, spec: ModalitySpec, path: Path) -> np.ndarray:
    """Check values (no NaN, representable) and cast to the modality's storage dtype."""
    dtype = np.dtype(spec.dtype)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise TileError("NaN values", f"{path.name} holds NaN or infinite values")
    if data.dtype == dtype:
        return data
    if dtype.kind in "iu" and data.size:
        info = np.iinfo(dtype)
        exact = data.dtype.kind in "iu" or bool(np.all(np.floor(data) == data))
        if not exact or data.min() < info.min or data.max() > info.max:
            raise TileError("bad values", f"{path.name} ({data.dtype}) does not fit {dtype}")
    return data.astype(dtype)


@dataclass
class _Grid:
    """The CRS and bounds every raster of one tile must share (set by the first one read)."""

    crs: Any = None
    bounds: tuple[float, ...] | None = None

    def check(self, ds: Any, path: Path) -> None:
        if ds.crs is None:
            raise TileError("no CRS", f"{path.name} has no coordinate reference system")
        bounds = tuple(ds.bounds)
        if self.bounds is None:
            self.crs, self.bounds = ds.crs, bounds
            return
        if ds.crs != self.crs:
            raise TileError("mismatched CRS", f"{path.name} is in {ds.crs}, not {self.crs}")
        tol = 1e-4 * abs(self.bounds[2] - self.bounds[0])
        if max(abs(a - b) for a, b in zip(bounds, self.bounds)) > tol:
            raise TileError("mismatched bounds", f"{path.name} covers {bounds}, not {self.bounds}")


def _read_modality(
    tile_dir: Path,
    spec: ModalitySpec,
    files: list[tuple[str, int | None, int | None]],
    num_steps: int,
    grid: _Grid,
) -> tuple[np.ndarray, np.ndarray]:
    """One modality of one tile: ([G, G, T, C] or [G, G, C], bool [T] steps with a file)."""
    split_sets = {b is not None for _, b, _ in files}
    split_steps = {s is not None for _, _, s in files}
    names = ", ".join(sorted(f for f, _, _ in files))
    if len(split_sets) > 1 or len(split_steps) > 1:
        raise TileError("bad file layout", f"{spec.name} mixes file layouts ({names})")
    if True in split_steps and not spec.is_multitemporal:
        raise TileError("bad file layout", f"{spec.name} is static but has per-step files")
    t = num_steps if spec.is_multitemporal else 1
    size = spec.tile_pixels(TILE_SIZE)
    out = np.zeros((size, size, t, spec.num_bands), dtype=np.dtype(spec.dtype))
    has_file = np.zeros(t, dtype=bool)
    slices = spec.band_set_slices()
    covered: dict[int, set[int]] = {}
    for name, band_set, step in files:
        path = tile_dir / name
        if band_set is not None and band_set >= spec.num_band_sets:
            raise TileError("bad file layout", f"{name}: {spec.name} has no band set {band_set}")
        if step is not None and step >= t:
            raise TileError("bad file layout", f"{name}: step {step} but tile.json has {t}")
        bands = slices[band_set] if band_set is not None else slice(0, spec.num_bands)
        n_bands = bands.stop - bands.start
        side = size if band_set is None else spec.band_set_pixels(band_set, TILE_SIZE)
        steps = [step] if step is not None else list(range(t))
        try:
            with rasterio.open(path) as ds:
                grid.check(ds, path)
                shape = (ds.count, ds.height, ds.width)
                if shape != (n_bands * len(steps), side, side):
                    raise TileError(
                        "wrong shape",
                        f"{name} is {shape} (bands, rows, cols), expected "
                        f"{(n_bands * len(steps), side, side)}",
                    )
                data = ds.read()
        except rasterio.errors.RasterioError as err:
            detail = str(err) if name in str(err) else f"{name}: {err}"
            raise TileError("unreadable", detail) from None
        data = _cast(data, spec, path)
        factor = size // side
        if factor > 1:
            data = np.repeat(np.repeat(data, factor, axis=1), factor, axis=2)
        # band index = step * C + c (step-major), as [H, W, steps, C]
        data = data.reshape(len(steps), n_bands, size, size).transpose(2, 3, 0, 1)
        out[:, :, steps, bands] = data
        has_file[steps] = True
        for s in steps:
            covered.setdefault(s, set()).add(band_set if band_set is not None else -1)
    need = {-1} if True not in split_sets else set(range(spec.num_band_sets))
    for s, sets in covered.items():
        if sets != need:
            missing = sorted(need - sets)
            raise TileError("bad file layout", f"{spec.name} step {s} lacks band sets {missing}")
    return (out if spec.is_multitemporal else out[:, :, 0]), has_file


def _present(spec: ModalitySpec, arr: np.ndarray, has_file: np.ndarray) -> np.ndarray:
    """Mark steps (static: [1]) that have a file and at least one non-nodata value."""
    if spec.nodata is None:
        return has_file.copy()
    valid = arr != spec.nodata
    if spec.is_multitemporal:
        return has_file & valid.any(axis=(0, 1, 3))
    return has_file & bool(valid.any())


def _check_sample(
    spec_present: dict[str, np.ndarray], multitemporal: list[str], min_steps: int
) -> None:
    if not any(p.any() for p in spec_present.values()):
        raise TileError("all nodata", "no modality has any valid pixel")
    if multitemporal:
        steps = max(int(spec_present[m].sum()) for m in multitemporal)
        if steps < min_steps:
            raise TileError(
                "too few timesteps", f"{steps} present timesteps, at least {min_steps} needed"
            )


def _process_tile(task: _Task, params: _Params) -> dict[str, Any]:
    """Read one tile, write its missing samples; returns a JSON-able outcome."""
    outcome: dict[str, Any] = {"tile_id": task.tile_id, "position": task.position,
                               "signature": task.signature, "reason": None, "kind": None,
                               "samples": [], "skipped_samples": [], "written": 0}  # fmt: skip
    tile_dir = Path(task.directory)
    by_mod: dict[str, list[tuple[str, int | None, int | None]]] = {}
    for name, mod, band_set, step in task.files:
        by_mod.setdefault(mod, []).append((name, band_set, step))
    try:
        if not by_mod:
            raise TileError("no files", f"no raster of {', '.join(params.modalities)}")
        stamps = _parse_timestamps(tile_dir)
        multitemporal = sorted(m for m in by_mod if get_modality(m).is_multitemporal)
        if stamps is None and multitemporal:
            raise TileError("bad tile.json", f"missing; needed for {', '.join(multitemporal)}")
        timestamps = stamps if stamps is not None else np.zeros((0, 3), dtype=np.int32)
        grid = _Grid()
        arrays, has_file = {}, {}
        for mod in sorted(by_mod):
            spec = get_modality(mod)
            arrays[mod], has_file[mod] = _read_modality(
                tile_dir, spec, by_mod[mod], len(timestamps), grid
            )
        present = {m: _present(get_modality(m), arrays[m], has_file[m]) for m in arrays}
        _check_sample(present, multitemporal, params.min_timesteps)
    except TileError as err:
        outcome.update(reason=str(err), kind=err.kind)
        return outcome
    except Exception as err:  # any reader failure skips the tile, never the run
        outcome.update(reason=f"unreadable: {type(err).__name__}: {err}", kind="unreadable")
        return outcome

    n = TILE_SIZE // params.tile_size
    left, bottom, right, top = grid.bounds or (0.0, 0.0, 0.0, 0.0)
    quads = [divmod(q, n) for q in range(n * n)]
    xs = [left + (c + 0.5) * (right - left) / n for _, c in quads]
    ys = [top - (r + 0.5) * (top - bottom) / n for r, _ in quads]
    lons, lats = rasterio.warp.transform(grid.crs, "EPSG:4326", xs, ys)
    for q, (r, c) in enumerate(quads):
        index = task.position * n * n + q
        data: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        sub_present: dict[str, np.ndarray] = {}
        for mod, arr in arrays.items():
            spec = get_modality(mod)
            s = params.tile_size * spec.pixels_per_ref_pixel
            sub = arr[r * s : (r + 1) * s, c * s : (c + 1) * s]
            keep = present[mod] & _present(spec, sub, np.ones_like(present[mod]))
            sub_present[mod] = keep
            if not keep.any():
                continue
            data[mod] = np.ascontiguousarray(sub[:, :, keep] if spec.is_multitemporal else sub)
            if spec.is_multitemporal:
                masks[mod] = keep
        try:
            _check_sample(sub_present, multitemporal, params.min_timesteps)
        except TileError as err:
            outcome["skipped_samples"].append({"index": index, "quadrant": q, "reason": str(err)})
            continue
        latlon = [float(lats[q]), float(lons[q])]
        if index not in task.existing:
            path = Path(params.out_dir) / sample_filename(index)
            write_sample(path, data, timestamps, np.array(latlon), masks, params.compression)
            outcome["written"] += 1
        outcome["samples"].append(
            {"index": index, "quadrant": q, "modalities": sorted(data), "latlon": latlon}
        )
    if not outcome["samples"]:
        reasons = sorted({s["reason"] for s in outcome["skipped_samples"]})
        outcome.update(reason="; ".join(reasons), kind=reasons[0].split(":")[0])
    return outcome


def _process_chunk(tasks: Sequence[_Task], params: _Params) -> list[dict[str, Any]]:
    # No sidecar lookups (.aux.xml, .ovr): one directory listing fewer per file opened.
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        return [_process_tile(t, params) for t in tasks]


def _run(
    tasks: list[_Task], params: _Params, workers: int, progress: bool
) -> Iterator[dict[str, Any]]:
    """Process tasks in chunks, in-process for one worker, else over a process pool."""
    size = max(1, min(16, len(tasks) // max(1, workers * 4)))
    chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    parallel = workers > 1 and len(chunks) > 1
    with (
        tqdm(total=len(tasks), unit="tile", desc="convert", disable=not progress) as bar,
        ProcessPoolExecutor(workers) if parallel else nullcontext() as pool,
    ):
        results = (pool.map if pool else map)(_process_chunk, chunks, repeat(params))
        for chunk, outcomes in zip(chunks, results):
            bar.update(len(chunk))
            yield from outcomes


def _scan(
    raw_dir: Path, wanted: list[str] | None
) -> tuple[list[tuple[str, Path, list[tuple[str, str, int | None, int | None]]]], list[str]]:
    """Sorted (tile_id, dir, selected files) for every non-hidden tile dir, plus notes."""
    tiles = []
    ignored: Counter[str] = Counter()
    for entry in sorted(os.scandir(raw_dir), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = []
        for name in sorted(os.listdir(entry.path)):
            m = FILE_RE.match(name)
            if m is None:
                continue
            mod = m["modality"]
            if mod not in MODALITIES:
                ignored[f"unknown modality {mod!r}"] += 1
            elif not MODALITIES[mod].is_spatial:
                ignored[f"{mod} is non-spatial and cannot be read from GeoTIFF"] += 1
            elif wanted is None or mod in wanted:
                b, s = m["band_set"], m["step"]
                files.append(
                    (name, mod, None if b is None else int(b), None if s is None else int(s))
                )
        tiles.append((entry.name, Path(entry.path), files))
    notes = [f"ignored {n} files: {why}" for why, n in sorted(ignored.items())]
    return tiles, notes


def _signature(tile_dir: Path, files: list[tuple[str, str, int | None, int | None]]) -> str:
    h = hashlib.sha1()
    for name in [TILE_JSON, *(f[0] for f in files)]:
        try:
            st = (tile_dir / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except FileNotFoundError:
            h.update(f"{name}:-;".encode())
    return h.hexdigest()


def _load_journal(work: Path) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    path = work / _JOURNAL
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                entries[entry["tile_id"]] = entry
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run
    return entries


def _prepare_work_dir(work: Path, run: dict[str, Any]) -> bool:
    """Create or resume the in-progress dir; True when resuming a run with the same inputs."""
    if work.exists():
        try:
            if json.loads((work / _RUN_JSON).read_text()) == run:
                return True
        except (OSError, ValueError):
            pass
        shutil.rmtree(work)  # another run's leftovers (different tiles or parameters)
    work.mkdir(parents=True)
    (work / _RUN_JSON).write_text(json.dumps(run))
    return False


def _find_complete(dataset_dir: Path, fingerprint: str) -> Path | None:
    if not dataset_dir.is_dir():
        return None
    for d in sorted(dataset_dir.iterdir()):
        if d.name.isdigit() and (d / METADATA_CSV).exists() and (d / REPORT_JSON).exists():
            try:
                if json.loads((d / REPORT_JSON).read_text()).get("fingerprint") == fingerprint:
                    return d
            except ValueError:
                continue
    return None


def _finalize(
    work: Path, dataset_dir: Path, outcomes: list[dict[str, Any]], params: _Params, report: dict
) -> Path:
    """Write metadata, sources and report, then rename the work dir to `<num samples>`."""
    samples = sorted((s | {"tile_id": o["tile_id"]} for o in outcomes for s in o["samples"]),
                     key=lambda s: s["index"])  # fmt: skip
    keep = {sample_filename(s["index"]) for s in samples}
    for p in work.iterdir():  # temp files of interrupted writers, samples of now-bad tiles
        if p.name.endswith(".tmp") or (SAMPLE_RE.match(p.name) and p.name not in keep):
            p.unlink()
    with (work / SOURCES_CSV).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sample_index", "tile_id", "quadrant"])
        writer.writerows([s["index"], s["tile_id"], s["quadrant"]] for s in samples)
    (work / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    if not samples:
        return work
    final = dataset_dir / str(len(samples))
    if final.exists():
        raise FileExistsError(
            f"{final} already exists from a conversion of other inputs; move it away and rerun "
            f"(the finished samples stay in {work})"
        )
    write_metadata(
        work,
        [(s["index"], s["modalities"]) for s in samples],
        list(params.modalities),
        params.compression,
        np.array([s["latlon"] for s in samples], dtype=np.float32),
    )
    work.rename(final)
    for name in (_RUN_JSON, _JOURNAL):
        (final / name).unlink(missing_ok=True)
    return final


def convert(
    raw_dir: Path | str,
    out_root: Path | str,
    *,
    modalities: Sequence[str] | None = None,
    tile_size: int = TILE_SIZE,
    compression: Compression | None = None,
    min_timesteps: int = 1,
    workers: int = 1,
    progress: bool = True,
) -> ConvertResult:
    """Convert raw GeoTIFF tiles under `raw_dir` into an H5 training set under `out_root`.

    `modalities` defaults to every spatial modality found in any tile; `tile_size` 128 splits
    each 256 px tile into four samples; `compression` defaults to zstd level 3. Resumable:
    rerunning continues an interrupted run and reports a finished one as already complete.
    """
    start = time.perf_counter()
    compression = compression or Compression()
    raw_dir, out_root = Path(raw_dir), Path(out_root)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: raw tile directory not found")
    if tile_size < 1 or TILE_SIZE % tile_size:
        raise ValueError(f"tile_size must divide {TILE_SIZE}, got {tile_size}")
    if min_timesteps < 1:
        raise ValueError(f"min_timesteps must be at least 1, got {min_timesteps}")
    wanted = None if modalities is None else sorted(set(modalities))
    for mod in wanted or []:
        if mod not in MODALITIES:
            raise ValueError(f"unknown modality {mod!r}; known: {', '.join(sorted(MODALITIES))}")
        if not MODALITIES[mod].is_spatial:
            raise ValueError(f"{mod} is non-spatial; convert reads GeoTIFF tiles only")
    tiles, notes = _scan(raw_dir, wanted)
    if not tiles:
        raise ValueError(f"{raw_dir}: no tiles (expected one sub-directory per tile)")
    mods = wanted or sorted({f[1] for _, _, files in tiles for f in files})
    if not mods:
        raise ValueError(f"{raw_dir}: no <modality>.tif raster of a known spatial modality")
    dataset_dir = out_root / recipe_dirname(compression, tile_size) / dataset_dirname(mods)
    signatures = [_signature(d, files) for _, d, files in tiles]
    run = {"tiles": [t[0] for t in tiles], "modalities": mods, "tile_size": tile_size,
           "compression": compression.to_json(), "min_timesteps": min_timesteps}  # fmt: skip
    fingerprint = hashlib.sha1(json.dumps([run, signatures]).encode()).hexdigest()
    done = _find_complete(dataset_dir, fingerprint)
    if done is not None:
        report = json.loads((done / REPORT_JSON).read_text())
        return _result(done, report, start, notes, already_complete=True)

    work = dataset_dir / IN_PROGRESS
    resumed = _prepare_work_dir(work, run)
    params = _Params(str(work), tuple(mods), tile_size, compression, min_timesteps)
    journal = _load_journal(work)
    on_disk = {int(m[1]) for p in os.listdir(work) if (m := SAMPLE_RE.match(p))}
    splits = (TILE_SIZE // tile_size) ** 2
    outcomes: dict[str, dict[str, Any]] = {}
    tasks = []
    for pos, ((tile_id, tile_dir, files), sig) in enumerate(zip(tiles, signatures)):
        indices = range(pos * splits, (pos + 1) * splits)
        prev = journal.get(tile_id)
        if prev is not None and prev["signature"] != sig:  # tile changed: its samples are stale
            for i in indices:
                (work / sample_filename(i)).unlink(missing_ok=True)
                on_disk.discard(i)
        elif (
            prev is not None
            and prev["reason"] is None
            and all(s["index"] in on_disk for s in prev["samples"])
        ):
            outcomes[tile_id] = prev | {"written": 0}
            continue
        existing = frozenset(i for i in indices if i in on_disk)
        tasks.append(_Task(tile_id, pos, str(tile_dir), tuple(files), sig, existing))

    with (work / _JOURNAL).open("a") as journal_fh:
        for outcome in _run(tasks, params, workers, progress):
            outcomes[outcome["tile_id"]] = outcome
            journal_fh.write(json.dumps(outcome) + "\n")
            journal_fh.flush()

    ordered = [outcomes[t[0]] for t in tiles]
    bad = [o for o in ordered if o["reason"] is not None]
    num_samples = sum(len(o["samples"]) for o in ordered)
    report = {
        "raw_dir": str(raw_dir.resolve()),
        "fingerprint": fingerprint,
        "parameters": {k: v for k, v in run.items() if k != "tiles"},
        "counts": {
            "tiles": len(tiles),
            "converted_tiles": len(tiles) - len(bad),
            "skipped_tiles": len(bad),
            "samples": num_samples,
            "skipped_samples": sum(len(o["skipped_samples"]) for o in ordered if not o["reason"]),
            "skip_reasons": dict(Counter(o["kind"] for o in bad)),
            "samples_per_modality": {
                m: sum(m in s["modalities"] for o in ordered for s in o["samples"]) for m in mods
            },
        },
        "skipped_tiles": [{"tile_id": o["tile_id"], "reason": o["reason"]} for o in bad],
        "skipped_samples": [
            s | {"tile_id": o["tile_id"]} for o in ordered if not o["reason"]
            for s in o["skipped_samples"]
        ],
        "notes": notes,
    }  # fmt: skip
    out_dir = _finalize(work, dataset_dir, ordered, params, report)
    notes += ["resumed an interrupted conversion"] if resumed else []
    return _result(out_dir, report, start, notes, written=sum(o["written"] for o in ordered))


def _result(
    out_dir: Path,
    report: dict[str, Any],
    start: float,
    notes: list[str],
    already_complete: bool = False,
    written: int = 0,
) -> ConvertResult:
    return ConvertResult(
        out_dir=out_dir,
        num_samples=report["counts"]["samples"],
        num_tiles=report["counts"]["tiles"],
        skipped=[(s["tile_id"], s["reason"]) for s in report["skipped_tiles"]],
        report_path=out_dir / REPORT_JSON,
        seconds=time.perf_counter() - start,
        notes=notes,
        already_complete=already_complete,
        written=written,
    )
