"""Raw GeoTIFF tiles (docs/data.md, "Raw tile layout") -> the H5 training-set layout.

`convert` reads `<raw_dir>/<tile_id>/<modality>[.b<k>][.t<s>].tif` plus `tile.json`, and writes
`sample_{i}.h5` files (FORMATS §2) into a hidden `.in_progress/` directory that is renamed to
`<num samples>/` once complete. Sample `i` is quadrant `i % splits` of tile `i // splits` in the
sorted tile list, so reruns reproduce the indices (skipped tiles leave gaps). Bad tiles are
skipped and listed in `conversion_report.json`; they never stop a run. Reading and validating
the raw tiles is `helios.data.raw_tiles`; this module orchestrates (resume journal, process pool,
sample writing, report).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
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
from helios.data.modalities import MODALITIES, TILE_SIZE, get_modality
from helios.data.raw_tiles import (
    FILE_RE,
    TILE_JSON,
    Grid,
    RawFile,
    RawTile,
    TileError,
    check_sample,
    present_steps,
    read_modality,
    scan_tiles,
    tile_signature,
    tile_timestamps,
)

__all__ = [
    "FILE_RE",
    "IN_PROGRESS",
    "REPORT_JSON",
    "SOURCES_CSV",
    "TILE_JSON",
    "ConvertResult",
    "TileError",
    "convert",
]

IN_PROGRESS = ".in_progress"
REPORT_JSON = "conversion_report.json"
SOURCES_CSV = "sample_sources.csv"
_RUN_JSON = ".run.json"
_JOURNAL = ".journal.jsonl"


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
    files: tuple[RawFile, ...]
    """(file name, modality, band set, step) for each raster of a selected modality."""
    signature: str
    existing: frozenset[int]
    """Sample indices already on disk (kept, not rewritten)."""
    error: str | None = None
    """Why the tile directory could not be listed; the tile is then skipped as unreadable."""


@dataclass
class _TileData:
    """One tile as read: arrays on the modality grids and the steps each modality has."""

    arrays: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    timestamps: np.ndarray
    multitemporal: list[str]
    grid: Grid


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


def _read_tile(task: _Task, params: _Params) -> _TileData:
    """Read and validate every raster of one tile; raises TileError with the skip reason."""
    if task.error is not None:
        raise TileError("unreadable", task.error)
    tile_dir = Path(task.directory)
    by_mod: dict[str, list[tuple[str, int | None, int | None]]] = {}
    for name, mod, band_set, step in task.files:
        by_mod.setdefault(mod, []).append((name, band_set, step))
    if not by_mod:
        raise TileError("no files", f"no raster of {', '.join(params.modalities)}")
    multitemporal = sorted(m for m in by_mod if get_modality(m).is_multitemporal)
    timestamps = tile_timestamps(tile_dir, multitemporal)
    grid = Grid()
    arrays, has_file = {}, {}
    for mod in sorted(by_mod):
        spec = get_modality(mod)
        arrays[mod], has_file[mod] = read_modality(
            tile_dir, spec, by_mod[mod], len(timestamps), grid
        )
    present = {m: present_steps(get_modality(m), arrays[m], has_file[m]) for m in arrays}
    check_sample(present, multitemporal, params.min_timesteps)
    return _TileData(arrays, present, timestamps, multitemporal, grid)


def _process_tile(task: _Task, params: _Params) -> dict[str, Any]:
    """Read one tile, write its missing samples; returns a JSON-able outcome."""
    outcome: dict[str, Any] = {"tile_id": task.tile_id, "position": task.position,
                               "signature": task.signature, "reason": None, "kind": None,
                               "samples": [], "skipped_samples": [], "written": 0}  # fmt: skip
    try:
        tile = _read_tile(task, params)
    except TileError as err:
        outcome.update(reason=str(err), kind=err.kind)
        return outcome
    except Exception as err:  # any reader failure skips the tile, never the run
        outcome.update(reason=f"unreadable: {type(err).__name__}: {err}", kind="unreadable")
        return outcome
    n = TILE_SIZE // params.tile_size
    left, bottom, right, top = tile.grid.bounds or (0.0, 0.0, 0.0, 0.0)
    quads = [divmod(q, n) for q in range(n * n)]
    xs = [left + (c + 0.5) * (right - left) / n for _, c in quads]
    ys = [top - (r + 0.5) * (top - bottom) / n for r, _ in quads]
    lons, lats = rasterio.warp.transform(tile.grid.crs, "EPSG:4326", xs, ys)
    for q, (r, c) in enumerate(quads):
        index = task.position * n * n + q
        data, masks, sub_present = _quadrant(tile, params.tile_size, r, c)
        try:
            check_sample(sub_present, tile.multitemporal, params.min_timesteps)
        except TileError as err:
            outcome["skipped_samples"].append({"index": index, "quadrant": q, "reason": str(err)})
            continue
        latlon = [float(lats[q]), float(lons[q])]
        if index not in task.existing:
            path = Path(params.out_dir) / sample_filename(index)
            write_sample(path, data, tile.timestamps, np.array(latlon), masks, params.compression)
            outcome["written"] += 1
        outcome["samples"].append(
            {"index": index, "quadrant": q, "modalities": sorted(data), "latlon": latlon}
        )
    if not outcome["samples"]:
        reasons = sorted({s["reason"] for s in outcome["skipped_samples"]})
        outcome.update(reason="; ".join(reasons), kind=reasons[0].split(":")[0])
    return outcome


def _quadrant(
    tile: _TileData, tile_size: int, r: int, c: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sample (r, c) of a tile: (on-disk arrays, step masks, steps present per modality)."""
    data: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    sub_present: dict[str, np.ndarray] = {}
    for mod, arr in tile.arrays.items():
        spec = get_modality(mod)
        s = tile_size * spec.pixels_per_ref_pixel
        sub = arr[r * s : (r + 1) * s, c * s : (c + 1) * s]
        keep = tile.present[mod] & present_steps(spec, sub, np.ones_like(tile.present[mod]))
        sub_present[mod] = keep
        if not keep.any():
            continue
        data[mod] = np.ascontiguousarray(sub[:, :, keep] if spec.is_multitemporal else sub)
        if spec.is_multitemporal:
            masks[mod] = keep
    return data, masks, sub_present


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


def _check_arguments(
    raw_dir: Path, out_root: Path, tile_size: int, min_timesteps: int, wanted: list[str] | None
) -> None:
    """Raise FileNotFoundError or ValueError, naming the path, on arguments convert cannot use."""
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: raw tile directory not found")
    for p in (out_root, *out_root.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise ValueError(f"{p}: not a directory (the output root {out_root} must be one)")
            break
    if tile_size < 1 or TILE_SIZE % tile_size:
        raise ValueError(f"tile_size must divide {TILE_SIZE}, got {tile_size}")
    if min_timesteps < 1:
        raise ValueError(f"min_timesteps must be at least 1, got {min_timesteps}")
    for mod in wanted or []:
        if mod not in MODALITIES:
            raise ValueError(f"unknown modality {mod!r}; known: {', '.join(sorted(MODALITIES))}")
        if not MODALITIES[mod].is_spatial:
            raise ValueError(f"{mod} is non-spatial; convert reads GeoTIFF tiles only")


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
    wanted = None if modalities is None else sorted(set(modalities))
    _check_arguments(raw_dir, out_root, tile_size, min_timesteps, wanted)
    tiles, notes = scan_tiles(raw_dir, wanted)
    if not tiles:
        raise ValueError(f"{raw_dir}: no tiles (expected one sub-directory per tile)")
    mods = wanted or sorted({f[1] for t in tiles for f in t.files})
    if not mods:
        raise ValueError(f"{raw_dir}: no <modality>.tif raster of a known spatial modality")
    dataset_dir = out_root / recipe_dirname(compression, tile_size) / dataset_dirname(mods)
    signatures = [tile_signature(t.directory, t.files) for t in tiles]
    run = {"tiles": [t.tile_id for t in tiles], "modalities": mods, "tile_size": tile_size,
           "compression": compression.to_json(), "min_timesteps": min_timesteps}  # fmt: skip
    fingerprint = hashlib.sha1(json.dumps([run, signatures]).encode()).hexdigest()
    done = _find_complete(dataset_dir, fingerprint)
    if done is not None:
        report = json.loads((done / REPORT_JSON).read_text())
        return _result(done, report, start, notes, already_complete=True)

    work = dataset_dir / IN_PROGRESS
    resumed = _prepare_work_dir(work, run)
    params = _Params(str(work), tuple(mods), tile_size, compression, min_timesteps)
    outcomes, tasks = _plan(work, tiles, signatures, (TILE_SIZE // tile_size) ** 2)
    with (work / _JOURNAL).open("a") as journal_fh:
        for outcome in _run(tasks, params, workers, progress):
            outcomes[outcome["tile_id"]] = outcome
            journal_fh.write(json.dumps(outcome) + "\n")
            journal_fh.flush()

    ordered = [outcomes[t.tile_id] for t in tiles]
    report = _report(raw_dir, fingerprint, run, ordered, notes)
    out_dir = _finalize(work, dataset_dir, ordered, params, report)
    notes += ["resumed an interrupted conversion"] if resumed else []
    return _result(out_dir, report, start, notes, written=sum(o["written"] for o in ordered))


def _plan(
    work: Path, tiles: list[RawTile], signatures: list[str], splits: int
) -> tuple[dict[str, dict[str, Any]], list[_Task]]:
    """Outcomes of tiles finished by an earlier run (from the journal), and tasks for the rest.

    Samples of tiles whose files changed since they were journaled are deleted.
    """
    journal = _load_journal(work)
    on_disk = {int(m[1]) for p in os.listdir(work) if (m := SAMPLE_RE.match(p))}
    outcomes: dict[str, dict[str, Any]] = {}
    tasks = []
    for pos, (t, sig) in enumerate(zip(tiles, signatures)):
        indices = range(pos * splits, (pos + 1) * splits)
        prev = journal.get(t.tile_id)
        if prev is not None and prev["signature"] != sig:  # tile changed: its samples are stale
            for i in indices:
                (work / sample_filename(i)).unlink(missing_ok=True)
                on_disk.discard(i)
        elif (
            prev is not None
            and prev["reason"] is None
            and all(s["index"] in on_disk for s in prev["samples"])
        ):
            outcomes[t.tile_id] = prev | {"written": 0}
            continue
        existing = frozenset(i for i in indices if i in on_disk)
        task = _Task(t.tile_id, pos, str(t.directory), tuple(t.files), sig, existing, t.error)
        tasks.append(task)
    return outcomes, tasks


def _report(
    raw_dir: Path,
    fingerprint: str,
    run: dict[str, Any],
    ordered: list[dict[str, Any]],
    notes: list[str],
) -> dict[str, Any]:
    """The conversion_report.json payload from every tile's outcome, in tile order."""
    bad = [o for o in ordered if o["reason"] is not None]
    mods = run["modalities"]
    return {
        "raw_dir": str(raw_dir.resolve()),
        "fingerprint": fingerprint,
        "parameters": {k: v for k, v in run.items() if k != "tiles"},
        "counts": {
            "tiles": len(ordered),
            "converted_tiles": len(ordered) - len(bad),
            "skipped_tiles": len(bad),
            "samples": sum(len(o["samples"]) for o in ordered),
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
