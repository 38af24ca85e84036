"""A tiny PASTIS-R folder (seeded): metadata.geojson, DATA_S2/S1A/S1D, ANNOTATIONS, NORM files.

Real patches are 128 px with 38-70 acquisitions; these are `SIDE` px with the dates below.
Geometries are 10 m pixel squares in Lambert-93 (EPSG:2154). Patch 10000's dates-S2 is stored as
a JSON string (as geopandas writes it back), the others as objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIDE = 32
PATCHES = {10000: 1, 10001: 2, 10002: 3, 10003: 4, 10004: 5}
"""ID_PATCH -> Fold."""
S2_DATES = [20180924, 20181004, 20181019, 20181203, 20190217, 20190410, 20190425, 20190614,
            20190823, 20191012]  # fmt: skip
"""Months from Sept 2018: 0, 1, 1, 3, 5, 7, 7, 9, 11, 13 (the last is outside 12 months)."""
S1A_DATES = [20180915, 20181101, 20181113, 20190301, 20190705]
S1D_DATES = [20180920, 20181108, 20190820]
ORIGIN = (650000.0, 6860000.0)


def make_pastis(root: Path, seed: int = 0) -> Path:
    """Write `root/PASTIS-R` and return it."""
    rng = np.random.default_rng(seed)
    out = root / "PASTIS-R"
    for sub in ("DATA_S2", "DATA_S1A", "DATA_S1D", "ANNOTATIONS"):
        (out / sub).mkdir(parents=True)
    features = []
    for i, (pid, fold) in enumerate(PATCHES.items()):
        s2 = rng.integers(1, 5000, (len(S2_DATES), 10, SIDE, SIDE)).astype(np.int16)
        np.save(out / "DATA_S2" / f"S2_{pid}.npy", s2)
        for orbit, dates in (("S1A", S1A_DATES), ("S1D", S1D_DATES)):
            s1 = rng.uniform(-25.0, 0.0, (len(dates), 3, SIDE, SIDE)).astype(np.float32)
            s1[:, 2] = s1[:, 0] - s1[:, 1]
            np.save(out / f"DATA_{orbit}" / f"{orbit}_{pid}.npy", s1)
        target = np.zeros((3, SIDE, SIDE), dtype=np.uint8)
        target[0] = rng.integers(0, 20, (SIDE, SIDE))
        target[0, 0, 0], target[0, 0, 1] = 19, 0
        target[1] = rng.integers(0, 30, (SIDE, SIDE))
        np.save(out / "ANNOTATIONS" / f"TARGET_{pid}.npy", target)
        x0, y0 = ORIGIN[0] + 2000.0 * i, ORIGIN[1]
        ring = [[x0, y0], [x0 + SIDE * 10, y0], [x0 + SIDE * 10, y0 + SIDE * 10],
                [x0, y0 + SIDE * 10], [x0, y0]]  # fmt: skip
        dates_s2: object = {str(k): d for k, d in enumerate(S2_DATES)}
        if pid == 10000:
            dates_s2 = json.dumps(dates_s2)
        props = {
            "ID_PATCH": pid,
            "N_Parcel": int(rng.integers(5, 80)),
            "Parcel_Cover": float(rng.uniform(0.3, 0.9)),
            "TILE": "t30uxv",
            "Fold": fold,
            "dates-S2": dates_s2,
            "dates-S1A": {str(k): d for k, d in enumerate(S1A_DATES)},
            "dates-S1D": {str(k): d for k, d in enumerate(S1D_DATES)},
        }
        geometry = {"type": "Polygon", "coordinates": [ring]}
        features.append({"type": "Feature", "id": str(pid), "properties": props,
                         "geometry": geometry})  # fmt: skip
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}}
    payload = {"type": "FeatureCollection", "crs": crs, "features": features}
    (out / "metadata.geojson").write_text(json.dumps(payload))
    for source, channels in (("S2", 10), ("S1A", 3), ("S1D", 3)):
        norm = {
            f"Fold_{f}": {
                "mean": [float(f * 100 + c) for c in range(channels)],
                "std": [float(f * 10 + c + 1) for c in range(channels)],
            }
            for f in range(1, 6)
        }
        (out / f"NORM_{source}_patch.json").write_text(json.dumps(norm))
    return out
