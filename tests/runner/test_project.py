from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from helios.runner import (
    CombineGeotiff,
    FixedWindowPartitioner,
    GridPartitioner,
    NoopPartitioner,
    NoopRaster,
    Partitioner,
    ProjectError,
    load_project,
    partition,
)
from helios.runner.core.geometry import Projection
from helios.runner.core.windows import list_windows
from tests.runner.data.project import (
    ORIGIN,
    box_lonlat,
    default_run_config,
    make_project,
    request,
)


def set_yaml(project: Path, config: dict) -> None:
    (project / "olmoearth_run.yaml").write_text(yaml.safe_dump(config))


def problems(project: Path, **kw) -> list[str]:
    with pytest.raises(ProjectError) as info:
        load_project(project, **kw)
    return info.value.problems


def test_load_generated_project(project_dir):
    p = load_project(project_dir)
    assert isinstance(p.partitioner, NoopPartitioner)
    assert isinstance(p.window_preparer, GridPartitioner)
    assert p.window_preparer.grid_size == 32 and p.window_preparer.use_utm
    assert p.window_preparer.output_projection == Projection("EPSG:3857", 10, -10)
    assert isinstance(p.postprocessors.process_window, NoopRaster)
    assert isinstance(p.postprocessors.process_dataset, CombineGeotiff)
    assert p.inference_results_config.class_names() == {1: "water", 2: "trees"}
    assert p.inference_results_config.colormap()[2] == (51, 160, 44, 255)
    assert [la.name for la in p.dataset_config.input_layers()] == ["sentinel2"]
    assert len(p.requests) == 1 and p.requests[0].properties["name"] == "field"
    assert p.checkpoint_path.exists() and p.model_config_path.exists()


UPSTREAM_NANDI = """
inference_results_config:
  data_type: RASTER
  classification_fields:
    - property_name: crop_type_classification
      band_index: 1
      allowed_values:
        - value: 1
          label: coffee
          color: [124, 67, 18]
partition_strategies:
  partition_request_geometry:
    class_path: olmoearth_run.runner.tools.partitioners.grid_partitioner.GridPartitioner
    init_args:
      grid_size: 0.25
  prepare_window_geometries:
    class_path: olmoearth_run.runner.tools.partitioners.grid_partitioner.GridPartitioner
    init_args:
      grid_size: 64
      output_projection:
        class_path: rslearn.utils.geometry.Projection
        init_args:
          crs: EPSG:3857
          x_resolution: 10
          y_resolution: -10
      use_utm: true
postprocessing_strategies:
  process_dataset:
    class_path: olmoearth_run.runner.tools.postprocessors.combine_geotiff.CombineGeotiff
  process_partition:
    class_path: olmoearth_run.runner.tools.postprocessors.combine_geotiff.CombineGeotiff
  process_window:
    class_path: olmoearth_run.runner.tools.postprocessors.noop_raster.NoopRaster
"""

UPSTREAM_GEO = """
inference_results_config:
  classification_fields: null
  data_type: VECTOR
  detection_objects: null
  regression_fields: null
partition_strategies:
  partition_request_geometry:
    class_path: olmoearth_run.tools.partitioners.noop_partitioner.NoopPartitioner
  prepare_window_geometries:
    class_path: olmoearth_run.tools.partitioners.fixed_window_partitioner.FixedWindowPartitioner
    init_args:
      window_size: 63 # intended to be a pixel value
postprocessing_strategies:
  process_dataset:
    class_path: olmoearth_run.runner.tools.postprocessors.noop_raster.NoopRaster
  process_partition:
    class_path: olmoearth_run.runner.tools.postprocessors.noop_raster.NoopRaster
  process_window:
    class_path: olmoearth_run.runner.tools.postprocessors.noop_raster.NoopRaster
window_prep:
  data_splitter:
    class_path: olmoearth_run.runner.tools.data_splitters.spatial_data_splitter.SpatialDataSplitter
    init_args: {grid_size: 10.0, test_prop: 0.1, train_prop: 0.8, val_prop: 0.1}
  group_name: north_africa
  label_layer: labels
  sampler:
    class_path: olmoearth_run.runner.tools.samplers.noop_sampler.NoopSampler
  split_property: split
"""


@pytest.mark.parametrize("text", [UPSTREAM_NANDI, UPSTREAM_GEO], ids=["nandi", "geo"])
def test_upstream_files_load_unchanged(project_dir, text):
    (project_dir / "olmoearth_run.yaml").write_text(textwrap.dedent(text))
    p = load_project(project_dir)
    assert isinstance(p.partitioner, GridPartitioner | NoopPartitioner)
    assert isinstance(p.window_preparer, GridPartitioner | FixedWindowPartitioner)
    if isinstance(p.window_preparer, FixedWindowPartitioner):
        assert p.window_preparer.window_size == 63
        assert p.window_prep.group_name == "north_africa"
        assert p.inference_results_config.data_type == "VECTOR"


@pytest.mark.parametrize(
    "path",
    [
        "olmoearth_run.runner.tools.partitioners.fixed_window_partitioner.FixedWindowPartitioner",
        "olmoearth_run.tools.partitioners.fixed_window_partitioner.FixedWindowPartitioner",
        "FixedWindowPartitioner",
        "helios.runner.partition.partitioners.FixedWindowPartitioner",
    ],
)
def test_class_path_forms_resolve_to_helios(project_dir, path):
    config = default_run_config()
    config["partition_strategies"]["prepare_window_geometries"] = {
        "class_path": path,
        "init_args": {"window_size": 16, "limit": 1},
    }
    set_yaml(project_dir, config)
    p = load_project(project_dir)
    assert type(p.window_preparer) is FixedWindowPartitioner
    assert p.window_preparer.limit == 1


def test_unknown_class_lists_supported(project_dir):
    config = default_run_config()
    config["partition_strategies"]["partition_request_geometry"] = {
        "class_path": "olmoearth_run.runner.tools.partitioners.magic.MagicPartitioner"
    }
    config["postprocessing_strategies"]["process_dataset"] = {"class_path": "CombineShapefile"}
    set_yaml(project_dir, config)
    found = problems(project_dir)
    assert len(found) == 2
    assert "MagicPartitioner" in found[0]
    assert (
        "FixedWindowPartitioner, GridPartitioner, NoopPartitioner, ReprojectionPartitioner"
        in (found[0])
    )
    assert "CombineGeojson, CombineGeotiff, NoopRaster, NoopVector" in found[1]


def test_every_problem_reported_at_once(project_dir):
    config = default_run_config()
    config["partition_strategies"]["prepare_window_geometries"]["init_args"]["grid_size"] = "big"
    config["postprocessing_strategies"]["process_window"] = {"class_path": "CombineGeotiff"}
    config["partition_strategies"]["partition_request_geometry"] = {
        "class_path": "FixedWindowPartitioner",
        "init_args": {"window_size": 8},
    }
    config["surprise"] = 1
    set_yaml(project_dir, config)
    (project_dir / "checkpoint.ckpt").unlink()
    dataset = json.loads((project_dir / "dataset.json").read_text())
    dataset["layers"]["sentinel2"]["modality"] = "sentinel3"
    (project_dir / "dataset.json").write_text(json.dumps(dataset))
    bad = request(box_lonlat(440000, 4170000, 440100, 4170100))
    del bad["properties"]["oe_end_time"]
    (project_dir / "prediction" / "bad.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [bad]})
    )
    text = "\n".join(problems(project_dir))
    for needle in (
        "checkpoint.ckpt: not in the folder",
        "unknown top-level keys ['surprise']",
        "grid_size",
        "FixedWindowPartitioner does not implement partition_request_geometry",
        "CombineGeotiff does not implement process_window",
        "unknown 'sentinel3'",
        "bad.geojson#0: property 'oe_end_time' is missing",
    ):
        assert needle in text, needle


def test_user_plugin_partitioner_from_outside_the_package(project_dir, tmp_path, monkeypatch):
    plugin = tmp_path / "plugins" / "my_partitioners.py"
    plugin.parent.mkdir()
    plugin.write_text(
        textwrap.dedent(
            '''
            from helios.runner.core.geometry import WindowSpec, to_pixels, window_projection
            from helios.runner.partition.partitioners import Partition, Partitioner


            class CentroidPartitioner(Partitioner):
                """One square window on each feature's centroid."""

                def __init__(self, size: int = 8) -> None:
                    self.size = size

                def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
                    out = []
                    for f in partition.features:
                        proj = window_projection(f.geometry, None, True)
                        c = to_pixels(f.geometry.centroid, proj)
                        b = (int(c.x), int(c.y), int(c.x) + self.size, int(c.y) + self.size)
                        out.append(WindowSpec(proj, b, f.start_time, f.end_time))
                    return out


            class NotAPartitioner:
                def prepare_window_geometries(self, partition):
                    return []
            '''
        )
    )
    monkeypatch.syspath_prepend(str(plugin.parent))
    config = default_run_config()
    config["partition_strategies"]["prepare_window_geometries"] = {
        "class_path": "my_partitioners.CentroidPartitioner",
        "init_args": {"size": 12},
    }
    set_yaml(project_dir, config)
    p = load_project(project_dir)
    assert isinstance(p.window_preparer, Partitioner)
    (pid,) = partition(p.requests, p.partitioner, p.window_preparer, tmp_path / "scratch")
    (w,) = list_windows(tmp_path / "scratch", pid)
    assert (w.width, w.height) == (12, 12)

    config["partition_strategies"]["prepare_window_geometries"] = {
        "class_path": "my_partitioners.NotAPartitioner"
    }
    set_yaml(project_dir, config)
    (msg,) = problems(project_dir)
    assert (
        "is not a Partitioner" in msg
        and "subclass helios.runner.partition.partitioners.Partitioner" in msg
    )


@pytest.mark.parametrize(
    ("feature", "needle"),
    [
        (
            request([[[-75.6, 37.6], [-75.5, 37.7], [-75.5, 37.6], [-75.6, 37.7], [-75.6, 37.6]]]),
            "invalid geometry (Self-intersection",
        ),
        ({"type": "Feature", "geometry": None, "properties": {}}, "has no geometry"),
        (
            request([[[0, 0], [1, 0], [1, 1], [0, 0]]], start="", end="2024-01-01"),
            "'oe_start_time' is missing or empty",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [1, 2]},
                "properties": {},
            },
            "missing time range: set properties 'oe_start_time' and 'oe_end_time'",
        ),
        (
            request([[[0, 0], [1, 0], [1, 1], [0, 0]]], start="2024-05-01", end="2024-01-01"),
            "is after",
        ),
        (request([[[0, 0], [1, 0], [1, 1], [0, 0]]], start="yesterday"), "Invalid isoformat"),
        (
            request([[[440000, 4170000], [440100, 4170000], [440100, 4170100], [440000, 4170000]]]),
            "must be WGS84 longitude/latitude",
        ),
    ],
    ids=["bowtie", "no-geometry", "empty-time", "no-times", "reversed", "bad-time", "projected"],
)
def test_bad_requests_get_clear_errors(tmp_path, feature, needle):
    project = make_project(tmp_path / "p", requests=[feature], imagery=False)
    (msg,) = problems(project, check_imagery=False)
    assert msg.startswith("prediction/requests.geojson#0: ")
    assert needle in msg


def test_requests_without_imagery(tmp_path):
    far = request(box_lonlat(ORIGIN[0] + 50_000, 4100000, ORIGIN[0] + 50_500, 4100500))
    late = request(
        box_lonlat(ORIGIN[0] + 100, ORIGIN[1] - 600, ORIGIN[0] + 600, ORIGIN[1] - 100),
        start="2020-01-01",
        end="2020-02-01",
    )
    project = make_project(tmp_path / "p", requests=[far, late])
    found = problems(project)
    assert len(found) == 2
    assert "#0: no imagery of layer 'sentinel2' (LocalFiles(imagery)): none of 3" in found[0]
    assert "#1: no imagery of layer 'sentinel2'" in found[1]
    assert "none dated between 2020-01-01 and 2020-02-01" in found[1]
    assert load_project(project, check_imagery=False).requests


def test_dataset_json_problems(tmp_path):
    dataset = {
        "layers": {
            "sentinel2": {
                "type": "raster",
                "modality": "sentinel2_l2a",
                "bands": ["B02", "B99"],
                "band_sets": [{"bands": ["B02"], "dtype": "uint17"}],
                "data_source": {
                    "class_path": "LocalFiles",
                    "init_args": {"src_dir": "imagery", "colour": "blue"},
                    "query_config": {"max_matches": 0, "period_duration": "fortnight"},
                    "time_offset": "-180 parsecs",
                },
            },
            "sentinel1": {
                "type": "raster",
                "resampling_method": "lanczos-ish",
                "band_sets": [{"bands": ["vv"], "dtype": "float32"}],
                "data_source": {"name": "LocalFiles", "src_dir": "s1"},
            },
            "label": {"type": "vector"},
            "../escape": {"type": "vector"},
        }
    }
    project = make_project(tmp_path / "p", dataset=dataset, imagery=False)
    text = "\n".join(problems(project))
    for needle in (
        "layers.sentinel2: unknown key: option 'bands' ('bands' is now band_sets",
        'band_sets[0]: key "dtype"',
        "uint17",
        "Option 'colour' is not accepted",
        "max_matches and mosaic_compositing_overlaps must be >= 1",
        "period_duration: bad duration 'fortnight'",
        "bad duration '-180 parsecs'",
        "resampling_method",
        "lanczos-ish",
        "'../escape' cannot become a file name",
    ):
        assert needle in text, needle


def test_rslearn_sources_without_a_reader_are_missing_not_problems(tmp_path):
    dataset = {
        "layers": {
            "gse": {
                "type": "raster",
                "band_sets": [{"bands": ["A00"], "dtype": "uint16"}],
                "data_source": {
                    "name": "rslearn.data_sources.google_earth_engine.GoogleSatelliteEmbeddings",
                    "gcs_bucket_name": "b",
                },
            },
            "sentinel2": {
                "type": "raster",
                "band_sets": [{"bands": ["B02"], "dtype": "uint16"}],
                "data_source": {"class_path": "rslp.satlas.data_sources.MonthlyAzureSentinel2"},
            },
        }
    }
    project = make_project(tmp_path / "p", dataset=dataset, imagery=False)
    p = load_project(project, check_imagery=False)
    missing = "\n".join(str(m) for m in p.missing)
    assert "layers.gse: it needs Google Earth Engine" in missing
    assert "layers.sentinel2: it is a project-specific source" in missing
    assert "planetary_computer.Sentinel2" in missing  # what to use instead


def test_window_grid_must_be_in_pixels(project_dir):
    config = default_run_config()
    config["partition_strategies"]["prepare_window_geometries"]["init_args"]["grid_size"] = 0.25
    set_yaml(project_dir, config)
    (msg,) = problems(project_dir)
    assert "prepare_window_geometries: window grids are in pixels" in msg and "0.25" in msg


def test_partition_is_idempotent_and_resumes(project_dir, tmp_path):
    p = load_project(project_dir)
    scratch = tmp_path / "scratch"
    ids = partition(p.requests, p.partitioner, p.window_preparer, scratch)
    files = sorted(scratch.rglob("*.json"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert partition(p.requests, p.partitioner, p.window_preparer, scratch) == ids
    assert {f: f.stat().st_mtime_ns for f in sorted(scratch.rglob("*.json"))} == stamps
    # killed before the partition was complete: partition.json and a window are missing
    (scratch / "partitions" / ids[0] / "partition.json").unlink()
    victim = list((scratch / "dataset" / "windows" / ids[0]).iterdir())[0]
    (victim / "metadata.json").unlink()
    assert partition(p.requests, p.partitioner, p.window_preparer, scratch) == ids
    assert sorted(scratch.rglob("*.json")) == files
    assert len(list_windows(scratch, ids[0])) == 9
