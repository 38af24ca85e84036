"""Record golden files from the real upstream ``olmoearth-runner`` (module ``olmoearth_run``).

Helios's runner (``helios.runner``) re-implements upstream's request partitioning and labelled
window preparation. This script runs *upstream's own code* on a fixed set of inputs and writes
what it produced as JSON, so that Helios's tests can compare against it without upstream
installed.

Usage::

    python tests/peer/runner_golden.py [--venv DIR] [--out tests/runner/golden]
        [--projects /work/shared/upstream/projects]

What it does:

1. Creates, if missing, a separate virtual environment (default ``.peer/olmoearth-runner``,
   gitignored; never the project's ``.venv``) with ``olmoearth-runner==0.1.14`` from PyPI.
   Upstream pins every dependency exactly (``torch==2.7.1`` among them, plus the CUDA
   wheels: about 18 GB on disk), and ``pip install`` is run with ``PIP_CONSTRAINT`` pointed at
   an empty file so a machine-wide constraints file (such as one capping torch at a local
   build) cannot veto those pins. Nothing else is installed.
2. Re-runs itself inside that environment (``--worker``), which
   - writes the inputs it uses under ``OUT/inputs/`` (request GeoJSONs, olmoearth_run.yaml
     variants, synthetic Studio exports), copying upstream project files verbatim;
   - runs upstream's local runners end to end in temporary directories:
     ``OlmoEarthRunPredictRunner(...).partition()`` (= ``CreatePartitionsStepDefinition``:
     partition_request_geometry, the request-intersection filter, prepare_window_geometries,
     the window filter, window naming and writing) and
     ``OlmoEarthRunFineTuneRunner(...).prepare_labeled_windows()``
     (= ``PrepareLabeledWindowsStepDefinition``: read exports, sampler, preparer, splitter,
     rslearn window + label layer writing), then reads back what they wrote;
   - also calls the partitioners / preparers / splitters directly to record intermediate
     results (raw window counts before filtering, outputs where the runner itself fails).
3. Writes ``OUT/manifest.json``, ``OUT/catalog.json``, ``OUT/config_loading.json``,
   ``OUT/utm_zones.json``, ``OUT/partition/<case>.json``, ``OUT/labeled/<case>.json``,
   ``OUT/layout.json`` and small example files under ``OUT/layout_example/``.

Upstream's PrepareLabeledWindowsStepDefinition processes annotation tasks in a process pool of
``min(#tasks, os.cpu_count())`` workers, each with its *own* data splitter instance, fed by
``imap_unordered``: with more than one worker, RandomDataSplitter's output depends on
scheduling. The worker pins ``os.cpu_count()`` to 1 so upstream uses a single worker; the
script checks that the result equals a direct sequential run (tasks in file order, windows in
preparer order, one splitter).

Deterministic: running it twice gives byte-identical output (temporary paths are replaced by
placeholders in recorded messages; lists are sorted). This file must not import helios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

UPSTREAM_PACKAGE = "olmoearth-runner"
UPSTREAM_VERSION = "0.1.14"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".peer" / "olmoearth-runner"
DEFAULT_OUT = REPO / "tests" / "runner" / "golden"
DEFAULT_PROJECTS = REPO.parent / "shared" / "upstream" / "projects"

JsonDict = dict[str, Any]

# --------------------------------------------------------------------------------------------
# Environment set-up (runs under any Python 3.11; stdlib only)
# --------------------------------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _venv_has_upstream(venv: Path) -> bool:
    py = _venv_python(venv)
    if not py.exists():
        return False
    probe = (
        "import importlib.metadata as m, sys; "
        f"sys.exit(0 if m.version({UPSTREAM_PACKAGE!r}) == {UPSTREAM_VERSION!r} else 1)"
    )
    return subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0


def ensure_venv(venv: Path) -> Path:
    """Create ``venv`` with olmoearth-runner==0.1.14 unless it is already there."""
    if _venv_has_upstream(venv):
        return _venv_python(venv)
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("olmoearth-runner 0.1.14 needs Python >=3.11,<3.12; run with python3.11")
    print(f"creating {venv} with {UPSTREAM_PACKAGE}=={UPSTREAM_VERSION} (large download)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ)
    # Upstream pins torch==2.7.1 etc.; do not let a machine-wide constraints file veto them.
    env["PIP_CONSTRAINT"] = os.devnull
    subprocess.run(
        [
            str(_venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            f"{UPSTREAM_PACKAGE}=={UPSTREAM_VERSION}",
        ],
        check=True,
        env=env,
    )
    return _venv_python(venv)


# --------------------------------------------------------------------------------------------
# Stable JSON output
# --------------------------------------------------------------------------------------------


def dumps(obj: Any, indent: int = 0, width: int = 100) -> str:
    """JSON with sorted keys; containers that fit on one line stay on one line."""
    flat = json.dumps(obj, sort_keys=True, ensure_ascii=False)
    if not isinstance(obj, dict | list) or not obj or len(flat) + indent * 2 <= width:
        return flat
    if (
        isinstance(obj, dict)
        and len(flat) <= 3 * width
        and not any(isinstance(v, dict) for v in obj.values())
        and not any(
            isinstance(v, list) and any(isinstance(x, dict | list) for x in v) for v in obj.values()
        )
    ):
        return flat  # a flat record (e.g. one window) stays on one line
    pad = "  " * (indent + 1)
    if isinstance(obj, dict):
        items = [
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {dumps(obj[k], indent + 1, width)}"
            for k in sorted(obj)
        ]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    items = [f"{pad}{dumps(v, indent + 1, width)}" for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(obj) + "\n", encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Synthetic inputs (deterministic, no RNG)
# --------------------------------------------------------------------------------------------

NS = uuid.UUID("6f1c1d7e-3b2a-4c55-9e57-2f4f1a0c0d11")


def _uid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


def _box(x0: float, y0: float, x1: float, y1: float) -> list[list[list[float]]]:
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


def _frac(i: int, salt: int) -> float:
    """Deterministic pseudo-random fraction in [0, 1) from a hash (not a PRNG stream)."""
    h = hashlib.sha256(f"{salt}:{i}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _r6(v: float) -> float:
    return round(v, 6)


def _feature(geometry: JsonDict, properties: JsonDict) -> JsonDict:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _fc(features: list[JsonDict]) -> JsonDict:
    return {"type": "FeatureCollection", "features": features}


def _polygon(coords: list[list[list[float]]]) -> JsonDict:
    return {"type": "Polygon", "coordinates": coords}


def _req_props(start: str, end: str, **extra: Any) -> JsonDict:
    return {"oe_start_time": start, "oe_end_time": end, **extra}


T_MARCH = ("2023-03-01T00:00:00+00:00", "2023-03-31T00:00:00+00:00")
T_YEAR = ("2024-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00")


def synthetic_requests() -> dict[str, JsonDict]:
    """Prediction request FeatureCollections used by the partition cases."""
    s, e = T_MARCH
    reqs: dict[str, JsonDict] = {}
    # (i) a ~3 km irregular polygon in Kenya (Nandi county), one 0.25-degree cell, UTM 36N
    reqs["kenya_3km"] = _fc(
        [
            _feature(
                _polygon(
                    [
                        [
                            [35.1003, 0.2004],
                            [35.1271, 0.2011],
                            [35.1262, 0.2229],
                            [35.1125, 0.2273],
                            [35.0998, 0.2187],
                            [35.1003, 0.2004],
                        ]
                    ]
                ),
                _req_props(s, e),
            )
        ]
    )
    # a triangle (for clip: many grid cells of its bounding box miss it)
    reqs["kenya_triangle"] = _fc(
        [
            _feature(
                _polygon(
                    [[[35.1003, 0.2004], [35.1271, 0.2011], [35.1003, 0.2273], [35.1003, 0.2004]]]
                ),
                _req_props(s, e),
            )
        ]
    )
    # (ii) Nairobi-sized (~700 km2) octagon around Nairobi, crossing 0.25-degree lines; UTM 37S
    cx, cy, rx, ry = 36.86, -1.29, 0.165, 0.105
    k = 0.4142
    octagon = [
        [cx - rx, cy - ry * k],
        [cx - rx * k, cy - ry],
        [cx + rx * k, cy - ry],
        [cx + rx, cy - ry * k],
        [cx + rx, cy + ry * k],
        [cx + rx * k, cy + ry],
        [cx - rx * k, cy + ry],
        [cx - rx, cy + ry * k],
    ]
    octagon = [[_r6(x), _r6(y)] for x, y in octagon]
    reqs["nairobi"] = _fc(
        [_feature(_polygon([octagon + [octagon[0]]]), _req_props(s, e, name="Nairobi"))]
    )
    # (iii) a point request
    reqs["kenya_point"] = _fc(
        [_feature({"type": "Point", "coordinates": [35.1234, 0.2345]}, _req_props(s, e))]
    )
    # (iv) a ~4.4 km polygon straddling the UTM 36N/37N boundary (36 E)
    reqs["utm_boundary"] = _fc(
        [_feature(_polygon(_box(35.98, 0.48, 36.02, 0.52)), _req_props(s, e))]
    )
    # (v) southern hemisphere (near Nairobi, UTM 37S)
    reqs["southern"] = _fc([_feature(_polygon(_box(36.80, -1.30, 36.83, -1.27)), _req_props(s, e))])
    # (vi) polar: north of 84 N (UPS North), south of 80 S (UPS South), and straddling 84 N
    reqs["polar_north"] = _fc([_feature(_polygon(_box(10.0, 84.5, 10.1, 84.52)), _req_props(s, e))])
    reqs["polar_south"] = _fc(
        [_feature(_polygon(_box(10.0, -80.52, 10.1, -80.5)), _req_props(s, e))]
    )
    reqs["polar_north_boundary"] = _fc(
        [_feature(_polygon(_box(10.0, 83.995, 10.05, 84.005)), _req_props(s, e))]
    )
    # (vii) a MultiPolygon with parts in two 0.25-degree cells
    reqs["multipolygon"] = _fc(
        [
            _feature(
                {
                    "type": "MultiPolygon",
                    "coordinates": [
                        _box(35.10, 0.20, 35.11, 0.21),
                        _box(35.26, 0.27, 35.272, 0.279),
                    ],
                },
                _req_props(s, e, field="two parts"),
            )
        ]
    )
    # two features, different times and custom properties (propagated into request.geojson)
    reqs["two_features"] = _fc(
        [
            _feature(_polygon(_box(35.10, 0.20, 35.11, 0.21)), _req_props(s, e, site="a", n=1)),
            _feature(
                _polygon(_box(35.118, 0.205, 35.125, 0.212)),
                _req_props(*T_YEAR, site="b", n=2),
            ),
        ]
    )
    # five small fields (for FixedWindow / Chunk / Reprojection partitioners)
    fields = []
    for i in range(5):
        x0 = 35.05 + 0.055 * i + 0.003 * _frac(i, 1)
        y0 = 0.15 + 0.03 * i + 0.003 * _frac(i, 2)
        w = 0.002 + 0.003 * _frac(i, 3)
        h = 0.002 + 0.003 * _frac(i, 4)
        fields.append(
            _feature(
                _polygon(_box(_r6(x0), _r6(y0), _r6(x0 + w), _r6(y0 + h))),
                _req_props(s, e, field_id=f"f{i}"),
            )
        )
    reqs["five_fields"] = _fc(fields)
    # western hemisphere small fields near Phoenix (negative EPSG:3857 x coordinates)
    reqs["phoenix_fields"] = _fc(
        [
            _feature(_polygon(_box(-111.8012, 33.5003, -111.7968, 33.5041)), _req_props(s, e)),
            _feature(_polygon(_box(-111.7523, 33.4507, -111.7481, 33.4549)), _req_props(s, e)),
        ]
    )
    return reqs


def _task(task_id: str, coords: list[list[list[float]]], start: str, end: str) -> JsonDict:
    props = {"oe_annotations_task_id": task_id, "oe_start_time": start, "oe_end_time": end}
    return _feature(_polygon(coords), props)


def _ann(task_id: str, geometry: JsonDict, labels: JsonDict) -> JsonDict:
    return _feature(geometry, {"oe_annotations_task_id": task_id, "oe_labels": labels})


POINT_TASKS = [
    # name, box (lon0, lat0, lon1, lat1), n points, start, end
    (
        "west_36N",
        (35.960, 0.450, 35.995, 0.485),
        10,
        "2024-01-01 00:00:00+00:00",
        "2024-12-31 00:00:00+00:00",
    ),
    (
        "east_37N",
        (36.005, 0.450, 36.040, 0.485),
        10,
        "2024-03-01 00:00:00+00:00",
        "2024-09-01 00:00:00+00:00",
    ),
    (
        "straddle",
        (35.985, 0.490, 36.015, 0.520),
        10,
        "2023-06-15 12:00:00+00:00",
        "2023-07-15 12:00:00+00:00",
    ),
    (
        "south_37S",
        (36.800, -1.300, 36.830, -1.270),
        8,
        "2024-02-24 05:57:00+00:00",
        "2024-02-24 05:57:04+00:00",
    ),
    (
        "far_west_36N",
        (35.700, 0.700, 35.730, 0.730),
        4,
        "2024-01-01 00:00:00+00:00",
        "2024-12-31 00:00:00+00:00",
    ),
    (
        "far_south_36N",
        (35.900, 0.150, 35.930, 0.180),
        4,
        "2024-04-01 00:00:00+00:00",
        "2024-10-01 00:00:00+00:00",
    ),
    (
        "far_east_37N",
        (36.350, 0.900, 36.380, 0.930),
        4,
        "2024-01-01 00:00:00+00:00",
        "2024-12-31 00:00:00+00:00",
    ),
    (
        "empty",
        (36.100, 0.600, 36.110, 0.610),
        0,
        "2024-01-01 00:00:00+00:00",
        "2024-02-01 00:00:00+00:00",
    ),
]


def synthetic_points(multi: bool = False) -> tuple[JsonDict, JsonDict]:
    """Point annotations (oe_ keys) over ~8 km, two UTM zones and both hemispheres.

    Returns (annotation_features, annotation_task_features).
    """
    tasks, anns = [], []
    task_defs = POINT_TASKS if not multi else [POINT_TASKS[0], POINT_TASKS[3], POINT_TASKS[6]]
    for t_i, (name, (x0, y0, x1, y1), n, start, end) in enumerate(task_defs):
        tid = _uid(("multi_" if multi else "points_") + name)
        tasks.append(_task(tid, _box(x0, y0, x1, y1), start, end))
        for i in range(n if not multi else 6):
            lon = _r6(x0 + (x1 - x0) * (0.05 + 0.9 * _frac(i, 10 + t_i)))
            lat = _r6(y0 + (y1 - y0) * (0.05 + 0.9 * _frac(i, 20 + t_i)))
            if not multi:
                labels: JsonDict = {"category": 1 + (i + t_i) % 5}
            else:
                labels = {
                    "category": None if i == 4 else 1 + i % 3,
                    "crop_type": None if i % 3 == 2 else 10 + i,
                    "lfmc": round(80.5 + 3.25 * i + 0.5 * t_i, 2),
                }
            anns.append(_ann(tid, {"type": "Point", "coordinates": [lon, lat]}, labels))
    if not multi:
        # an annotation whose task is not in the task file: upstream skips it with a warning
        anns.append(
            _ann(
                _uid("points_orphan"),
                {"type": "Point", "coordinates": [35.97, 0.46]},
                {"category": 3},
            )
        )
    return _fc(anns), _fc(tasks)


def to_es_keys(
    features: JsonDict, tasks: JsonDict, label_key: str = "category"
) -> tuple[JsonDict, JsonDict]:
    """The same export with the older ``es_`` keys (scalar ``es_label``)."""
    t_out = []
    for t in tasks["features"]:
        p = t["properties"]
        t_out.append(
            _feature(
                t["geometry"],
                {
                    "es_annotations_task_id": p["oe_annotations_task_id"],
                    "es_start_time": p["oe_start_time"],
                    "es_end_time": p["oe_end_time"],
                },
            )
        )
    f_out = []
    for f in features["features"]:
        p = f["properties"]
        f_out.append(
            _feature(
                f["geometry"],
                {
                    "es_annotations_task_id": p["oe_annotations_task_id"],
                    "es_label": p["oe_labels"][label_key],
                },
            )
        )
    return _fc(f_out), _fc(t_out)


def synthetic_polygons_wide() -> tuple[JsonDict, JsonDict]:
    """One task wider than tall (PolygonToRaster's single-window mode pads it square)."""
    t = _uid("poly_wide")
    task = _task(
        t,
        _box(35.950, 0.300, 35.966, 0.310),
        "2024-05-01 00:00:00+00:00",
        "2024-08-01 00:00:00+00:00",
    )
    anns = [
        _ann(t, _polygon(_box(35.951, 0.301, 35.955, 0.304)), {"category": 1}),
        _ann(t, _polygon(_box(35.958, 0.305, 35.964, 0.309)), {"category": 2}),
    ]
    return _fc(anns), _fc([task])


def synthetic_polygons() -> tuple[JsonDict, JsonDict]:
    """Polygon annotations for PolygonToRasterWindowPreparer (tasks ~1.2-1.7 km).

    Every task is taller than wide in pixels: upstream's single-window mode only works then.
    """
    tasks, anns = [], []

    def rect(x0: float, y0: float, w: float, h: float) -> JsonDict:
        return _polygon(_box(_r6(x0), _r6(y0), _r6(x0 + w), _r6(y0 + h)))

    # P1: west of 36 E (36N): overlap, multipolygon, one leaving the task, one sub-pixel
    t1 = _uid("poly_west_36N")
    tasks.append(
        _task(
            t1,
            _box(35.970, 0.300, 35.982, 0.315),
            "2024-05-01 00:00:00+00:00",
            "2024-08-01 00:00:00+00:00",
        )
    )
    anns += [
        _ann(t1, rect(35.971, 0.301, 0.004, 0.003), {"category": 1}),
        _ann(t1, rect(35.973, 0.302, 0.004, 0.004), {"category": 2}),  # overlaps previous
        _ann(
            t1,
            {
                "type": "MultiPolygon",
                "coordinates": [
                    _box(35.978, 0.305, 35.980, 0.307),
                    _box(35.981, 0.309, 35.9835, 0.3115),
                ],
            },
            {"category": 3},
        ),
        _ann(t1, rect(35.983, 0.312, 0.004, 0.004), {"category": 4}),  # leaves the task
        _ann(t1, rect(35.9751, 0.3101, 0.00003, 0.00003), {"category": 5}),  # sub-pixel
        _ann(
            t1,
            _polygon([[[35.972, 0.308], [35.976, 0.308], [35.972, 0.313], [35.972, 0.308]]]),
            {"category": 2},
        ),
    ]
    # P2: east of 36 E (37N), non-square task
    t2 = _uid("poly_east_37N")
    tasks.append(
        _task(
            t2,
            _box(36.010, 0.300, 36.022, 0.318),
            "2024-01-01 00:00:00+00:00",
            "2025-01-01 00:00:00+00:00",
        )
    )
    for i in range(5):
        anns.append(
            _ann(
                t2,
                rect(36.0105 + 0.0022 * i, 0.301 + 0.0031 * i, 0.0015, 0.002),
                {"category": 1 + i % 3},
            )
        )
    # P3: straddles 36 E
    t3 = _uid("poly_straddle")
    tasks.append(
        _task(
            t3,
            _box(35.994, 0.330, 36.006, 0.345),
            "2023-09-01 00:00:00+00:00",
            "2023-10-01 00:00:00+00:00",
        )
    )
    anns += [
        _ann(t3, rect(35.993, 0.331, 0.004, 0.003), {"category": 1}),
        _ann(t3, rect(35.999, 0.334, 0.002, 0.004), {"category": 2}),  # crosses 36 E
        _ann(t3, rect(36.003, 0.336, 0.004, 0.005), {"category": 3}),
        _ann(t3, rect(36.0045, 0.3305, 0.002, 0.002), {"category": 4}),
    ]
    # P4: southern hemisphere (37S), two label keys
    t4 = _uid("poly_south_37S")
    tasks.append(
        _task(
            t4,
            _box(36.800, -1.320, 36.811, -1.306),
            "2024-02-01 00:00:00+00:00",
            "2024-03-01 00:00:00+00:00",
        )
    )
    for i in range(4):
        anns.append(
            _ann(
                t4,
                rect(36.801 + 0.0027 * i, -1.319 + 0.0026 * i, 0.0018, 0.0021),
                {"category": 1 + i % 2, "severity": 10 * (i + 1)},
            )
        )
    # P5: a task without annotations
    tasks.append(
        _task(
            _uid("poly_empty"),
            _box(36.1, 0.6, 36.11, 0.61),
            "2024-01-01 00:00:00+00:00",
            "2024-02-01 00:00:00+00:00",
        )
    )
    return _fc(anns), _fc(tasks)


def convert_sample_features(features: JsonDict, label_property: str) -> JsonDict:
    """The sample's es_ annotation features rewritten with oe_ keys (es_label -> oe_labels)."""
    out = []
    for f in features["features"]:
        p = f["properties"]
        out.append(
            _feature(
                f["geometry"],
                {
                    "oe_annotations_task_id": p["es_annotations_task_id"],
                    "oe_start_time": p["es_start_time"],
                    "oe_end_time": p["es_end_time"],
                    "oe_labels": {label_property: p["es_label"]},
                },
            )
        )
    return _fc(out)


# --------------------------------------------------------------------------------------------
# Worker (runs inside the upstream environment)
# --------------------------------------------------------------------------------------------


class Ctx:
    """Paths and helpers shared by the cases."""

    def __init__(self, out: Path, projects: Path) -> None:
        self.out = out
        self.projects = projects
        self.inputs = out / "inputs"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()


@contextmanager
def tempdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="oer_golden_"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sanitize(msg: str, tmp: Path | None) -> str:
    if tmp is not None:
        msg = msg.replace(str(tmp.resolve()), "<tmp>").replace(str(tmp), "<tmp>")
    if "Traceback (most recent call last)" in msg:
        # a worker's traceback forwarded by multiprocessing: keep its last line only
        lines = [ln for ln in msg.strip().strip('"').splitlines() if ln.strip()]
        msg = "remote traceback ending: " + (lines[-1].strip() if lines else "")
    return msg


def _error(exc: BaseException, tmp: Path | None, stage: str) -> JsonDict:
    msg = _sanitize(str(exc), tmp)
    err: JsonDict = {"stage": stage, "type": type(exc).__name__, "message": msg}
    chain = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(chain) < 3:
        chain.append({"type": type(cause).__name__, "message": _sanitize(str(cause), tmp)})
        cause = cause.__cause__ or cause.__context__
    if chain:
        err["caused_by"] = chain
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if "site-packages" in f.filename]
    if frames:
        last = frames[-1]
        err["raised_at"] = f"{last.filename.split('site-packages/')[-1]}:{last.name}"
    return err


def _file_tree(root: Path, tmp: Path) -> list[str]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            target = os.readlink(p)
            target = target.replace(str(tmp.resolve()), "<tmp>").replace(str(tmp), "<tmp>")
            out.append(f"{rel} -> {target}")
        elif p.is_dir():
            out.append(rel + "/")
        else:
            out.append(rel)
    return out


# ---- partition cases ------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def _dump_yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


RESULTS_CONFIG = {"data_type": "RASTER"}
POSTPROCESS_NOOP = {
    "process_dataset": {
        "class_path": "olmoearth_run.runner.tools.postprocessors.noop_raster.NoopRaster"
    },
    "process_partition": {
        "class_path": "olmoearth_run.runner.tools.postprocessors.noop_raster.NoopRaster"
    },
    "process_window": {
        "class_path": "olmoearth_run.runner.tools.postprocessors.noop_raster.NoopRaster"
    },
}
PART = "olmoearth_run.runner.tools.partitioners"
GRID = f"{PART}.grid_partitioner.GridPartitioner"
FIXED = f"{PART}.fixed_window_partitioner.FixedWindowPartitioner"
CHUNK = f"{PART}.chunk_partitioner.ChunkPartitioner"
NOOP_P = f"{PART}.noop_partitioner.NoopPartitioner"
REPROJ = f"{PART}.reprojection_partitioner.ReprojectionPartitioner"


def _proj(crs: Any = "EPSG:3857", xres: float = 10, yres: float = -10) -> JsonDict:
    return {
        "class_path": "rslearn.utils.geometry.Projection",
        "init_args": {"crs": crs, "x_resolution": xres, "y_resolution": yres},
    }


def _strategy_config(request_part: JsonDict, window_part: JsonDict) -> JsonDict:
    return {
        "inference_results_config": RESULTS_CONFIG,
        "partition_strategies": {
            "partition_request_geometry": request_part,
            "prepare_window_geometries": window_part,
        },
        "postprocessing_strategies": POSTPROCESS_NOOP,
    }


def partition_cases(ctx: Ctx) -> list[JsonDict]:
    """All partitioning cases: name, config text, request, project files."""
    p = ctx.projects
    nandi_text = (p / "nandi_inference" / "olmoearth_run.yaml").read_text()
    nandi = _load_yaml(p / "nandi_inference" / "olmoearth_run.yaml")
    cases: list[JsonDict] = []

    def add(
        name: str,
        desc: str,
        config_text: str,
        request: str,
        project: str = "nandi_inference",
        runner: str = "legacy",
        direct_windows: bool = False,
        model_from: str | None = None,
    ) -> None:
        cases.append(
            {
                "name": name,
                "description": desc,
                "config_text": config_text,
                "request": request,
                "project": project,
                "runner": runner,
                "direct_windows": direct_windows,
                "model_from": model_from or project,
            }
        )

    nandi_desc = "nandi_inference config: Grid(0.25 deg) + Grid(64 px, EPSG:3857 10 m, use_utm)"
    add("nandi_kenya_3km", f"{nandi_desc}; ~3 km polygon in Nandi, Kenya", nandi_text, "kenya_3km")
    add(
        "nandi_request",
        f"{nandi_desc}; the project's own prediction_request_geometry",
        nandi_text,
        "upstream:nandi_inference",
    )
    add("nandi_nairobi", f"{nandi_desc}; Nairobi-sized octagon (~720 km2)", nandi_text, "nairobi")
    add(
        "nandi_point",
        f"{nandi_desc}; a Point request",
        nandi_text,
        "kenya_point",
        direct_windows=True,
    )
    add(
        "nandi_utm_boundary",
        f"{nandi_desc}; polygon straddling 36 E (UTM 36N/37N)",
        nandi_text,
        "utm_boundary",
    )
    add("nandi_southern", f"{nandi_desc}; southern hemisphere (UTM 37S)", nandi_text, "southern")
    add("nandi_polar_north", f"{nandi_desc}; north of 84 N (UPS North)", nandi_text, "polar_north")
    add("nandi_polar_south", f"{nandi_desc}; south of 80 S (UPS South)", nandi_text, "polar_south")
    add(
        "nandi_polar_north_boundary",
        f"{nandi_desc}; straddling 84 N",
        nandi_text,
        "polar_north_boundary",
    )
    add(
        "nandi_multipolygon",
        f"{nandi_desc}; one MultiPolygon feature, parts in two cells",
        nandi_text,
        "multipolygon",
    )
    add(
        "nandi_two_features",
        f"{nandi_desc}; two features, own times and properties",
        nandi_text,
        "two_features",
    )

    float_res = json.loads(json.dumps(nandi))
    float_res["partition_strategies"]["prepare_window_geometries"]["init_args"][
        "output_projection"
    ]["init_args"].update({"x_resolution": 10.0, "y_resolution": -10.0})
    add(
        "nandi_float_resolution",
        "nandi config with x/y_resolution written 10.0/-10.0 "
        "(window names hash the serialized projection)",
        _dump_yaml(float_res),
        "kenya_3km",
    )

    overlap = json.loads(json.dumps(nandi))
    overlap["partition_strategies"]["partition_request_geometry"]["init_args"]["overlap_size"] = (
        0.01
    )
    overlap["partition_strategies"]["prepare_window_geometries"]["init_args"]["overlap_size"] = 8
    add(
        "nandi_overlap",
        "nandi config with overlap_size 0.01 deg (partitions) and 8 px (windows)",
        _dump_yaml(overlap),
        "kenya_3km",
    )

    clip = json.loads(json.dumps(nandi))
    clip["partition_strategies"]["partition_request_geometry"]["init_args"]["clip"] = True
    clip["partition_strategies"]["prepare_window_geometries"]["init_args"]["clip"] = True
    add(
        "nandi_clip",
        "nandi config with clip: true at both levels; triangle request",
        _dump_yaml(clip),
        "kenya_triangle",
        direct_windows=True,
    )
    clip_w = json.loads(json.dumps(nandi))
    clip_w["partition_strategies"]["prepare_window_geometries"]["init_args"]["clip"] = True
    add(
        "nandi_clip_windows_only",
        "nandi config with clip: true for windows only; triangle",
        _dump_yaml(clip_w),
        "kenya_triangle",
        direct_windows=True,
    )
    clip_r = json.loads(json.dumps(nandi))
    clip_r["partition_strategies"]["partition_request_geometry"]["init_args"]["clip"] = True
    add(
        "nandi_clip_partitions_only",
        "nandi config with clip: true for partitions only; triangle",
        _dump_yaml(clip_r),
        "kenya_triangle",
        direct_windows=True,
    )

    sample_text = (p / "sample" / "olmoearth_run.yaml").read_text()
    add(
        "sample_as_committed",
        "sample project's olmoearth_run.yaml as committed (Noop + "
        "FixedWindow(128)); its own request (oe_start_time == oe_end_time)",
        sample_text,
        "upstream:sample",
        project="sample",
    )
    sample_fixed = "inference_results_config:\n  data_type: RASTER\n\n" + sample_text
    add(
        "sample_model_yaml",
        "sample config + inference_results_config {data_type: RASTER} "
        "with the sample's own model.yaml",
        sample_fixed,
        "upstream:sample",
        project="sample",
    )
    add(
        "sample_empty_init_args",
        "sample config + inference_results_config; model.yaml from "
        "nandi_inference (the sample's lacks the ${...} template variables the runner "
        "checks); NoopPartitioner still has its empty 'init_args:' (null)",
        sample_fixed,
        "upstream:sample",
        project="sample",
        model_from="nandi_inference",
    )
    sample_cfg = _load_yaml(p / "sample" / "olmoearth_run.yaml")
    sample_cfg["partition_strategies"]["partition_request_geometry"] = {"class_path": NOOP_P}
    sample_ok = _dump_yaml({"inference_results_config": RESULTS_CONFIG, **sample_cfg})
    add(
        "sample",
        "sample config made loadable (inference_results_config added, the empty "
        "init_args of NoopPartitioner dropped), nandi_inference's model.yaml; the sample's own "
        "request (oe_start_time == oe_end_time)",
        sample_ok,
        "upstream:sample",
        project="sample",
        model_from="nandi_inference",
    )
    add(
        "sample_one_year",
        "as 'sample', request copy with a 1-year time range",
        sample_ok,
        "sample_one_year",
        project="sample",
        model_from="nandi_inference",
    )

    add(
        "geo",
        "geo project: Grid(0.05 deg) + Grid(64 px, 10 m, use_utm); its own request",
        (p / "geo" / "olmoearth_run.yaml").read_text(),
        "upstream:geo",
        project="geo",
    )
    add(
        "solar_farm_as_committed",
        "solar_farm olmoearth_run.yaml as committed (no inference_results_config)",
        (p / "solar_farm" / "olmoearth_run.yaml").read_text(),
        "upstream:solar_farm",
        project="solar_farm",
    )
    add(
        "solar_farm_oe",
        "solar_farm_oe: Grid(0.15, projection 10 m, use_utm) + Grid(2048 px, "
        "10 m, use_utm); its own request",
        (p / "solar_farm_oe" / "olmoearth_run.yaml").read_text(),
        "upstream:solar_farm_oe",
        project="solar_farm_oe",
    )

    add(
        "fixed_window_limit",
        "FixedWindowPartitioner(window_size=128, limit=2): no such argument upstream",
        _dump_yaml(
            _strategy_config(
                {"class_path": NOOP_P},
                {
                    "class_path": FIXED,
                    "init_args": {
                        "window_size": 128,
                        "limit": 2,
                        "output_projection": _proj(),
                        "use_utm": True,
                    },
                },
            )
        ),
        "five_fields",
    )
    add(
        "fixed_window_utm",
        "Noop + FixedWindowPartitioner(128, 10 m, use_utm); five fields",
        _dump_yaml(
            _strategy_config(
                {"class_path": NOOP_P},
                {
                    "class_path": FIXED,
                    "init_args": {
                        "window_size": 128,
                        "output_projection": _proj(),
                        "use_utm": True,
                    },
                },
            )
        ),
        "five_fields",
    )
    callable_crs = {"_module_": "rasterio.crs", "_callable_": "CRS.from_epsg", "code": 3857}
    add(
        "fixed_window_3857_callable_crs",
        "Noop + FixedWindowPartitioner(100, EPSG:3857 built "
        "with _module_/_callable_ CRS.from_epsg, 9.55 m, use_utm false); western hemisphere",
        _dump_yaml(
            _strategy_config(
                {"class_path": NOOP_P},
                {
                    "class_path": FIXED,
                    "init_args": {
                        "window_size": 100,
                        "output_projection": _proj(
                            callable_crs, 9.554628535647032, -9.554628535647032
                        ),
                    },
                },
            )
        ),
        "phoenix_fields",
    )
    add(
        "grid_3857_string_crs",
        "Grid(0.25) + Grid(64, output_projection crs 'EPSG:3857' as a plain string, use_utm false)",
        _dump_yaml(
            _strategy_config(
                {"class_path": GRID, "init_args": {"grid_size": 0.25}},
                {"class_path": GRID, "init_args": {"grid_size": 64, "output_projection": _proj()}},
            )
        ),
        "phoenix_fields",
        direct_windows=True,
    )
    add(
        "grid_3857_callable_crs",
        "Grid(0.25) + Grid(64, EPSG:3857 via _module_/_callable_, "
        "10 m, use_utm false); western hemisphere",
        _dump_yaml(
            _strategy_config(
                {"class_path": GRID, "init_args": {"grid_size": 0.25}},
                {
                    "class_path": GRID,
                    "init_args": {"grid_size": 64, "output_projection": _proj(callable_crs)},
                },
            )
        ),
        "phoenix_fields",
    )
    add(
        "chunk",
        "ChunkPartitioner(2) + ChunkPartitioner(1, 10 m, use_utm); five fields",
        _dump_yaml(
            _strategy_config(
                {"class_path": CHUNK, "init_args": {"num_geometries_per_partition": 2}},
                {
                    "class_path": CHUNK,
                    "init_args": {
                        "num_geometries_per_partition": 1,
                        "output_projection": _proj(),
                        "use_utm": True,
                    },
                },
            )
        ),
        "five_fields",
    )
    add(
        "reprojection",
        "Noop + ReprojectionPartitioner(10 m, use_utm); five fields",
        _dump_yaml(
            _strategy_config(
                {"class_path": NOOP_P},
                {
                    "class_path": REPROJ,
                    "init_args": {"output_projection": _proj(), "use_utm": True},
                },
            )
        ),
        "five_fields",
    )
    add(
        "noop_for_windows",
        "Grid(0.25) + NoopPartitioner for windows",
        _dump_yaml(
            _strategy_config(
                {"class_path": GRID, "init_args": {"grid_size": 0.25}}, {"class_path": NOOP_P}
            )
        ),
        "kenya_3km",
    )
    add(
        "fixed_for_partitions",
        "FixedWindowPartitioner for partition_request_geometry",
        _dump_yaml(
            _strategy_config(
                {"class_path": FIXED, "init_args": {"window_size": 1}},
                {"class_path": GRID, "init_args": {"grid_size": 64}},
            )
        ),
        "kenya_3km",
    )
    add(
        "landslide_unified",
        "landslide unified config (config_version 0.8.1) via "
        "UnifiedConfigPredictRunner: grid 1.0 deg + grid 1024 px use_utm",
        (p / "landslide" / "olmoearth_run.yaml").read_text(),
        "kenya_3km",
        project="landslide",
        runner="unified",
    )
    return cases


def _request_text(ctx: Ctx, request: str) -> tuple[str, str]:
    """Returns (text, path relative to OUT) of a request, writing it under inputs/."""
    if request.startswith("upstream:"):
        proj = request.split(":", 1)[1]
        dst = ctx.inputs / "requests" / f"upstream_{proj}.geojson"
        text = (ctx.projects / proj / "prediction_request_geometry.geojson").read_text()
    else:
        dst = ctx.inputs / "requests" / f"{request}.geojson"
        text = dst.read_text()
    if not dst.exists():
        write_text(dst, text)
    return text, ctx.rel(dst)


def _feature_dict(model: Any) -> JsonDict:
    return json.loads(model.model_dump_json())


def _clean_float(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return "NaN"
    return v


def _describe(obj: Any) -> JsonDict:
    """Class name and public attributes of an upstream strategy object."""
    attrs: JsonDict = {}
    for k, v in sorted(vars(obj).items()):
        if k.startswith("_"):
            continue
        if isinstance(v, bool | int | float | str) or v is None:
            attrs[k] = _clean_float(v)
        elif hasattr(v, "model_dump"):
            attrs[k] = json.loads(v.model_dump_json())
        elif type(v).__name__ == "Random":
            attrs[k] = "random.Random instance"
        else:
            attrs[k] = str(v)
    return {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", "attributes": attrs}


def _load_any_config(path: Path, unified: bool) -> Any:
    from olmoearth_run.runner.tools.olmoearth_config.loaders.config import ConfigClassLoader

    if unified:
        return ConfigClassLoader.load_olmoearth_config(str(path))
    return ConfigClassLoader.load_olmoearth_run_config(str(path))


def direct_partition(
    config_path: Path, unified: bool, request_text: str, with_windows: bool, tmp: Path
) -> JsonDict:
    """Call upstream's partitioners directly; mirrors CreatePartitionsStepDefinition."""
    import shapely
    from olmoearth_run.runner.steps.create_partitions_step_definition import (
        _generate_window_name,
    )
    from olmoearth_run.runner.tools.converters.feature_collection import fc_to_multipolygon
    from olmoearth_run.runner.tools.olmoearth_config.loaders.prediction_tools import (
        PredictionToolsClassLoader,
    )
    from olmoearth_shared.api.run.prediction_geometry import PredictionRequestCollection
    from rslearn.utils.geometry import WGS84_PROJECTION
    from shapely.prepared import prep

    out: JsonDict = {}
    try:
        config = _load_any_config(config_path, unified)
        p1 = PredictionToolsClassLoader.load_request_to_partitions_partitioner(config)
        p2 = PredictionToolsClassLoader.load_partition_to_windows_partitioner(config)
    except Exception as exc:
        out["error"] = _error(exc, tmp, "load_strategies")
        return out
    out["request_partitioner"] = _describe(p1)
    out["window_partitioner"] = _describe(p2)
    request = PredictionRequestCollection.model_validate_json(request_text)
    merged_shape = fc_to_multipolygon(request)
    out["merged_request_multipolygon_is_empty"] = merged_shape.is_empty
    merged = prep(merged_shape)
    try:
        parts = p1.partition_request_geometry(request)
    except Exception as exc:
        out["error"] = _error(exc, tmp, "partition_request_geometry")
        return out
    plist = []
    for idx, part in enumerate(parts):
        entry: JsonDict = {
            "index": idx,
            "intersects_request": merged.intersects(fc_to_multipolygon(part)),
            "feature_count": len(part.features),
        }
        plist.append(entry)
        if not entry["intersects_request"] and not with_windows:
            continue
        try:
            wins = p2.prepare_window_geometries(part)
        except Exception as exc:
            entry["error"] = _error(exc, tmp, "prepare_window_geometries")
            continue
        entry["raw_window_count"] = len(wins)
        kept = 0
        listed = []
        for feature_i, (_feature_obj, st) in enumerate(wins):
            try:
                keep: Any = bool(merged.intersects(st.to_projection(WGS84_PROJECTION).shp))
            except Exception as exc:
                keep = {"error": f"{type(exc).__name__}: {exc}"}
            if keep is True:
                kept += 1
            if not with_windows or keep is False:
                continue
            w: JsonDict = {
                "raw_index": feature_i,
                "projection": str(st.projection),
                "geom_type": st.shp.geom_type,
                "is_empty": bool(st.shp.is_empty),
                "float_bounds": [_clean_float(float(b)) for b in shapely.bounds(st.shp)],
                "keep": keep,
            }
            try:
                w["bounds"] = [int(b) for b in shapely.bounds(st.shp)[0:4]]
            except Exception as exc:
                w["bounds_error"] = f"{type(exc).__name__}: {exc}"
            try:
                w["name"] = _generate_window_name(f"partition_{idx}", st)
            except Exception as exc:
                w["name_error"] = f"{type(exc).__name__}: {exc}"
            listed.append(w)
        entry["kept_window_count"] = kept
        if with_windows:
            entry["windows_not_dropped"] = listed
    out["partitions"] = plist
    return out


def hoist(rec: JsonDict, keys: tuple[str, ...]) -> None:
    """Move fields shared by every window of ``rec["windows"]`` to ``rec["window_common"]``."""
    windows = rec["windows"]
    common: JsonDict = {}
    for key in keys:
        vals = {json.dumps(w.get(key), sort_keys=True) for w in windows}
        if windows and len(vals) == 1 and key in windows[0]:
            common[key] = windows[0][key]
            for w in windows:
                del w[key]
    rec["window_common"] = common


PREDICTION_HOIST = (
    "crs",
    "x_resolution",
    "y_resolution",
    "time_range",
    "options",
    "partition_feature_index",
    "metadata_keys",
)


def collect_prediction(scratch: Path) -> JsonDict:
    """Read back partitions and windows that the partition step wrote."""
    rec: JsonDict = {}
    pdir = scratch / "partitions"
    parts: list[JsonDict] = []
    feats_by_pid: dict[str, list[JsonDict]] = {}
    if pdir.exists():
        for d in sorted(pdir.iterdir(), key=lambda d: int(d.name.rsplit("_", 1)[1])):
            fc = json.loads((d / "request.geojson").read_text())
            feats_by_pid[d.name] = fc["features"]
            parts.append(
                {
                    "id": d.name,
                    "files": sorted(x.name for x in d.iterdir()),
                    "features": fc["features"],
                }
            )
    windows: list[JsonDict] = []
    wroot = scratch / "dataset_0" / "windows"
    per_part: Counter[str] = Counter()
    odd_files = []
    for md in sorted(wroot.glob("*/*/metadata.json")):
        m = json.loads(md.read_text())
        req = json.loads((md.parent / "request.geojson").read_text())
        pid = m["group"].removeprefix("group_")
        feats = feats_by_pid.get(pid, [])
        files = sorted(x.name for x in md.parent.iterdir())
        if files != ["metadata.json", "request.geojson"]:
            odd_files.append({"window": m["name"], "files": files})
        per_part[pid] += 1
        windows.append(
            {
                "group": m["group"],
                "name": m["name"],
                "crs": m["projection"]["crs"],
                "x_resolution": m["projection"]["x_resolution"],
                "y_resolution": m["projection"]["y_resolution"],
                "bounds": m["bounds"],
                "time_range": m["time_range"],
                "options": m["options"],
                "partition_feature_index": feats.index(req) if req in feats else None,
                "metadata_keys": sorted(m),
            }
        )
    for part in parts:
        part["window_count"] = per_part[part["id"]]
    rec["partitions"] = parts
    rec["partition_count"] = len(parts)
    rec["windows"] = windows
    rec["window_count"] = len(windows)
    rec["crs_counts"] = dict(sorted(Counter(w["crs"] for w in windows).items()))
    hoist(rec, PREDICTION_HOIST)
    if odd_files:
        rec["unexpected_window_files"] = odd_files
    return rec


def _copy_example(src: Path, dst: Path) -> None:
    """Copy one file upstream wrote, byte for byte."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


LAYOUT: JsonDict = {}


def run_partition_case(ctx: Ctx, case: JsonDict) -> JsonDict:
    from olmoearth_run.runner.local.predict_runner import OlmoEarthRunPredictRunner
    from olmoearth_run.runner.local.unified_config_predict_runner import (
        UnifiedConfigPredictRunner,
    )

    name = case["name"]
    unified = case["runner"] == "unified"
    cfg_path = ctx.inputs / "configs" / f"{name}.yaml"
    write_text(cfg_path, case["config_text"])
    req_text, req_rel = _request_text(ctx, case["request"])
    rec: JsonDict = {
        "case": name,
        "description": case["description"],
        "config": ctx.rel(cfg_path),
        "request": req_rel,
        "project_files_from": f"projects/{case['project']}",
        "model_yaml_from": f"projects/{case['model_from']}",
        "upstream_call": (
            "UnifiedConfigPredictRunner(project, scratch, request).partition()"
            if unified
            else "OlmoEarthRunPredictRunner(project, scratch, request).partition()"
        ),
    }
    with tempdir() as tmp:
        project = tmp / "project"
        project.mkdir()
        src = ctx.projects / case["project"]
        if unified:
            config_file = project / "olmoearth_config.yaml"
        else:
            config_file = project / "olmoearth_run.yaml"
            shutil.copyfile(src / "dataset.json", project / "dataset.json")
            shutil.copyfile(
                ctx.projects / case["model_from"] / "model.yaml", project / "model.yaml"
            )
        config_file.write_text(case["config_text"])
        request = tmp / "request.geojson"
        request.write_text(req_text)
        scratch = tmp / "scratch"
        runner_cls = UnifiedConfigPredictRunner if unified else OlmoEarthRunPredictRunner
        try:
            runner = runner_cls(
                project_path=project, scratch_path=scratch, request_geometry_path=request
            )
        except (Exception, SystemExit) as exc:
            rec["result"] = "error"
            rec["error"] = _error(exc, tmp, "load_config")
            return rec
        try:
            rec["partition_ids"] = runner.partition()
            rec["result"] = "ok"
        except Exception as exc:
            rec["result"] = "error"
            rec["error"] = _error(exc, tmp, "partition")
        rec.update(collect_prediction(scratch))
        rec["direct"] = direct_partition(
            config_file, unified, req_text, case["direct_windows"], tmp
        )
        if name == "nandi_request":
            LAYOUT["prediction_scratch_tree"] = _file_tree(scratch, tmp)
            ex = ctx.out / "layout_example" / "prediction"
            part = scratch / "partitions" / "partition_0" / "request.geojson"
            _copy_example(part, ex / "partitions" / "partition_0" / "request.geojson")
            wdir = sorted((scratch / "dataset_0" / "windows").glob("*/*"))[0]
            for fname in ("metadata.json", "request.geojson"):
                _copy_example(wdir / fname, ex / wdir.relative_to(scratch).as_posix() / fname)
    return rec


# ---- labelled window cases -------------------------------------------------------------------

WP = "olmoearth_run.runner.tools.labeled_window_preparers"
PIXEL = f"{WP}.point_to_pixel_window_preparer.PointToPixelWindowPreparer"
P2R = f"{WP}.point_to_raster_window_preparer.PointToRasterWindowPreparer"
POLY = f"{WP}.polygon_to_raster_window_preparer.PolygonToRasterWindowPreparer"
GRIDCFG = f"{WP}.polygon_to_raster_window_preparer.GridConfig"
DS = "olmoearth_run.runner.tools.data_splitters"
RANDOM = f"{DS}.random_data_splitter.RandomDataSplitter"
SPATIAL = f"{DS}.spatial_data_splitter.SpatialDataSplitter"
NOOP_S = "olmoearth_run.runner.tools.samplers.noop_sampler.NoopSampler"


def _window_prep(
    preparer: JsonDict,
    splitter: JsonDict,
    label_layer: str = "labels",
    group: str = "default",
    sampler: bool = True,
    **extra: Any,
) -> JsonDict:
    wp: JsonDict = {}
    if sampler:
        wp["sampler"] = {"class_path": NOOP_S}
    wp.update(
        {
            "labeled_window_preparer": preparer,
            "data_splitter": splitter,
            "label_layer": label_layer,
            "group_name": group,
            "split_property": "split",
        }
    )
    wp.update(extra)
    return {"window_prep": wp}


def _random(train: float, val: float, test: float, seed: int | None) -> JsonDict:
    args: JsonDict = {"train_prop": train, "val_prop": val, "test_prop": test}
    if seed is not None:
        args["seed"] = seed
    return {"class_path": RANDOM, "init_args": args}


def _spatial(train: float, val: float, test: float, grid: float) -> JsonDict:
    return {
        "class_path": SPATIAL,
        "init_args": {"train_prop": train, "val_prop": val, "test_prop": test, "grid_size": grid},
    }


def labeled_cases(ctx: Ctx) -> list[JsonDict]:
    p = ctx.projects
    cases: list[JsonDict] = []

    def add(
        name: str,
        desc: str,
        config: str | JsonDict,
        annotations: str,
        project: str = "sample",
        reference: str | None = None,
    ) -> None:
        text = config if isinstance(config, str) else _dump_yaml(config)
        cases.append(
            {
                "name": name,
                "description": desc,
                "config_text": text,
                "annotations": annotations,
                "project": project,
                "reference": reference,
            }
        )

    sample_text = (p / "sample" / "olmoearth_run.yaml").read_text()
    add(
        "sample_as_committed",
        "sample project as committed: its annotation features use es_ "
        "keys (es_label); PointToPixel(10) + Random(0.8/0.2/0.0, seed 42)",
        sample_text,
        "upstream_sample",
    )
    add(
        "sample_oe",
        "sample config on the sample export rewritten with oe_ keys "
        "(es_label -> oe_labels {category: value})",
        sample_text,
        "sample_oe",
    )
    pixel = {"class_path": PIXEL, "init_args": {"window_resolution": 10.0}}
    add(
        "points_es_keys",
        "synthetic points export with es_ keys everywhere",
        _window_prep(pixel, _random(0.8, 0.2, 0.0, 42)),
        "points_es",
    )
    ref = "pixel_random_seed42"
    for seed in (42, 0, 1, 7, 12345):
        add(
            f"pixel_random_seed{seed}",
            f"PointToPixel(10) + Random(0.8/0.2/0.0, seed {seed}) "
            "on the synthetic points (50 points in 7 tasks plus an empty task and an orphan "
            "annotation)",
            _window_prep(pixel, _random(0.8, 0.2, 0.0, seed), group="post_random_split"),
            "points_oe",
            reference=None if seed == 42 else ref,
        )
    add(
        "pixel_random_602020_seed42",
        "PointToPixel(10) + Random(0.6/0.2/0.2, seed 42)",
        _window_prep(pixel, _random(0.6, 0.2, 0.2, 42)),
        "points_oe",
        reference=ref,
    )
    add(
        "pixel_random_seed42_no_sampler",
        "as pixel_random_seed42 without a sampler entry (defaults to NoopSampler)",
        _window_prep(pixel, _random(0.8, 0.2, 0.0, 42), group="post_random_split", sampler=False),
        "points_oe",
        reference=ref,
    )
    for tag, props, grid in (
        ("geo", (0.8, 0.1, 0.1), 10.0),
        ("nandi", (0.75, 0.25, 0.0), 128),
        ("lfmc", (0.8, 0.2, 0.0), 1000),
        ("lfmc_root_old", (0.8, 0.2, 0.0), 10000),
        ("burn_scar", (0.7, 0.15, 0.15), 1000),
        ("grid_64", (0.5, 0.25, 0.25), 64),
    ):
        add(
            f"pixel_spatial_{tag}",
            f"PointToPixel(10) + SpatialDataSplitter{props + (grid,)} "
            f"(train/val/test, grid_size; as in the {tag} config where one exists)",
            _window_prep(pixel, _spatial(*props, grid)),
            "points_oe",
            reference=ref,
        )
    add(
        "pixel_multi_labels",
        "PointToPixel(10) on points with 3 label keys, some null",
        _window_prep(pixel, _random(0.8, 0.2, 0.0, 42)),
        "points_multi_oe",
    )

    geo = _load_yaml(p / "geo" / "olmoearth_run.yaml")
    add(
        "raster_geo",
        "geo config's window_prep: PointToRaster(buffer 31, 10 m, FLOAT32, nodata "
        "54) + Spatial(0.8/0.1/0.1, grid 10.0)",
        {"window_prep": geo["window_prep"]},
        "points_oe",
        project="geo",
    )
    lfmc = _load_yaml(p / "lfmc_base_s1_s2" / "olmoearth_run.yaml")
    add(
        "raster_lfmc",
        "lfmc_base_s1_s2 window_prep: PointToRaster(31, 10 m, FLOAT32, nodata "
        "-1) + Spatial(0.8/0.2/0.0, grid 1000); points with 3 label keys, some null",
        {"window_prep": lfmc["window_prep"]},
        "points_multi_oe",
        project="lfmc_base_s1_s2",
    )
    add(
        "raster_lfmc_single_key",
        "lfmc_base_s1_s2 window_prep on the single-key points",
        {"window_prep": lfmc["window_prep"]},
        "points_oe",
        project="lfmc_base_s1_s2",
    )
    root_old = _load_yaml(p / "lfmc_root_old" / "olmoearth_run.yaml")
    add(
        "raster_lfmc_root_old",
        "lfmc_root_old window_prep: PointToRaster(31, 10 m, FLOAT32, "
        "nodata 0) + Spatial(0.8/0.2/0.0, grid 10000)",
        {"window_prep": root_old["window_prep"]},
        "points_multi_oe",
        project="lfmc_root_old",
    )
    awf = (p / "awf" / "olmoearth_run.yaml").read_text()
    add(
        "raster_awf",
        "awf config as committed (window_prep only): PointToRaster(31, 10 m, "
        "INT32, nodata 9) + Spatial(0.75/0.25/0.0, grid 128)",
        awf,
        "points_oe",
        project="awf",
    )
    nandi_ft = (p / "nandi_finetune" / "olmoearth_run.yaml").read_text()
    add(
        "raster_nandi_finetune",
        "nandi_finetune config as committed: PointToRaster(31, 10 m, "
        "INT32, nodata 10) + Spatial(0.75/0.25/0.0, grid 128)",
        nandi_ft,
        "points_oe",
        project="nandi_finetune",
    )

    burn = _load_yaml(p / "burn-scar" / "olmoearth_run.yaml")
    add(
        "polygon_burn_scar",
        "burn-scar window_prep: PolygonToRaster(10 m) + Spatial(0.7/0.15/"
        "0.15, grid 1000) on synthetic polygons",
        {"window_prep": burn["window_prep"]},
        "polygons_oe",
        project="burn-scar",
    )
    poly_split = _spatial(0.7, 0.15, 0.15, 1000)

    def poly(**args: Any) -> JsonDict:
        return {"class_path": POLY, "init_args": {"window_resolution": 10.0, **args}}

    add(
        "polygon_wide_task",
        "burn-scar window_prep on one task wider than tall",
        {"window_prep": burn["window_prep"]},
        "polygons_wide_oe",
        project="burn-scar",
    )
    add(
        "polygon_drop_inconsistent_utm",
        "PolygonToRaster(10 m, drop_inconsistent_utm true)",
        _window_prep(poly(drop_inconsistent_utm=True), poly_split, label_layer="label"),
        "polygons_oe",
        project="burn-scar",
    )
    add(
        "polygon_nodata_0",
        "PolygonToRaster(10 m, nodata_value 0)",
        _window_prep(poly(nodata_value=0), poly_split, label_layer="label"),
        "polygons_oe",
        project="burn-scar",
    )
    for strat in ("center_crop", "pad_to_fill"):
        add(
            f"polygon_grid_{strat}_32",
            f"PolygonToRaster(10 m, grid_config GridConfig("
            f"window_size_px=32, gridding_strategy={strat}) given with class_path)",
            _window_prep(
                poly(
                    grid_config={
                        "class_path": GRIDCFG,
                        "init_args": {"window_size_px": 32, "gridding_strategy": strat},
                    }
                ),
                poly_split,
                label_layer="label",
            ),
            "polygons_oe",
            project="burn-scar",
        )
    add(
        "polygon_grid_plain_dict",
        "PolygonToRaster with grid_config as a plain mapping (no class_path)",
        _window_prep(
            poly(grid_config={"window_size_px": 32, "gridding_strategy": "center_crop"}),
            poly_split,
            label_layer="label",
        ),
        "polygons_oe",
        project="burn-scar",
    )
    add(
        "polygon_preparer_on_points",
        "PolygonToRaster on the point export",
        _window_prep(poly(), poly_split, label_layer="label"),
        "points_oe",
        project="burn-scar",
    )
    add(
        "pixel_preparer_on_polygons",
        "PointToPixel on the polygon export",
        _window_prep(pixel, _random(0.8, 0.2, 0.0, 42)),
        "polygons_oe",
    )
    return cases


def write_annotation_inputs(ctx: Ctx) -> None:
    base = ctx.inputs / "annotations"
    sets: dict[str, tuple[JsonDict, JsonDict]] = {
        "points_oe": synthetic_points(),
        "points_multi_oe": synthetic_points(multi=True),
        "polygons_oe": synthetic_polygons(),
        "polygons_wide_oe": synthetic_polygons_wide(),
    }
    sets["points_es"] = to_es_keys(*synthetic_points())
    sample = ctx.projects / "sample"
    sample_feats = json.loads((sample / "annotation_features.geojson").read_text())
    sample_tasks = json.loads((sample / "annotation_task_features.geojson").read_text())
    sets["sample_oe"] = (convert_sample_features(sample_feats, "category"), sample_tasks)
    for name, (feats, tasks) in sets.items():
        write_json(base / name / "annotation_features.geojson", feats)
        write_json(base / name / "annotation_task_features.geojson", tasks)
    for fname in ("annotation_features.geojson", "annotation_task_features.geojson"):
        write_text(base / "upstream_sample" / fname, (sample / fname).read_text())


def _value_counts(arr: Any) -> JsonDict:
    import numpy as np

    vals, counts = np.unique(arr, return_counts=True)
    out = {}
    for v, c in zip(vals.tolist(), counts.tolist()):
        key = repr(float(v)) if isinstance(v, float) else str(int(v))
        out[key] = int(c)
    return out


def raster_summary(tif: Path) -> JsonDict:
    import rasterio

    with rasterio.open(tif) as ds:
        arr = ds.read()
        prof = ds.profile
        return {
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
            "bands": [
                {
                    "sha256": hashlib.sha256(arr[b].tobytes()).hexdigest(),
                    "value_counts": _value_counts(arr[b]),
                }
                for b in range(arr.shape[0])
            ],
            "geotiff": {
                "crs": ds.crs.to_string() if ds.crs else None,
                "transform": [_clean_float(float(v)) for v in list(ds.transform)[:6]],
                "nodata": _clean_float(ds.nodata),
                "tiled": bool(prof.get("tiled", False)),
                "blockxsize": prof.get("blockxsize"),
                "blockysize": prof.get("blockysize"),
                "compress": str(prof.get("compress")),
                "interleave": str(prof.get("interleave")),
                "count": ds.count,
                "width": ds.width,
                "height": ds.height,
            },
        }


def collect_labeled(dataset: Path) -> JsonDict:
    windows = []
    for md in sorted(dataset.glob("windows/*/*/metadata.json")):
        m = json.loads(md.read_text())
        wdir = md.parent
        layers: JsonDict = {}
        ldir = wdir / "layers"
        if ldir.exists():
            for layer in sorted(ldir.iterdir()):
                entry: JsonDict = {
                    "completed": (layer / "completed").exists(),
                    "files": sorted(
                        x.relative_to(layer).as_posix() for x in layer.rglob("*") if x.is_file()
                    ),
                }
                if (layer / "data.geojson").exists():
                    entry["kind"] = "vector"
                    entry["data_geojson"] = json.loads((layer / "data.geojson").read_text())
                tifs = sorted(layer.glob("*/geotiff.tif"))
                if tifs:
                    entry["kind"] = "raster"
                    entry["band_dir"] = tifs[0].parent.name
                    entry["raster"] = raster_summary(tifs[0])
                layers[layer.name] = entry
        windows.append(
            {
                "group": m["group"],
                "name": m["name"],
                "crs": m["projection"]["crs"],
                "x_resolution": m["projection"]["x_resolution"],
                "y_resolution": m["projection"]["y_resolution"],
                "bounds": m["bounds"],
                "time_range": m["time_range"],
                "options": m["options"],
                "split": m["options"].get("split"),
                "files": sorted(x.name for x in wdir.iterdir()),
                "layers": layers,
            }
        )
    return {
        "windows": windows,
        "window_count": len(windows),
        "split_counts": dict(sorted(Counter(str(w["split"]) for w in windows).items())),
        "crs_counts": dict(sorted(Counter(w["crs"] for w in windows).items())),
    }


def direct_labeled(scratch: Path, tmp: Path) -> JsonDict:
    """Sequential run of upstream's reader, sampler, preparer and one splitter instance."""
    from olmoearth_run.runner.steps.prepare_labeled_windows_step_definition import (
        read_annotation_tasks,
    )
    from olmoearth_run.runner.tools.olmoearth_config.loaders.labeled_data_prep import (
        LabeledDataPrepClassLoader,
    )
    from olmoearth_run.shared.models.model_stage_paths import ModelStagePaths

    msp = ModelStagePaths(root_path=str(scratch))
    out: JsonDict = {}
    try:
        config = _load_any_config(Path(msp.olmoearth_run_config_path), False)
        tasks = read_annotation_tasks(
            msp.annotation_features_path, msp.annotation_task_features_path
        )
        sampler = LabeledDataPrepClassLoader.load_sampler(config)
        preparer = LabeledDataPrepClassLoader.load_labeled_window_preparer(config)
        splitter = LabeledDataPrepClassLoader.load_data_splitter(config)
    except Exception as exc:
        out["error"] = _error(exc, tmp, "load")
        return out
    out["sampler"] = _describe(sampler)
    out["preparer"] = _describe(preparer)
    out["splitter"] = _describe(splitter)
    out["tasks"] = [
        {
            "task_id": str(t.task_id),
            "annotation_count": len(t.annotations),
            "time_range": [
                t.task_st_geometry.time_range[0].isoformat(),
                t.task_st_geometry.time_range[1].isoformat(),
            ],
        }
        for t in tasks
    ]
    sampled = sampler.sample(tasks)
    order = []
    try:
        for t in sampled:
            for w in preparer.prepare_labeled_windows(t):
                split = splitter.choose_split_for_window(w)
                item: JsonDict = {"name": w.name, "split": str(split)}
                labels = w.labels
                if labels and hasattr(labels[0], "key"):
                    item["raster_label_keys"] = [lab.key for lab in labels]
                    item["raster_label_dtypes"] = [str(lab.value.dtype) for lab in labels]
                order.append(item)
    except Exception as exc:
        out["error"] = _error(exc, tmp, "prepare_or_split")
    out["visit_order"] = order
    return out


@contextmanager
def single_cpu() -> Iterator[None]:
    """Make upstream's step use one worker process (deterministic splits)."""
    orig: Callable[[], int | None] = os.cpu_count
    os.cpu_count = lambda: 1
    try:
        yield
    finally:
        os.cpu_count = orig


LABELED_HOIST = ("group", "x_resolution", "y_resolution", "files")


def _strip_split(w: JsonDict) -> JsonDict:
    w = json.loads(json.dumps(w))
    for key in ("split", "visit_index", "group"):
        w.pop(key, None)
    w["options"].pop("split", None)
    return w


def run_labeled_case(ctx: Ctx, case: JsonDict, registry: dict[str, JsonDict]) -> JsonDict:
    from olmoearth_run.runner.local.fine_tune_runner import OlmoEarthRunFineTuneRunner

    name = case["name"]
    cfg_path = ctx.inputs / "configs" / f"labeled_{name}.yaml"
    write_text(cfg_path, case["config_text"])
    ann_dir = ctx.inputs / "annotations" / case["annotations"]
    rec: JsonDict = {
        "case": name,
        "description": case["description"],
        "config": ctx.rel(cfg_path),
        "annotations": ctx.rel(ann_dir),
        "project_files_from": f"projects/{case['project']}",
        "upstream_call": "OlmoEarthRunFineTuneRunner(project, scratch).prepare_labeled_windows()"
        " with os.cpu_count() pinned to 1 (one pool worker)",
    }
    with tempdir() as tmp:
        project = tmp / "project"
        project.mkdir()
        (project / "olmoearth_run.yaml").write_text(case["config_text"])
        for fname in ("annotation_features.geojson", "annotation_task_features.geojson"):
            shutil.copyfile(ann_dir / fname, project / fname)
        src = ctx.projects / case["project"]
        shutil.copyfile(src / "dataset.json", project / "dataset.json")
        model = src / "model.yaml"
        if not model.exists():
            model = ctx.projects / "sample" / "model.yaml"
        shutil.copyfile(model, project / "model.yaml")
        scratch = tmp / "scratch"
        try:
            runner = OlmoEarthRunFineTuneRunner(project_path=project, scratch_path=scratch)
        except Exception as exc:
            rec["result"] = "error"
            rec["error"] = _error(exc, tmp, "load_config")
            return rec
        try:
            with single_cpu():
                res = runner.prepare_labeled_windows()
            rec["result"] = "ok"
            rec["windows_count_reported"] = res.windows_count
        except Exception as exc:
            rec["result"] = "error"
            rec["error"] = _error(exc, tmp, "prepare_labeled_windows")
        dataset = scratch / "dataset"
        rec.update(collect_labeled(dataset))
        direct = direct_labeled(scratch, tmp)
        on_disk = {w["name"]: w["split"] for w in rec["windows"]}
        if "visit_order" in direct and rec["result"] == "ok":
            seq = {w["name"]: w["split"] for w in direct["visit_order"]}
            direct["matches_step_output"] = seq == on_disk
            if seq != on_disk:
                raise RuntimeError(f"{name}: sequential run differs from the step's output")
            index = {w["name"]: i for i, w in enumerate(direct["visit_order"])}
            for w in rec["windows"]:
                w["visit_index"] = index.get(w["name"])
            extra = {w["name"]: w for w in direct["visit_order"]}
            for w in rec["windows"]:
                for key in ("raster_label_keys", "raster_label_dtypes"):
                    if key in extra.get(w["name"], {}):
                        w[key] = extra[w["name"]][key]
            del direct["visit_order"]
        rec["direct"] = direct
        registry[name] = json.loads(json.dumps(rec))
        ref_name = case.get("reference")
        if ref_name and rec["result"] == "ok":
            ref = registry[ref_name]
            mine = sorted((_strip_split(w) for w in rec["windows"]), key=lambda w: w["name"])
            theirs = sorted((_strip_split(w) for w in ref["windows"]), key=lambda w: w["name"])
            if mine != theirs:
                raise RuntimeError(f"{name}: windows differ from {ref_name} beyond the split")
            rec["windows_identical_to"] = f"{ref_name} (apart from group, split, visit_index)"
            rec["windows"] = [
                {
                    "name": w["name"],
                    "split": w["split"],
                    "visit_index": w["visit_index"],
                    "group": w["group"],
                }
                for w in rec["windows"]
            ]
        hoist(rec, LABELED_HOIST)
        if name in ("sample_oe", "raster_geo", "polygon_burn_scar"):
            LAYOUT[f"labeled_scratch_tree_{name}"] = _file_tree(scratch, tmp)
            ex = ctx.out / "layout_example" / f"labeled_{name}"
            for wdir in sorted(dataset.glob("windows/*/*"))[:1]:
                for f in sorted(wdir.rglob("*")):
                    if f.is_file():
                        _copy_example(f, ex / f.relative_to(dataset).as_posix())
    return rec


# ---- catalog, UTM table, config loading ------------------------------------------------------


def catalog() -> JsonDict:
    import importlib
    import inspect
    import pkgutil

    out: JsonDict = {}
    for pkg_name in (
        "olmoearth_run.runner.tools.partitioners",
        "olmoearth_run.runner.tools.postprocessors",
        "olmoearth_run.runner.tools.labeled_window_preparers",
        "olmoearth_run.runner.tools.data_splitters",
        "olmoearth_run.runner.tools.samplers",
    ):
        pkg = importlib.import_module(pkg_name)
        entries = []
        for mod_info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            mod = importlib.import_module(f"{pkg_name}.{mod_info.name}")
            for cname, cls in sorted(vars(mod).items()):
                if not inspect.isclass(cls) or cls.__module__ != mod.__name__:
                    continue
                try:
                    sig = str(inspect.signature(cls))
                except (TypeError, ValueError):
                    sig = "?"
                methods = sorted(
                    k for k, v in vars(cls).items() if callable(v) and not k.startswith("__")
                )
                entries.append(
                    {
                        "class_path": f"{mod.__name__}.{cname}",
                        "signature": sig,
                        "bases": [b.__name__ for b in cls.__bases__],
                        "methods": methods,
                        "doc": (inspect.getdoc(cls) or "").split("\n")[0],
                    }
                )
        out[pkg_name.rsplit(".", 1)[1]] = entries
    return out


UTM_POINTS = [
    ("Nandi, Kenya", 35.1, 0.2),
    ("Nairobi", 36.82, -1.29),
    ("just west of 36E", 35.9999, 0.5),
    ("exactly 36E", 36.0, 0.5),
    ("just east of 36E", 36.0001, 0.5),
    ("equator 36.5E", 36.5, 0.0),
    ("just south of equator", 36.5, -0.0001),
    ("0,0", 0.0, 0.0),
    ("-0.0001,0.5", -0.0001, 0.5),
    ("180E", 180.0, 10.0),
    ("-180", -180.0, 10.0),
    ("179.9999E", 179.9999, -10.0),
    ("SW Norway (32V exception)", 5.5, 60.5),
    ("Bergen", 5.32, 60.39),
    ("Svalbard 10E (31X/33X exception)", 10.0, 78.0),
    ("Svalbard 20E", 20.0, 78.0),
    ("Svalbard 35E", 35.0, 78.0),
    ("83.9998N", 10.0, 83.9998),
    ("83.99991N", 10.0, 83.99991),
    ("84N", 10.0, 84.0),
    ("84.5N", 10.0, 84.5),
    ("-79.9998", 10.0, -79.9998),
    ("-79.99991", 10.0, -79.99991),
    ("-80", 10.0, -80.0),
    ("-85", 10.0, -85.0),
    ("Phoenix", -111.8, 33.5),
    ("Los Angeles (sample)", -118.15, 33.73),
    ("Peru (sample request)", -76.335, -5.015),
    ("Libya (geo)", 15.035, 28.85),
]


def utm_table() -> JsonDict:
    from rslearn.utils import get_utm_ups_crs

    rows = []
    for label, lon, lat in UTM_POINTS:
        try:
            crs: Any = get_utm_ups_crs(lon, lat).to_string()
        except Exception as exc:
            crs = {"error": f"{type(exc).__name__}: {exc}"}
        rows.append({"label": label, "lon": lon, "lat": lat, "crs": crs})
    return {"function": "rslearn.utils.get_utm_ups_crs(lon, lat)", "rows": rows}


def config_loading(ctx: Ctx) -> JsonDict:
    from olmoearth_run.runner.tools.olmoearth_run_config_loader import OlmoEarthRunConfigLoader
    from olmoearth_run.shared.models.olmoearth_run_config import (
        OlmoEarthRunConfig,
        WindowPrepConfig,
    )
    from olmoearth_shared.api.run.prediction_geometry import PredictionRequestCollection
    from olmoearth_shared.models.olmoearth_config.olmoearth_config import OlmoEarthConfig

    loader = OlmoEarthRunConfigLoader
    getters = {
        "partition_request_geometry": loader.get_partition_request_geometry_partitioner,
        "prepare_window_geometries": loader.get_prepare_window_geometries_partitioner,
        "process_window": loader.get_window_postprocessor,
        "process_partition": loader.get_partition_postprocessor,
        "process_dataset": loader.get_dataset_postprocessor,
        "labeled_window_preparer": loader.get_labeled_window_preparer,
        "data_splitter": loader.get_data_splitter,
        "sampler": loader.get_sampler,
    }
    projects: JsonDict = {}
    for proj in sorted(d for d in ctx.projects.iterdir() if d.is_dir()):
        for fname in ("olmoearth_run.yaml", "esrun.yaml"):
            path = proj / fname
            if not path.exists():
                continue
            text = path.read_text()
            entry: JsonDict = {"file": f"{proj.name}/{fname}"}
            try:
                cfg = OlmoEarthRunConfig.from_yaml(text)
                entry["OlmoEarthRunConfig"] = "ok"
                entry["top_level_keys"] = sorted(_load_yaml(path))
                inst: JsonDict = {}
                for key, get in getters.items():
                    try:
                        inst[key] = _describe(get(cfg))
                    except Exception as exc:
                        inst[key] = {"error": _error(exc, None, key)}
                entry["instantiated"] = inst
            except Exception as exc:
                entry["OlmoEarthRunConfig"] = _error(exc, None, "OlmoEarthRunConfig.from_yaml")
            raw = _load_yaml(path)
            if isinstance(raw, dict) and "window_prep" in raw:
                try:
                    WindowPrepConfig.model_validate(raw["window_prep"])
                    entry["fine_tune_runner_window_prep"] = "ok"
                except Exception as exc:
                    entry["fine_tune_runner_window_prep"] = _error(exc, None, "WindowPrepConfig")
            else:
                entry["fine_tune_runner_window_prep"] = "no window_prep section"
            try:
                OlmoEarthConfig.from_yaml(text)
                entry["OlmoEarthConfig_unified"] = "ok"
            except Exception as exc:
                err = _error(exc, None, "OlmoEarthConfig.from_yaml")
                entry["OlmoEarthConfig_unified"] = {
                    "type": err["type"],
                    "message": err["message"][:300],
                }
            projects[f"{proj.name}/{fname}"] = entry
    requests: JsonDict = {}
    for path in sorted(ctx.projects.glob("*/prediction_request_geometry.geojson")):
        key = f"{path.parent.name}/{path.name}"
        try:
            fc = PredictionRequestCollection.model_validate_json(path.read_text())
            requests[key] = {
                "PredictionRequestCollection": "ok",
                "features": len(fc.features),
                "time_ranges": [
                    [f.properties.oe_start_time.isoformat(), f.properties.oe_end_time.isoformat()]
                    for f in fc.features
                ],
            }
        except Exception as exc:
            requests[key] = {"PredictionRequestCollection": _error(exc, None, "validate")}
    return {"project_configs": projects, "request_files": requests}


# ---- main ------------------------------------------------------------------------------------

OWNED = (
    "README.md",
    "manifest.json",
    "catalog.json",
    "config_loading.json",
    "utm_zones.json",
    "layout.json",
    "partition",
    "labeled",
    "inputs",
    "layout_example",
)

README = """# Golden files recorded from upstream olmoearth-runner 0.1.14

Generated by `python tests/peer/runner_golden.py` (see its docstring); do not edit by hand.
Every file here is written by upstream's own code run in `.peer/olmoearth-runner`.

- `manifest.json`: library versions and a one-line summary per case.
- `catalog.json`: every partitioner, postprocessor, window preparer, splitter and sampler class
  upstream ships, with its `__init__` signature.
- `config_loading.json`: how upstream's loaders treat each real project's olmoearth_run.yaml
  (and the prediction request files).
- `utm_zones.json`: `rslearn.utils.get_utm_ups_crs(lon, lat)` on a table of points.
- `partition/<case>.json`: `OlmoEarthRunPredictRunner(...).partition()` on
  `inputs/configs/<case>.yaml` and `inputs/requests/...`. `result` is `ok` or `error` (with
  `error.stage/type/message`). `partitions[]` are the `partitions/<id>/request.geojson`
  files; `windows[]` the windows' `metadata.json`, sorted by (group, name), with the fields
  shared by all windows of the case moved to `window_common`. `partition_feature_index` is the
  index (in its partition) of the feature copied into the window's `request.geojson`.
  `direct` re-runs the two partitioners without the runner: `raw_window_count` is what
  prepare_window_geometries returned before the request-intersection filter.
- `labeled/<case>.json`: `OlmoEarthRunFineTuneRunner(...).prepare_labeled_windows()` on
  `inputs/configs/labeled_<case>.yaml` and `inputs/annotations/<set>/`, with one worker
  process. `windows[]` are the written windows (metadata + label layer: vector features, or
  raster shape/dtype/sha256 of the array bytes/value counts per band and the GeoTIFF
  profile). `visit_index` is the order in which upstream prepared the windows and drew the
  split. Cases with `windows_identical_to` only list name/split/visit_index/group; everything
  else equals the named case.
- `layout.json` and `layout_example/`: the file trees upstream writes and one example of each
  file kind (metadata.json, request.geojson, data.geojson, geotiff.tif, completed).
"""


def worker_main(out: Path, projects: Path, only: str | None = None) -> None:
    import multiprocessing
    from importlib.metadata import version

    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    ctx = Ctx(out, projects)
    # upstream's step modules set the start method to forkserver; preload them in the server so
    # each pool does not re-import torch & co.
    import olmoearth_run.runner.steps.create_partitions_step_definition  # noqa: F401
    import olmoearth_run.runner.steps.prepare_labeled_windows_step_definition  # noqa: F401

    multiprocessing.set_forkserver_preload(
        [
            "olmoearth_run.runner.steps.create_partitions_step_definition",
            "olmoearth_run.runner.steps.prepare_labeled_windows_step_definition",
        ]
    )
    for name, fc in synthetic_requests().items():
        write_json(ctx.inputs / "requests" / f"{name}.geojson", fc)
    one_year = json.loads((projects / "sample" / "prediction_request_geometry.geojson").read_text())
    for f in one_year["features"]:
        start = f["properties"]["oe_start_time"]
        f["properties"]["oe_end_time"] = str(int(start[:4]) + 1) + start[4:]
    write_json(ctx.inputs / "requests" / "sample_one_year.geojson", one_year)
    write_annotation_inputs(ctx)

    write_text(out / "README.md", README)
    write_json(out / "catalog.json", catalog())
    write_json(out / "utm_zones.json", utm_table())
    write_json(out / "config_loading.json", config_loading(ctx))

    summary: JsonDict = {"partition": {}, "labeled": {}}
    registry: dict[str, JsonDict] = {}
    for case in partition_cases(ctx):
        if only and only not in case["name"]:
            continue
        print(f"partition case {case['name']}", flush=True)
        rec = run_partition_case(ctx, case)
        write_json(out / "partition" / f"{case['name']}.json", rec)
        summary["partition"][case["name"]] = {
            "result": rec["result"],
            "partitions": rec.get("partition_count"),
            "windows": rec.get("window_count"),
            "error": (rec.get("error") or {}).get("type"),
        }
    for case in labeled_cases(ctx):
        if only and only not in case["name"]:
            continue
        print(f"labeled case {case['name']}", flush=True)
        rec = run_labeled_case(ctx, case, registry)
        write_json(out / "labeled" / f"{case['name']}.json", rec)
        summary["labeled"][case["name"]] = {
            "result": rec["result"],
            "windows": rec.get("window_count"),
            "splits": rec.get("split_counts"),
            "error": (rec.get("error") or {}).get("type"),
        }
    write_json(out / "layout.json", LAYOUT)
    packages = [
        "olmoearth-runner",
        "rslearn",
        "shapely",
        "pyproj",
        "rasterio",
        "numpy",
        "pydantic",
        "geojson-pydantic",
        "torch",
    ]
    import pyproj
    import rasterio

    write_json(
        out / "manifest.json",
        {
            "generator": "tests/peer/runner_golden.py",
            "upstream": f"{UPSTREAM_PACKAGE}=={UPSTREAM_VERSION}",
            "versions": {p: version(p) for p in packages},
            "proj": pyproj.proj_version_str,
            "gdal": rasterio.__gdal_version__,
            "python": sys.version.split()[0],
            "summary": summary,
            "notes": [
                "partition/*.json: CreatePartitionsStepDefinition run through the local "
                "OlmoEarthRunPredictRunner; 'direct' re-runs the partitioners without the runner.",
                "labeled/*.json: PrepareLabeledWindowsStepDefinition through the local "
                "OlmoEarthRunFineTuneRunner with one pool worker; windows[].visit_index is the "
                "order in which windows were prepared and handed to the (single) splitter.",
                "Temporary paths in messages are replaced by <tmp>.",
            ],
        },
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--venv",
        type=Path,
        default=DEFAULT_VENV,
        help=f"upstream virtual environment (default {DEFAULT_VENV})",
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    ap.add_argument(
        "--projects",
        type=Path,
        default=DEFAULT_PROJECTS,
        help=f"upstream project folders (default {DEFAULT_PROJECTS})",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", help="run only the cases whose name contains this (debugging)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    projects = args.projects.resolve()
    if args.worker:
        worker_main(out, projects, args.only)
        return 0
    py = ensure_venv(args.venv.resolve())
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONHASHSEED"] = "0"
    env.setdefault("PYTHONWARNINGS", "ignore")
    cmd = [
        str(py),
        str(Path(__file__).resolve()),
        "--worker",
        "--out",
        str(out),
        "--projects",
        str(projects),
    ]
    if args.only:
        cmd += ["--only", args.only]
    return subprocess.run(cmd, env=env, cwd=tempfile.gettempdir()).returncode


if __name__ == "__main__":
    sys.exit(main())
