"""The runner: project folder -> partitions -> windows -> inputs -> predictions -> maps.

See docs/runner.md and docs/architecture.md. Subpackages follow the steps a user runs:
`project` (loading, validation), `partition`, `materialize` (the build step: data sources),
`predict` (model, inference, outputs), `postprocess` and `finetune` (window preparation,
labeled data); `core` holds what they share. `PredictRunner` and `FineTuneRunner` run the
steps of a project in order; each step can be killed and re-run.
"""

from helios.runner.core.geometry import Projection, RequestError, RequestFeature, WindowSpec
from helios.runner.core.rasters import taper_weights
from helios.runner.core.windows import Window, list_partitions, list_windows
from helios.runner.finetune_runner import FineTuneError, FineTuneRunner
from helios.runner.materialize import (
    BuildError,
    BuildResult,
    DatasetConfig,
    DataSource,
    LayerConfig,
    LocalFiles,
    QueryConfig,
    StacItems,
    build_dataset,
    load_window_inputs,
)
from helios.runner.partition import (
    FixedWindowPartitioner,
    GridPartitioner,
    NoopPartitioner,
    Partition,
    Partitioner,
    ReprojectionPartitioner,
    partition,
)
from helios.runner.postprocess import (
    CombineGeojson,
    CombineGeotiff,
    LinearValueTransform,
    NoopRaster,
    NoopVector,
    Postprocessor,
    combine,
    postprocess_partition,
)
from helios.runner.predict import (
    InferenceResultsConfig,
    RunnerModel,
    run_inference,
    write_window_geojson,
    write_window_output,
)
from helios.runner.predict_runner import InferenceOptions, PredictReport, PredictRunner
from helios.runner.project import Project, ProjectError, load_project

__all__ = [
    "BuildError",
    "BuildResult",
    "CombineGeojson",
    "CombineGeotiff",
    "DataSource",
    "DatasetConfig",
    "FineTuneError",
    "FineTuneRunner",
    "FixedWindowPartitioner",
    "GridPartitioner",
    "InferenceOptions",
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
    "PredictReport",
    "PredictRunner",
    "Project",
    "ProjectError",
    "Projection",
    "QueryConfig",
    "ReprojectionPartitioner",
    "RequestError",
    "RequestFeature",
    "RunnerModel",
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
    "run_inference",
    "taper_weights",
    "write_window_geojson",
    "write_window_output",
]
