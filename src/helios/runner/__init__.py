"""The prediction runner: project folder -> partitions -> windows -> inputs -> results.

See docs/runner.md. The steps are `partition`, `build_dataset`, inference (in
`helios.runner.inference`), `postprocess_partition` and `combine`; each can be killed and
re-run.
"""

from helios.runner.dataset_builder import BuildError, BuildResult, build_dataset
from helios.runner.dataset_config import DatasetConfig, LayerConfig, QueryConfig
from helios.runner.geometry import Projection, RequestError, RequestFeature, WindowSpec
from helios.runner.mosaic import taper_weights
from helios.runner.partitioners import (
    FixedWindowPartitioner,
    GridPartitioner,
    NoopPartitioner,
    Partition,
    Partitioner,
    ReprojectionPartitioner,
)
from helios.runner.postprocessors import (
    CombineGeojson,
    CombineGeotiff,
    LinearValueTransform,
    NoopRaster,
    NoopVector,
    Postprocessor,
)
from helios.runner.project import InferenceResultsConfig, Project, ProjectError, load_project
from helios.runner.sources import DataSource, LocalFiles, StacItems
from helios.runner.steps import combine, list_partitions, partition, postprocess_partition
from helios.runner.windows import (
    Window,
    list_windows,
    load_window_inputs,
    write_window_geojson,
    write_window_output,
)

__all__ = [
    "BuildError",
    "BuildResult",
    "CombineGeojson",
    "CombineGeotiff",
    "DataSource",
    "DatasetConfig",
    "FixedWindowPartitioner",
    "GridPartitioner",
    "InferenceResultsConfig",
    "LayerConfig",
    "LinearValueTransform",
    "LocalFiles",
    "NoopPartitioner",
    "NoopRaster",
    "NoopVector",
    "Partition",
    "Partitioner",
    "Postprocessor",
    "Project",
    "ProjectError",
    "Projection",
    "QueryConfig",
    "ReprojectionPartitioner",
    "RequestError",
    "RequestFeature",
    "StacItems",
    "Window",
    "WindowSpec",
    "build_dataset",
    "combine",
    "list_partitions",
    "list_windows",
    "load_project",
    "load_window_inputs",
    "partition",
    "postprocess_partition",
    "taper_weights",
    "write_window_geojson",
    "write_window_output",
]
