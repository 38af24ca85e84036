"""`StacItems`: a STAC item collection saved as a file (GeoJSON FeatureCollection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import box, shape

from helios.runner.core.fsutil import read_json
from helios.runner.core.geometry import parse_time
from helios.runner.materialize.sources.base import (
    BandFile,
    Grid,
    Item,
    SourceContext,
    band_key,
    read_band,
)
from helios.runner.materialize.sources.local import IndexedSource, _header, resolve_path
from helios.runner.materialize.sources.remote import HttpOptions, read_remote_band


def stac_href(href: str, base: Path) -> str:
    """A GDAL path for an asset href (http(s) through /vsicurl/, s3 and gs through VSI)."""
    if href.startswith("file://"):
        return href[len("file://") :]
    for scheme, vsi in (("http://", "/vsicurl/"), ("https://", "/vsicurl/"), ("s3://", "/vsis3/")):
        if href.startswith(scheme):
            return vsi + (href if vsi == "/vsicurl/" else href[len(scheme) :])
    if href.startswith("gs://"):
        return "/vsigs/" + href[len("gs://") :]
    return str(resolve_path(href, base))


def item_from_stac(
    item: dict[str, Any],
    bands: tuple[str, ...],
    base: Path,
    asset_bands: dict[str, list[str]] | None = None,
    n: int = 0,
) -> Item | None:
    """A STAC item (GeoJSON dict) as an `Item` holding the wanted `bands`; None if none.

    An asset's bands are named by `asset_bands[key]` when given (a source's band table), else
    by its `eo:bands` (or STAC 1.1 `bands`) names, else by the asset key.
    """
    props = dict(item.get("properties") or {})
    keys = {band_key(b): b for b in bands}
    files = []
    for key, asset in sorted((item.get("assets") or {}).items()):
        if not isinstance(asset, dict) or "href" not in asset:
            continue
        if asset_bands is not None:
            if key not in asset_bands:
                continue
            meta: list[Any] = [{"name": b} for b in asset_bands[key]]
        else:
            meta = asset.get("eo:bands") or asset.get("bands") or [{"name": key}]
        names = tuple(keys.get(band_key(str(b.get("name", "")))) for b in meta)
        if any(names):
            files.append(BandFile(stac_href(asset["href"], base), names))
    if not files:
        return None
    if item.get("geometry"):
        footprint = shape(item["geometry"])
    elif item.get("bbox"):
        bb = [float(v) for v in item["bbox"]]
        footprint = box(bb[0], bb[1], bb[-2], bb[-1])
    else:
        footprint = box(*_header(files[0].path)[0])
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or props.get("datetime") or start
    return Item(
        id=str(item.get("id", f"item{n}")),
        time_range=(parse_time(start), parse_time(end)) if start else None,
        footprint=footprint,
        files=files,
        properties=props,
    )


class StacItems(IndexedSource):
    """A STAC item collection on disk: a GeoJSON FeatureCollection of STAC items.

    Each item needs `id`, `properties.datetime` (or `start_datetime`; null for timeless
    items), and `assets` whose `href`s point at GeoTIFF/COG files (absolute, `file://`, or
    relative to the JSON file). An asset's bands are named by `eo:bands` (or STAC 1.1
    `bands`) names, else by the asset key. The geometry (or `bbox`) gives the footprint;
    `proj:epsg` is informational (the CRS is read from the files). Other properties (such as
    `eo:cloud_cover`) can rank items through `sort_by`.
    """

    def __init__(self, path: str, sort_by: str | None = None, sort_ascending: bool = True) -> None:
        """Create the source.

        Args:
            path: The item collection JSON (relative: to dataset.json's folder).
            sort_by: Item property ranking items, e.g. "eo:cloud_cover".
            sort_ascending: Rank by ascending `sort_by`.

        """
        super().__init__()
        self.path = path
        self.sort_by, self.sort_ascending = sort_by, sort_ascending

    def describe(self) -> str:
        """A short description for messages."""
        return f"StacItems({self.path})"

    def read(
        self, item: Item, band: str, grid: Grid, resampling: str, nodata: float | None
    ) -> np.ndarray | None:
        """As `DataSource.read`; remote hrefs read with timeouts, retries and range caching."""
        loc = item.locate(band)
        if loc is None:
            return None
        if loc[0].startswith("/vsi"):
            return read_remote_band(loc[0], loc[1], grid, resampling, nodata, HttpOptions())
        return read_band(loc[0], loc[1], grid, resampling, nodata)

    def check(self, context: SourceContext) -> list[str]:
        """The file must exist."""
        path = resolve_path(self.path, context.base_dir)
        return [] if path.is_file() else [f"StacItems: {path} does not exist"]

    def build_index(self, context: SourceContext) -> list[Item]:
        """Read the collection; items without a wanted band are dropped."""
        path = resolve_path(self.path, context.base_dir)
        data = read_json(path)
        items = data.get("features") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"StacItems: {path} is not a FeatureCollection of STAC items")
        out = []
        for n, raw in enumerate(items):
            item = item_from_stac(raw, context.bands, path.parent, n=n)
            if item is not None:
                out.append(item)
        return out
