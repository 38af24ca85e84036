"""The build step: dataset.json layers, data sources, and materialized model inputs.

(`materialize`, as rslearn names the step; a package named `build` would be skipped by
tools that treat `build/` as output.)
"""

from helios.runner.materialize.builder import BuildError, BuildResult, build_dataset
from helios.runner.materialize.dataset_config import (
    BandSet,
    DatasetConfig,
    LayerConfig,
    QueryConfig,
    load_dataset_config,
)
from helios.runner.materialize.inputs import load_window_inputs
from helios.runner.materialize.sources import DataSource, Item, LocalFiles, StacItems
from helios.runner.materialize.window import WindowBuildError, is_built, materialize_window

__all__ = [
    "BandSet",
    "BuildError",
    "BuildResult",
    "DataSource",
    "DatasetConfig",
    "Item",
    "LayerConfig",
    "LocalFiles",
    "QueryConfig",
    "StacItems",
    "WindowBuildError",
    "build_dataset",
    "is_built",
    "load_dataset_config",
    "load_window_inputs",
    "materialize_window",
]
