"""Matching items to a window: rslearn's `query_config` semantics, so both tools pick alike.

Given a window (its footprint and time range) and the candidate items of a layer, in the
order the source ranked them (`sort_by`), return item groups; each group becomes one item
group folder (`layers/<layer>[.n]`) and, for Helios models, one timestep:

- time: an item matches when its time range overlaps the window's, ends excluded (an
  instantaneous item on the window's start or end does not match); timeless items always do;
- `CONTAINS`: one item per group, items containing the whole window; `INTERSECTS`: any item
  touching it; `SINGLE_COMPOSITE`: one group of every intersecting item;
- `MOSAIC`: items are added, in order, to the first unfinished mosaic whose uncovered part
  they cover by at least 10 % (of the item or of the uncovered part); a mosaic is finished
  when less than 1 % of the window is uncovered; partial mosaics count;
  `mosaic_compositing_overlaps` consecutive mosaics form one group;
- a period (`period_duration`, or 30 days for `PER_PERIOD_MOSAIC`) splits the range into
  periods ending at its end; each period gets at most one group, empty periods are skipped,
  a leftover shorter than a period at the start is dropped, newest first unless
  `per_period_mosaic_reverse_time_order` is false;
- fewer than `min_matches` groups: no group at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from helios.runner.core.geometry import WGS84, reproject_geometry
from helios.runner.materialize.dataset_config import QueryConfig
from helios.runner.materialize.sources.base import Item

MIN_ITEM_COVERAGE = 0.1
"""An item joins a mosaic only if it covers this much of itself or of what is uncovered."""
REMAINDER_EPSILON = 0.01
"""A mosaic is complete when less than this fraction of the window is uncovered."""
TimeRange = tuple[datetime, datetime]


@dataclass
class MatchedGroup:
    """One item group and the time range it was matched in (a period, or the whole range)."""

    items: list[Item]
    time_range: TimeRange | None


def overlaps_time(item: Item, time_range: TimeRange | None) -> bool:
    """Rslearn's rule: overlap with both ends excluded; timeless items always match."""
    if time_range is None or item.time_range is None:
        return True
    start, end = item.time_range
    return not (time_range[1] <= start) and not (end <= time_range[0])


def _is_global(item: Item) -> bool:
    return bool(item.footprint.equals(box(-180, -90, 180, 90)))


def project_items(
    items: list[Item], window_geom: BaseGeometry, crs: str
) -> tuple[list[Item], list[BaseGeometry]]:
    """Items whose footprint, in the window's CRS, has area near the window; and those shapes.

    Footprints are clipped to a generous lon/lat box around the window before reprojection,
    so items spanning half the globe do not distort.
    """
    lonlat = reproject_geometry(window_geom, crs, WGS84)
    x0, y0, x1, y1 = lonlat.bounds
    pad = max(x1 - x0, y1 - y0, 0.01)
    region = box(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    kept, shapes = [], []
    for item in items:
        if _is_global(item):
            kept.append(item)
            shapes.append(window_geom)
            continue
        clipped = item.footprint.intersection(region)
        if clipped.is_empty:
            continue
        shp = reproject_geometry(clipped, WGS84, crs)
        if shp.is_empty or shp.area == 0:
            continue
        kept.append(item)
        shapes.append(shp)
    return kept, shapes


def _single_coverage_mosaics(
    window: BaseGeometry, items: list[Item], shapes: list[BaseGeometry], limit: int
) -> list[list[Item]]:
    mosaics: list[tuple[list[Item], BaseGeometry, bool]] = []
    for item, shp in zip(items, shapes):
        placed = False
        for i, (members, remainder, done) in enumerate(mosaics):
            if done or not shapely.intersects(shp, remainder):
                continue
            inter = shp.intersection(remainder).area
            if inter / shp.area < MIN_ITEM_COVERAGE and inter / remainder.area < MIN_ITEM_COVERAGE:
                continue
            remainder = remainder.difference(shp)
            mosaics[i] = (
                [*members, item],
                remainder,
                remainder.area / window.area < REMAINDER_EPSILON,
            )
            placed = True
            break
        if placed or len(mosaics) >= limit:
            continue
        inter = shp.intersection(window).area
        if inter / shp.area < MIN_ITEM_COVERAGE and inter / window.area < MIN_ITEM_COVERAGE:
            continue
        mosaics.append(([item], window.difference(shp), False))
    return [members for members, _, _ in mosaics]


def _groups(
    window: BaseGeometry, items: list[Item], shapes: list[BaseGeometry], query: QueryConfig
) -> list[list[Item]]:
    mode = query.space_mode
    if mode == "CONTAINS":
        return [[it] for it, s in zip(items, shapes) if s.contains(window)][: query.max_matches]
    if mode == "INTERSECTS":
        return [[it] for it, s in zip(items, shapes) if shapely.intersects(s, window)][
            : query.max_matches
        ]
    if mode == "SINGLE_COMPOSITE":
        hit = [it for it, s in zip(items, shapes) if shapely.intersects(s, window)]
        return [hit] if hit else []
    overlaps = max(1, query.mosaic_compositing_overlaps)
    mosaics = _single_coverage_mosaics(window, items, shapes, query.max_matches * overlaps)
    out: list[list[Item]] = []
    for i in range(0, len(mosaics), overlaps):
        combined = [it for m in mosaics[i : i + overlaps] for it in m]
        if combined and len(out) < query.max_matches:
            out.append(combined)
    return out


def match_items(
    window_geom: BaseGeometry,
    crs: str,
    items: list[Item],
    query: QueryConfig,
    time_range: TimeRange | None,
) -> list[MatchedGroup]:
    """Item groups for a window (see the module docstring), in rslearn's order.

    Args:
        window_geom: The window's footprint in `crs` (CRS units).
        crs: The window's CRS.
        items: Candidate items, best first.
        query: The layer's query config.
        time_range: The (offset) time range to match in; None: any time.

    Raises:
        ValueError: a period is configured but the window has no time range.

    """
    timed = [it for it in items if overlaps_time(it, time_range)]
    kept, shapes = project_items(timed, window_geom, crs)
    period = query.period
    if period is None:
        groups = [MatchedGroup(g, time_range) for g in _groups(window_geom, kept, shapes, query)]
    else:
        if time_range is None:
            raise ValueError("period_duration is set but the window has no time range")
        one = replace(query, max_matches=1)
        groups = []
        end = time_range[1]
        while end - period >= time_range[0] and len(groups) < query.max_matches:
            start = end - period
            pairs = [(it, s) for it, s in zip(kept, shapes) if overlaps_time(it, (start, end))]
            found = _groups(window_geom, [p[0] for p in pairs], [p[1] for p in pairs], one)
            if found:
                groups.append(MatchedGroup(found[0], (start, end)))
            end = start
        if not query.per_period_mosaic_reverse_time_order:
            groups.reverse()
    return groups if len(groups) >= query.min_matches else []
