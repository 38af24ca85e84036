"""`inference_results_config` of olmoearth_run.yaml: what a project's results hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class AllowedValue:
    """One class of a classification output."""

    value: int
    label: str
    color: list[int] | None = None
    """[r, g, b] (0-255)."""


@dataclass
class ClassificationField:
    """A classification band of the results."""

    property_name: str
    allowed_values: list[AllowedValue]
    band_index: int = 1


@dataclass
class RegressionField:
    """A regression band of the results."""

    property_name: str
    band_index: int = 1
    min_value: float | None = None
    max_value: float | None = None
    colormap_name: str | None = None


@dataclass
class InferenceResultsConfig:
    """`inference_results_config` of olmoearth_run.yaml: what the results hold."""

    data_type: Literal["RASTER", "VECTOR"] = "RASTER"
    classification_fields: list[ClassificationField] | None = None
    regression_fields: list[RegressionField] | None = None
    detection_objects: Any = None

    def class_names(self, band_index: int = 1) -> dict[int, str]:
        """Class value -> label of a classification band (empty if none is configured)."""
        for f in self.classification_fields or []:
            if f.band_index == band_index:
                return {v.value: v.label for v in f.allowed_values}
        return {}

    def colormap(self, band_index: int = 1) -> dict[int, tuple[int, int, int, int]]:
        """Class value -> RGBA of a classification band (classes without a colour omitted)."""
        for f in self.classification_fields or []:
            if f.band_index == band_index:
                return {
                    v.value: (v.color[0], v.color[1], v.color[2], 255)
                    for v in f.allowed_values
                    if v.color
                }
        return {}
