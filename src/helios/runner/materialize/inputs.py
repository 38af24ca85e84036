"""Model inputs of a built window: its rslearn layers in the `Sample.data` layout.

Every layer feeding a Helios modality contributes its item groups as timesteps (ordered by
time; several layers of one modality, such as monthly `sentinel2_l2a_mo01..12`, become one
series). Each band set's GeoTIFF is placed on the modality's own grid over the window
(nearest: coarser band sets are pixel-repeated, as in the training data), its bands at their
Helios band index; nodata pixels, bands no layer provides and absent steps are
`MISSING_VALUE`.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import rasterio

from helios.data.modalities import MISSING_VALUE, ModalitySpec, resolution_m
from helios.runner.core.windows import COMPLETED, Window
from helios.runner.materialize.dataset_config import DatasetConfig, LayerConfig
from helios.runner.materialize.modalities import helios_band
from helios.runner.materialize.window import read_items


def modality_shape(window: Window, spec: ModalitySpec) -> tuple[int, int]:
    """(height, width) of a modality's grid over the window."""
    grid = resolution_m(spec.grid_factor)
    height = max(1, round(window.height * abs(window.y_resolution) / grid))
    width = max(1, round(window.width * window.resolution / grid))
    return height, width


def _place(path: str, window: Window, shape: tuple[int, int], nodata: float) -> np.ndarray:
    """A band set GeoTIFF sampled (nearest) onto the modality grid: float32 [C, H, W]."""
    with rasterio.open(path) as src:
        data = src.read().astype(np.float32)
        t = src.transform
    data[data == nodata] = np.nan
    height, width = shape
    x0, y0, x1, y1 = window.bounds
    xs = x0 + (np.arange(width) + 0.5) * (x1 - x0) / width
    ys = y1 - (np.arange(height) + 0.5) * (y1 - y0) / height
    cols = np.floor((xs - t.c) / t.a).astype(int)
    rows = np.floor((ys - t.f) / t.e).astype(int)
    ok_c = (cols >= 0) & (cols < data.shape[2])
    ok_r = (rows >= 0) & (rows < data.shape[1])
    out = np.full((data.shape[0], height, width), np.nan, dtype=np.float32)
    sub = data[:, np.clip(rows, 0, data.shape[1] - 1)][:, :, np.clip(cols, 0, data.shape[2] - 1)]
    mask = ok_r[:, None] & ok_c[None, :]
    out[:, mask] = sub[:, mask]
    return out


def _layer_steps(
    window: Window, layer: LayerConfig, spec: ModalitySpec
) -> list[tuple[datetime | None, np.ndarray]]:
    """(time, float32 [H, W, C] with NaN) per completed item group of a layer."""
    assert layer.data_source is not None
    groups = read_items(window, layer.name) or []
    shape = modality_shape(window, spec)
    steps = []
    for gi, group in enumerate(groups):
        gdir = window.layer_dir(layer.name, gi)
        if not (gdir / COMPLETED).exists():
            continue
        full = np.full((*shape, spec.num_bands), np.nan, dtype=np.float32)
        for bs in layer.band_sets:
            targets = [helios_band(spec, b) for b in bs.bands]
            if not any(targets):
                continue
            data = _place(str(gdir / bs.dirname / "geotiff.tif"), window, shape, bs.nodata)
            for c, band in enumerate(targets):
                if band is not None:
                    full[:, :, spec.band_index(band)] = data[c]
        full = layer.data_source.source.to_model_units(spec.name, full)
        when = next((it.time for it in group.items if it.time), None)
        if when is None and group.time_range is not None:
            when = group.time_range[0]
        steps.append((when, full))
    return steps


def load_window_inputs(
    window: Window, dataset_config: DatasetConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model inputs of a built window in the `Sample.data` layout.

    Returns:
        Per Helios modality, float32 [H, W, T, C] (multitemporal) or [H, W, C] (static) on the
        modality's own grid over the window, bands in the modality's `band_order`;
        MISSING_VALUE marks missing steps, bands no layer provides, and nodata. Also the
        timestamps, int32 [T, 3] as (day, month, year), from the modality with the most
        steps (T = 1 with the window's start date when no layer is multitemporal).

    """
    by_modality: dict[str, list[tuple[datetime | None, np.ndarray]]] = {}
    specs: dict[str, ModalitySpec] = {}
    for layer in dataset_config.model_layers():
        spec = layer.spec
        specs[spec.name] = spec
        by_modality.setdefault(spec.name, []).extend(_layer_steps(window, layer, spec))
    start = window.time_range[0] if window.time_range else datetime(1970, 1, 1)
    dates: list[datetime] = []
    out: dict[str, np.ndarray] = {}
    for name, steps in by_modality.items():
        spec = specs[name]
        steps.sort(key=lambda s: s[0].timestamp() if s[0] else 0.0)
        if spec.is_multitemporal:
            stamps = [s[0] or start for s in steps]
            if len(stamps) > len(dates):
                dates = stamps
    num_t = max(1, len(dates))
    for name, steps in by_modality.items():
        spec = specs[name]
        h, w = modality_shape(window, spec)
        t = num_t if spec.is_multitemporal else 1
        full = np.full((h, w, t, spec.num_bands), np.nan, dtype=np.float32)
        for k, (_, arr) in enumerate(steps[:t]):
            full[:, :, k] = arr
        full = np.where(np.isfinite(full), full, np.float32(MISSING_VALUE)).astype(np.float32)
        out[name] = full if spec.is_multitemporal else full[:, :, 0, :]
    if not dates:
        dates = [start]
    ts = np.array([[d.day, d.month, d.year] for d in dates], dtype=np.int32)
    return out, ts
