"""Datasets: modalities, the H5 sample layout, conversion, normalization, masking, loading."""

from helios.data.modalities import MISSING_VALUE, MODALITIES, BandSet, ModalitySpec, get_modality
from helios.data.sample import LabeledSample, MaskedBatch, MaskValue, Sample

__all__ = [
    "MISSING_VALUE",
    "MODALITIES",
    "BandSet",
    "LabeledSample",
    "MaskValue",
    "MaskedBatch",
    "ModalitySpec",
    "Sample",
    "get_modality",
]
