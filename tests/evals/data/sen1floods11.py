"""A tiny Sen1Floods11 v1.1 bucket (seeded): S1Hand, S2Hand, LabelHand GeoTIFFs and split CSVs.

Real chips are 512 px; these are `SIDE` px, in EPSG:4326 with the real ~10 m pixel size, band
descriptions and dtypes (S1 float32 dB with NaN nodata, S2 int16 with nodata 0, labels int16).
Each S1 chip has a NaN VV pixel at (0, 0) and each S2 chip a 0 (nodata) B02 pixel at (0, 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

SIDE = 32
PIXEL_DEG = 8.983152841195215e-05
S2_DESCRIPTIONS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11",
                   "B12")  # fmt: skip
SPLITS = {
    "flood_train_data.csv": ["Ghana_103272", "Mekong_1111068", "Sri-Lanka_101973"],
    "flood_valid_data.csv": ["India_1068117"],
    "flood_test_data.csv": ["Spain_7370579", "USA_430764"],
    "flood_bolivia_data.csv": ["Bolivia_103757"],
}
ORIGIN = {"Ghana": (-1.2, 6.3), "Mekong": (104.5, 12.1), "Sri-Lanka": (80.1, 7.0),
          "India": (91.5, 26.0), "Spain": (-0.78, 38.13), "USA": (-95.3, 36.2),
          "Bolivia": (-65.0, -14.0)}  # fmt: skip


def _write(path: Path, data: np.ndarray, origin: tuple[float, float], nodata: float | None,
           descriptions: tuple[str, ...] | None) -> None:  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs="EPSG:4326", compress="deflate",
                   transform=Affine(PIXEL_DEG, 0, origin[0], 0, -PIXEL_DEG, origin[1]))  # fmt: skip
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, desc in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, desc)


def make_sen1floods11(root: Path, seed: int = 0) -> Path:
    """Write `root/v1.1` (data/flood_events/HandLabeled and splits/flood_handlabeled)."""
    rng = np.random.default_rng(seed)
    out = root / "v1.1"
    data = out / "data" / "flood_events" / "HandLabeled"
    splits = out / "splits" / "flood_handlabeled"
    splits.mkdir(parents=True)
    for csv_name, chips in SPLITS.items():
        rows = [f"{c}_S1Hand.tif,{c}_LabelHand.tif" for c in chips]
        (splits / csv_name).write_text("\n".join(rows) + "\n")
        for chip in chips:
            origin = ORIGIN[chip.split("_")[0]]
            s1 = rng.uniform(-30.0, 5.0, (2, SIDE, SIDE)).astype(np.float32)
            s1[0, 0, 0] = np.nan
            _write(data / "S1Hand" / f"{chip}_S1Hand.tif", s1, origin, np.nan, ("VV", "VH"))
            s2 = rng.integers(1, 6000, (13, SIDE, SIDE)).astype(np.int16)
            s2[1, 0, 0] = 0
            _write(data / "S2Hand" / f"{chip}_S2Hand.tif", s2, origin, 0, S2_DESCRIPTIONS)
            label = rng.integers(0, 2, (1, SIDE, SIDE)).astype(np.int16)
            label[0, : SIDE // 2, : SIDE // 2] = -1  # the top-left quarter has no data
            _write(data / "LabelHand" / f"{chip}_LabelHand.tif", label, origin, None, None)
    return out
