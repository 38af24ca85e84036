"""Data sources: where a layer's imagery comes from (docs/runner.md, "Data sources")."""

from helios.runner.materialize.sources.base import (
    BandFile,
    DataSource,
    Grid,
    Item,
    SourceContext,
    rank_items,
    read_band,
)
from helios.runner.materialize.sources.local import IndexedSource, LocalFiles
from helios.runner.materialize.sources.stac_api import StacApi
from helios.runner.materialize.sources.stac_items import StacItems, item_from_stac

__all__ = [
    "BandFile",
    "DataSource",
    "Grid",
    "IndexedSource",
    "Item",
    "LocalFiles",
    "SourceContext",
    "StacApi",
    "StacItems",
    "item_from_stac",
    "rank_items",
    "read_band",
]
