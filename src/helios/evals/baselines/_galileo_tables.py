"""Galileo's token groups, band correspondences and published normalization: its tables.

Read by `helios.evals.baselines.galileo`; kept apart so that file holds the encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from helios.data.modalities import get_modality
from helios.data.normalize import BandStats, NormStats
from helios.evals.baselines._galileo_nn import FAMILIES

TOKEN_GROUPS: dict[str, tuple[str, ...]] = {
    f"galileo_{fam}": tuple(groups) for fam, groups in FAMILIES.items()
}
"""Output key -> Galileo group of each index on the S axis."""

S2_GROUPS: dict[str, tuple[str, ...]] = {
    "S2_RGB": ("B02", "B03", "B04"),
    "S2_Red_Edge": ("B05", "B06", "B07"),
    "S2_NIR_10m": ("B08",),
    "S2_NIR_20m": ("B8A",),
    "S2_SWIR": ("B11", "B12"),
}
_S2_GALILEO_ORDER = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
S2_OPTICAL = ("sentinel2", "sentinel2_l2a")
"""Galileo's own optical modalities, L1C (what it was trained on) first."""
LANDSAT_AS_S2: dict[str, str] = {
    "B02": "B2",  # blue
    "B03": "B3",  # green
    "B04": "B4",  # red
    "B08": "B5",  # NIR (OLI B5, 851-879 nm, is narrow like B8A; it feeds both NIR groups)
    "B8A": "B5",
    "B11": "B6",  # SWIR 1
    "B12": "B7",  # SWIR 2
}
"""Sentinel-2 band -> the Landsat-8/9 OLI band fed in its place (HLS band correspondence).

The red-edge bands B05 B06 B07 have no OLI counterpart: S2_Red_Edge stays masked."""
LANDSAT_S2_GROUPS: dict[str, tuple[str, ...]] = {
    g: tuple(LANDSAT_AS_S2[b] for b in bands)
    for g, bands in S2_GROUPS.items()
    if all(b in LANDSAT_AS_S2 for b in bands)
}
"""Galileo S2 group -> the landsat bands filling it, in the group's channel order."""
LANDSAT_STATS_FROM: dict[str, str] = {
    "B2": "B02",
    "B3": "B03",
    "B4": "B04",
    "B5": "B08",
    "B6": "B11",
    "B7": "B12",
}
"""Landsat band -> the S2 band whose Galileo statistics normalize it (B5: the 10 m NIR B08)."""
LANDSAT_L1_REFLECTANCE = (2.0e-5, -0.1)
"""(gain, offset) from OLI Level-1 digital numbers to TOA reflectance (REFLECTANCE_MULT_BAND and
REFLECTANCE_ADD_BAND of every L8/L9 Level-1 product, pre-collection, C1 and C2 alike)."""
DW_CLASSES = (
    "water",
    "trees",
    "grass",
    "flooded_vegetation",
    "crops",
    "shrub_and_scrub",
    "built",
    "bare",
    "snow_and_ice",
)
WORLDCOVER_TO_DW: dict[int, str] = {
    10: "trees",
    20: "shrub_and_scrub",
    30: "grass",
    40: "crops",
    50: "built",
    60: "bare",
    70: "snow_and_ice",
    80: "water",
    90: "flooded_vegetation",
    95: "trees",  # mangroves: Dynamic World counts them as trees
    100: "bare",  # moss and lichen: sparse low cover, closest to DW bare
}
"""ESA WorldCover class -> Dynamic World class (an approximation: Galileo never saw WorldCover)."""
WORLDCEREAL_TO_WC: dict[str, tuple[str, ...]] = {
    "temporarycrops": ("tc-annual-temporarycrops-classification",),
    "maize": ("tc-maize-main-maize-classification", "tc-maize-second-maize-classification"),
    "wintercereals": ("tc-wintercereals-wintercereals-classification",),
    "springcereals": ("tc-springcereals-springcereals-classification",),
    "irrigation": (
        "tc-maize-main-irrigation-classification",
        "tc-maize-second-irrigation-classification",
        "tc-wintercereals-irrigation-classification",
    ),
}
"""Galileo WC band -> Helios worldcereal bands (max over seasons, as a mosaic over them)."""
ERA5_BANDS = ("2m-temperature", "total-precipitation")
DEFAULT_MONTH = 5
"""Month index (0 = January) used where a timestamp has no valid month, as upstream."""

PUBLISHED_NORMALIZATION: dict[str, dict[str, list[float]]] = {
    "13": {  # S1 VV VH, S2 B2 B3 B4 B5 B6 B7 B8 B8A B11 B12 (NDVI is not std-normalized)
        "mean": [-11.728724389184965, -18.85558188024017, 1395.3408730676722,
                 1338.4026921784578, 1343.09883810357, 1543.8607982512297, 2186.2022069512263,
                 2525.0932853316694, 2410.3377187373408, 2750.2854646886753, 2234.911100061487,
                 1474.5311266077113],
        "std": [4.887145774840316, 5.730270320384293, 917.7041440370853, 913.2988423581528,
                1092.678723527555, 1047.2206083460424, 1048.0101611156767, 1143.6903026819996,
                1098.979177731649, 1204.472755085893, 1145.9774063078878, 980.2429840007796],
    },
    "16": {  # SRTM elevation, slope (DW and WC use fixed shift/div)
        "mean": [673.0152819503361, 5.930092668915115],
        "std": [983.0697298296237, 8.167406789813247],
    },
    "6": {  # ERA5 temperature_2m, total_precipitation_sum (then TC, VIIRS: unused)
        "mean": [271.5674963541667, 0.08554303677156568],
        "std": [79.80828940314429, 0.11669547098151486],
    },
}  # fmt: skip
"""The used part of Galileo's config/normalization.json (keys: channel counts of its arrays)."""


def galileo_norm_stats(payload: Mapping[str, Any]) -> tuple[NormStats, tuple[float, float]]:
    """Map a Galileo normalization JSON onto Helios bands; also returns slope (mean, std).

    Galileo normalizes these bands with (x - (mean - 2 std)) / (4 std); DW probabilities are
    used as they are and WorldCereal is divided by 100, encoded here as identity stats.
    Landsat bands get the stats of their S2 band (`LANDSAT_STATS_FROM`) carried back through
    `LANDSAT_L1_REFLECTANCE`, so a Level-1 DN normalizes like the S2 value 10000 (gain DN +
    offset); the Landsat bands Galileo does not read keep the registry's fixed range.
    """
    st, sp, t = (payload[k] for k in ("13", "16", "6"))

    def stat(group: Mapping[str, list[float]], i: int) -> BandStats:
        return BandStats(float(group["mean"][i]), float(group["std"][i]))

    s2 = {band: stat(st, 2 + i) for i, band in enumerate(_S2_GALILEO_ORDER)}
    gain, offset = LANDSAT_L1_REFLECTANCE
    landsat = {  # S2 value r = 10000 (gain DN + offset), so DN = (r / 10000 - offset) / gain
        lb: BandStats((s2[sb].mean / 1e4 - offset) / gain, s2[sb].std / 1e4 / gain)
        for lb, sb in LANDSAT_STATS_FROM.items()
    }
    wc_bands = get_modality("worldcereal").band_order
    bands = {
        "sentinel2": dict(s2),
        "sentinel2_l2a": dict(s2),
        "landsat": landsat,
        "sentinel1": {"vv": stat(st, 0), "vh": stat(st, 1)},
        "srtm": {"srtm": stat(sp, 0)},
        "era5": {ERA5_BANDS[0]: stat(t, 0), ERA5_BANDS[1]: stat(t, 1)},
        "worldcover": {"B1": BandStats(0.5, 0.25)},  # identity: class codes pass through
        "worldcereal": {b: BandStats(50.0, 25.0) for b in wc_bands},  # x / 100
    }
    return NormStats(bands=bands, meta={"source": "galileo"}), (sp["mean"][1], sp["std"][1])
