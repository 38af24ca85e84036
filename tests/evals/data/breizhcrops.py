"""A tiny BreizhCrops root (seeded): classmapping.csv, codes.csv, per-region index CSVs and h5.

Layout and columns follow the `breizhcrops` package: `<year>/<level>/<region>.csv` (index) and
`<region>.h5` (one float64 [T, C] dataset per parcel, keyed by the index's `path`, doa in
nanoseconds since 1970). frh02's index is in the form the package rewrites it (idx first, with
classid/classname/region), the others as downloaded. Each region has one parcel whose code is not
in classmapping.csv and one empty series (sequencelength 0); both are skipped by readers.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from helios.evals.datasets.breizhcrops import COLUMNS

CLASSES = [
    ("barley", ["ORH", "ORP"]),
    ("wheat", ["BTH", "BTP"]),
    ("rapeseed", ["CZH"]),
    ("corn", ["MIS", "MIE"]),
    ("sunflower", ["TRN"]),
    ("orchards", ["VRG"]),
    ("nuts", ["NOX"]),
    ("permanent meadows", ["PPH"]),
    ("temporary meadows", ["PTR"]),
]
"""Class names of the BreizhCrops paper; the RPG codes per class are illustrative."""
PARCELS = {"frh01": 3, "frh02": 2, "frh03": 2, "frh04": 2}
"""Labelled parcels per region."""
DATES_2017 = ["2017-01-03", "2017-01-23", "2017-03-14", "2017-05-03", "2017-05-13", "2017-07-02",
              "2017-08-21", "2017-10-10", "2017-12-29"]  # fmt: skip
"""Acquisitions (months 1, 1, 3, 5, 5, 7, 8, 10, 12), shuffled in each parcel's rows."""


def make_breizhcrops(root: Path, seed: int = 0, level: str = "L1C") -> Path:
    """Write `root/breizhcrops` for `level` (L1C or L2A) and year 2017; return it."""
    rng = np.random.default_rng(seed)
    out = root / "breizhcrops"
    region_dir = out / "2017" / level
    region_dir.mkdir(parents=True)
    lines = [",id,classname,code"]
    n = 0
    for cid, (name, codes) in enumerate(CLASSES):
        for code in codes:
            lines.append(f"{n},{cid},{name},{code}")
            n += 1
    (out / "classmapping.csv").write_text("\n".join(lines) + "\n")
    (out / "codes.csv").write_text(
        "Code Culture;Libellé Culture;Code Groupe Culture;Libellé Groupe Culture\n"
        "BTH;Blé tendre d'hiver;1;Blé tendre\nORH;Orge d'hiver;3;Orge\n"
    )
    doa = np.array(DATES_2017, dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    columns = COLUMNS[level]
    for region, count in PARCELS.items():
        records = []
        with h5py.File(region_dir / f"{region}.h5", "w") as f:
            for k in range(count + 2):
                pid = 100000 + 1000 * int(region[-1]) + k
                key = f"2017/{level}/{region}/csv/{pid}.csv"
                code = "XXX" if k == count else CLASSES[(k + int(region[-1])) % 9][1][0]
                length = 0 if k == count + 1 else len(doa)
                x = np.zeros((length, len(columns)), dtype=np.float64)
                order = rng.permutation(length)
                for c, name in enumerate(columns):
                    if name == "doa":
                        x[:, c] = doa[order]
                    elif name.startswith("B"):
                        x[:, c] = rng.integers(100, 6000, length)
                    elif name == "QA60":
                        x[:, c] = rng.choice([0.0, 1024.0], length)
                f.create_dataset(key, data=x)
                qa = columns.index("QA60" if level == "L1C" else "CLD")
                cloud = float(x[:, qa].mean()) if length else 0.0
                records.append((k + 1, cloud, pid, code, key, length))
        if region == "frh02":
            head = "idx,meanCLD,id,CODE_CULTU,path,sequencelength,classid,classname,region"
            body = [f"{i},{q},{pid},{c},{p},{t},0,x,{region}" for i, q, pid, c, p, t in records]
        else:
            head = ",meanQA60,id,CODE_CULTU,path,idx,sequencelength"
            body = [f"{i - 1},{q},{pid},{c},{p},{i},{t}" for i, q, pid, c, p, t in records]
        (region_dir / f"{region}.csv").write_text("\n".join([head, *body]) + "\n")
    return out
