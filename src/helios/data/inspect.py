"""`helios data inspect`: what an H5 training-set directory holds."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from helios.data.h5 import MASK_GROUP, H5Directory, H5FormatError

FILTER_NAMES = {1: "gzip", 32015: "zstd", 32004: "lz4", 2: "shuffle"}


def _filters(ds: h5py.Dataset) -> list[str]:
    plist = ds.id.get_create_plist()
    return [
        FILTER_NAMES.get(plist.get_filter(i)[0], str(plist.get_filter(i)[0]))
        for i in range(plist.get_nfilters())
    ]


def summarize(h5_dir: Path | str, max_samples: int | None = 1000) -> dict[str, Any]:
    """Summarize a directory: presence from the metadata CSV, shapes and sizes from the files.

    At most `max_samples` evenly spaced sample files are opened (all of them when None).
    """
    directory = H5Directory.open(h5_dir)
    n = len(directory)
    count = n if max_samples is None else min(n, max_samples)
    positions = np.unique(np.linspace(0, n - 1, count).round().astype(int))
    shapes: dict[str, Counter[str]] = defaultdict(Counter)
    dtypes: dict[str, set[str]] = defaultdict(set)
    stored: dict[str, list[int]] = defaultdict(list)
    steps: dict[str, list[int]] = defaultdict(list)
    filters: Counter[str] = Counter()
    opened: Counter[str] = Counter()
    t_axis, sizes, unreadable = [], [], []
    for pos in positions:
        path = directory.path(int(pos))
        try:
            sizes.append(path.stat().st_size)
            with h5py.File(path, "r") as f:
                t_axis.append(int(f["timestamps"].shape[0]))
                masks = f.get(MASK_GROUP, {})
                for name, ds in f.items():
                    if not isinstance(ds, h5py.Dataset) or name in ("timestamps", "latlon"):
                        continue
                    opened[name] += 1
                    shapes[name]["x".join(map(str, ds.shape))] += 1
                    dtypes[name].add(str(ds.dtype))
                    stored[name].append(int(ds.id.get_storage_size()))
                    filters["+".join(_filters(ds)) or "none"] += 1
                    if name in masks:
                        steps[name].append(int(np.asarray(masks[name][()]).sum()))
        except (OSError, KeyError) as err:
            unreadable.append(f"{path.name}: {err}")
    if len(unreadable) == len(positions):
        raise H5FormatError(f"{h5_dir}: none of the sampled files could be read ({unreadable[0]})")
    presence = {m: int(v.sum()) for m, v in directory.presence.items()}
    if not presence:
        presence = {m: c for m, c in opened.items()}
    modalities = {}
    for m in sorted(set(presence) | set(opened)):
        modalities[m] = {
            "samples": presence.get(m, opened.get(m, 0)),
            "fraction": round(presence.get(m, 0) / n, 4) if presence else None,
            "shapes": dict(shapes[m].most_common(3)),
            "dtypes": sorted(dtypes[m]),
            "mean_present_timesteps": round(float(np.mean(steps[m])), 2) if steps[m] else None,
            "mean_stored_bytes": int(np.mean(stored[m])) if stored[m] else 0,
        }
    comp = directory.compression
    return {
        "path": str(Path(h5_dir)),
        "samples": n,
        "inspected_files": len(positions),
        "compression": comp.to_json() if comp else None,
        "dataset_filters": dict(filters),
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
        "unreadable": unreadable,
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
    if summary["unreadable"]:
        lines.append(f"\nunreadable files ({len(summary['unreadable'])}):")
        lines.extend(f"  {u}" for u in summary["unreadable"][:20])
    return "\n".join(lines)
