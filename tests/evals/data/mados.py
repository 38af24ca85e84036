"""A tiny MADOS folder in the real layout (seeded): float32 rhorc band GeoTIFFs per resolution.

Real patches are 240 px at 10 m; these are `SIDE` px (20 m bands SIDE/2, the 60 m band SIDE/6).
Scene_0 and Scene_2 use Sentinel-2A wavelength names (443, 560, ...), Scene_1 Sentinel-2B ones
(442, 559, ...) and has no georeferencing. Patch Scene_0_1 has a NaN in B02 at (0, 0).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

SIDE = 48
S2A_NM = {"B01": 443, "B02": 492, "B03": 560, "B04": 665, "B05": 704, "B06": 740, "B07": 783,
          "B08": 833, "B8A": 865, "B11": 1614, "B12": 2202}  # fmt: skip
S2B_NM = {"B01": 442, "B02": 492, "B03": 559, "B04": 665, "B05": 704, "B06": 739, "B07": 780,
          "B08": 833, "B8A": 864, "B11": 1610, "B12": 2186}  # fmt: skip
RESOLUTION = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20,
              "B07": 20, "B8A": 20, "B11": 20, "B12": 20}  # fmt: skip
SPLITS = {
    "train": ["Scene_0_1", "Scene_0_2", "Scene_1_1"],
    "val": ["Scene_1_2"],
    "test": ["Scene_2_1", "Scene_2_2"],
}
GEOREFERENCED = {"Scene_0": "EPSG:32633", "Scene_2": "EPSG:32618"}
ORIGIN = (500000.0, 4500000.0)


def _write(path: Path, data: np.ndarray, scene: str, res: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                   dtype=data.dtype.name)  # fmt: skip
    if scene in GEOREFERENCED:
        profile.update(
            crs=GEOREFERENCED[scene], transform=Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # Scene_1 has no georeference
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)


def make_mados(root: Path, seed: int = 0) -> Path:
    """Write `root/MADOS` and return it."""
    rng = np.random.default_rng(seed)
    out = root / "MADOS"
    (out / "splits").mkdir(parents=True)
    for split, names in SPLITS.items():
        (out / "splits" / f"{split}_X.txt").write_text("\n".join(names) + "\n")
    for names in SPLITS.values():
        for name in names:
            scene, crop = name.rsplit("_", 1)
            wavelengths = S2B_NM if scene == "Scene_1" else S2A_NM
            for band, nm in wavelengths.items():
                res = RESOLUTION[band]
                side = SIDE * 10 // res
                data = rng.uniform(0.0, 0.2, (side, side)).astype(np.float32)
                if name == "Scene_0_1" and band == "B02":
                    data[0, 0] = np.nan
                path = out / scene / str(res) / f"{scene}_L2R_rhorc_{nm}_{crop}.tif"
                _write(path, data, scene, res)
            cl = np.zeros((SIDE, SIDE), dtype=np.uint8)
            if name == "Scene_1_2":  # only the top-left quarter is annotated
                cl[: SIDE // 4, : SIDE // 4] = rng.integers(1, 16, (SIDE // 4, SIDE // 4))
            else:
                annotated = rng.random((SIDE, SIDE)) < 0.3
                cl[annotated] = rng.integers(1, 16, int(annotated.sum()))
                cl[1, 1], cl[2, 2] = 1, 15
            conf = np.where(cl > 0, rng.integers(1, 4, cl.shape), 0).astype(np.uint8)
            _write(out / scene / "10" / f"{scene}_L2R_cl_{crop}.tif", cl, scene, 10)
            _write(out / scene / "10" / f"{scene}_L2R_conf_{crop}.tif", conf, scene, 10)
    return out
