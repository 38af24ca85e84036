"""Build the dataset: materialize every window's input layers from the data sources.

For each window and input layer, scenes that overlap the window are picked per time step
(periods, or acquisition dates), ranked (`sort_by`, then time), reprojected onto the
window grid with rasterio and composited into one mosaic per step. The layer is written as
`layers/<layer>.tif` (float32, T x C bands step-major, described "<band>@<YYYY-MM-DD>",
MISSING_VALUE for nodata) plus `layers/<layer>.json` (timestamps, which steps are present,
the scenes used). `layers/.complete.json` marks a finished window; re-runs skip it.
Windows run in parallel; failures are recorded in build_report.json and fail the step only
when the success rate falls below `min_success_rate`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from tqdm import tqdm

from helios.data.modalities import MISSING_VALUE
from helios.runner.core.fsutil import atomic_path, clean_tmp_files, read_json, text_hash, write_json
from helios.runner.core.windows import (
    COMPLETE_MARKER,
    Window,
    list_windows,
    load_window,
    partition_dir,
)
from helios.runner.materialize.dataset_config import DatasetConfig, LayerConfig, periods, time_range
from helios.runner.materialize.sources import Scene, rank_scenes, read_band

logger = logging.getLogger(__name__)
BUILD_REPORT = "build_report.json"


class BuildError(RuntimeError):
    """Too many windows failed to build."""


class WindowBuildError(RuntimeError):
    """Why one window could not be built."""


@dataclass
class Step:
    """One timestep of a layer: its time range and the candidate scenes, best first."""

    start: datetime
    end: datetime
    scenes: list[Scene]


def plan_steps(
    layer: LayerConfig, window: Window, scenes: Sequence[Scene]
) -> tuple[list[Step], tuple[datetime, datetime]]:
    """The timesteps of a layer for a window, with candidate scenes; also the time range."""
    src = layer.data_source
    assert src is not None
    t0, t1 = time_range(window.time_range[0], window.time_range[1], src)
    bounds = window.wgs84_bounds()
    near = [s for s in scenes if s.intersects(bounds)]
    q, rng = src.query, (t0, t1)
    if not layer.spec.is_multitemporal:  # static layers (maps, elevation) ignore time
        return [Step(t0, t1, rank_scenes(near, src.sort_by))], rng
    if q.period_duration is not None:
        steps = [
            Step(a, b, rank_scenes([s for s in near if s.in_time(a, b)], src.sort_by))
            for a, b in periods(t0, t1, q)
        ]
        return steps, rng
    inside = rank_scenes([s for s in near if s.in_time(t0, t1)], src.sort_by)
    if (q.max_matches or 1) == 1:
        return [Step(t0, t1, inside)], rng
    by_date: dict[Any, list[Scene]] = defaultdict(list)
    for s in inside:  # dates in order of their best scene's rank
        by_date[s.time.date() if s.time else None].append(s)
    chosen = sorted(list(by_date.items())[: q.max_matches], key=lambda kv: str(kv[0]))
    steps = [Step(t0, t1, group) for _, group in chosen]
    steps += [Step(t0, t1, []) for _ in range((q.max_matches or 1) - len(steps))]
    return steps, rng


def _read_scene(
    scene: Scene, layer: LayerConfig, crs: str, transform: Affine, width: int, height: int
) -> np.ndarray:
    out = np.full((len(layer.bands), height, width), np.nan, dtype=np.float32)
    for c, band in enumerate(layer.bands):
        loc = scene.locate(band)
        if loc is not None:
            out[c] = read_band(
                *loc, crs, transform, width, height, layer.resampling, layer.source_nodata
            )
    return out


def composite(
    step: Step, layer: LayerConfig, crs: str, transform: Affine, width: int, height: int
) -> tuple[np.ndarray, list[Scene]]:
    """Mosaic the step's scenes: float32 [C, H, W] (NaN where empty) and the scenes used."""
    assert layer.data_source is not None
    q = layer.data_source.query
    used: list[Scene] = []
    stack: list[np.ndarray] = []
    filled = np.full((len(layer.bands), height, width), np.nan, dtype=np.float32)
    for scene in step.scenes:
        data = _read_scene(scene, layer, crs, transform, width, height)
        valid = np.isfinite(data)
        if not valid.any():
            continue
        used.append(scene)
        if q.compositing == "FIRST_VALID":
            take = ~np.isfinite(filled) & valid
            filled[take] = data[take]
            if np.isfinite(filled).all():
                break
        else:
            stack.append(data)
        if len(used) >= q.scenes_per_mosaic:
            break
    if stack:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            reduce = np.nanmean if q.compositing == "MEAN" else np.nanmedian
            filled = reduce(np.stack(stack), axis=0).astype(np.float32)
    return filled, used


def layer_fingerprint(config: DatasetConfig, layer: LayerConfig) -> str:
    """Hash of one layer's definition: a change rebuilds the layer."""
    return text_hash(config.raw["layers"][layer.name])[:16]


def materialize_layer(
    window: Window, config: DatasetConfig, layer: LayerConfig, scenes: Sequence[Scene]
) -> dict[str, Any]:
    """Write `layers/<layer>.tif` and its sidecar JSON for one window; returns the sidecar."""
    tif = window.layers_dir / f"{layer.name}.tif"
    meta_path = window.layers_dir / f"{layer.name}.json"
    fingerprint = layer_fingerprint(config, layer)
    if tif.exists() and meta_path.exists():
        meta = read_json(meta_path)
        if meta.get("fingerprint") == fingerprint:
            return dict(meta)
    size = layer.pixel_size
    x0, y0, x1, y1 = window.bounds
    width, height = max(1, round((x1 - x0) / size)), max(1, round((y1 - y0) / size))
    transform = Affine(size, 0.0, x0, 0.0, -size, y1)
    steps, (t0, t1) = plan_steps(layer, window, scenes)
    nb = len(layer.bands)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": nb * len(steps),
        "dtype": "float32",
        "crs": window.crs,
        "transform": transform,
        "nodata": MISSING_VALUE,
        "compress": "deflate",
        "predictor": 3,
        "interleave": "band",
    }
    if width >= 256 and height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    stamps, present, used_ids = [], [], []
    with atomic_path(tif) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for t, step in enumerate(steps):  # one step in memory at a time
            data, used = composite(step, layer, window.crs, transform, width, height)
            ok = bool(np.isfinite(data).any())
            when = next((s.time for s in used if s.time), None) or step.start
            stamps.append(when.date().isoformat())
            present.append(ok)
            used_ids.append([s.id for s in used])
            bands = list(range(t * nb + 1, (t + 1) * nb + 1))
            dst.write(np.nan_to_num(data, nan=MISSING_VALUE), indexes=bands)
            for c, band in enumerate(layer.bands):
                desc = f"{band}@{stamps[-1]}" if layer.spec.is_multitemporal else band
                dst.set_band_description(t * nb + c + 1, desc)
        dst.update_tags(HELIOS_MODALITY=layer.spec.name, HELIOS_LAYER=layer.name)
    meta = {
        "layer": layer.name,
        "modality": layer.spec.name,
        "bands": list(layer.bands),
        "pixel_size": size,
        "width": width,
        "height": height,
        "time_range": [t0.isoformat(), t1.isoformat()],
        "timestamps": stamps,
        "present": present,
        "scenes": used_ids,
        "fingerprint": fingerprint,
    }
    write_json(meta_path, meta)
    return meta


def materialize_window(
    window: Window, config: DatasetConfig, scenes: dict[str, Sequence[Scene]]
) -> None:
    """Materialize every input layer of a window, then write its completion marker.

    Raises:
        WindowBuildError: a required layer has no imagery over the window.

    """
    clean_tmp_files(window.layers_dir)
    for layer in config.input_layers():
        meta = materialize_layer(window, config, layer, scenes[layer.name])
        if layer.required and not any(meta["present"]):
            t0, t1 = meta["time_range"]
            raise WindowBuildError(
                f"no imagery of layer {layer.name!r} covers window {window.name} "
                f"between {t0[:10]} and {t1[:10]} ({len(scenes[layer.name])} scenes indexed)"
            )
    write_json(window.layers_dir / COMPLETE_MARKER, {"fingerprint": config.fingerprint()})


_STATE: dict[str, Any] = {}


def _init_worker(config: DatasetConfig, scenes: dict[str, Sequence[Scene]]) -> None:
    _STATE["config"], _STATE["scenes"] = config, scenes


def _build_one(path: str) -> tuple[str, str | None]:
    window = load_window(Path(path))
    try:
        materialize_window(window, _STATE["config"], _STATE["scenes"])
    except Exception as err:  # recorded per window; the step decides on the success rate
        logger.debug("window %s failed", window.name, exc_info=True)
        return path, f"{type(err).__name__}: {err}"
    return path, None


@dataclass
class BuildResult:
    """What `build_dataset` did."""

    total: int
    built: int
    already_built: int
    failed: dict[str, str] = field(default_factory=dict)
    """Window name -> reason."""
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        """Fraction of windows built (now or before)."""
        return (self.built + self.already_built) / self.total if self.total else 0.0

    def summary(self) -> str:
        """One line for the CLI."""
        line = (
            f"built {self.built} windows ({self.already_built} already built, "
            f"{len(self.failed)} failed of {self.total}) in {self.seconds:.1f} s"
        )
        if self.failed:
            first = next(iter(self.failed.items()))
            line += f"; e.g. {first[0]}: {first[1]}"
        return line


def build_dataset(
    config: DatasetConfig,
    scratch: Path,
    partition_ids: Sequence[str],
    workers: int = 1,
    min_success_rate: float = 0.9,
    progress: bool = True,
) -> BuildResult:
    """Materialize the input layers of every window of the given partitions.

    Raises:
        BuildError: when fewer than `min_success_rate` of the windows are built; the
            reasons are in `scratch/build_report.json` either way.

    """
    start = time.monotonic()
    scratch = Path(scratch)
    fingerprint = config.fingerprint()
    windows = [w for pid in partition_ids for w in list_windows(scratch, pid)]
    if not windows:
        raise BuildError(f"no windows in partitions {list(partition_ids)}: run partition first")
    todo = [w for w in windows if not w.is_built(fingerprint)]
    scenes = {
        la.name: la.data_source.source.scenes(config.base_dir, la.bands)  # type: ignore[union-attr]
        for la in config.input_layers()
    }
    failures: dict[str, str] = {}
    paths = [str(w.path) for w in todo]
    bar = tqdm(total=len(paths), desc="build", unit="window", disable=not progress)
    if workers <= 1 or len(paths) <= 1:
        _init_worker(config, scenes)
        results: Any = (_build_one(p) for p in paths)
        for path, err in results:
            bar.update()
            if err:
                failures[Path(path).name] = err
    else:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(config, scenes))
        with pool as ex:
            for fut in as_completed([ex.submit(_build_one, p) for p in paths]):
                path, err = fut.result()
                bar.update()
                if err:
                    failures[Path(path).name] = err
    bar.close()
    result = BuildResult(
        total=len(windows),
        built=len(todo) - len(failures),
        already_built=len(windows) - len(todo),
        failed=dict(sorted(failures.items())),
        seconds=time.monotonic() - start,
    )
    _write_reports(scratch, partition_ids, windows, result)
    if result.success_rate < min_success_rate:
        raise BuildError(
            f"only {result.success_rate:.0%} of windows built (minimum {min_success_rate:.0%}); "
            f"{result.summary()}; see {scratch / BUILD_REPORT}"
        )
    return result


def _write_reports(
    scratch: Path, partition_ids: Sequence[str], windows: list[Window], result: BuildResult
) -> None:
    by_pid: dict[str, list[str]] = defaultdict(list)
    for w in windows:
        by_pid[w.partition_id].append(w.name)
    for pid in partition_ids:
        names = by_pid.get(pid, [])
        failed = {n: result.failed[n] for n in names if n in result.failed}
        write_json(
            partition_dir(scratch, pid) / BUILD_REPORT,
            {"windows": len(names), "built": len(names) - len(failed), "failed": failed},
        )
    write_json(
        scratch / BUILD_REPORT,
        {
            "partitions": list(partition_ids),
            "windows": result.total,
            "built": result.built + result.already_built,
            "success_rate": round(result.success_rate, 6),
            "failed": result.failed,
        },
    )
