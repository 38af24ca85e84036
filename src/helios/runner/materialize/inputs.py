"""Model inputs of a built window: its materialized layers in the `Sample.data` layout."""

from __future__ import annotations

import numpy as np
import rasterio

from helios.data.modalities import MISSING_VALUE, resolution_m
from helios.runner.core.fsutil import read_json
from helios.runner.core.geometry import parse_time
from helios.runner.core.windows import Window
from helios.runner.materialize.dataset_config import DatasetConfig


def _resize_nearest(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of [..., h, w] (pixel repeat for whole-number factors)."""
    h, w = arr.shape[-2:]
    if (h, w) == (height, width):
        return arr
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(int)
    return arr[..., rows[:, None], cols[None, :]]


def load_window_inputs(
    window: Window, dataset_config: DatasetConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model inputs of a built window in the `Sample.data` layout.

    Returns:
        Per Helios modality, float32 [H, W, T, C] (multitemporal) or [H, W, C] (static) on the
        modality's own grid over the window, bands in the modality's `band_order`;
        MISSING_VALUE marks missing steps, bands the layer does not provide, and nodata.
        Also the timestamps, int32 [T, 3] as (day, month, year), from the layer with the
        most steps (T = 1 with the window's start date when no layer is multitemporal).

    """
    layers = dataset_config.input_layers()
    metas = {la.name: read_json(window.layers_dir / f"{la.name}.json") for la in layers}
    dates = max(
        (metas[la.name]["timestamps"] for la in layers if la.spec.is_multitemporal),
        key=len,
        default=[window.time_range[0].date().isoformat()],
    )
    num_t = len(dates)
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        spec = layer.spec
        meta = metas[layer.name]
        with rasterio.open(window.layers_dir / f"{layer.name}.tif") as src:
            arr = src.read().astype(np.float32)
        steps = len(meta["timestamps"]) if spec.is_multitemporal else 1
        arr = arr.reshape(steps, len(layer.bands), *arr.shape[-2:])
        grid = resolution_m(spec.grid_factor)
        height = max(1, round(window.height * abs(window.y_resolution or window.resolution) / grid))
        width = max(1, round(window.width * window.resolution / grid))
        arr = _resize_nearest(arr, height, width)
        full = np.full((height, width, num_t, spec.num_bands), MISSING_VALUE, dtype=np.float32)
        for c, band in enumerate(layer.bands):
            full[:, :, :steps, spec.band_index(band)] = arr[:, c].transpose(1, 2, 0)
        out[spec.name] = full if spec.is_multitemporal else full[:, :, 0, :]
    ts = np.array([[d.day, d.month, d.year] for d in map(parse_time, dates)], dtype=np.int32)
    return out, ts
