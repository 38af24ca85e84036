"""Score the predicted cloud map of the EAST part against the scene's own QA cloud labels.

    python examples/cloud_finetune/evaluate.py --project P --scratch S [--json out.json]

The prediction is the COG `helios run predict` wrote (`S/results/output_epsg32616.tif`).
The reference is the BQA cloud mask of the held-out east part (cloud confidence >= medium,
the rule of the demo labels and of the training annotations), on the same 10 m grid, nearest
resampling. Beside the model, two trivial baselines:

- all clear: the majority class everywhere;
- brightness threshold: cloud where the mean of Landsat B2 (blue) and B4 (red) DN exceeds a
  threshold, chosen to maximize cloud IoU over the annotated WEST part (the part the model was
  trained on), then applied to the east unchanged.

Prints a markdown table: cloud IoU, accuracy, mIoU (clear, cloud), cloud precision and recall
and the predicted cloud fraction, over every east pixel with a QA label and a prediction.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject


def _load_setup() -> Any:
    """The example's setup.py (grid, QA rule, band warping), loaded by path."""
    spec = importlib.util.spec_from_file_location(
        "cloud_finetune_setup", Path(__file__).with_name("setup.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = _load_setup()


def part_grid(layout: dict[str, Any], name: str) -> tuple[Affine, int, int]:
    """(transform, width, height) of the west or east part on the 10 m grid."""
    c0, r0, c1, r1 = layout[name]
    x0, y1 = layout["origin"]
    res = layout["resolution"]
    return Affine(res, 0.0, x0 + c0 * res, 0.0, -res, y1 - r0 * res), c1 - c0, r1 - r0


def read_prediction(path: Path, transform: Affine, width: int, height: int) -> np.ndarray:
    """Class map on the grid (nearest); 255 where the prediction has no value."""
    out = np.full((height, width), 255, dtype=np.uint8)
    with rasterio.open(path) as src:
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs=S.CRS,
            src_nodata=src.nodata,
            dst_nodata=255,
            resampling=Resampling.nearest,
        )
    return out


def brightness(scene: Path, transform: Affine, width: int, height: int) -> np.ndarray:
    """Mean of B2 (blue) and B4 (red) DN on the grid (bilinear, as the model input)."""
    bands = [
        S.warp(scene / f"l8_{b}.tif", transform, width, height, Resampling.bilinear, np.nan)
        for b in ("B2", "B4")
    ]
    return (bands[0] + bands[1]) / 2


def scores(pred: np.ndarray, cloud: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Cloud IoU, accuracy, mIoU, cloud precision / recall and cloud fraction."""
    p, t = pred[valid].astype(bool), cloud[valid]
    tp, fp = int((p & t).sum()), int((p & ~t).sum())
    fn, tn = int((~p & t).sum()), int((~p & ~t).sum())
    n = max(1, tp + fp + fn + tn)
    iou_cloud = tp / max(1, tp + fp + fn)
    iou_clear = tn / max(1, tn + fp + fn)
    return {
        "cloud_iou": iou_cloud,
        "accuracy": (tp + tn) / n,
        "miou": (iou_cloud + iou_clear) / 2,
        "cloud_precision": tp / max(1, tp + fp),
        "cloud_recall": tp / max(1, tp + fn),
        "predicted_cloud_fraction": (tp + fp) / n,
        "pixels": float(n),
    }


def fit_threshold(bright: np.ndarray, cloud: np.ndarray, valid: np.ndarray) -> float:
    """The brightness threshold with the best cloud IoU (candidates: 200 quantiles)."""
    values = bright[valid]
    best, best_iou = float("inf"), -1.0
    for q in np.linspace(0.30, 0.999, 200):
        t = float(np.quantile(values, q))
        iou = scores(bright > t, cloud, valid)["cloud_iou"]
        if iou > best_iou:
            best, best_iou = t, iou
    return best


def find_prediction(scratch: Path) -> Path:
    """The combined class map in `scratch/results/`."""
    found = sorted((scratch / "results").glob("output_epsg*.tif"))
    found = [p for p in found if not p.name.endswith(".weights.tif")]
    if not found:
        sys.exit(f"no output_epsg*.tif in {scratch / 'results'}: run `helios run predict` first")
    return found[0]


def evaluate(project: Path, prediction: Path) -> dict[str, Any]:
    """Every score of the model and the baselines (see the module docstring)."""
    layout = json.loads((project / "example.json").read_text())
    scene = Path(layout["scene"])
    west, east = part_grid(layout, "west"), part_grid(layout, "east")
    west_classes, east_classes = S.qa_classes(scene, *west), S.qa_classes(scene, *east)
    west_valid, east_valid = west_classes != 255, east_classes != 255
    west_cloud, east_cloud = west_classes == 2, east_classes == 2
    pred = read_prediction(prediction, *east)
    valid = east_valid & (pred != 255)
    threshold = fit_threshold(brightness(scene, *west), west_cloud, west_valid)
    east_bright = brightness(scene, *east)
    rows = {
        "fine-tuned model": scores(pred == 1, east_cloud, valid),
        "all clear": scores(np.zeros_like(pred, dtype=bool), east_cloud, valid),
        "brightness threshold": scores(east_bright > threshold, east_cloud, valid),
    }
    return {
        "prediction": str(prediction),
        "east_pixels": int(valid.sum()),
        "east_unscored_pixels": int((~valid).sum()),
        "east_cloud_fraction": float(east_cloud[valid].mean()),
        "west_cloud_fraction": float(west_cloud[west_valid].mean()),
        "threshold_dn": threshold,
        "scores": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    """The scores as a markdown table."""
    lines = [
        "| method | cloud IoU | accuracy | mIoU | cloud precision | cloud recall | "
        "predicted cloud |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["scores"].items():
        label = (
            name
            if name != "brightness threshold"
            else (f"brightness threshold ((B2+B4)/2 > {result['threshold_dn']:.0f} DN)")
        )
        lines.append(
            f"| {label} | {s['cloud_iou']:.3f} | {s['accuracy']:.3f} | {s['miou']:.3f} | "
            f"{s['cloud_precision']:.3f} | {s['cloud_recall']:.3f} | "
            f"{s['predicted_cloud_fraction']:.3f} |"
        )
    lines.append("")
    lines.append(
        f"{result['east_pixels']:,} east pixels scored (10 m); QA cloud fraction "
        f"{result['east_cloud_fraction']:.3f} east, {result['west_cloud_fraction']:.3f} west."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--project", type=Path, required=True, help="the project setup.py wrote")
    p.add_argument("--scratch", type=Path, default=None, help="the prediction scratch folder")
    p.add_argument("--prediction", type=Path, default=None, help="a class map COG instead")
    p.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = p.parse_args(argv)
    if args.prediction is None and args.scratch is None:
        p.error("give --scratch (of `helios run predict`) or --prediction")
    prediction = args.prediction or find_prediction(args.scratch)
    result = evaluate(args.project, prediction)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
