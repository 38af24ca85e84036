"""Results a person can read: class names GDAL and QGIS show, and quicklooks with a key.

Class names are read back through GDAL's own C API (the libgdal that rasterio ships), which
is what QGIS and `gdalinfo` use, so the test checks what those tools will see.
"""

from __future__ import annotations

import ctypes
import glob
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio

from helios.runner import CombineGeotiff, write_window_output
from helios.runner.core.categories import pam_path, qml_path
from helios.runner.postprocess.quicklook import _nice_length, read_view

from .test_postprocessors import grid_windows, ramp

NAMES = {0: "clear", 1: "cloud"}
COLOURS = {0: (70, 80, 90, 255), 1: (245, 245, 245, 255)}


def _gdal() -> ctypes.CDLL:
    libs = glob.glob(os.path.join(os.path.dirname(rasterio.__file__) + ".libs", "libgdal*.so*"))
    if not libs:
        pytest.skip("rasterio's bundled libgdal not found")
    lib = ctypes.CDLL(libs[0])
    vp, i = ctypes.c_void_p, ctypes.c_int
    for name, res, args in (
        ("GDALOpen", vp, [ctypes.c_char_p, i]),
        ("GDALGetRasterBand", vp, [vp, i]),
        ("GDALGetDefaultRAT", vp, [vp]),
        ("GDALGetRasterCategoryNames", ctypes.POINTER(ctypes.c_char_p), [vp]),
        ("GDALRATGetRowCount", i, [vp]),
        ("GDALRATGetColumnCount", i, [vp]),
        ("GDALRATGetNameOfCol", ctypes.c_char_p, [vp, i]),
        ("GDALRATGetValueAsString", ctypes.c_char_p, [vp, i, i]),
        ("GDALClose", None, [vp]),
    ):
        getattr(lib, name).restype, getattr(lib, name).argtypes = res, args
    lib.GDALAllRegister()
    return lib


def gdal_classes(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The raster attribute table rows and the category names GDAL reads for band 1."""
    lib = _gdal()
    ds = lib.GDALOpen(str(path).encode(), 0)
    assert ds, f"GDAL cannot open {path}"
    try:
        band = lib.GDALGetRasterBand(ds, 1)
        rat = lib.GDALGetDefaultRAT(band)
        rows = []
        if rat:
            cols = [
                lib.GDALRATGetNameOfCol(rat, c).decode()
                for c in range(lib.GDALRATGetColumnCount(rat))
            ]
            for r in range(lib.GDALRATGetRowCount(rat)):
                values = [lib.GDALRATGetValueAsString(rat, r, c).decode() for c in range(len(cols))]
                rows.append(dict(zip(cols, values)))
        names, out = lib.GDALGetRasterCategoryNames(band), []
        while names and names[len(out)] is not None:
            out.append(names[len(out)].decode())
        return rows, out
    finally:
        lib.GDALClose(ds)


def qml_palette(path: Path) -> list[tuple[str, str, str]]:
    root = ET.parse(qml_path(path)).getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    return [(e.get("value"), e.get("label"), e.get("color")) for e in root.iter("paletteEntry")]


def _class_outputs(root: Path) -> list[Path]:
    outs = []
    for w in grid_windows(root, n=2, size=64, overlap=4):
        cls = (ramp(w) % 3 > 1.5).astype(np.uint8)
        cls[:4, :4] = 255
        outs.append(
            write_window_output(
                w,
                "cloud",
                cls,
                kind="classification",
                nodata=255,
                class_names=NAMES,
                colormap=COLOURS,
            )  # fmt: skip
        )
    return outs


def test_class_maps_are_shown_by_name_in_gdal_and_qgis(tmp_path):
    outs = _class_outputs(tmp_path)
    (result,) = CombineGeotiff().process_dataset(outs, tmp_path / "results")
    columns = ("Value", "Class", "Red", "Green", "Blue", "Alpha")
    expected_rows = [
        dict(zip(columns, row))
        for row in (
            ("0", "clear", "70", "80", "90", "255"),
            ("1", "cloud", "245", "245", "245", "255"),
            ("255", "no data", "0", "0", "0", "0"),
        )
    ]
    for path in (outs[0], result):  # a window output and the mosaic
        assert pam_path(path).exists() and qml_path(path).exists()
        rows, categories = gdal_classes(path)
        assert rows == expected_rows
        assert categories[:2] == ["clear", "cloud"] and categories[255] == "no data"
        assert qml_palette(path) == [
            ("0", "clear", "#46505a"),
            ("1", "cloud", "#f5f5f5"),
            ("255", "no data", "#000000"),
        ]
        with rasterio.open(path) as src:  # the colour table and tag are still there
            assert src.colormap(1)[1] == (245, 245, 245, 255)
            assert '"1": "cloud"' in src.tags()["CLASS_NAMES"]


def test_continuous_outputs_get_no_class_sidecars_but_keep_units(tmp_path):
    windows = grid_windows(tmp_path, n=2, size=32, overlap=2)
    outs = [
        write_window_output(w, "height", ramp(w), kind="regression", units="m") for w in windows
    ]
    (result,) = CombineGeotiff().process_dataset(outs, tmp_path / "results")
    assert not pam_path(result).exists() and not qml_path(result).exists()
    with rasterio.open(result) as src:
        assert src.units == ("m",)
        view = read_view(src)
    assert view.colorbar is not None and view.colorbar[2] == "height (m)"
    lo, hi, _ = view.colorbar
    assert lo < hi and not view.legend  # no nodata in a full mosaic


def test_quicklooks_have_a_legend_a_readable_size_and_nodata_in_grey(tmp_path):
    outs = _class_outputs(tmp_path)
    (result,) = CombineGeotiff().process_partition(outs, tmp_path / "results")
    with rasterio.open(result) as src:
        view = read_view(src)
        assert (src.width, src.height) == (136, 136)
    labels = [label for label, _ in view.legend]
    assert labels[0].startswith("0  clear") and labels[1].startswith("1  cloud")
    assert labels[-1] == "no data" and dict(view.legend)["no data"] == (158, 158, 158)
    assert [c for _, c in view.legend[:2]] == [(70, 80, 90), (245, 245, 245)]
    from matplotlib.image import imread

    image = imread(result.with_suffix(".png"))  # a 136 px map is drawn at 480 px
    assert image.shape[2] == 4 and 480 <= image.shape[0] <= 1024 and image.shape[1] <= 1024
    assert (image[..., :3] < 0.95).any() and (image[..., 3] == 1).all()


def test_embeddings_are_shown_as_principal_components(tmp_path):
    windows = grid_windows(tmp_path, n=2, size=24, overlap=2)
    outs = [
        write_window_output(
            w, "embedding", np.stack([np.sin(ramp(w) * k) for k in range(1, 9)]), kind="regression"
        )
        for w in windows
    ]
    (result,) = CombineGeotiff().process_dataset(outs, tmp_path / "results")
    with rasterio.open(result) as src:
        view = read_view(src)
    assert "principal components 1-3" in view.note and "8 bands" in view.note
    assert view.colorbar is None and view.rgba.shape[2] == 4
    assert len(np.unique(view.rgba[..., :3].reshape(-1, 3), axis=0)) > 10


def test_probabilities_show_the_most_probable_class_by_name(tmp_path):
    (w,) = grid_windows(tmp_path, n=1, size=32, overlap=0)
    probs = np.stack([np.full((32, 32), 0.2), np.full((32, 32), 0.8)]).astype(np.float32)
    out = write_window_output(w, "p", probs, kind="probabilities", class_names=NAMES)
    with rasterio.open(out) as src:
        view = read_view(src)
    assert [label for label, _ in view.legend] == ["0  clear  (0.0 %)", "1  cloud  (100.0 %)"]
    assert "most probable of 2 classes" in view.note


def test_scale_bars_take_round_lengths():
    assert [_nice_length(m) for m in (3.0, 340.0, 999.0, 1000.0, 2600.0)] == [
        2.0,
        200.0,
        500.0,
        1000.0,
        2000.0,
    ]
