"""The build step: dataset.json layers, data sources, and materialized model inputs.

(`materialize`, as rslearn names the step; a package named `build` would be skipped by
tools that treat `build/` as output.)
"""

from helios.runner.materialize.builder import BuildError, BuildResult, build_dataset
from helios.runner.materialize.dataset_config import DatasetConfig, LayerConfig, QueryConfig
from helios.runner.materialize.inputs import load_window_inputs
from helios.runner.materialize.sources import DataSource, LocalFiles, Scene, StacItems

__all__ = [
    "BuildError",
    "BuildResult",
    "DataSource",
    "DatasetConfig",
    "LayerConfig",
    "LocalFiles",
    "QueryConfig",
    "Scene",
    "StacItems",
    "build_dataset",
    "load_window_inputs",
]
