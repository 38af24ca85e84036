from __future__ import annotations

from datetime import datetime, timezone

import pytest
from shapely.geometry import Point, box

from helios.runner.core.geometry import (
    Projection,
    RequestFeature,
    WindowSpec,
    reproject_geometry,
    utm_crs,
)
from helios.runner.partition.partitioners import (
    BUILTIN_PARTITIONERS,
    ChunkPartitioner,
    FixedWindowPartitioner,
    GridPartitioner,
    NoopPartitioner,
    Partition,
    ReprojectionPartitioner,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
T1 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def utm_feature(x0: float, y0: float, x1: float, y1: float, crs: str = "EPSG:32618"):
    """A request over a projected box."""
    return RequestFeature(reproject_geometry(box(x0, y0, x1, y1), crs, "EPSG:4326"), T0, T1)


def lonlat_feature(x0: float, y0: float, x1: float, y1: float, **props):
    return RequestFeature(box(x0, y0, x1, y1), T0, T1, props)


def test_utm_zone_choice():
    assert utm_crs(-75.6, 37.7) == "EPSG:32618"
    assert utm_crs(-78.01, 38.0) == "EPSG:32617"
    assert utm_crs(-77.99, 38.0) == "EPSG:32618"
    assert utm_crs(-78.0, 38.0) == "EPSG:32617"  # on a boundary: the lower code, as pyproj
    assert utm_crs(151.2, -33.9) == "EPSG:32756"  # Sydney, southern hemisphere
    assert utm_crs(36.5, 0.0) == "EPSG:32637"  # the equator is northern
    assert utm_crs(180.0, 0.0) == "EPSG:32660"
    assert utm_crs(-180.0, 0.0) == "EPSG:32601"
    assert utm_crs(5.5, 60.5) == "EPSG:32631"  # no Norway exception
    assert utm_crs(10.0, 83.9999) == "EPSG:32632"
    assert utm_crs(10.0, 83.99991) == "EPSG:5041"  # UPS North
    assert utm_crs(10.0, -79.99991) == "EPSG:5042"  # UPS South


@pytest.mark.parametrize(
    ("lon", "lat"), [(35.1, 0.2), (36.0, 0.5), (-0.0001, 0.0), (179.9999, -10.0), (-111.8, 33.5)]
)
def test_utm_zone_is_pyprojs_first_match(lon, lat):
    """Rslearn's get_utm_ups_crs takes the first zone pyproj's query lists."""
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    info = query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat)
    )
    assert utm_crs(lon, lat) == f"EPSG:{info[0].code}"


def test_grid_windows_align_to_multiples_of_grid_size():
    f = utm_feature(440700, 4173660, 441340, 4174300)  # 64 x 64 px, not aligned
    specs = GridPartitioner(grid_size=32).prepare_window_geometries(Partition([f]))
    assert len(specs) == 9  # the request straddles 3 cells each way
    for s in specs:
        assert s.projection.crs == "EPSG:32618" and s.projection.x_resolution == 10.0
        assert (s.width, s.height) == (32, 32)
        assert s.pixel_bounds[0] % 32 == 0 and s.pixel_bounds[1] % 32 == 0
    assert len({s.name for s in specs}) == 9


def test_grid_overlap_grows_windows_on_every_side():
    f = utm_feature(440700, 4173660, 441340, 4174300)
    plain = GridPartitioner(grid_size=32).prepare_window_geometries(Partition([f]))
    over = GridPartitioner(grid_size=32, overlap_size=4).prepare_window_geometries(Partition([f]))
    assert len(over) == len(plain)
    for p, o in zip(plain, over):
        assert (o.width, o.height) == (40, 40)
        assert o.pixel_bounds == (
            p.pixel_bounds[0] - 4,
            p.pixel_bounds[1] - 4,
            p.pixel_bounds[2] + 4,
            p.pixel_bounds[3] + 4,
        )


def test_grid_clip_shrinks_windows_to_the_geometry():
    f = utm_feature(440700, 4173660, 441340, 4174300)
    specs = GridPartitioner(grid_size=32, clip=True).prepare_window_geometries(Partition([f]))
    assert len(specs) == 9
    c0, c1 = 440700 / 10, 441340 / 10
    assert min(s.pixel_bounds[0] for s in specs) == c0
    assert max(s.pixel_bounds[2] for s in specs) == c1
    assert sum(s.width * s.height for s in specs) == 64 * 64  # clipped cells tile the request


def test_grid_request_level_in_degrees():
    f = lonlat_feature(-75.64, 37.61, -75.56, 37.69, name="a")
    parts = GridPartitioner(grid_size=0.05).partition_request_geometry([f])
    assert len(parts) == 4
    for p in parts:
        (feat,) = p.features
        assert feat.properties == {"name": "a"} and feat.start_time == T0
        minx, miny, _, _ = feat.geometry.bounds
        assert abs(minx / 0.05 - round(minx / 0.05)) < 1e-6
        assert abs(miny / 0.05 - round(miny / 0.05)) < 1e-6
    clipped = GridPartitioner(grid_size=0.05, clip=True).partition_request_geometry([f])
    assert sum(p.features[0].geometry.area for p in clipped) == pytest.approx(f.geometry.area)
    assert len({p.id for p in parts}) == 4


def test_grid_request_level_in_metres():
    f = utm_feature(440500, 4172500, 442500, 4174500)  # 2 x 2 km
    parts = GridPartitioner(grid_size=1000, request_units="metres").partition_request_geometry([f])
    assert len(parts) == 9  # offset by 500 m: 3 x 3 cells of 1 km
    cell = reproject_geometry(parts[0].features[0].geometry, "EPSG:4326", "EPSG:32618")
    assert cell.bounds[0] == pytest.approx(round(cell.bounds[0], -3), abs=0.01)


def test_request_spanning_two_utm_zones():
    f = lonlat_feature(-78.02, 37.99, -77.98, 38.01)
    one = NoopPartitioner().prepare_window_geometries(Partition([f]))
    assert [s.projection.crs for s in one] == ["EPSG:32617"]  # centroid on -78.0: zone 17
    grid = GridPartitioner(grid_size=0.02)
    window_grid = GridPartitioner(grid_size=64)
    crs = set()
    for part in grid.partition_request_geometry([f]):
        for s in window_grid.prepare_window_geometries(part):
            crs.add(s.projection.crs)
    assert crs == {"EPSG:32617", "EPSG:32618"}


def test_output_projection_and_use_utm():
    f = utm_feature(440700, 4173660, 441340, 4174300)
    proj = Projection("EPSG:3857", 20, -20)
    (s,) = NoopPartitioner(proj, use_utm=True).prepare_window_geometries(Partition([f]))
    assert s.projection == Projection("EPSG:32618", 20, -20)
    assert (s.width, s.height) == (32, 32)
    (s,) = NoopPartitioner(proj).prepare_window_geometries(Partition([f]))
    assert s.projection.crs == "EPSG:3857"


def test_fixed_window_centres_on_the_centroid_and_limits():
    feats = [utm_feature(440000 + 1000 * i, 4173000, 440100 + 1000 * i, 4173100) for i in range(3)]
    part = Partition(feats)
    specs = FixedWindowPartitioner(window_size=63).prepare_window_geometries(part)
    assert len(specs) == 3
    for f, s in zip(feats, specs):
        assert (s.width, s.height) == (63, 63)
        c = reproject_geometry(f.geometry.centroid, "EPSG:4326", "EPSG:32618")
        x0, y0, x1, y1 = s.crs_bounds()  # bounds truncated toward zero: within a pixel
        assert abs((x0 + x1) / 2 - c.x) <= 10 and abs((y0 + y1) / 2 - c.y) <= 10
    limited = FixedWindowPartitioner(window_size=16, limit=2).prepare_window_geometries(part)
    assert len(limited) == 2
    with pytest.raises(ValueError, match="whole number"):
        FixedWindowPartitioner(window_size=10.5)


def test_noop_and_reprojection():
    feats = [
        utm_feature(440700, 4173660, 441340, 4174300),
        utm_feature(441000, 4173000, 441005, 4173005),
    ]
    parts = NoopPartitioner().partition_request_geometry(feats)
    assert len(parts) == 1 and parts[0].features == feats
    specs = NoopPartitioner().prepare_window_geometries(parts[0])
    assert [(s.width, s.height) for s in specs] == [(64, 64), (1, 1)]
    assert ReprojectionPartitioner().prepare_window_geometries(parts[0]) == specs
    with pytest.raises(NotImplementedError):
        ReprojectionPartitioner().partition_request_geometry(feats)
    with pytest.raises(NotImplementedError):
        FixedWindowPartitioner(window_size=8).partition_request_geometry(feats)


def test_point_requests():
    f = RequestFeature(Point(-75.6, 37.7), T0, T1)
    assert len(GridPartitioner(grid_size=16).prepare_window_geometries(Partition([f]))) == 1
    (s,) = NoopPartitioner().prepare_window_geometries(Partition([f]))
    assert (s.width, s.height) == (1, 1)


def test_window_names_hash_geometry_and_time():
    p = Projection("EPSG:32618", 10, -10)
    a = WindowSpec(p, (0, 0, 8, 8), T0, T1)
    assert a.name == WindowSpec(p, (0, 0, 8, 8), T0, T1, {"x": 1}).name
    assert a.name != WindowSpec(p, (0, 0, 8, 9), T0, T1).name
    assert a.name != WindowSpec(p, (0, 0, 8, 8), T0, T0.replace(month=2)).name


@pytest.mark.parametrize("cls", BUILTIN_PARTITIONERS, ids=lambda c: c.__name__)
def test_partitioner_contract(cls):
    """Every built-in partitioner makes whole-pixel UTM windows, deterministically."""
    args: dict = {
        FixedWindowPartitioner: {"window_size": 16},
        GridPartitioner: {"grid_size": 16},
        ChunkPartitioner: {"num_geometries_per_partition": 1},
    }.get(cls, {})
    feats = [
        utm_feature(440700, 4173660, 441000, 4174000),
        utm_feature(441500, 4173000, 441700, 4173200),
    ]
    part = Partition(feats)
    first = cls(**args).prepare_window_geometries(part)
    second = cls(**args).prepare_window_geometries(Partition(list(feats)))
    assert first and [s.name for s in first] == [s.name for s in second]
    for s in first:
        assert isinstance(s, WindowSpec) and s.width > 0 and s.height > 0
        assert s.projection.crs == "EPSG:32618"
        assert all(isinstance(v, int) for v in s.pixel_bounds)
        assert (s.start_time, s.end_time) == (T0, T1)
    if cls.supports_request_partitioning:
        parts = cls(
            **({"grid_size": 0.01} if cls is GridPartitioner else args)
        ).partition_request_geometry(feats)
        assert parts and all(isinstance(p, Partition) for p in parts)


def test_grid_overlap_margin_alone_does_not_keep_a_cell():
    """A triangle: cells beyond the hypotenuse are reached only by neighbours' margins."""
    from shapely.geometry import Polygon

    crs = "EPSG:32618"
    x0, y0 = 440640, 4173440  # multiples of 320 m: 32 px cells align with the corner
    tri = Polygon([(x0, y0), (x0 + 960, y0), (x0, y0 + 960)])  # 96 px legs
    f = RequestFeature(reproject_geometry(tri, crs, "EPSG:4326"), T0, T1)
    plain = GridPartitioner(grid_size=32).prepare_window_geometries(Partition([f]))
    over = GridPartitioner(grid_size=32, overlap_size=8).prepare_window_geometries(Partition([f]))
    clipped = GridPartitioner(grid_size=32, overlap_size=8, clip=True).prepare_window_geometries(
        Partition([f])
    )
    # 3 + 2 + 1 cells hold area of the triangle; the diagonal only touches the other corners
    assert len(plain) == len(over) == len(clipped) == 6
    assert all(min(s.width, s.height) > 8 for s in clipped)  # no sliver windows


def test_chunk_partitioner_batches_features_and_reprojects_each():
    feats = [utm_feature(440000 + 1000 * i, 4173000, 440105 + 1000 * i, 4173105) for i in range(5)]
    parts = ChunkPartitioner(num_geometries_per_partition=2).partition_request_geometry(feats)
    assert [len(p.features) for p in parts] == [2, 2, 1]
    assert [f for p in parts for f in p.features] == feats
    (s,) = ChunkPartitioner(1).prepare_window_geometries(parts[2])
    assert s.pixel_bounds == (44400, -417310, 44410, -417300)  # int(): partial pixels cut
    with pytest.raises(ValueError, match="positive"):
        ChunkPartitioner(0)


def test_windows_only_where_the_partitions_own_request_is(tmp_path):
    """A 0.25 degree cell holds ~1900 windows; only those over the request are made."""
    from helios.runner.core.windows import list_windows
    from helios.runner.partition import partition

    small = lonlat_feature(35.10, 0.20, 35.12, 0.22, name="a")
    other = RequestFeature(box(35.20, 0.20, 35.21, 0.21), T1, T1.replace(month=4), {"name": "b"})
    grid = GridPartitioner(grid_size=0.25)
    windows = GridPartitioner(grid_size=64)
    ids = partition([small, other], grid, windows, tmp_path)
    assert len(ids) == 2  # one cell, two features: two partitions
    made = {pid: list_windows(tmp_path, pid) for pid in ids}
    for pid, feature in zip(ids, (small, other), strict=True):
        assert made[pid] and len(made[pid]) < 30
        for w in made[pid]:
            assert w.time_range == (feature.start_time, feature.end_time)
            assert box(*w.wgs84_bounds()).intersects(feature.geometry)


def test_point_and_line_requests_get_windows():
    grid, windows = GridPartitioner(grid_size=0.25), GridPartitioner(grid_size=64)
    point = RequestFeature(Point(35.1, 0.2), T0, T1)
    (part,) = grid.partition_request_geometry([point])
    (s,) = windows.prepare_window_geometries(part)
    assert s.width == s.height == 64
    assert box(*s.crs_bounds()).contains(
        reproject_geometry(point.geometry, "EPSG:4326", utm_crs(35.1, 0.2))
    )
    from shapely.geometry import LineString

    line = RequestFeature(LineString([(35.1, 0.2), (35.11, 0.2)]), T0, T1)
    (part,) = grid.partition_request_geometry([line])
    assert 2 <= len(windows.prepare_window_geometries(part)) <= 4  # ~1.1 km of line


def test_clip_at_both_levels():
    from shapely.geometry import Polygon

    tri = RequestFeature(Polygon([(35.1, 0.2), (35.12, 0.2), (35.1, 0.22)]), T0, T1)
    parts = GridPartitioner(grid_size=0.25, clip=True).partition_request_geometry([tri])
    (part,) = parts
    assert part.features[0].geometry.equals(tri.geometry)
    specs = GridPartitioner(grid_size=64, clip=True).prepare_window_geometries(part)
    plain = GridPartitioner(grid_size=64).prepare_window_geometries(part)
    assert len(specs) == len(plain) > 0
    for s, p in zip(specs, plain, strict=True):  # clipped cells stay inside their cells
        c0, r0, c1, r1 = s.pixel_bounds
        assert p.pixel_bounds[0] <= c0 < c1 <= p.pixel_bounds[2]
        assert p.pixel_bounds[1] <= r0 < r1 <= p.pixel_bounds[3]
    assert any(s.width < 64 for s in specs)


def test_crs_from_module_callable_is_a_crs_string_never_a_call():
    from helios.runner.core.classpath import StrategyError, resolve_strategy
    from helios.runner.partition import Partitioner
    from helios.runner.project.olmoearth_run import PARTITION_BUILTINS

    def build(crs):
        spec = {
            "class_path": "olmoearth_run.tools.partitioners.grid_partitioner.GridPartitioner",
            "init_args": {
                "grid_size": 64,
                "output_projection": {
                    "class_path": "rslearn.utils.geometry.Projection",
                    "init_args": {"crs": crs, "x_resolution": 10, "y_resolution": -10},
                },
            },
        }
        return resolve_strategy(spec, Partitioner, "test", PARTITION_BUILTINS)

    for module, func, arg in [
        ("rasterio.crs", "CRS.from_epsg", {"code": 3857}),
        ("pyproj", "CRS.from_user_input", {"value": "EPSG:3857"}),
        ("rasterio.crs", "CRS.from_string", {"value": "epsg:3857"}),
    ]:
        p = build({"_module_": module, "_callable_": func, **arg})
        assert p.output_projection.crs == "EPSG:3857"
    for bad, match in [
        ({"_module_": "os", "_callable_": "system", "command": "true"}, "cannot call code"),
        ({"_module_": "rasterio.crs", "_callable_": "CRS.from_epsg", "x": 1}, "one argument"),
        ({"_module_": "rasterio.crs", "_callable_": "CRS.from_epsg", "code": 1}, "from_epsg"),
    ]:
        with pytest.raises(StrategyError, match=match):
            build(bad)


def test_a_huge_request_is_refused_with_an_estimate_before_anything_is_written(tmp_path):
    """lon +-170, lat +-80 with the nandi config: refused at once, nothing on disk."""
    import time

    from helios.runner.partition.step import RequestTooLarge, estimate_windows, partition

    ring = [[[-170, -80], [170, -80], [170, 80], [-170, 80], [-170, -80]]]
    req = RequestFeature.from_geojson(
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": ring},
            "properties": {"oe_start_time": "2024-01-01", "oe_end_time": "2024-02-01"},
        }
    )
    parts = GridPartitioner(grid_size=10.0).partition_request_geometry([req])
    windows = GridPartitioner(grid_size=64, use_utm=True)
    start = time.monotonic()
    with pytest.raises(RequestTooLarge, match=r"partitions and about [\d,]+ windows"):
        partition([req], GridPartitioner(grid_size=10.0), windows, tmp_path / "s")
    assert time.monotonic() - start < 30
    assert not (tmp_path / "s").exists()  # nothing written
    assert estimate_windows(parts, windows) > 10**8  # ~1.3e8 km2 of 0.41 km2 windows


def test_window_estimates_are_close_for_a_small_request(tmp_path):
    """The grid estimate (area over cell area plus the outline) is near the real count."""
    from helios.runner.partition.step import estimate_windows, partition

    ring = [[[35.0, 0.1], [35.03, 0.1], [35.03, 0.13], [35.0, 0.13], [35.0, 0.1]]]
    req = RequestFeature.from_geojson(
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": ring},
            "properties": {"oe_start_time": "2024-01-01", "oe_end_time": "2024-02-01"},
        }
    )
    parts = GridPartitioner(grid_size=0.25).partition_request_geometry([req])
    windows = GridPartitioner(grid_size=64, use_utm=True)
    estimate = estimate_windows(parts, windows)
    ids = partition([req], GridPartitioner(grid_size=0.25), windows, tmp_path / "s")
    from helios.runner.core.windows import list_windows

    made = sum(len(list_windows(tmp_path / "s", pid)) for pid in ids)
    assert made <= estimate <= 2 * made + 4
