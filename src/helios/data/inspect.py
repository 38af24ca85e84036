"""`helios data inspect`: what an H5 training-set directory holds, and what is wrong with it.

Only metadata is read (shapes, dtypes, storage sizes, masks), never the arrays, so inspecting
stays fast; problems that need the values (NaN/Inf) are `helios data stats`'s to report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from helios.data.h5 import (
    MASK_GROUP,
    METADATA_CSV,
    H5Directory,
    H5FormatError,
    dataset_problem,
    grid_problem,
    grid_sizes,
)
from helios.data.modalities import MODALITIES

FILTER_NAMES = {1: "gzip", 32015: "zstd", 32004: "lz4", 2: "shuffle"}


def _filters(ds: h5py.Dataset) -> list[str]:
    plist = ds.id.get_create_plist()
    return [
        FILTER_NAMES.get(plist.get_filter(i)[0], str(plist.get_filter(i)[0]))
        for i in range(plist.get_nfilters())
    ]


@dataclass
class _Tally:
    """What the inspected files hold, per dataset name."""

    shapes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    dtypes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    stored: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    steps: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    filters: Counter[str] = field(default_factory=Counter)
    opened: Counter[str] = field(default_factory=Counter)
    t_axis: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)


def _file_problems(
    f: h5py.File, listed: list[str], columns: set[str], directory: H5Directory
) -> list[str]:
    """What is wrong with one file's modalities: dtypes, shapes, grids, the CSV's presence."""
    shapes = {n: tuple(ds.shape) for n, ds in f.items() if n in MODALITIES}
    found = [dataset_problem(n, shape, f[n].dtype) for n, shape in sorted(shapes.items())]
    problems = [p for p in found if p is not None]
    sizes = grid_sizes(shapes)
    if not problems and (grid := grid_problem(sizes)) is not None:
        problems.append(grid)
    tile = directory.tile_size
    off = {m: s for m, s in sorted(sizes.items()) if tile is not None and s != tile}
    if not problems and off:
        recipe = directory.root.resolve().parent.parent.name
        covers = ", ".join(f"{m} covers {s} px" for m, s in off.items())
        problems.append(f"{covers} (10 m); the recipe {recipe} holds {tile} px samples")
    problems += [
        f"{m}: listed in {METADATA_CSV}, absent from the file" for m in listed if m not in shapes
    ]
    problems += [
        f"{m}: in the file, but 0 in {METADATA_CSV}"
        for m in sorted(shapes)
        if m in columns and m not in listed
    ]
    return problems


def _inspect_file(f: h5py.File, tally: _Tally) -> None:
    """Fold one open file's datasets into `tally`."""
    tally.t_axis.append(int(f["timestamps"].shape[0]))
    masks = f.get(MASK_GROUP, {})
    for name, ds in f.items():
        if not isinstance(ds, h5py.Dataset) or name in ("timestamps", "latlon"):
            continue
        tally.opened[name] += 1
        tally.shapes[name]["x".join(map(str, ds.shape))] += 1
        tally.dtypes[name].add(str(ds.dtype))
        tally.stored[name].append(int(ds.id.get_storage_size()))
        tally.filters["+".join(_filters(ds)) or "none"] += 1
        if name in masks:
            tally.steps[name].append(int(np.asarray(masks[name][()]).sum()))


def summarize(h5_dir: Path | str, max_samples: int | None = 1000) -> dict[str, Any]:
    """Summarize a directory: presence from the metadata CSV, shapes and sizes from the files.

    At most `max_samples` evenly spaced sample files are opened (all of them when None).
    `problems` holds one line per file whose datasets break the layout (dtype, shape, grid,
    recipe size) or disagree with the metadata CSV; `unreadable` the files that cannot be read.
    """
    directory = H5Directory.open(h5_dir)
    n = len(directory)
    count = n if max_samples is None else min(n, max_samples)
    positions = np.unique(np.linspace(0, n - 1, count).round().astype(int))
    tally = _Tally()
    unreadable, problems = [], []
    columns = set(directory.presence)
    for pos in positions:
        path = directory.path(int(pos))
        try:
            tally.sizes.append(path.stat().st_size)
            with h5py.File(path, "r") as f:
                _inspect_file(f, tally)
                found = _file_problems(f, directory.listed(int(pos)), columns, directory)
        except (OSError, KeyError) as err:
            unreadable.append(f"{path.name}: {err}")
            continue
        if found:
            problems.append(f"{path.name}: {'; '.join(found)}")
    if len(unreadable) == len(positions):
        raise H5FormatError(f"{h5_dir}: none of the sampled files could be read ({unreadable[0]})")
    return _summary(h5_dir, directory, len(positions), tally) | {
        "problems": problems,
        "unreadable": unreadable,
    }


def _summary(h5_dir: Path | str, directory: H5Directory, inspected: int, t: _Tally) -> dict:
    """The summary dict (without problems) from what the inspected files hold."""
    n = len(directory)
    presence = {m: int(v.sum()) for m, v in directory.presence.items()}
    if not presence:
        presence = dict(t.opened)
    modalities = {}
    for m in sorted(set(presence) | set(t.opened)):
        modalities[m] = {
            "samples": presence.get(m, t.opened.get(m, 0)),
            "fraction": round(presence.get(m, 0) / n, 4) if presence else None,
            "shapes": dict(t.shapes[m].most_common(3)),
            "dtypes": sorted(t.dtypes[m]),
            "mean_present_timesteps": round(float(np.mean(t.steps[m])), 2) if t.steps[m] else None,
            "mean_stored_bytes": int(np.mean(t.stored[m])) if t.stored[m] else 0,
        }
    comp = directory.compression
    sizes, t_axis = t.sizes, t.t_axis
    return {
        "path": str(Path(h5_dir)),
        "samples": n,
        "inspected_files": inspected,
        "compression": comp.to_json() if comp else None,
        "dataset_filters": dict(t.filters),
        "timesteps": {
            "min": min(t_axis),
            "max": max(t_axis),
            "mean": round(float(np.mean(t_axis)), 2),
        }
        if t_axis
        else None,
        "bytes_per_sample": {
            "mean": int(np.mean(sizes)),
            "min": int(min(sizes)),
            "max": int(max(sizes)),
        }
        if sizes
        else None,
        "total_bytes_estimate": int(np.mean(sizes) * n) if sizes else 0,
        "modalities": modalities,
    }


def _mb(x: float) -> str:
    """Human-readable byte count."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{int(x)} B"


def format_summary(summary: dict[str, Any]) -> str:
    """Render `summarize()` output as a plain-text table."""
    lines = [
        f"H5 dataset   {summary['path']}",
        f"samples      {summary['samples']}  (inspected {summary['inspected_files']} files)",
        f"compression  {summary['compression']}  filters {summary['dataset_filters']}",
    ]
    if summary["timesteps"]:
        t = summary["timesteps"]
        lines.append(f"timesteps    min {t['min']}  mean {t['mean']}  max {t['max']}")
    if summary["bytes_per_sample"]:
        b = summary["bytes_per_sample"]
        lines.append(
            f"bytes/sample mean {_mb(b['mean'])}  min {_mb(b['min'])}  max {_mb(b['max'])}  "
            f"(total ~{_mb(summary['total_bytes_estimate'])})"
        )
    header = ("modality", "samples", "frac", "shape (most common)", "dtype", "steps", "stored")
    rows = [header]
    for name, m in summary["modalities"].items():
        shape = next(iter(m["shapes"]), "-")
        frac = "-" if m["fraction"] is None else f"{m['fraction']:.2f}"
        steps = "-" if m["mean_present_timesteps"] is None else f"{m['mean_present_timesteps']:.1f}"
        rows.append(
            (
                name,
                str(m["samples"]),
                frac,
                shape,
                ",".join(m["dtypes"]) or "-",
                steps,
                _mb(m["mean_stored_bytes"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines.append("")
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for key, title in (("problems", "files with problems"), ("unreadable", "unreadable files")):
        if summary[key]:
            lines.append(f"\n{title} ({len(summary[key])}):")
            lines.extend(f"  {u}" for u in summary[key][:20])
    return "\n".join(lines)
