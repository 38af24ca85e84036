"""Data-source names as dataset.json files write them -> the Helios classes that read them.

rslearn names (`rslearn.data_sources.<module>.<Class>`) map by module and class, since several
modules have a `Sentinel2`. Names that need a service Helios does not speak get an
`UnavailableSource` that says so (validation passes; the build step fails those windows with
the message). Any other class path is imported as given and must subclass `DataSource`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shapely.geometry.base import BaseGeometry

from helios.runner.core.classpath import StrategyError, resolve_strategy
from helios.runner.materialize.sources.base import DataSource, Item, SourceContext
from helios.runner.materialize.sources.local import LocalFiles
from helios.runner.materialize.sources.stac_api import StacApi
from helios.runner.materialize.sources.stac_items import StacItems

RSLEARN = "rslearn.data_sources."
HELIOS = "helios.runner.materialize.sources."
BUILTIN_SOURCES: tuple[type[DataSource], ...] = (LocalFiles, StacItems, StacApi)
UPSTREAM: dict[str, str] = {
    "local_files.LocalFiles": f"{HELIOS}local.LocalFiles",
    "planetary_computer.Sentinel2": f"{HELIOS}planetary_computer.Sentinel2",
    "planetary_computer.Sentinel1": f"{HELIOS}planetary_computer.Sentinel1",
    "planetary_computer.LandsatC2L2": f"{HELIOS}planetary_computer.LandsatC2L2",
    "planetary_computer.CopDemGlo30": f"{HELIOS}planetary_computer.CopDemGlo30",
    "aws_sentinel2_element84.Sentinel2": f"{HELIOS}earth_search.Sentinel2",
    "aws_landsat.LandsatOliTirs": f"{HELIOS}earth_search.LandsatOliTirs",
    "aws_sentinel1.Sentinel1": f"{HELIOS}earth_search.Sentinel1",
    "gcp_public_data.Sentinel2": f"{HELIOS}gcp_sentinel2.Sentinel2",
    "hf_srtm.SRTM": f"{HELIOS}hf_srtm.SRTM",
}
"""rslearn `<module>.<Class>` -> the Helios class reading the same imagery."""
UNSUPPORTED: dict[str, str] = {
    "google_earth_engine.": (
        "it needs Google Earth Engine (a service account and a GCS bucket), which Helios "
        "does not speak: export the images to COGs and use LocalFiles or StacItems"
    ),
    "rslp.": (
        "it is a project-specific source of rslearn_projects, not part of rslearn: use "
        "rslearn.data_sources.planetary_computer.Sentinel2 for the same Sentinel-2 imagery"
    ),
    "olmoearth_run.": (
        "it is an olmoearth-runner source backed by OlmoEarth's private catalogue: use the "
        "rslearn.data_sources.planetary_computer sources for the same sensors"
    ),
}


class SourceUnavailable(RuntimeError):
    """A layer's data source cannot be read by this Helios."""


class UnavailableSource(DataSource):
    """Stands in for a recognised data source Helios cannot read; every search fails."""

    def __init__(self, class_path: str, reason: str) -> None:
        """Args: the configured class path; why it cannot be read."""
        self.class_path, self.reason = class_path, reason

    def describe(self) -> str:
        """A short description for messages."""
        return self.class_path

    def items(
        self,
        geometry: BaseGeometry,
        time_range: tuple[datetime, datetime] | None,
        context: SourceContext,
    ) -> list[Item]:
        """Fail with the reason."""
        raise SourceUnavailable(f"data source {self.class_path}: {self.reason}")


def _upstream_target(class_path: str) -> tuple[str | None, str]:
    """(Helios class path, or None; why it is unavailable, or "")."""
    for prefix, why in UNSUPPORTED.items():
        if class_path.startswith(prefix) or class_path.startswith(RSLEARN + prefix):
            return None, why
    if class_path.startswith(RSLEARN):
        key = class_path[len(RSLEARN) :]
        if key in UPSTREAM:
            return UPSTREAM[key], ""
        known = ", ".join(sorted(RSLEARN + k for k in UPSTREAM))
        return None, f"Helios does not read this rslearn source; it reads {known}"
    return class_path, ""


def resolve_source(
    class_path: str, init_args: dict[str, Any], where: str, problems: list[str]
) -> tuple[DataSource | None, str]:
    """The data source a dataset.json layer names, and why it is unavailable ("" if it is not).

    Config errors (a bad argument of a class Helios has) go to `problems`; a recognised
    source that Helios cannot read yet comes back as an `UnavailableSource`.
    """
    target, why = _upstream_target(class_path)
    if target is None:
        return UnavailableSource(class_path, why), why
    try:
        source = resolve_strategy(
            {"class_path": target, "init_args": init_args}, DataSource, where, BUILTIN_SOURCES
        )
    except StrategyError as err:
        msg = str(err)
        if target.startswith(HELIOS) and any(
            s in msg for s in ("No module named", "Unable to import", "has no attribute")
        ):
            why = "recognised, but this Helios version has no reader for it yet"
            return UnavailableSource(class_path, why), why
        problems.append(msg)
        return None, ""
    return source, ""
